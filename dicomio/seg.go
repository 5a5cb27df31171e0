package dicomio

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// SegmentationStorage is the SOP Class UID of DICOM-SEG objects.
const SegmentationStorage = "1.2.840.10008.5.1.4.1.1.66.4"

// SegmentationType is (0062,0001).
type SegmentationType string

const (
	Binary     SegmentationType = "BINARY"
	Fractional SegmentationType = "FRACTIONAL"
)

// Code is a coded concept (code sequence item). JSON names match the model manifest.
type Code struct {
	Scheme  string `json:"scheme"`  // CodingSchemeDesignator, e.g. SCT or DCM
	Code    string `json:"code"`    // CodeValue (at most 16 characters)
	Meaning string `json:"meaning"` // CodeMeaning
}

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

// Algorithm identifies the software that produced a segment (Segmentation Algorithm
// Identification, from the manifest's `algorithm`).
type Algorithm struct {
	Name    string
	Version string
	Family  Code // zero value means AlgorithmFamilyAI
}

// SegmentDescription describes one segment. Segments are numbered from 1 in the order given.
type SegmentDescription struct {
	Label       string // SegmentLabel (LO), e.g. "Nodule rater 1"
	Description string // SegmentDescription (ST), optional
	Category    Code   // SegmentedPropertyCategoryCodeSequence
	Type        Code   // SegmentedPropertyTypeCodeSequence
	Algorithm   Algorithm
	TrackingID  string // optional; a TrackingUID is generated with it
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
	ContentLabel          string
	ContentDescription    string
	ContentCreatorName    string    // PN, optional
	Manufacturer          string    // default "dpersona"
	ManufacturerModelName string    // default "dpersona"
	DeviceSerialNumber    string    // default "0"
	SoftwareVersions      string    // default "dev"
	ContentTime           time.Time // zero: now
}

// SEGInfo reports what WriteSEG wrote.
type SEGInfo struct {
	SOPInstanceUID    string
	SeriesInstanceUID string
	Frames            int // frames written (non-empty segment/slice pairs)
	Size              int // bytes
}

