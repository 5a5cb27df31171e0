package dicomio

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/suyashkumar/dicom/pkg/tag"

	"dpersona/internal/dicomstd"
)

// The Segmentation IOD (PS3.3 A.51), built the highdicom way: the caller describes the object
// (SEGDescription, one SegmentDescription per segment), the description is validated as a whole
// before anything is encoded (errors name the attribute), and each module of the IOD has one
// builder below. Identity that must survive re-encoding is supplied by the caller, never made up
// here: series and instance UIDs, a segment's TrackingID/TrackingUID, and the algorithm that
// produced it.

// SegmentationStorage is the SOP Class UID of DICOM-SEG objects.
const SegmentationStorage = "1.2.840.10008.5.1.4.1.1.66.4"

// SegmentationType is (0062,0001).
type SegmentationType string

const (
	Binary     SegmentationType = "BINARY"
	Fractional SegmentationType = "FRACTIONAL"
)

// AlgorithmType is SegmentAlgorithmType (0062,0008).
type AlgorithmType string

const (
	// Automatic: the algorithm alone drew the segment (the whole-series screening mode).
	Automatic AlgorithmType = "AUTOMATIC"
	// SemiAutomatic: the algorithm drew it from a person's input (a radiologist's lesion prompt).
	SemiAutomatic AlgorithmType = "SEMIAUTOMATIC"
	// Manual: a person drew it; no algorithm identification is written.
	Manual AlgorithmType = "MANUAL"
)

// AlgorithmFamilyAI is 123110 DCM "Artificial Intelligence" (CID 7162).
var AlgorithmFamilyAI = Code{Scheme: "DCM", Code: "123110", Meaning: "Artificial Intelligence"}

// AlgorithmFamily maps a manifest's algorithm.family name to its code; ok is false for an
// unknown name.
func AlgorithmFamily(name string) (Code, bool) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "artificial intelligence", "ai", "123110":
		return AlgorithmFamilyAI, true
	case "deep learning", "130405":
		return Code{Scheme: "DCM", Code: "130405", Meaning: "Deep Learning"}, true
	case "machine learning", "130409":
		return Code{Scheme: "DCM", Code: "130409", Meaning: "Machine Learning"}, true
	}
	return Code{}, false
}

// Algorithm identifies how a segment was made: SegmentAlgorithmType, SegmentAlgorithmName and
// the Segmentation Algorithm Identification Sequence (name, version, family). Every field is
// required unless Type is Manual, in which case all others must be empty.
type Algorithm struct {
	Type    AlgorithmType
	Name    string
	Version string
	Family  Code // e.g. AlgorithmFamilyAI
}

// SegmentDescription describes one segment. Segments are numbered from 1 in the order given.
//
// Several lesions go into one SEG as one segment each (or one per rater style, sample, band...):
// append their descriptions and their masks at the same index. A lesion measured by a radiologist
// carries the TrackingID and TrackingUID of that measurement (TID 1500) so viewers and later
// versions link the segment to it; segments of the same lesion share both.
type SegmentDescription struct {
	Label       string // SegmentLabel (LO), e.g. "Nodule rater 1"
	Description string // SegmentDescription (ST), optional, plain words for a clinician
	Category    Code   // SegmentedPropertyCategoryCodeSequence
	Type        Code   // SegmentedPropertyTypeCodeSequence
	Algorithm   Algorithm
	// TrackingID (UT) and TrackingUID (UI) are given together or not at all; the caller keeps
	// them stable across re-encodings of the same finding.
	TrackingID  string
	TrackingUID string
	// AnatomicRegion, when set, is written as AnatomicRegionSequence, e.g. Lung.
	AnatomicRegion *Code
	// DisplayColor, when set, is written as RecommendedDisplayCIELabValue (from sRGB).
	DisplayColor *[3]uint8
}

// SEGDescription is everything a SEG needs besides the source series and the masks.
type SEGDescription struct {
	Type SegmentationType
	// MaxFractionalValue for FRACTIONAL (default 255): a mask value v means probability v/max.
	MaxFractionalValue int
	Segments           []SegmentDescription
	SeriesInstanceUID  string // empty: a new UID
	SOPInstanceUID     string // empty: a new UID
	SeriesNumber       int    // default 1
	InstanceNumber     int    // default 1
	SeriesDescription  string
	// ContentLabel is CS: upper-case A-Z, 0-9, space and underscore, at most 16 characters
	// (default "SEGMENTATION").
	ContentLabel       string
	ContentDescription string
	ContentCreatorName string // PN, optional
	// Equipment is required in full (Enhanced General Equipment, Type 1).
	Equipment   Equipment
	ContentTime time.Time // zero: now
}

