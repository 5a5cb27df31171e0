package dicomio

import (
	"fmt"
	"math"
	"os"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
)

// Lesion prompts: where a person (or a system acting for one) said "this lesion". Three kinds of
// DICOM object carry them, each read by its own file:
//
//   - prompt_sr.go: TID 1500 Imaging Measurement Reports (Comprehensive, Enhanced and
//     Comprehensive 3D SR): measurement groups with SCOORD or SCOORD3D content items;
//   - prompt_gsps.go: Grayscale Softcopy Presentation States: graphic objects on images;
//   - prompt_rtstruct.go: RT Structure Sets: POINT and CLOSED_PLANAR ROI contours.
//
// Reading gives Prompts in the coordinates the object used (image pixels or patient mm);
// prompt_resolve.go places them in a Series. A problem with one prompt never fails the others:
// it becomes a PromptIssue with a reason, and the valid prompts of the same object still count.

// PromptSource says where a prompt came from.
type PromptSource string

const (
	SourceSR       PromptSource = "SR"
	SourceGSPS     PromptSource = "GSPS"
	SourceRTSTRUCT PromptSource = "RTSTRUCT"
	SourceAPI      PromptSource = "API"
)

// SOP classes that carry lesion prompts, by source. The storage SCP accepts them by default.
var PromptSOPClasses = map[string]PromptSource{
	"1.2.840.10008.5.1.4.1.1.88.11": SourceSR,       // Basic Text SR (no coordinates: reported, never a prompt)
	"1.2.840.10008.5.1.4.1.1.88.22": SourceSR,       // Enhanced SR
	"1.2.840.10008.5.1.4.1.1.88.33": SourceSR,       // Comprehensive SR
	"1.2.840.10008.5.1.4.1.1.88.34": SourceSR,       // Comprehensive 3D SR
	"1.2.840.10008.5.1.4.1.1.11.1":  SourceGSPS,     // Grayscale Softcopy Presentation State
	"1.2.840.10008.5.1.4.1.1.481.3": SourceRTSTRUCT, // RT Structure Set
}

// Error kinds of prompts. A PromptIssue's Err is an *Error with one of these as its Kind.
var (
	ErrNotPromptObject   = fmt.Errorf("not a lesion prompt object (SR, GSPS or RTSTRUCT)")
	ErrPromptNoCoords    = fmt.Errorf("no coordinates")
	ErrPromptReference   = fmt.Errorf("referenced image not in the series")
	ErrPromptFrameOfRef  = fmt.Errorf("another frame of reference")
	ErrPromptOutside     = fmt.Errorf("outside the image volume")
	ErrPromptUnits       = fmt.Errorf("coordinates cannot be converted to pixels")
	ErrPromptUnsupported = fmt.Errorf("unsupported prompt")
	ErrPromptOverlap     = fmt.Errorf("same lesion as another prompt")
	ErrPromptStudy       = fmt.Errorf("another study")
)

// Prompt is one lesion as a DICOM object (or an API caller) described it, before it is placed
// in a series. Exactly one of the two coordinate forms is set: image-relative (RefSOPInstanceUID
// with ImagePoints) or patient (FrameOfReferenceUID with PatientPoints).
type Prompt struct {
	Source PromptSource
	// ObjectUID is the SOP Instance UID of the SR, GSPS or RTSTRUCT (empty for the API).
	ObjectUID string
	// Item names the prompt inside its object for people: "measurement group 2",
	// "graphic object 1 of annotation 3", "ROI 2".
	Item string
	// Label is what the author called the lesion: tracking identifier, ROI name, GSPS layer.
	Label string
	// TrackingID and TrackingUID come from an SR measurement group (TID 1501); a SEG that
	// carries them lets a viewer link the segmentation to the measurement.
	TrackingID, TrackingUID string
	// Finding is the SR finding code's meaning (e.g. "Nodule"), when given.
	Finding string
	// Shape is the graphic type: POINT, MULTIPOINT, POLYLINE, POLYGON, CIRCLE, ELLIPSE,
	// CLOSED_PLANAR.
	Shape string

	// RefSOPInstanceUID and RefFrame (1-based, 0 = single-frame) name the image the ImagePoints
	// are on. ImagePoints are (column, row) in the image's continuous pixel space of PS3.3
	// C.18.6.1.2: (0,0) is the top-left corner of the top-left pixel, (0.5,0.5) its centre.
	RefSOPInstanceUID string
	RefFrame          int
	ImagePoints       [][2]float64
	// FrameOfReferenceUID and PatientPoints (mm) describe a prompt in patient coordinates.
	FrameOfReferenceUID string
	PatientPoints       []Vec3
}

// Patient reports whether the prompt is in patient coordinates (not on a referenced image).
func (p Prompt) Patient() bool { return len(p.PatientPoints) > 0 }

// Name identifies the prompt for messages: source, item and label.
func (p Prompt) Name() string {
	s := string(p.Source)
	if p.Item != "" {
		s += " " + p.Item
	}
	if p.Label != "" {
		s += fmt.Sprintf(" (%q)", p.Label)
	}
	return s
}

// PromptIssue is a prompt (or a part of a prompt object) that cannot be used, with the reason.
type PromptIssue struct {
	Source    PromptSource
	ObjectUID string
	Item      string
	Label     string
	Err       error // an *Error whose Kind is one of the ErrPrompt* kinds
	// RefSOPInstanceUID is the image the prompt marks, when it names one.
	RefSOPInstanceUID string
}

func (i PromptIssue) Error() string {
	s := string(i.Source)
	if i.Item != "" {
		s += " " + i.Item
	}
	if i.Label != "" {
		s += fmt.Sprintf(" (%q)", i.Label)
	}
	return s + ": " + i.Err.Error()
}

