package dicomio

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// The RT Structure Set IOD (PS3.3 A.19), the object radiotherapy planning systems import:
// Patient and Study copied from the source, RT Series, General Equipment, Structure Set, ROI
// Contour, RT ROI Observations and SOP Common, one builder each. Masks are traced exactly along
// pixel boundaries (TraceMask) on every source slice and written as CLOSED_PLANAR contours in
// patient millimetres from that slice's own ImagePositionPatient, the series' orientation and
// pixel spacing, so oblique and gantry-tilted series come out in the right place. Holes follow
// the even-odd convention documented on TraceMask. An ROI whose masks are all empty is written
// without contours: the structure set still states "nothing found".

// RTStructureSetStorage is the SOP Class UID of RT Structure Set objects.
const RTStructureSetStorage = "1.2.840.10008.5.1.4.1.1.481.3"

// studyComponentClass is the SOP class named in RTReferencedStudySequence (by convention the
// retired Detached Study Management class, as planning systems expect).
const studyComponentClass = "1.2.840.10008.3.1.2.3.1"

// ROIDescription describes one ROI (region of interest) of a structure set. ROIs are numbered
// from 1 in the order given.
type ROIDescription struct {
	// Name follows AAPM TG-263: at most 16 characters from A-Z a-z 0-9 _ ^ (no spaces), e.g.
	// GTVp_R1 or GTVp_Cons.
	Name string
	// Description is ROIDescription (ST), plain words, optional.
	Description string
	// InterpretedType is RTROIInterpretedType, e.g. GTV (a lesion), ORGAN, CONTROL.
	InterpretedType string
	// Algorithm gives ROIGenerationAlgorithm (its Type) and ROIGenerationDescription (name and
	// version); Type is required, name and version unless MANUAL.
	Algorithm Algorithm
	// Color is ROIDisplayColor (RGB).
	Color [3]uint8
}

// RTStructDescription is everything a structure set needs besides the source and the masks.
type RTStructDescription struct {
	ROIs []ROIDescription
	// StructureSetLabel (SH, at most 16 characters) is required; StructureSetName (LO) and
	// StructureSetDescription (ST) are optional.
	StructureSetLabel       string
	StructureSetName        string
	StructureSetDescription string
	SeriesInstanceUID       string // empty: a new UID
	SOPInstanceUID          string // empty: a new UID
	SeriesNumber            int    // default 1
	InstanceNumber          int    // default 1
	SeriesDescription       string
	Equipment               Equipment // required in full
	ContentTime             time.Time // zero: now
	// Predecessor, when set, is the SOP Instance UID of the RT Structure Set this one replaces
	// (PredecessorStructureSetSequence).
	Predecessor string
}

// RTStructInfo reports what EncodeRTStruct wrote.
type RTStructInfo struct {
	SOPInstanceUID    string
	SeriesInstanceUID string
	Contours          int // CLOSED_PLANAR contours written, all ROIs together
	Points            int
	Size              int // bytes
}

// roiContour is one traced contour of one ROI.
type roiContour struct {
	slice int
	data  []string // ContourData values, x\y\z per point
}

