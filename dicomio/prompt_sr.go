package dicomio

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// Structured-report prompts (PS3.16 TID 1500 / TID 1501; PS3.3 C.17.3 content items).
//
// Every Measurement Group container (DCM 125007) is one lesion: its Tracking Identifier (DCM
// 112039), Tracking Unique Identifier (DCM 112040) and Finding (DCM 121071) label it, and the
// SCOORD or SCOORD3D items anywhere below it (an "Image Region" of TID 1410, or the items a
// TID 300 length, bidirectional or area measurement is INFERRED FROM) say where it is. An SR
// without measurement groups still gives one prompt per SCOORD/SCOORD3D item it holds.

// Concept codes (DCM) used by TID 1500/1501.
const (
	codeMeasurementGroup = "125007"
	codeTrackingID       = "112039"
	codeTrackingUID      = "112040"
	codeFinding          = "121071"
)

// srItem is one content item with its position ("1.4.1.2", as ReferencedContentItemIdentifier
// counts: the root is 1).
type srItem struct {
	a    attrs
	path []int
}

func (it srItem) valueType() string { return it.a.str(tag.ValueType) }

// concept returns the concept name code value and meaning (code scheme DCM assumed for values
// we test: the codes compared are unique across the schemes TID 1500 uses).
func (it srItem) concept() (value, scheme, meaning string) {
	c, ok := it.a.item(tag.ConceptNameCodeSequence)
	if !ok {
		return "", "", ""
	}
	return c.str(tag.CodeValue), c.str(tag.CodingSchemeDesignator), c.str(tag.CodeMeaning)
}

func (it srItem) children() []srItem {
	kids := it.a.items(tag.ContentSequence)
	out := make([]srItem, len(kids))
	for i, k := range kids {
		out[i] = srItem{a: k, path: append(append([]int{}, it.path...), i+1)}
	}
	return out
}

func pathString(p []int) string {
	s := make([]string, len(p))
	for i, v := range p {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ".")
}

func readSRPrompts(root attrs, obj *PromptObject) {
	top := srItem{a: root, path: []int{1}}
	// Index every item by its path, for SCOORDs that reference their image by content item
	// identifier instead of holding it.
	byPath := map[string]srItem{}
	var groups []srItem
	var loose []srItem // SCOORD/SCOORD3D outside any measurement group
	var walk func(it srItem, inGroup bool)
	walk = func(it srItem, inGroup bool) {
		byPath[pathString(it.path)] = it
		if v, scheme, _ := it.concept(); v == codeMeasurementGroup && scheme == "DCM" && it.valueType() == "CONTAINER" {
			groups = append(groups, it)
			inGroup = true
		}
		if vt := it.valueType(); !inGroup && (vt == "SCOORD" || vt == "SCOORD3D") {
			loose = append(loose, it)
		}
		for _, c := range it.children() {
			walk(c, inGroup)
		}
	}
	walk(top, false)

	if len(groups) == 0 && len(loose) == 0 {
		what := "no measurement group (TID 1501) and no SCOORD or SCOORD3D content item"
		if obj.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11" {
			what = "a Basic Text SR holds no spatial coordinates"
		}
		obj.issue("", "", ErrPromptNoCoords, "", "%s: the SR does not say where a lesion is", what)
		return
	}
	for gi, g := range groups {
		item := fmt.Sprintf("measurement group %d", gi+1)
		var p Prompt
		p.Item = item
		var coords []srItem
		var collect func(it srItem)
		collect = func(it srItem) {
			for _, c := range it.children() {
				switch c.valueType() {
				case "SCOORD", "SCOORD3D":
					coords = append(coords, c)
				}
				// Nested measurement groups are their own lesions.
				if v, scheme, _ := c.concept(); v == codeMeasurementGroup && scheme == "DCM" {
					continue
				}
				collect(c)
			}
		}
		collect(g)
		for _, c := range g.children() {
			v, scheme, _ := c.concept()
			if scheme != "DCM" {
				continue
			}
			switch v {
			case codeTrackingID:
				p.TrackingID = c.a.str(tag.TextValue)
			case codeTrackingUID:
				p.TrackingUID = c.a.str(tag.UID)
			case codeFinding:
				if cc, ok := c.a.item(tag.ConceptCodeSequence); ok {
					p.Finding = cc.str(tag.CodeMeaning)
				}
			}
		}
		p.Label = p.TrackingID
		if len(coords) == 0 {
			obj.issue(item, p.Label, ErrPromptNoCoords, "", "the measurement group has no SCOORD or SCOORD3D content item (a measurement without image coordinates)")
			continue
		}
		if err := srCoordinates(&p, coords, byPath); err != nil {
			obj.issue(item, p.Label, err.kind, err.attribute, "%s", err.detail)
			continue
		}
		obj.add(p)
	}
	for _, c := range loose {
		p := Prompt{Item: "content item " + pathString(c.path)}
		if err := srCoordinates(&p, []srItem{c}, byPath); err != nil {
			obj.issue(p.Item, "", err.kind, err.attribute, "%s", err.detail)
			continue
		}
		obj.add(p)
	}
}

type promptErr struct {
	kind              error
	attribute, detail string
}

func perr(kind error, attribute, format string, args ...any) *promptErr {
	return &promptErr{kind: kind, attribute: attribute, detail: fmt.Sprintf(format, args...)}
}