func issueFor(p Prompt, kind error, attribute, format string, args ...any) PromptIssue {
	return PromptIssue{Source: p.Source, ObjectUID: p.ObjectUID, Item: p.Item, Label: p.Label, RefSOPInstanceUID: p.RefSOPInstanceUID,
		Err: newErr(kind, p.ObjectUID, attribute, format, args...)}
}

// PromptObject is what one SR, GSPS or RTSTRUCT says about lesions.
type PromptObject struct {
	Source            PromptSource
	SOPClassUID       string
	SOPInstanceUID    string
	StudyInstanceUID  string
	SeriesInstanceUID string
	Prompts           []Prompt
	// Issues are the parts that gave no prompt, each with its reason.
	Issues []PromptIssue
}

// IsPromptSOPClass reports whether instances of a SOP class may carry lesion prompts.
func IsPromptSOPClass(sopClassUID string) bool {
	_, ok := PromptSOPClasses[sopClassUID]
	return ok
}

// ReadPrompts reads the lesion prompts of one Part-10 file. The error is set only when the file
// is not a readable prompt object at all; problems with single prompts are Issues.
func ReadPrompts(path string) (*PromptObject, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, newErr(ErrNotDICOM, path, "", "%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, newErr(ErrNotDICOM, path, "", "%v", err)
	}
	ds, err := dicom.Parse(f, st.Size(), nil, dicom.SkipPixelData())
	if err != nil {
		return nil, newErr(ErrNotDICOM, path, "", "%v", err)
	}
	return PromptsFromDataset(ds, path)
}

// PromptsFromDataset is ReadPrompts for a parsed dataset; name identifies it in errors.
func PromptsFromDataset(ds dicom.Dataset, name string) (*PromptObject, error) {
	a := attrs{elems: ds.Elements, instance: name}
	obj := &PromptObject{
		SOPClassUID: a.str(tag.SOPClassUID), SOPInstanceUID: a.str(tag.SOPInstanceUID),
		StudyInstanceUID: a.str(tag.StudyInstanceUID), SeriesInstanceUID: a.str(tag.SeriesInstanceUID),
	}
	if obj.SOPInstanceUID == "" {
		return nil, newErr(ErrMissingAttribute, name, tagName(tag.SOPInstanceUID), "absent or empty")
	}
	a.instance = obj.SOPInstanceUID
	src, ok := PromptSOPClasses[obj.SOPClassUID]
	if !ok {
		return nil, newErr(ErrNotPromptObject, obj.SOPInstanceUID, tagName(tag.SOPClassUID), "%q", obj.SOPClassUID)
	}
	obj.Source = src
	switch src {
	case SourceSR:
		readSRPrompts(a, obj)
	case SourceGSPS:
		readGSPSPrompts(a, obj)
	case SourceRTSTRUCT:
		readRTSTRUCTPrompts(a, obj)
	}
	if len(obj.Prompts) == 0 && len(obj.Issues) == 0 {
		obj.issue("", "", ErrPromptNoCoords, "", "the object describes no lesion with coordinates")
	}
	return obj, nil
}

func (o *PromptObject) issue(item, label string, kind error, attribute, format string, args ...any) {
	o.Issues = append(o.Issues, PromptIssue{Source: o.Source, ObjectUID: o.SOPInstanceUID, Item: item, Label: label,
		Err: newErr(kind, o.SOPInstanceUID, attribute, format, args...)})
}

func (o *PromptObject) add(p Prompt) {
	p.Source = o.Source
	p.ObjectUID = o.SOPInstanceUID
	o.Prompts = append(o.Prompts, p)
}

// pairs turns flat (column, row) graphic data into points.
func pairs(v []float64) ([][2]float64, bool) {
	if len(v) == 0 || len(v)%2 != 0 {
		return nil, false
	}
	out := make([][2]float64, len(v)/2)
	for i := range out {
		out[i] = [2]float64{v[2*i], v[2*i+1]}
		if !finite(out[i][0]) || !finite(out[i][1]) {
			return nil, false
		}
	}
	return out, true
}

// triples turns flat (x, y, z) data into patient points.
func triples(v []float64) ([]Vec3, bool) {
	if len(v) == 0 || len(v)%3 != 0 {
		return nil, false
	}
	out := make([]Vec3, len(v)/3)
	for i := range out {
		out[i] = Vec3{v[3*i], v[3*i+1], v[3*i+2]}
		for _, x := range out[i] {
			if !finite(x) {
				return nil, false
			}
		}
	}
	return out, true
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// checkGraphic validates the point count of a 2D or 3D graphic type (PS3.3 C.18.6.1.2 and
// C.18.9.1.2): POINT 1, CIRCLE 2 (centre, a point on the circle), ELLIPSE 4 (two axes),
// POLYLINE and POLYGON at least 1, MULTIPOINT at least 1. An unknown type is unsupported.
func checkGraphic(shape string, n int) error {
	switch shape {
	case "POINT":
		if n != 1 {
			return fmt.Errorf("POINT with %d points, want 1", n)
		}
	case "CIRCLE":
		if n != 2 {
			return fmt.Errorf("CIRCLE with %d points, want 2 (centre and a point on the circle)", n)
		}
	case "ELLIPSE", "ELLIPSOID":
		if n != 4 && !(shape == "ELLIPSOID" && n == 6) {
			return fmt.Errorf("%s with %d points, want 4 (two axes)", shape, n)
		}
	case "POLYLINE", "POLYGON", "MULTIPOINT", "INTERPOLATED":
		if n < 1 {
			return fmt.Errorf("%s without points", shape)
		}
	default:
		return fmt.Errorf("graphic type %q", shape)
	}
	return nil
}