// SEGInfo reports what WriteSEG wrote.
type SEGInfo struct {
	SOPInstanceUID    string
	SeriesInstanceUID string
	Frames            int // frames written (non-empty segment/slice pairs)
	Size              int // bytes
}

// WriteSEGFile writes the SEG to path, atomically and durably (dicomstd.WriteFileAtomic).
func WriteSEGFile(path string, src *Series, desc SEGDescription, masks [][][]uint8) (*SEGInfo, error) {
	data, info, err := EncodeSEG(src, desc, masks)
	if err != nil {
		return nil, err
	}
	if err := dicomstd.WriteFileAtomic(path, data, 0o644); err != nil {
		return nil, err
	}
	return info, nil
}

// WriteSEG encodes the SEG (see EncodeSEG) to w.
func WriteSEG(w io.Writer, src *Series, desc SEGDescription, masks [][][]uint8) (*SEGInfo, error) {
	data, info, err := EncodeSEG(src, desc, masks)
	if err != nil {
		return nil, err
	}
	_, err = w.Write(data)
	return info, err
}

// segFrame is one encoded frame: a segment on a source slice.
type segFrame struct{ segment, slice int }

// EncodeSEG builds a Segmentation Storage Part-10 file (explicit VR little endian).
// masks is indexed [segment][slice] with slices in src.Slices order; each mask is Rows*Cols
// values, row-major, or nil for an empty frame. BINARY: non-zero is inside. FRACTIONAL: values
// 0..MaxFractionalValue (see QuantizeFraction). Frames whose mask is all zero are omitted; if every
// frame is empty, the first frame of segment 1 is kept so the object still states "nothing found".
func EncodeSEG(src *Series, desc SEGDescription, masks [][][]uint8) ([]byte, *SEGInfo, error) {
	if err := desc.validate(src, masks); err != nil {
		return nil, nil, err
	}
	now := fillIdentity(desc.ContentTime, &desc.SOPInstanceUID, &desc.SeriesInstanceUID)

	var frames []segFrame
	for s := range masks {
		for i, m := range masks[s] {
			if m != nil && !allZero(m) {
				frames = append(frames, segFrame{s, i})
			}
		}
	}
	if len(frames) == 0 {
		frames = []segFrame{{0, 0}}
	}

	var ds []element
	ds = append(ds, src.patientStudy...) // Patient, General Study, Patient Study, Clinical Trial
	ds = append(ds, seriesModule("SEG", desc.SeriesInstanceUID, max(desc.SeriesNumber, 1), desc.SeriesDescription, now)...)
	ds = append(ds, frameOfReferenceModule(src)...)
	ds = append(ds, desc.Equipment.module()...)
	ds = append(ds, desc.segmentationImageModule(src, masks, len(frames), now)...)
	ds = append(ds, segmentPixelData(desc, src, masks, frames))
	ds = append(ds, segmentSequence(desc.Segments))
	ds = append(ds, dimensionModule()...)
	ds = append(ds, sharedFunctionalGroups(src))
	ds = append(ds, perFrameFunctionalGroups(src, frames))
	ds = append(ds, commonInstanceReferenceModule(src))
	ds = append(ds, sopCommonModule(SegmentationStorage, desc.SOPInstanceUID, now)...)
	ds = withCharacterSet(ds)

	data := encodePart10(SegmentationStorage, desc.SOPInstanceUID, ds)
	return data, &SEGInfo{SOPInstanceUID: desc.SOPInstanceUID, SeriesInstanceUID: desc.SeriesInstanceUID, Frames: len(frames), Size: len(data)}, nil
}