// srCoordinates fills p from the SCOORD/SCOORD3D items of one lesion. Several SCOORDs (the two
// axes of a bidirectional measurement) pool their points when they are on the same image (or in
// the same frame of reference); a group whose coordinates span several images uses the first
// and its other images are not used.
func srCoordinates(p *Prompt, coords []srItem, byPath map[string]srItem) *promptErr {
	var first *promptErr
	for _, c := range coords {
		shape := c.a.str(tag.GraphicType)
		data, err := c.a.floats(tag.GraphicData)
		if err != nil {
			return perr(ErrPromptNoCoords, tagName(tag.GraphicData), "content item %s: %v", pathString(c.path), err)
		}
		where := fmt.Sprintf("content item %s (%s %s)", pathString(c.path), c.valueType(), shape)
		if c.valueType() == "SCOORD3D" {
			pts, ok := triples(data)
			if !ok {
				setFirst(&first, perr(ErrPromptNoCoords, tagName(tag.GraphicData), "%s: %d values, want (x, y, z) triples of finite numbers", where, len(data)))
				continue
			}
			if err := checkGraphic(shape, len(pts)); err != nil {
				setFirst(&first, perr(ErrPromptUnsupported, tagName(tag.GraphicType), "%s: %v", where, err))
				continue
			}
			forUID := c.a.str(tag.ReferencedFrameOfReferenceUID)
			if forUID == "" {
				setFirst(&first, perr(ErrPromptNoCoords, tagName(tag.ReferencedFrameOfReferenceUID), "%s: absent, so the patient coordinates have no frame of reference", where))
				continue
			}
			if p.RefSOPInstanceUID != "" || (p.FrameOfReferenceUID != "" && p.FrameOfReferenceUID != forUID) {
				continue
			}
			p.FrameOfReferenceUID = forUID
			p.PatientPoints = append(p.PatientPoints, pts...)
			p.Shape = mergeShape(p.Shape, shape)
			continue
		}
		pts, ok := pairs(data)
		if !ok {
			setFirst(&first, perr(ErrPromptNoCoords, tagName(tag.GraphicData), "%s: %d values, want (column, row) pairs of finite numbers", where, len(data)))
			continue
		}
		if err := checkGraphic(shape, len(pts)); err != nil {
			setFirst(&first, perr(ErrPromptUnsupported, tagName(tag.GraphicType), "%s: %v", where, err))
			continue
		}
		sop, frame, perr2 := srImageRef(c, byPath)
		if perr2 != nil {
			setFirst(&first, perr2)
			continue
		}
		if p.Patient() || (p.RefSOPInstanceUID != "" && (p.RefSOPInstanceUID != sop || p.RefFrame != frame)) {
			continue
		}
		p.RefSOPInstanceUID, p.RefFrame = sop, frame
		p.ImagePoints = append(p.ImagePoints, pts...)
		p.Shape = mergeShape(p.Shape, shape)
	}
	if p.RefSOPInstanceUID == "" && !p.Patient() {
		if first != nil {
			return first
		}
		return perr(ErrPromptNoCoords, "", "no usable coordinates")
	}
	return nil
}

func setFirst(dst **promptErr, e *promptErr) {
	if *dst == nil {
		*dst = e
	}
}

// mergeShape names pooled graphics: one shape keeps its name, two (the axes of a bidirectional
// measurement) become "MULTIPOINT".
func mergeShape(have, add string) string {
	if have == "" {
		return add
	}
	return "MULTIPOINT"
}

// srImageRef finds the image an SCOORD is on: its SELECTED FROM child IMAGE item, held or
// referenced by content item identifier.
func srImageRef(c srItem, byPath map[string]srItem) (string, int, *promptErr) {
	where := "content item " + pathString(c.path)
	for _, k := range c.children() {
		img := k
		if ids, _ := k.a.ints(tag.ReferencedContentItemIdentifier); len(ids) > 0 {
			target, ok := byPath[joinInts(ids)]
			if !ok {
				return "", 0, perr(ErrPromptReference, tagName(tag.ReferencedContentItemIdentifier), "%s references content item %s, which the SR does not hold", where, joinInts(ids))
			}
			img = target
		}
		if img.valueType() != "IMAGE" {
			continue
		}
		ref, ok := img.a.item(tag.ReferencedSOPSequence)
		if !ok || ref.str(tag.ReferencedSOPInstanceUID) == "" {
			return "", 0, perr(ErrPromptNoCoords, tagName(tag.ReferencedSOPSequence), "%s: the IMAGE item names no SOP instance", where)
		}
		frame := 0
		if fr, err := ref.ints(tag.ReferencedFrameNumber); err == nil && len(fr) > 0 {
			frame = fr[0]
			if len(fr) > 1 {
				return "", 0, perr(ErrPromptUnsupported, tagName(tag.ReferencedFrameNumber), "%s: the SCOORD is on %d frames; a lesion prompt needs one", where, len(fr))
			}
		}
		return ref.str(tag.ReferencedSOPInstanceUID), frame, nil
	}
	return "", 0, perr(ErrPromptNoCoords, "", "%s: the SCOORD has no IMAGE item, so its pixel coordinates are on no known image", where)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ".")
}