// WriteSEGFile writes the SEG to path (via a temporary file and rename).
func WriteSEGFile(path string, src *Series, desc SEGDescription, masks [][][]uint8) (*SEGInfo, error) {
	data, info, err := EncodeSEG(src, desc, masks)
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".seg-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	return info, os.Rename(tmp.Name(), path)
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

// EncodeSEG builds a Segmentation Storage Part-10 file (explicit VR little endian).
// masks is indexed [segment][slice] with slices in src.Slices order; each mask is Rows*Cols
// values, row-major, or nil for an empty frame. BINARY: non-zero is inside. FRACTIONAL: values
// 0..MaxFractionalValue (see QuantizeFraction). Frames whose mask is all zero are omitted; if every
// frame is empty, the first frame of segment 1 is kept so the object still states "nothing found".
func EncodeSEG(src *Series, desc SEGDescription, masks [][][]uint8) ([]byte, *SEGInfo, error) {
	if err := desc.validate(src, masks); err != nil {
		return nil, nil, err
	}
	now := desc.ContentTime
	if now.IsZero() {
		now = time.Now()
	}
	if desc.SOPInstanceUID == "" {
		desc.SOPInstanceUID = NewUID()
	}
	if desc.SeriesInstanceUID == "" {
		desc.SeriesInstanceUID = NewUID()
	}
	n := src.Rows * src.Cols

	type frameRef struct{ segment, slice int }
	var frames []frameRef
	for s := range masks {
		for i, m := range masks[s] {
			if m != nil && !allZero(m) {
				frames = append(frames, frameRef{s, i})
			}
		}
	}
	if len(frames) == 0 {
		frames = []frameRef{{0, 0}}
	}

	// Pixel data: BINARY frames form one continuous LSB-first bit stream (PS3.5 8.1.1), no
	// padding between frames; the encoder pads the total to an even length.
	var pixels []byte
	if desc.Type == Binary {
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

	overlap := "NO"
	if len(masks) > 1 && segmentsOverlap(masks, n) {
		overlap = "YES"
	}

	var ds []element
	add := func(e ...element) { ds = append(ds, e...) }
	date, tm := now.Format("20060102"), now.Format("150405.000000")

	// Patient and General Study modules: copied from the source.
	nonASCII := false
	for _, e := range src.patientStudy {
		add(e)
		if !elementASCII(e) {
			nonASCII = true
		}
	}
	for _, s := range []string{desc.SeriesDescription, desc.ContentDescription, desc.ContentCreatorName} {
		if !isASCII(s) {
			nonASCII = true
		}
	}
	for _, sg := range desc.Segments {
		for _, s := range []string{sg.Label, sg.Description, sg.Category.Meaning, sg.Type.Meaning, sg.Algorithm.Name, sg.Algorithm.Version} {
			if !isASCII(s) {
				nonASCII = true
			}
		}
	}
	if nonASCII {
		add(strElem(0x00080005, "CS", "ISO_IR 192")) // values are Go (UTF-8) strings
	}
	seriesNumber := desc.SeriesNumber
	if seriesNumber == 0 {
		seriesNumber = 1
	}
	instanceNumber := desc.InstanceNumber
	if instanceNumber == 0 {
		instanceNumber = 1
	}
	add(
		// General Series, Segmentation Series
		strElem(0x00080060, "CS", "SEG"),
		strElem(0x0020000E, "UI", desc.SeriesInstanceUID),
		strElem(0x00200011, "IS", strconv.Itoa(seriesNumber)),
		strElem(0x00080021, "DA", date),
		strElem(0x00080031, "TM", tm),
		// Frame of Reference
		strElem(0x00200052, "UI", src.FrameOfReferenceUID),
		strElem(0x00201040, "LO"),
		// General and Enhanced General Equipment
		strElem(0x00080070, "LO", orDefault(desc.Manufacturer, "dpersona")),
		strElem(0x00081090, "LO", orDefault(desc.ManufacturerModelName, "dpersona")),
		strElem(0x00181000, "LO", orDefault(desc.DeviceSerialNumber, "0")),
		strElem(0x00181020, "LO", orDefault(desc.SoftwareVersions, "dev")),
		// General Image, Segmentation Image, Multi-frame Functional Groups
		strElem(0x00080008, "CS", "DERIVED", "PRIMARY"),
		strElem(0x00200013, "IS", strconv.Itoa(instanceNumber)),
		strElem(0x00080023, "DA", date),
		strElem(0x00080033, "TM", tm),
		strElem(0x00700080, "CS", orDefault(desc.ContentLabel, "SEGMENTATION")),
		strElem(0x00700081, "LO", desc.ContentDescription),
		strElem(0x00700084, "PN", desc.ContentCreatorName),
		strElem(0x00620001, "CS", string(desc.Type)),
		strElem(0x00620013, "CS", overlap),
		strElem(0x00282110, "CS", "00"),
		strElem(0x00280008, "IS", strconv.Itoa(len(frames))),
		// Image Pixel
		usElem(0x00280002, 1),
		strElem(0x00280004, "CS", "MONOCHROME2"),
		usElem(0x00280010, uint16(src.Rows)),
		usElem(0x00280011, uint16(src.Cols)),
		usElem(0x00280103, 0),
		// SOP Common
		strElem(0x00080016, "UI", SegmentationStorage),
		strElem(0x00080018, "UI", desc.SOPInstanceUID),
		strElem(0x00080012, "DA", date),
		strElem(0x00080013, "TM", tm),
	)
	if desc.SeriesDescription != "" {
		add(strElem(0x0008103E, "LO", desc.SeriesDescription))
	}
	if desc.Type == Binary {
		add(usElem(0x00280100, 1), usElem(0x00280101, 1), usElem(0x00280102, 0),
			element{tag: 0x7FE00010, vr: "OB", raw: pixels})
	} else {
		add(usElem(0x00280100, 8), usElem(0x00280101, 8), usElem(0x00280102, 7),
			strElem(0x00620010, "CS", "PROBABILITY"),
			usElem(0x0062000E, uint16(desc.maxFractional())),
			element{tag: 0x7FE00010, vr: "OB", raw: pixels})
	}

	// Segment Sequence.
	var segItems [][]element
	for i, sg := range desc.Segments {
		fam := sg.Algorithm.Family
		if fam == (Code{}) {
			fam = AlgorithmFamilyAI
		}
		it := []element{
			usElem(0x00620004, uint16(i+1)),
			strElem(0x00620005, "LO", sg.Label),
			strElem(0x00620008, "CS", "AUTOMATIC"),
			strElem(0x00620009, "LO", sg.Algorithm.Name),
			sqElem(0x00620003, codeItem(sg.Category)),
			sqElem(0x0062000F, codeItem(sg.Type)),
			sqElem(0x00620007, []element{
				sqElem(0x0066002F, codeItem(fam)),
				strElem(0x00660031, "LO", sg.Algorithm.Version),
				strElem(0x00660036, "LO", sg.Algorithm.Name),
			}),
		}
		if sg.Description != "" {
			it = append(it, strElem(0x00620006, "ST", sg.Description))
		}
		if sg.TrackingID != "" {
			it = append(it, strElem(0x00620020, "UT", sg.TrackingID), strElem(0x00620021, "UI", NewUID()))
		}
		if sg.DisplayColor != nil {
			l, a, b := srgbToDICOMLab(*sg.DisplayColor)
			it = append(it, usElem(0x0062000D, l, a, b))
		}
		segItems = append(segItems, it)
	}
	add(sqElem(0x00620002, segItems...))

	// Multi-frame Dimension: segment number, then image position.
	dimOrg := NewUID()
	add(
		sqElem(0x00209221, []element{strElem(0x00209164, "UI", dimOrg)}),
		sqElem(0x00209222,
			[]element{strElem(0x00209164, "UI", dimOrg), atElem(0x00209165, 0x0062000B), atElem(0x00209167, 0x0062000A), strElem(0x00209421, "LO", "Segment Number")},
			[]element{strElem(0x00209164, "UI", dimOrg), atElem(0x00209165, 0x00200032), atElem(0x00209167, 0x00209113), strElem(0x00209421, "LO", "Image Position Patient")},
		),
	)

	// Shared functional groups: orientation and pixel measures hold for every frame.
	measures := []element{strElem(0x00280030, "DS", formatDSs(src.PixelSpacing[0], src.PixelSpacing[1])...)}
	thickness := src.SliceThickness
	if thickness <= 0 {
		thickness = src.SliceSpacing
	}
	if thickness > 0 {
		measures = append(measures, strElem(0x00180050, "DS", formatDS(thickness)))
	}
	add(sqElem(0x52009229, []element{
		sqElem(0x00209116, []element{strElem(0x00200037, "DS", formatDSs(src.Orientation[:]...)...)}),
		sqElem(0x00289110, measures),
	}))

	// Per-frame functional groups: source image, dimension index, position, segment.
	perFrame := make([][]element, len(frames))
	for k, f := range frames {
		sl := src.Slices[f.slice]
		srcItem := []element{
			strElem(0x00081150, "UI", sl.SOPClassUID),
			strElem(0x00081155, "UI", sl.SOPInstanceUID),
			strElem(0x0028135A, "CS", "YES"),
			sqElem(0x0040A170, codeItem(Code{Scheme: "DCM", Code: "121322", Meaning: "Source image for image processing operation"})),
		}
		if sl.FrameNumber > 0 {
			srcItem = append(srcItem, strElem(0x00081160, "IS", strconv.Itoa(sl.FrameNumber)))
		}
		perFrame[k] = []element{
			sqElem(0x00089124, []element{
				sqElem(0x00082112, srcItem),
				sqElem(0x00089215, codeItem(Code{Scheme: "DCM", Code: "113076", Meaning: "Segmentation"})),
			}),
			sqElem(0x00209111, []element{ulElem(0x00209157, uint32(f.segment+1), uint32(f.slice+1))}),
			sqElem(0x00209113, []element{strElem(0x00200032, "DS", formatDSs(sl.Position[:]...)...)}),
			sqElem(0x0062000A, []element{usElem(0x0062000B, uint16(f.segment+1))}),
		}
	}
	add(sqElem(0x52009230, perFrame...))

	// Common Instance Reference: every source instance once.
	var refs [][]element
	seen := map[string]bool{}
	for _, sl := range src.Slices {
		if seen[sl.SOPInstanceUID] {
			continue
		}
		seen[sl.SOPInstanceUID] = true
		refs = append(refs, []element{strElem(0x00081150, "UI", sl.SOPClassUID), strElem(0x00081155, "UI", sl.SOPInstanceUID)})
	}
	add(sqElem(0x00081115, []element{
		sqElem(0x0008114A, refs...),
		strElem(0x0020000E, "UI", src.SeriesInstanceUID),
	}))

	data := encodePart10(SegmentationStorage, desc.SOPInstanceUID, ds)
	return data, &SEGInfo{SOPInstanceUID: desc.SOPInstanceUID, SeriesInstanceUID: desc.SeriesInstanceUID, Frames: len(frames), Size: len(data)}, nil
}

func codeItem(c Code) []element {
	return []element{strElem(0x00080100, "SH", c.Code), strElem(0x00080102, "SH", c.Scheme), strElem(0x00080104, "LO", c.Meaning)}
}

func elementASCII(e element) bool {
	for _, s := range e.str {
		if !isASCII(s) {
			return false
		}
	}
	for _, it := range e.items {
		for _, c := range it {
			if !elementASCII(c) {
				return false
			}
		}
	}
	return true
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
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

func (d *SEGDescription) validate(src *Series, masks [][][]uint8) error {
	bad := func(attr, format string, args ...any) error {
		return newErr(ErrInvalidSEG, "", attr, format, args...)
	}
	if src == nil || len(src.Slices) == 0 {
		return bad("source", "no source series")
	}
	if src.FrameOfReferenceUID == "" || src.SeriesInstanceUID == "" {
		return bad("source", "series without Frame of Reference or Series Instance UID")
	}
	switch d.Type {
	case Binary:
		if d.MaxFractionalValue != 0 {
			return bad("MaximumFractionalValue", "only for FRACTIONAL")
		}
	case Fractional:
		if m := d.maxFractional(); m < 1 || m > 255 {
			return bad("MaximumFractionalValue", "%d, want 1..255", m)
		}
	default:
		return bad("SegmentationType", "%q, want BINARY or FRACTIONAL", d.Type)
	}
	if len(d.Segments) == 0 {
		return bad("SegmentSequence", "no segments")
	}
	if len(d.Segments) > 65535 {
		return bad("SegmentSequence", "%d segments", len(d.Segments))
	}
	if err := checkCS(d.ContentLabel, "ContentLabel (0070,0080)"); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"SeriesDescription (0008,103E)", d.SeriesDescription}, {"ContentDescription (0070,0081)", d.ContentDescription},
		{"Manufacturer (0008,0070)", d.Manufacturer}, {"ManufacturerModelName (0008,1090)", d.ManufacturerModelName},
		{"DeviceSerialNumber (0018,1000)", d.DeviceSerialNumber}, {"SoftwareVersions (0018,1020)", d.SoftwareVersions},
		{"ContentCreatorName (0070,0084)", d.ContentCreatorName},
	} {
		if err := checkLO(f.v, f.name, false); err != nil {
			return err
		}
	}
	for _, uid := range []struct{ name, v string }{{"SOPInstanceUID (0008,0018)", d.SOPInstanceUID}, {"SeriesInstanceUID (0020,000E)", d.SeriesInstanceUID}} {
		if uid.v != "" && !ValidUID(uid.v) {
			return bad(uid.name, "%q is not a valid UID", uid.v)
		}
	}
	for i, sg := range d.Segments {
		where := func(a string) string { return fmt.Sprintf("segment %d %s", i+1, a) }
		if err := checkLO(sg.Label, where("SegmentLabel (0062,0005)"), true); err != nil {
			return err
		}
		if err := checkLO(sg.Algorithm.Name, where("SegmentAlgorithmName (0062,0009)"), true); err != nil {
			return err
		}
		if err := checkLO(sg.Algorithm.Version, where("AlgorithmVersion (0066,0031)"), true); err != nil {
			return err
		}
		for _, c := range []struct {
			name string
			c    Code
		}{{"SegmentedPropertyCategoryCodeSequence", sg.Category}, {"SegmentedPropertyTypeCodeSequence", sg.Type}, {"AlgorithmFamilyCodeSequence", sg.Algorithm.Family}} {
			if c.name == "AlgorithmFamilyCodeSequence" && c.c == (Code{}) {
				continue
			}
			if err := checkCode(c.c, where(c.name)); err != nil {
				return err
			}
		}
		if len(sg.Description) > 1024 {
			return bad(where("SegmentDescription (0062,0006)"), "longer than 1024 characters")
		}
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

// checkCS enforces the CS character repertoire (upper-case letters, digits, space, underscore)
// and 16 characters.
func checkCS(v, name string) error {
	if len(v) > 16 {
		return newErr(ErrInvalidSEG, "", name, "%q is longer than 16 characters", v)
	}
	for _, r := range v {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == ' ' || r == '_') {
			return newErr(ErrInvalidSEG, "", name, "%q: only A-Z, 0-9, space and _ are allowed in a code string", v)
		}
	}
	return nil
}

// checkLO enforces LO: at most 64 characters, no backslash or control characters.
func checkLO(v, name string, required bool) error {
	if required && strings.TrimSpace(v) == "" {
		return newErr(ErrInvalidSEG, "", name, "empty")
	}
	if utf8.RuneCountInString(v) > 64 {
		return newErr(ErrInvalidSEG, "", name, "%q is longer than 64 characters", v)
	}
	for _, r := range v {
		if r == '\\' || r < 0x20 && r != 0x1b {
			return newErr(ErrInvalidSEG, "", name, "%q contains a backslash or control character", v)
		}
	}
	return nil
}

func checkCode(c Code, name string) error {
	if c.Code == "" || c.Scheme == "" || c.Meaning == "" {
		return newErr(ErrInvalidSEG, "", name, "code %+v needs scheme, code and meaning", c)
	}
	if len(c.Code) > 16 || len(c.Scheme) > 16 {
		return newErr(ErrInvalidSEG, "", name, "code value or scheme longer than 16 characters: %+v", c)
	}
	if c.Scheme == "SRT" {
		return newErr(ErrInvalidSEG, "", name, "SRT codes are retired: use SCT")
	}
	return checkLO(c.Meaning, name+" CodeMeaning", true)
}

// ValidUID reports whether s is a valid UID: at most 64 characters, dot-separated numeric
// components without leading zeros.
func ValidUID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, comp := range strings.Split(s, ".") {
		if comp == "" || (len(comp) > 1 && comp[0] == '0') {
			return false
		}
		for _, r := range comp {
			if r < '0' || r > '9' {
				return false
			}
		}
	}
	return true
}
