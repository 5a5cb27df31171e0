package dicomio

import (
	"fmt"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// Presentation-state prompts (PS3.3 C.10.5 Graphic Annotation, C.10.4 Displayed Area).
//
// Every graphic object (POINT, POLYLINE, INTERPOLATED, CIRCLE, ELLIPSE) of every graphic
// annotation is a prompt on each image the annotation applies to (its Referenced Image Sequence,
// or every image of the presentation state's Referenced Series Sequence when absent). PIXEL units
// are image pixels. DISPLAY units are fractions (0..1) of the displayed area, converted with the
// Displayed Area Selection that applies to the image; without one (or with a rotation or flip,
// which this reader does not undo) the object is reported, not guessed.

type imageRef struct {
	sop   string
	frame int
}

func refImages(a attrs) []imageRef {
	var out []imageRef
	for _, it := range a.items(tag.ReferencedImageSequence) {
		uid := it.str(tag.ReferencedSOPInstanceUID)
		if uid == "" {
			continue
		}
		frames, _ := it.ints(tag.ReferencedFrameNumber)
		if len(frames) == 0 {
			out = append(out, imageRef{sop: uid})
		}
		for _, f := range frames {
			out = append(out, imageRef{sop: uid, frame: f})
		}
	}
	return out
}

// displayedArea is one Displayed Area Selection item: 1-based pixel corners.
type displayedArea struct {
	images     []imageRef // empty = all images
	tlhc, brhc [2]int     // (column, row)
}

func readGSPSPrompts(a attrs, obj *PromptObject) {
	var all []imageRef
	for _, s := range a.items(tag.ReferencedSeriesSequence) {
		all = append(all, refImages(s)...)
	}
	var areas []displayedArea
	for _, it := range a.items(tag.DisplayedAreaSelectionSequence) {
		tl, _ := it.ints(tag.DisplayedAreaTopLeftHandCorner)
		br, _ := it.ints(tag.DisplayedAreaBottomRightHandCorner)
		if len(tl) != 2 || len(br) != 2 || br[0] < tl[0] || br[1] < tl[1] {
			continue
		}
		areas = append(areas, displayedArea{images: refImages(it), tlhc: [2]int{tl[0], tl[1]}, brhc: [2]int{br[0], br[1]}})
	}
	rotation := 0
	if v, _ := a.ints(tag.ImageRotation); len(v) > 0 {
		rotation = v[0]
	}
	flip := a.str(tag.ImageHorizontalFlip) == "Y"

	anns := a.items(tag.GraphicAnnotationSequence)
	found := false
	for ai, ann := range anns {
		images := refImages(ann)
		if len(images) == 0 {
			images = all
		}
		layer := ann.str(tag.GraphicLayer)
		for gi, g := range ann.items(tag.GraphicObjectSequence) {
			found = true
			item := fmt.Sprintf("graphic object %d of annotation %d", gi+1, ai+1)
			shape := g.str(tag.GraphicType)
			units := g.str(tag.GraphicAnnotationUnits)
			data, err := g.floats(tag.GraphicData)
			if err != nil {
				obj.issue(item, layer, ErrPromptNoCoords, tagName(tag.GraphicData), "%v", err)
				continue
			}
			pts, ok := pairs(data)
			if !ok {
				obj.issue(item, layer, ErrPromptNoCoords, tagName(tag.GraphicData), "%d values, want (column, row) pairs of finite numbers", len(data))
				continue
			}
			if err := checkGraphic(shape, len(pts)); err != nil {
				obj.issue(item, layer, ErrPromptUnsupported, tagName(tag.GraphicType), "%v", err)
				continue
			}
			if len(images) == 0 {
				obj.issue(item, layer, ErrPromptReference, tagName(tag.ReferencedImageSequence), "the annotation applies to no image")
				continue
			}
			for _, img := range images {
				imgItem := item
				if len(images) > 1 {
					imgItem = fmt.Sprintf("%s on image %s", item, img.sop)
				}
				p := Prompt{Item: imgItem, Label: layer, Shape: shape, RefSOPInstanceUID: img.sop, RefFrame: img.frame}
				switch units {
				case "PIXEL":
					p.ImagePoints = pts
				case "DISPLAY":
					conv, err := displayToPixels(pts, img, areas, rotation, flip)
					if err != nil {
						obj.issue(imgItem, layer, ErrPromptUnits, tagName(tag.GraphicAnnotationUnits), "DISPLAY units: %v", err)
						continue
					}
					p.ImagePoints = conv
				default:
					obj.issue(imgItem, layer, ErrPromptUnits, tagName(tag.GraphicAnnotationUnits), "%q, want PIXEL or DISPLAY", units)
					continue
				}
				obj.add(p)
			}
		}
	}
	if !found {
		obj.issue("", "", ErrPromptNoCoords, tagName(tag.GraphicAnnotationSequence), "the presentation state has no graphic object (text alone does not outline a lesion)")
	}
}

// displayToPixels converts DISPLAY units (0,0 = top-left, 1,1 = bottom-right of the displayed
// area) into the image's continuous pixel space.
func displayToPixels(pts [][2]float64, img imageRef, areas []displayedArea, rotation int, flip bool) ([][2]float64, error) {
	if rotation != 0 || flip {
		return nil, fmt.Errorf("the presentation state rotates (%d degrees) or flips (%v) the image; converting display coordinates back is not supported", rotation, flip)
	}
	var area *displayedArea
	for i := range areas {
		if len(areas[i].images) == 0 {
			area = &areas[i]
			continue
		}
		for _, r := range areas[i].images {
			if r.sop == img.sop && (r.frame == 0 || r.frame == img.frame) {
				area = &areas[i]
			}
		}
		if area == &areas[i] {
			break
		}
	}
	if area == nil {
		return nil, fmt.Errorf("no Displayed Area Selection applies to image %s, so the displayed area the fractions refer to is unknown", img.sop)
	}
	w := float64(area.brhc[0] - area.tlhc[0] + 1)
	h := float64(area.brhc[1] - area.tlhc[1] + 1)
	out := make([][2]float64, len(pts))
	for i, p := range pts {
		out[i] = [2]float64{float64(area.tlhc[0]-1) + p[0]*w, float64(area.tlhc[1]-1) + p[1]*h}
	}
	return out, nil
}