// segmentationImageModule is General Image, Segmentation Image, Multi-frame and the Image Pixel
// description (PixelData itself is segmentPixelData).
func (d *SEGDescription) segmentationImageModule(src *Series, masks [][][]uint8, frames int, now time.Time) []element {
	overlap := "NO"
	if len(masks) > 1 && segmentsOverlap(masks, src.Rows*src.Cols) {
		overlap = "YES"
	}
	out := []element{
		attr(tag.ImageType, "DERIVED", "PRIMARY"),
		attr(tag.InstanceNumber, strconv.Itoa(max(d.InstanceNumber, 1))),
		attr(tag.ContentDate, dicomDate(now)),
		attr(tag.ContentTime, dicomTime(now)),
		attr(tag.ContentLabel, orDefault(d.ContentLabel, "SEGMENTATION")),
		attr(tag.ContentDescription, d.ContentDescription),
		attr(tag.ContentCreatorName, d.ContentCreatorName),
		attr(tag.SegmentationType, string(d.Type)),
		attr(tag.SegmentsOverlap, overlap),
		attr(tag.LossyImageCompression, "00"),
		attr(tag.NumberOfFrames, strconv.Itoa(frames)),
		attrUS(tag.SamplesPerPixel, 1),
		attr(tag.PhotometricInterpretation, "MONOCHROME2"),
		attrUS(tag.Rows, uint16(src.Rows)),
		attrUS(tag.Columns, uint16(src.Cols)),
		attrUS(tag.PixelRepresentation, 0),
	}
	if d.Type == Binary {
		return append(out, attrUS(tag.BitsAllocated, 1), attrUS(tag.BitsStored, 1), attrUS(tag.HighBit, 0))
	}
	return append(out, attrUS(tag.BitsAllocated, 8), attrUS(tag.BitsStored, 8), attrUS(tag.HighBit, 7),
		attr(tag.SegmentationFractionalType, "PROBABILITY"),
		attrUS(tag.MaximumFractionalValue, uint16(d.maxFractional())))
}

// segmentPixelData packs the frames. BINARY frames form one continuous LSB-first bit stream
// (PS3.5 8.1.1), no padding between frames; the encoder pads the total to an even length.
func segmentPixelData(d SEGDescription, src *Series, masks [][][]uint8, frames []segFrame) element {
	n := src.Rows * src.Cols
	var pixels []byte
	if d.Type == Binary {
		pixels = make([]byte, (len(frames)*n+7)/8)
		bit := 0
		for _, f := range frames {
			m := masks[f.segment][f.slice]
			if m == nil {
				bit += n
				continue
			}
			for _, v := range m {
				if v != 0 {
					pixels[bit>>3] |= 1 << uint(bit&7)
				}
				bit++
			}
		}
	} else {
		pixels = make([]byte, len(frames)*n)
		for k, f := range frames {
			if m := masks[f.segment][f.slice]; m != nil {
				copy(pixels[k*n:], m)
			}
		}
	}
	return attrOB(tag.PixelData, pixels)
}

// segmentSequence is the Segment Sequence: one Segment Description Macro item per segment.
func segmentSequence(segments []SegmentDescription) element {
	items := make([][]element, len(segments))
	for i, sg := range segments {
		it := []element{
			attrUS(tag.SegmentNumber, uint16(i+1)),
			attr(tag.SegmentLabel, sg.Label),
			attr(tag.SegmentAlgorithmType, string(sg.Algorithm.Type)),
			attrSeq(tag.SegmentedPropertyCategoryCodeSequence, codeItem(sg.Category)),
			attrSeq(tag.SegmentedPropertyTypeCodeSequence, codeItem(sg.Type)),
		}
		if sg.Algorithm.Type != Manual {
			it = append(it,
				attr(tag.SegmentAlgorithmName, sg.Algorithm.Name),
				attrSeq(tag.SegmentationAlgorithmIdentificationSequence, []element{
					attrSeq(tag.AlgorithmFamilyCodeSequence, codeItem(sg.Algorithm.Family)),
					attr(tag.AlgorithmVersion, sg.Algorithm.Version),
					attr(tag.AlgorithmName, sg.Algorithm.Name),
				}))
		}
		if sg.Description != "" {
			it = append(it, attr(tag.SegmentDescription, sg.Description))
		}
		if sg.TrackingID != "" {
			it = append(it, attr(tag.TrackingID, sg.TrackingID), attr(tag.TrackingUID, sg.TrackingUID))
		}
		if sg.AnatomicRegion != nil {
			it = append(it, attrSeq(tag.AnatomicRegionSequence, codeItem(*sg.AnatomicRegion)))
		}
		if sg.DisplayColor != nil {
			l, a, b := srgbToDICOMLab(*sg.DisplayColor)
			it = append(it, attrUS(tag.RecommendedDisplayCIELabValue, l, a, b))
		}
		items[i] = it
	}
	return attrSeq(tag.SegmentSequence, items...)
}