// EncodeRTStruct builds an RT Structure Set Part-10 file. masks is indexed [roi][slice] like
// EncodeSEG's (nil = empty; non-zero = inside).
func EncodeRTStruct(src *Series, desc RTStructDescription, masks [][][]uint8) ([]byte, *RTStructInfo, error) {
	if err := desc.validate(src, masks); err != nil {
		return nil, nil, err
	}
	now := fillIdentity(desc.ContentTime, &desc.SOPInstanceUID, &desc.SeriesInstanceUID)

	info := &RTStructInfo{SOPInstanceUID: desc.SOPInstanceUID, SeriesInstanceUID: desc.SeriesInstanceUID}
	contours := make([][]roiContour, len(desc.ROIs))
	for r := range desc.ROIs {
		for i, m := range masks[r] {
			if m == nil {
				continue
			}
			for _, loop := range TraceMask(m, src.Rows, src.Cols) {
				data := contourData(src, i, loop)
				if n := len(strings.Join(data, `\`)); n > 0xFFFE {
					return nil, nil, newErr(ErrInvalidRTStruct, "", fmt.Sprintf("ROI %d (%s) ContourData (3006,0050)", r+1, desc.ROIs[r].Name),
						"a contour of %d points on slice %d needs %d bytes, more than the 65534 a DS value may hold", len(loop), i+1, n)
				}
				contours[r] = append(contours[r], roiContour{slice: i, data: data})
				info.Contours++
				info.Points += len(loop)
			}
		}
	}

	var ds []element
	ds = append(ds, src.patientStudy...)
	ds = append(ds, seriesModule("RTSTRUCT", desc.SeriesInstanceUID, max(desc.SeriesNumber, 1), desc.SeriesDescription, now)...)
	ds = append(ds, attr(tag.OperatorsName)) // RT Series: Type 2
	ds = append(ds, frameOfReferenceModule(src)...)
	ds = append(ds, desc.Equipment.module()...)
	ds = append(ds, desc.structureSetModule(src, now)...)
	ds = append(ds, roiContourModule(src, desc.ROIs, contours))
	ds = append(ds, rtROIObservationsModule(desc.ROIs))
	ds = append(ds, sopCommonModule(RTStructureSetStorage, desc.SOPInstanceUID, now)...)
	ds = withCharacterSet(ds)

	data := encodePart10(RTStructureSetStorage, desc.SOPInstanceUID, ds)
	info.Size = len(data)
	return data, info, nil
}

// contourData maps a loop of grid corners to patient coordinates on slice i: corner (X, Y) is
// pixel position (column, row Y-0.5) from the centre of the first transmitted pixel.
func contourData(src *Series, i int, loop Loop) []string {
	o := src.Slices[i].Position
	rowDir := Vec3{src.Orientation[0], src.Orientation[1], src.Orientation[2]} // along a row: columns grow
	colDir := Vec3{src.Orientation[3], src.Orientation[4], src.Orientation[5]} // along a column: rows grow
	dc, dr := src.PixelSpacing[1], src.PixelSpacing[0]
	out := make([]string, 0, 3*len(loop))
	for _, p := range loop {
		x, y := (float64(p.X)-0.5)*dc, (float64(p.Y)-0.5)*dr
		for k := 0; k < 3; k++ {
			out = append(out, formatMM(o[k]+x*rowDir[k]+y*colDir[k]))
		}
	}
	return out
}

// formatMM writes a coordinate to the micrometre (far below any pixel size), keeping ContourData
// short: at most 9 characters for a body-sized coordinate.
func formatMM(v float64) string {
	s := strconv.FormatFloat(v, 'f', 3, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

// structureSetModule: label, date, the frame of reference with every source image, the ROIs.
func (d *RTStructDescription) structureSetModule(src *Series, now time.Time) []element {
	var images [][]element
	for _, sl := range src.Slices {
		images = append(images, contourImageItem(sl))
	}
	out := []element{
		attr(tag.StructureSetLabel, d.StructureSetLabel),
		attr(tag.InstanceNumber, strconv.Itoa(max(d.InstanceNumber, 1))),
		attr(tag.StructureSetDate, dicomDate(now)),
		attr(tag.StructureSetTime, dicomTime(now)),
		attrSeq(tag.ReferencedFrameOfReferenceSequence, []element{
			attr(tag.FrameOfReferenceUID, src.FrameOfReferenceUID),
			attrSeq(tag.RTReferencedStudySequence, []element{
				attr(tag.ReferencedSOPClassUID, studyComponentClass),
				attr(tag.ReferencedSOPInstanceUID, src.StudyInstanceUID),
				attrSeq(tag.RTReferencedSeriesSequence, []element{
					attr(tag.SeriesInstanceUID, src.SeriesInstanceUID),
					attrSeq(tag.ContourImageSequence, images...),
				}),
			}),
		}),
	}
	if d.StructureSetName != "" {
		out = append(out, attr(tag.StructureSetName, d.StructureSetName))
	}
	if d.StructureSetDescription != "" {
		out = append(out, attr(tag.StructureSetDescription, d.StructureSetDescription))
	}
	if d.Predecessor != "" {
		out = append(out, attrSeq(tag.PredecessorStructureSetSequence, []element{
			attr(tag.ReferencedSOPClassUID, RTStructureSetStorage), attr(tag.ReferencedSOPInstanceUID, d.Predecessor)}))
	}
	rois := make([][]element, len(d.ROIs))
	for i, r := range d.ROIs {
		it := []element{
			attr(tag.ROINumber, strconv.Itoa(i+1)),
			attr(tag.ReferencedFrameOfReferenceUID, src.FrameOfReferenceUID),
			attr(tag.ROIName, r.Name),
			attr(tag.ROIGenerationAlgorithm, string(r.Algorithm.Type)),
		}
		if r.Description != "" {
			it = append(it, attr(tag.ROIDescription, r.Description))
		}
		if r.Algorithm.Type != Manual {
			it = append(it, attr(tag.ROIGenerationDescription, r.Algorithm.Name+" "+r.Algorithm.Version))
		}
		rois[i] = it
	}
	return append(out, attrSeq(tag.StructureSetROISequence, rois...))
}

func contourImageItem(sl Slice) []element {
	it := []element{attr(tag.ReferencedSOPClassUID, sl.SOPClassUID), attr(tag.ReferencedSOPInstanceUID, sl.SOPInstanceUID)}
	if sl.FrameNumber > 0 {
		it = append(it, attr(tag.ReferencedFrameNumber, strconv.Itoa(sl.FrameNumber)))
	}
	return it
}

// roiContourModule: per ROI its colour and contours, each referencing its source image.
func roiContourModule(src *Series, rois []ROIDescription, contours [][]roiContour) element {
	items := make([][]element, len(rois))
	for r, roi := range rois {
		it := []element{
			attr(tag.ReferencedROINumber, strconv.Itoa(r+1)),
			attr(tag.ROIDisplayColor, strconv.Itoa(int(roi.Color[0])), strconv.Itoa(int(roi.Color[1])), strconv.Itoa(int(roi.Color[2]))),
		}
		if len(contours[r]) > 0 {
			seq := make([][]element, len(contours[r]))
			for k, c := range contours[r] {
				seq[k] = []element{
					attrSeq(tag.ContourImageSequence, contourImageItem(src.Slices[c.slice])),
					attr(tag.ContourGeometricType, "CLOSED_PLANAR"),
					attr(tag.NumberOfContourPoints, strconv.Itoa(len(c.data)/3)),
					attr(tag.ContourNumber, strconv.Itoa(k+1)),
					attr(tag.ContourData, c.data...),
				}
			}
			it = append(it, attrSeq(tag.ContourSequence, seq...))
		}
		items[r] = it
	}
	return attrSeq(tag.ROIContourSequence, items...)
}

// rtROIObservationsModule: one observation per ROI with its interpreted type.
func rtROIObservationsModule(rois []ROIDescription) element {
	items := make([][]element, len(rois))
	for r, roi := range rois {
		items[r] = []element{
			attr(tag.ObservationNumber, strconv.Itoa(r+1)),
			attr(tag.ReferencedROINumber, strconv.Itoa(r+1)),
			attr(tag.RTROIInterpretedType, roi.InterpretedType),
			attr(tag.ROIInterpreter),
		}
	}
	return attrSeq(tag.RTROIObservationsSequence, items...)
}

// rtROIInterpretedTypes are the defined terms of RTROIInterpretedType (PS3.3 C.8.8.8).
var rtROIInterpretedTypes = map[string]bool{
	"EXTERNAL": true, "PTV": true, "CTV": true, "GTV": true, "TREATED_VOLUME": true, "IRRAD_VOLUME": true,
	"OAR": true, "BOLUS": true, "AVOIDANCE": true, "ORGAN": true, "MARKER": true, "REGISTRATION": true,
	"ISOCENTER": true, "CONTRAST_AGENT": true, "CAVITY": true, "BRACHY_CHANNEL": true, "BRACHY_ACCESSORY": true,
	"BRACHY_SRC_APP": true, "BRACHY_CHNL_SHLD": true, "SUPPORT": true, "FIXATION": true, "DOSE_REGION": true,
	"CONTROL": true, "DOSE_MEASUREMENT": true,
}

// ValidRTROIInterpretedType reports whether t is a defined term of RTROIInterpretedType.
func ValidRTROIInterpretedType(t string) bool { return rtROIInterpretedTypes[t] }

// CheckTG263Name reports why name is not an AAPM TG-263 structure name (nil when it is): at most
// 16 characters, only letters, digits, underscore and caret, no spaces.
func CheckTG263Name(name string) error {
	if name == "" || len(name) > 16 {
		return fmt.Errorf("%q: TG-263 names have 1 to 16 characters", name)
	}
	for _, r := range name {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '^') {
			return fmt.Errorf("%q: TG-263 names use only letters, digits, _ and ^ (no spaces)", name)
		}
	}
	return nil
}

func (d *RTStructDescription) validate(src *Series, masks [][][]uint8) error {
	bad := func(attr, format string, args ...any) error {
		return newErr(ErrInvalidRTStruct, "", attr, format, args...)
	}
	if err := checkSource(ErrInvalidRTStruct, src); err != nil {
		return err
	}
	if src.PixelSpacing[0] <= 0 || src.PixelSpacing[1] <= 0 {
		return bad("source PixelSpacing (0028,0030)", "%v: contours need the pixel size in mm", src.PixelSpacing)
	}
	if len(d.ROIs) == 0 {
		return bad("StructureSetROISequence (3006,0020)", "no ROIs")
	}
	if err := checkSH(ErrInvalidRTStruct, d.StructureSetLabel, "StructureSetLabel (3006,0002)", true); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"StructureSetName (3006,0004)", d.StructureSetName}, {"SeriesDescription (0008,103E)", d.SeriesDescription},
	} {
		if err := checkLOKind(ErrInvalidRTStruct, f.v, f.name, false); err != nil {
			return err
		}
	}
	if len(d.StructureSetDescription) > 1024 {
		return bad("StructureSetDescription (3006,0006)", "longer than 1024 characters")
	}
	if err := d.Equipment.validate(ErrInvalidRTStruct); err != nil {
		return err
	}
	if err := checkIdentityUIDs(ErrInvalidRTStruct, d.SOPInstanceUID, d.SeriesInstanceUID); err != nil {
		return err
	}
	if err := checkUID(ErrInvalidRTStruct, d.Predecessor, "PredecessorStructureSetSequence (3006,0018)", false); err != nil {
		return err
	}
	names := map[string]int{}
	for i, r := range d.ROIs {
		where := func(a string) string { return fmt.Sprintf("ROI %d %s", i+1, a) }
		if err := CheckTG263Name(r.Name); err != nil {
			return bad(where("ROIName (3006,0026)"), "%v", err)
		}
		if j, dup := names[r.Name]; dup {
			return bad(where("ROIName (3006,0026)"), "%q is also the name of ROI %d", r.Name, j)
		}
		names[r.Name] = i + 1
		if len(r.Description) > 1024 {
			return bad(where("ROIDescription (3006,0028)"), "longer than 1024 characters")
		}
		if !rtROIInterpretedTypes[r.InterpretedType] {
			return bad(where("RTROIInterpretedType (3006,00A4)"), "%q is not a defined term (GTV, CTV, PTV, ORGAN, CONTROL, ...)", r.InterpretedType)
		}
		switch r.Algorithm.Type {
		case Automatic, SemiAutomatic:
			if err := checkLOKind(ErrInvalidRTStruct, r.Algorithm.Name+" "+r.Algorithm.Version, where("ROIGenerationDescription (3006,0038)"), true); err != nil {
				return err
			}
			if strings.TrimSpace(r.Algorithm.Name) == "" || strings.TrimSpace(r.Algorithm.Version) == "" {
				return bad(where("ROIGenerationDescription (3006,0038)"), "algorithm name and version are required for %s ROIs", r.Algorithm.Type)
			}
		case Manual:
		default:
			return bad(where("ROIGenerationAlgorithm (3006,0036)"), "%q, want AUTOMATIC, SEMIAUTOMATIC or MANUAL", r.Algorithm.Type)
		}
	}
	if len(masks) != len(d.ROIs) {
		return bad("masks", "%d mask sets for %d ROIs", len(masks), len(d.ROIs))
	}
	n := src.Rows * src.Cols
	for r, perSlice := range masks {
		if len(perSlice) != len(src.Slices) {
			return bad("masks", "ROI %d has %d masks for %d source slices", r+1, len(perSlice), len(src.Slices))
		}
		for i, m := range perSlice {
			if m != nil && len(m) != n {
				return bad("masks", "ROI %d slice %d: %d values for %dx%d", r+1, i, len(m), src.Rows, src.Cols)
			}
		}
	}
	return nil
}