// dimensionModule is the Multi-frame Dimension module: segment number, then image position.
func dimensionModule() []element {
	org := dicomstd.NewUID()
	return []element{
		attrSeq(tag.DimensionOrganizationSequence, []element{attr(tag.DimensionOrganizationUID, org)}),
		attrSeq(tag.DimensionIndexSequence,
			[]element{attr(tag.DimensionOrganizationUID, org), attrAT(tag.DimensionIndexPointer, tag.ReferencedSegmentNumber),
				attrAT(tag.FunctionalGroupPointer, tag.SegmentIdentificationSequence), attr(tag.DimensionDescriptionLabel, "Segment Number")},
			[]element{attr(tag.DimensionOrganizationUID, org), attrAT(tag.DimensionIndexPointer, tag.ImagePositionPatient),
				attrAT(tag.FunctionalGroupPointer, tag.PlanePositionSequence), attr(tag.DimensionDescriptionLabel, "Image Position Patient")},
		),
	}
}

// sharedFunctionalGroups: orientation and pixel measures hold for every frame.
func sharedFunctionalGroups(src *Series) element {
	measures := []element{attr(tag.PixelSpacing, formatDSs(src.PixelSpacing[0], src.PixelSpacing[1])...)}
	thickness := src.SliceThickness
	if thickness <= 0 {
		thickness = src.SliceSpacing
	}
	if thickness > 0 {
		measures = append(measures, attr(tag.SliceThickness, formatDS(thickness)))
	}
	return attrSeq(tag.SharedFunctionalGroupsSequence, []element{
		attrSeq(tag.PlaneOrientationSequence, []element{attr(tag.ImageOrientationPatient, formatDSs(src.Orientation[:]...)...)}),
		attrSeq(tag.PixelMeasuresSequence, measures),
	})
}

var (
	sourceImagePurpose     = Code{Scheme: "DCM", Code: "121322", Meaning: "Source image for image processing operation"}
	segmentationDerivation = Code{Scheme: "DCM", Code: "113076", Meaning: "Segmentation"}
)

// perFrameFunctionalGroups: source image, dimension index, position and segment of each frame.
func perFrameFunctionalGroups(src *Series, frames []segFrame) element {
	items := make([][]element, len(frames))
	for k, f := range frames {
		sl := src.Slices[f.slice]
		source := []element{
			attr(tag.ReferencedSOPClassUID, sl.SOPClassUID),
			attr(tag.ReferencedSOPInstanceUID, sl.SOPInstanceUID),
			attr(tag.SpatialLocationsPreserved, "YES"),
			attrSeq(tag.PurposeOfReferenceCodeSequence, codeItem(sourceImagePurpose)),
		}
		if sl.FrameNumber > 0 {
			source = append(source, attr(tag.ReferencedFrameNumber, strconv.Itoa(sl.FrameNumber)))
		}
		items[k] = []element{
			attrSeq(tag.DerivationImageSequence, []element{
				attrSeq(tag.SourceImageSequence, source),
				attrSeq(tag.DerivationCodeSequence, codeItem(segmentationDerivation)),
			}),
			attrSeq(tag.FrameContentSequence, []element{attrUL(tag.DimensionIndexValues, uint32(f.segment+1), uint32(f.slice+1))}),
			attrSeq(tag.PlanePositionSequence, []element{attr(tag.ImagePositionPatient, formatDSs(sl.Position[:]...)...)}),
			attrSeq(tag.SegmentIdentificationSequence, []element{attrUS(tag.ReferencedSegmentNumber, uint16(f.segment+1))}),
		}
	}
	return attrSeq(tag.PerFrameFunctionalGroupsSequence, items...)
}

// commonInstanceReferenceModule references every source instance once.
func commonInstanceReferenceModule(src *Series) element {
	return attrSeq(tag.ReferencedSeriesSequence, []element{
		attrSeq(tag.ReferencedInstanceSequence, sourceImageReferences(src)...),
		attr(tag.SeriesInstanceUID, src.SeriesInstanceUID),
	})
}

func allZero(m []uint8) bool {
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func segmentsOverlap(masks [][][]uint8, n int) bool {
	for i := range masks[0] {
		count := make([]uint8, n)
		for s := range masks {
			m := masks[s][i]
			if m == nil {
				continue
			}
			for p, v := range m {
				if v != 0 {
					if count[p] > 0 {
						return true
					}
					count[p] = 1
				}
			}
		}
	}
	return false
}

func (d *SEGDescription) maxFractional() int {
	if d.MaxFractionalValue == 0 {
		return 255
	}
	return d.MaxFractionalValue
}

// QuantizeFraction maps probabilities in [0,1] to 0..max (rounding, clamped) for a FRACTIONAL SEG.
func QuantizeFraction(prob []float32, max int) []uint8 {
	out := make([]uint8, len(prob))
	for i, p := range prob {
		v := float64(p) * float64(max)
		switch {
		case !(v > 0): // also NaN
			out[i] = 0
		case v >= float64(max):
			out[i] = uint8(max)
		default:
			out[i] = uint8(v + 0.5)
		}
	}
	return out
}

// Threshold returns the BINARY mask prob > threshold.
func Threshold(prob []float32, threshold float32) []uint8 {
	out := make([]uint8, len(prob))
	for i, p := range prob {
		if p > threshold {
			out[i] = 1
		}
	}
	return out
}

// validate checks the whole description and the masks before anything is encoded; each error
// names the attribute (and segment) at fault.
func (d *SEGDescription) validate(src *Series, masks [][][]uint8) error {
	bad := func(attr, format string, args ...any) error {
		return newErr(ErrInvalidSEG, "", attr, format, args...)
	}
	if err := checkSource(ErrInvalidSEG, src); err != nil {
		return err
	}
	switch d.Type {
	case Binary:
		if d.MaxFractionalValue != 0 {
			return bad("MaximumFractionalValue (0062,000E)", "only for FRACTIONAL")
		}
	case Fractional:
		if m := d.maxFractional(); m < 1 || m > 255 {
			return bad("MaximumFractionalValue (0062,000E)", "%d, want 1..255", m)
		}
	default:
		return bad("SegmentationType (0062,0001)", "%q, want BINARY or FRACTIONAL", d.Type)
	}
	if len(d.Segments) == 0 {
		return bad("SegmentSequence (0062,0002)", "no segments")
	}
	if len(d.Segments) > 65535 {
		return bad("SegmentSequence (0062,0002)", "%d segments", len(d.Segments))
	}
	if err := checkCS(d.ContentLabel, "ContentLabel (0070,0080)"); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"SeriesDescription (0008,103E)", d.SeriesDescription}, {"ContentDescription (0070,0081)", d.ContentDescription},
		{"ContentCreatorName (0070,0084)", d.ContentCreatorName},
	} {
		if err := checkLO(f.v, f.name, false); err != nil {
			return err
		}
	}
	if err := d.Equipment.validate(ErrInvalidSEG); err != nil {
		return err
	}
	if err := checkIdentityUIDs(ErrInvalidSEG, d.SOPInstanceUID, d.SeriesInstanceUID); err != nil {
		return err
	}
	trackingIDOf := map[string]string{}  // TrackingUID -> TrackingID
	trackingUIDOf := map[string]string{} // TrackingID -> TrackingUID
	for i, sg := range d.Segments {
		if err := sg.validate(i + 1); err != nil {
			return err
		}
		if sg.TrackingUID == "" {
			continue
		}
		if id, ok := trackingIDOf[sg.TrackingUID]; ok && id != sg.TrackingID {
			return bad(fmt.Sprintf("segment %d TrackingID (0062,0020)", i+1), "%q, but another segment with TrackingUID %s has %q", sg.TrackingID, sg.TrackingUID, id)
		}
		if uid, ok := trackingUIDOf[sg.TrackingID]; ok && uid != sg.TrackingUID {
			return bad(fmt.Sprintf("segment %d TrackingUID (0062,0021)", i+1), "%s, but another segment with TrackingID %q has %s", sg.TrackingUID, sg.TrackingID, uid)
		}
		trackingIDOf[sg.TrackingUID], trackingUIDOf[sg.TrackingID] = sg.TrackingID, sg.TrackingUID
	}
	if len(masks) != len(d.Segments) {
		return bad("masks", "%d mask sets for %d segments", len(masks), len(d.Segments))
	}
	n := src.Rows * src.Cols
	for s, perSlice := range masks {
		if len(perSlice) != len(src.Slices) {
			return bad("masks", "segment %d has %d masks for %d source slices", s+1, len(perSlice), len(src.Slices))
		}
		for i, m := range perSlice {
			if m == nil {
				continue
			}
			if len(m) != n {
				return bad("masks", "segment %d slice %d: %d values for %dx%d", s+1, i, len(m), src.Rows, src.Cols)
			}
			if d.Type == Fractional {
				max := uint8(d.maxFractional())
				for _, v := range m {
					if v > max {
						return bad("masks", "segment %d slice %d: value %d above MaximumFractionalValue %d", s+1, i, v, max)
					}
				}
			}
		}
	}
	return nil
}

// validate checks one Segment Description Macro item (number is the segment number).
func (sg *SegmentDescription) validate(number int) error {
	where := func(a string) string { return fmt.Sprintf("segment %d %s", number, a) }
	if err := checkLO(sg.Label, where("SegmentLabel (0062,0005)"), true); err != nil {
		return err
	}
	if len(sg.Description) > 1024 {
		return newErr(ErrInvalidSEG, "", where("SegmentDescription (0062,0006)"), "longer than 1024 characters")
	}
	if err := checkCode(sg.Category, where("SegmentedPropertyCategoryCodeSequence (0062,0003)")); err != nil {
		return err
	}
	if err := checkCode(sg.Type, where("SegmentedPropertyTypeCodeSequence (0062,000F)")); err != nil {
		return err
	}
	if sg.AnatomicRegion != nil {
		if err := checkCode(*sg.AnatomicRegion, where("AnatomicRegionSequence (0008,2218)")); err != nil {
			return err
		}
	}
	if err := sg.Algorithm.validate(where); err != nil {
		return err
	}
	switch {
	case sg.TrackingID == "" && sg.TrackingUID == "":
	case sg.TrackingID == "" || strings.TrimSpace(sg.TrackingID) == "":
		return newErr(ErrInvalidSEG, "", where("TrackingID (0062,0020)"), "empty, but TrackingUID %s is set: give both or neither", sg.TrackingUID)
	case sg.TrackingUID == "":
		return newErr(ErrInvalidSEG, "", where("TrackingUID (0062,0021)"), "empty, but TrackingID %q is set: give both or neither (the caller keeps the UID stable across versions)", sg.TrackingID)
	default:
		if err := checkUID(ErrInvalidSEG, sg.TrackingUID, where("TrackingUID (0062,0021)"), true); err != nil {
			return err
		}
		if strings.ContainsAny(sg.TrackingID, "\\") || len(sg.TrackingID) > 1024 {
			return newErr(ErrInvalidSEG, "", where("TrackingID (0062,0020)"), "%q: no backslash, at most 1024 characters", sg.TrackingID)
		}
	}
	return nil
}

func (a Algorithm) validate(where func(string) string) error {
	switch a.Type {
	case Automatic, SemiAutomatic:
	case Manual:
		if a.Name != "" || a.Version != "" || a.Family != (Code{}) {
			return newErr(ErrInvalidSEG, "", where("SegmentAlgorithmType (0062,0008)"), "MANUAL segments carry no algorithm name, version or family")
		}
		return nil
	default:
		return newErr(ErrInvalidSEG, "", where("SegmentAlgorithmType (0062,0008)"), "%q, want AUTOMATIC, SEMIAUTOMATIC or MANUAL", a.Type)
	}
	if err := checkLO(a.Name, where("SegmentAlgorithmName (0062,0009)"), true); err != nil {
		return err
	}
	if err := checkLO(a.Version, where("AlgorithmVersion (0066,0031)"), true); err != nil {
		return err
	}
	return checkCode(a.Family, where("AlgorithmFamilyCodeSequence (0066,002F)"))
}
