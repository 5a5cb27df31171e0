package dicomio

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"dpersona/internal/dicomstd"
)

// Vec3 is a point or direction in the patient coordinate system (mm).
type Vec3 [3]float64

func (a Vec3) dot(b Vec3) float64 { return a[0]*b[0] + a[1]*b[1] + a[2]*b[2] }
func (a Vec3) sub(b Vec3) Vec3    { return Vec3{a[0] - b[0], a[1] - b[1], a[2] - b[2]} }
func (a Vec3) norm() float64      { return math.Sqrt(a.dot(a)) }
func cross(a, b Vec3) Vec3 {
	return Vec3{a[1]*b[2] - a[2]*b[1], a[2]*b[0] - a[0]*b[2], a[0]*b[1] - a[1]*b[0]}
}

// Slice is one image plane of a series: a single-frame instance, or one frame of a multi-frame one.
type Slice struct {
	Path           string
	SOPInstanceUID string
	SOPClassUID    string
	// FrameNumber is the 1-based frame within a multi-frame instance, 0 for a single-frame instance.
	// A derived object references the frame (ReferencedFrameNumber) when it is not 0.
	FrameNumber    int
	InstanceNumber int
	Position       Vec3    // ImagePositionPatient of the first transmitted pixel
	Location       float64 // Position projected on the slice normal (the sort key)
	// Pixels holds Rows*Cols values, row-major, in modality units (rescale slope and intercept
	// applied; Hounsfield units for CT). They are never inverted: for a MONOCHROME1 series the
	// display inversion happens in the model input mapping (see PlanTilesForSeries).
	Pixels []float32
}

// Series is a checked, sorted image series.
type Series struct {
	StudyInstanceUID    string
	SeriesInstanceUID   string
	FrameOfReferenceUID string
	Modality            string
	SOPClassUID         string
	SeriesNumber        int
	SeriesDescription   string
	Rows, Cols          int
	// Orientation is ImageOrientationPatient: row direction cosines, then column direction cosines.
	Orientation [6]float64
	Normal      Vec3 // row x column: slices are sorted by ascending Location along it
	// PixelSpacing is (0028,0030): distance between rows, then between columns, in mm.
	PixelSpacing   [2]float64
	SliceThickness float64 // 0 when the source did not say
	// SliceSpacing is the median distance between consecutive slices along Normal (0 for one slice).
	SliceSpacing              float64
	PhotometricInterpretation string
	Slices                    []Slice
	// patientStudy holds the patient and study attributes of the first instance, copied into
	// derived objects (unexported: they identify the patient and must not reach logs).
	patientStudy []element
	// Warnings list accepted irregularities (gaps, irregular spacing, in-plane shifts), one line each.
	Warnings []string
}

// LoadOptions tune LoadSeriesWithOptions. The zero value gives the defaults of LoadSeries.
type LoadOptions struct {
	// MinSlices is the least number of slices accepted (default 1).
	MinSlices int
	// RejectIrregularSpacing turns gaps and irregular spacing from warnings into ErrIrregularSpacing.
	RejectIrregularSpacing bool
}

// LoadSeries reads the given Part-10 files of one series and returns the checked, sorted volume.
func LoadSeries(paths []string) (*Series, error) {
	return LoadSeriesWithOptions(paths, LoadOptions{})
}

// Transfer syntaxes whose pixel data is native (uncompressed); the compressed ones LoadSeries
// decodes are in decode.go.
var nativeTransferSyntaxes = map[string]bool{
	dicomstd.ImplicitVRLittleEndian:         true,
	dicomstd.ExplicitVRLittleEndian:         true,
	dicomstd.ExplicitVRBigEndian:            true, // retired
	dicomstd.DeflatedExplicitVRLittleEndian: true,
}

// NativeTransferSyntaxes lists the native (uncompressed) transfer syntaxes LoadSeries reads
// directly; DecodableTransferSyntaxes adds the compressed ones it decodes.
func NativeTransferSyntaxes() []string {
	return []string{dicomstd.ExplicitVRLittleEndian, dicomstd.ImplicitVRLittleEndian, dicomstd.ExplicitVRBigEndian, dicomstd.DeflatedExplicitVRLittleEndian}
}

// instance is one parsed file before series-level checks.
type instance struct {
	path, sopInstanceUID, sopClassUID, seriesUID, studyUID, forUID, modality string
	seriesNumber                                                             int
	seriesDescription                                                        string
	rows, cols                                                               int
	photometric                                                              string
	frames                                                                   []frameGeom
	pixels                                                                   [][]float32
	patientStudy                                                             []element
	instanceNumber                                                           int
	multiFrame                                                               bool // frames are referenced by number
}

type frameGeom struct {
	orientation  [6]float64
	position     Vec3
	pixelSpacing [2]float64
	thickness    float64
}

// LoadSeriesWithOptions is LoadSeries with options.
func LoadSeriesWithOptions(paths []string, opt LoadOptions) (*Series, error) {
	if opt.MinSlices <= 0 {
		opt.MinSlices = 1
	}
	if len(paths) == 0 {
		return nil, newErr(ErrTooFewSlices, "", "", "no instances given")
	}
	insts := make([]*instance, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	next := make(chan int)
	workers := runtime.GOMAXPROCS(0)
	if workers > len(paths) {
		workers = len(paths)
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				insts[i], errs[i] = readInstance(paths[i])
			}
		}()
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return assemble(insts, opt)
}

func readInstance(path string) (*instance, error) {
	a, perr, err := parseFile(path)
	if err != nil {
		return nil, err
	}
	if perr != nil {
		// The parser stops at the element it could not read; if everything up to the pixel
		// module was readable and the pixel data is what failed, the file was cut short.
		if a.has(tag.Rows) && !a.has(tag.PixelData) && (errors.Is(perr, io.ErrUnexpectedEOF) || errors.Is(perr, io.EOF) || strings.Contains(perr.Error(), "(7fe0,0010)")) {
			return nil, newErr(ErrTruncatedPixelData, instanceName(a, path), tagName(tag.PixelData), "file ends inside the pixel data (%v)", perr)
		}
		return nil, newErr(ErrNotDICOM, path, "", "%v", perr)
	}
	if ts := a.str(tag.TransferSyntaxUID); IsCompressedTransferSyntax(ts) {
		// Decoded into a temporary native copy; the stored file stays as received. Errors and
		// the returned instance still name the original file.
		native, cleanup, err := decompressedCopy(path, ts, instanceName(a, path))
		if err != nil {
			return nil, err
		}
		defer cleanup()
		if a, perr, err = parseFile(native); err != nil || perr != nil {
			return nil, newErr(ErrCompressed, instanceName(a, path), tagName(tag.TransferSyntaxUID), "%s (%s): the decoded copy cannot be read: %v", ts, transferSyntaxName(ts), errors.Join(err, perr))
		}
		a.instance = path
	}
	return parseInstance(a, path)
}

// parseFile reads a file's elements with the pixel data kept raw. err is set when the file cannot
// be opened; perr when parsing stopped early, with the elements read up to there still in attrs,
// so the caller can tell a file cut short in its pixel data from one that is not DICOM at all.
func parseFile(path string) (a attrs, perr, err error) {
	f, err := os.Open(path)
	if err != nil {
		return attrs{}, nil, newErr(ErrNotDICOM, path, "", "%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return attrs{}, nil, newErr(ErrNotDICOM, path, "", "%v", err)
	}
	ds, perr := dicom.Parse(f, st.Size(), nil, dicom.SkipProcessingPixelDataValue())
	return attrs{elems: ds.Elements, instance: path}, perr, nil
}

func instanceName(a attrs, path string) string {
	if uid := a.str(tag.SOPInstanceUID); uid != "" {
		return path + " (SOP Instance UID " + uid + ")"
	}
	return path
}

func parseInstance(a attrs, path string) (*instance, error) {
	inst := &instance{path: path}
	name := path
	required := func(t tag.Tag) (string, error) {
		v := a.str(t)
		if v == "" {
			return "", newErr(ErrMissingAttribute, name, tagName(t), "absent or empty")
		}
		return v, nil
	}
	var err error
	if inst.sopInstanceUID, err = required(tag.SOPInstanceUID); err != nil {
		return nil, err
	}
	name = instanceName(a, path)
	a.instance = name
	if inst.sopClassUID, err = required(tag.SOPClassUID); err != nil {
		return nil, err
	}
	if inst.seriesUID, err = required(tag.SeriesInstanceUID); err != nil {
		return nil, err
	}
	if inst.studyUID, err = required(tag.StudyInstanceUID); err != nil {
		return nil, err
	}
	if inst.forUID, err = required(tag.FrameOfReferenceUID); err != nil {
		return nil, err
	}
	inst.modality = a.str(tag.Modality)
	inst.seriesDescription = a.str(tag.SeriesDescription)
	if v, _ := a.ints(tag.SeriesNumber); len(v) > 0 {
		inst.seriesNumber = v[0]
	}
	if v, _ := a.ints(tag.InstanceNumber); len(v) > 0 {
		inst.instanceNumber = v[0]
	}
	ts := a.str(tag.TransferSyntaxUID)
	if ts == "" {
		ts = dicomstd.ImplicitVRLittleEndian
	}
	if !nativeTransferSyntaxes[ts] {
		return nil, newErr(ErrCompressed, name, tagName(tag.TransferSyntaxUID), "%s (%s): no decoder for this transfer syntax", ts, transferSyntaxName(ts))
	}
	inst.patientStudy = copyPatientStudy(a)

	pf, err := readPixelFormat(a)
	if err != nil {
		return nil, err
	}
	inst.rows, inst.cols, inst.photometric = pf.rows, pf.cols, pf.photometric
	nFrames := 1
	if v, err := a.ints(tag.NumberOfFrames); err != nil {
		return nil, err
	} else if len(v) > 0 {
		nFrames = v[0]
		if nFrames < 1 {
			return nil, newErr(ErrUnsupportedPixelFormat, name, tagName(tag.NumberOfFrames), "%d", nFrames)
		}
	}
	geoms, rescales, err := frameGeometry(a, nFrames)
	if err != nil {
		return nil, err
	}
	inst.frames = geoms
	inst.multiFrame = nFrames > 1 || a.has(tagPerFrameFG)

	pd := a.find(tag.PixelData)
	if pd == nil {
		return nil, newErr(ErrMissingAttribute, name, tagName(tag.PixelData), "absent")
	}
	info, ok := pd.Value.GetValue().(dicom.PixelDataInfo)
	if !ok {
		return nil, newErr(ErrUnsupportedPixelFormat, name, tagName(tag.PixelData), "unexpected value")
	}
	if info.IsEncapsulated {
		return nil, newErr(ErrCompressed, name, tagName(tag.PixelData), "encapsulated pixel data under the native transfer syntax %s", ts)
	}
	raw := info.UnprocessedValueData
	bigEndian := ts == dicomstd.ExplicitVRBigEndian
	inst.pixels, err = decodeFrames(raw, bigEndian, pf, nFrames, rescales, name)
	if err != nil {
		return nil, err
	}
	return inst, nil
}

func transferSyntaxName(ts string) string {
	switch {
	case strings.HasPrefix(ts, "1.2.840.10008.1.2.4.5"), ts == "1.2.840.10008.1.2.4.70":
		return "JPEG"
	case ts == "1.2.840.10008.1.2.4.80" || ts == "1.2.840.10008.1.2.4.81":
		return "JPEG-LS"
	case ts == "1.2.840.10008.1.2.4.90" || ts == "1.2.840.10008.1.2.4.91":
		return "JPEG 2000"
	case ts == "1.2.840.10008.1.2.5":
		return "RLE"
	case strings.HasPrefix(ts, "1.2.840.10008.1.2.4.10"):
		return "MPEG"
	case strings.HasPrefix(ts, "1.2.840.10008.1.2.4.20"):
		return "HEVC"
	}
	return "not a native transfer syntax"
}

// Attributes of the Patient, Clinical Trial Subject, General Study, Patient Study and Clinical
// Trial Study modules that are copied into derived objects, besides all of groups 0010 and 0012.
var studyTags = tagSet(
	// General Study
	tag.StudyDate, tag.StudyTime, tag.AccessionNumber, tag.IssuerOfAccessionNumberSequence,
	tag.ReferringPhysicianName, tag.ReferringPhysicianIdentificationSequence, tag.StudyDescription,
	tag.ProcedureCodeSequence, tag.PhysiciansOfRecord, tag.PhysiciansOfRecordIdentificationSequence,
	tag.NameOfPhysiciansReadingStudy, tag.PhysiciansReadingStudyIdentificationSequence,
	tag.ReferencedStudySequence, tag.StudyInstanceUID, tag.StudyID,
	tag.ReasonForPerformedProcedureCodeSequence,
	// Patient Study
	tag.AdmittingDiagnosesDescription, tag.AdmittingDiagnosesCodeSequence, tag.AdmissionID,
	tag.IssuerOfAdmissionIDSequence, tag.ServiceEpisodeID, tag.ServiceEpisodeDescription,
	tag.IssuerOfServiceEpisodeIDSequence, tag.PatientState,
	// HL7v2 Hierarchic Designator macro, as the issuers above carry it
	tag.LocalNamespaceEntityID, tag.UniversalEntityID, tag.UniversalEntityIDType,
)

// Type 2 attributes of those modules: written empty (with the dictionary's VR) when the source
// lacks them.
var type2StudyTags = []tag.Tag{
	tag.StudyDate, tag.StudyTime, tag.AccessionNumber, tag.ReferringPhysicianName,
	tag.PatientName, tag.PatientID, tag.PatientBirthDate, tag.PatientSex,
	tag.StudyInstanceUID, tag.StudyID,
}

func tagSet(tags ...tag.Tag) map[uint32]bool {
	set := make(map[uint32]bool, len(tags))
	for _, t := range tags {
		set[t.Uint32()] = true
	}
	return set
}

func copyPatientStudy(a attrs) []element {
	var out []element
	have := map[uint32]bool{}
	for _, e := range a.elems {
		t := e.Tag.Uint32()
		g := uint32(e.Tag.Group)
		keep := (g == 0x0010 || g == 0x0012 || studyTags[t]) && e.Tag.Element != 0 && g%2 == 0
		if !keep {
			continue
		}
		if el, ok := convertElement(e); ok {
			out = append(out, el)
			have[t] = true
		}
	}
	for _, t := range type2StudyTags {
		if !have[t.Uint32()] {
			info, err := tag.Find(t)
			if err != nil || len(info.VRs) == 0 {
				panic(fmt.Sprintf("dicomio: %v is not in the dictionary", t)) // a programming error in type2StudyTags
			}
			out = append(out, element{tag: t.Uint32(), vr: info.VRs[0]})
		}
	}
	return out
}

// convertElement turns a parsed element into one our encoder writes (strings, integers,
// bytes and sequences of those); other value types are dropped.
func convertElement(e *dicom.Element) (element, bool) {
	el := element{tag: e.Tag.Uint32(), vr: e.RawValueRepresentation}
	if e.Value == nil {
		return el, el.vr != "" && el.vr != "SQ"
	}
	switch v := e.Value.GetValue().(type) {
	case []string:
		for _, s := range v {
			el.str = append(el.str, strings.TrimRight(s, " \x00"))
		}
		if len(el.str) == 1 && el.str[0] == "" {
			el.str = nil
		}
		return el, true
	case []int:
		switch el.vr {
		case "US":
			for _, x := range v {
				el.u16 = append(el.u16, uint16(x))
			}
			return el, true
		case "UL":
			for _, x := range v {
				el.u32 = append(el.u32, uint32(x))
			}
			return el, true
		}
	case []byte:
		if el.vr == "OB" || el.vr == "OW" || el.vr == "UN" {
			el.raw = v
			return el, true
		}
	case []*dicom.SequenceItemValue:
		el.vr = "SQ"
		for _, it := range v {
			var item []element
			els, _ := it.GetValue().([]*dicom.Element)
			for _, c := range els {
				if ce, ok := convertElement(c); ok {
					item = append(item, ce)
				}
			}
			el.items = append(el.items, item)
		}
		return el, true
	}
	return el, false
}

type pixelFormat struct {
	rows, cols, bitsAllocated, bitsStored, highBit, pixelRep int
	photometric                                              string
}

func readPixelFormat(a attrs) (pixelFormat, error) {
	var pf pixelFormat
	var err error
	for _, x := range []struct {
		t tag.Tag
		p *int
	}{{tag.Rows, &pf.rows}, {tag.Columns, &pf.cols}, {tag.BitsAllocated, &pf.bitsAllocated}, {tag.BitsStored, &pf.bitsStored}, {tag.HighBit, &pf.highBit}, {tag.PixelRepresentation, &pf.pixelRep}} {
		if *x.p, err = a.requireInt(x.t); err != nil {
			return pf, err
		}
	}
	if pf.rows <= 0 || pf.cols <= 0 {
		return pf, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.Rows), "rows %d, columns %d", pf.rows, pf.cols)
	}
	spp := 1
	if v, _ := a.ints(tag.SamplesPerPixel); len(v) > 0 {
		spp = v[0]
	}
	if spp != 1 {
		return pf, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.SamplesPerPixel), "%d samples per pixel: only greyscale images are supported", spp)
	}
	pf.photometric = a.str(tag.PhotometricInterpretation)
	if pf.photometric != "MONOCHROME1" && pf.photometric != "MONOCHROME2" {
		return pf, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.PhotometricInterpretation), "%q: only MONOCHROME1 and MONOCHROME2 are supported", pf.photometric)
	}
	if pf.bitsAllocated != 8 && pf.bitsAllocated != 16 && pf.bitsAllocated != 32 {
		return pf, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.BitsAllocated), "%d: only 8, 16 and 32 are supported", pf.bitsAllocated)
	}
	if pf.bitsStored < 1 || pf.bitsStored > pf.bitsAllocated {
		return pf, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.BitsStored), "%d with %d bits allocated", pf.bitsStored, pf.bitsAllocated)
	}
	if pf.highBit != pf.bitsStored-1 {
		return pf, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.HighBit), "%d with %d bits stored: only high bit = bits stored - 1 is supported", pf.highBit, pf.bitsStored)
	}
	if pf.pixelRep != 0 && pf.pixelRep != 1 {
		return pf, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.PixelRepresentation), "%d", pf.pixelRep)
	}
	return pf, nil
}

type rescale struct{ slope, intercept float64 }

// Functional group macros (PS3.3 C.7.6.16) used for enhanced multi-frame images.
var (
	tagSharedFG       = tag.Tag{Group: 0x5200, Element: 0x9229}
	tagPerFrameFG     = tag.Tag{Group: 0x5200, Element: 0x9230}
	tagPlanePosition  = tag.Tag{Group: 0x0020, Element: 0x9113}
	tagPlaneOrient    = tag.Tag{Group: 0x0020, Element: 0x9116}
	tagPixelMeasures  = tag.Tag{Group: 0x0028, Element: 0x9110}
	tagPixelValueXfrm = tag.Tag{Group: 0x0028, Element: 0x9145}
)

// frameGeometry returns each frame's plane geometry and rescale, from the per-frame and shared
// functional groups when present (enhanced multi-frame), else from the top-level attributes.
func frameGeometry(a attrs, nFrames int) ([]frameGeom, []rescale, error) {
	shared, _ := a.item(tagSharedFG)
	perFrame := a.items(tagPerFrameFG)
	enhanced := a.has(tagPerFrameFG) || a.has(tagSharedFG)
	if enhanced && len(perFrame) != nFrames {
		return nil, nil, newErr(ErrGeometry, a.instance, tagName(tagPerFrameFG), "%d items for %d frames (NumberOfFrames)", len(perFrame), nFrames)
	}
	if !enhanced && nFrames > 1 {
		return nil, nil, newErr(ErrMissingAttribute, a.instance, tagName(tagPerFrameFG), "multi-frame image (%d frames) without per-frame positions", nFrames)
	}
	// lookup finds attribute t inside functional group macro seq for frame f: per-frame first,
	// then shared, then (for non-enhanced images) the top level.
	lookup := func(f int, seq, t tag.Tag) ([]float64, error) {
		var levels []attrs
		if enhanced {
			levels = append(levels, perFrame[f], shared)
		}
		for _, lv := range levels {
			if it, ok := lv.item(seq); ok && it.has(t) {
				return it.floats(t)
			}
		}
		return a.floats(t)
	}
	where := func(f int, t tag.Tag) string {
		if enhanced {
			return fmt.Sprintf("%s of frame %d", tagName(t), f+1)
		}
		return tagName(t)
	}
	geoms := make([]frameGeom, nFrames)
	rescales := make([]rescale, nFrames)
	for f := 0; f < nFrames; f++ {
		iop, err := lookup(f, tagPlaneOrient, tag.ImageOrientationPatient)
		if err != nil {
			return nil, nil, err
		}
		if len(iop) == 0 {
			return nil, nil, newErr(ErrMissingAttribute, a.instance, where(f, tag.ImageOrientationPatient), "absent or empty")
		}
		if len(iop) != 6 {
			return nil, nil, newErr(ErrGeometry, a.instance, where(f, tag.ImageOrientationPatient), "%d values, want 6", len(iop))
		}
		ipp, err := lookup(f, tagPlanePosition, tag.ImagePositionPatient)
		if err != nil {
			return nil, nil, err
		}
		if len(ipp) == 0 {
			return nil, nil, newErr(ErrMissingAttribute, a.instance, where(f, tag.ImagePositionPatient), "absent or empty")
		}
		if len(ipp) != 3 {
			return nil, nil, newErr(ErrGeometry, a.instance, where(f, tag.ImagePositionPatient), "%d values, want 3", len(ipp))
		}
		ps, err := lookup(f, tagPixelMeasures, tag.PixelSpacing)
		if err != nil {
			return nil, nil, err
		}
		if len(ps) == 0 {
			return nil, nil, newErr(ErrMissingAttribute, a.instance, where(f, tag.PixelSpacing), "absent or empty")
		}
		if len(ps) != 2 || !(ps[0] > 0) || !(ps[1] > 0) {
			return nil, nil, newErr(ErrGeometry, a.instance, where(f, tag.PixelSpacing), "%v: want two positive values", ps)
		}
		th, err := lookup(f, tagPixelMeasures, tag.SliceThickness)
		if err != nil {
			return nil, nil, err
		}
		g := &geoms[f]
		copy(g.orientation[:], iop)
		copy(g.position[:], ipp)
		g.pixelSpacing = [2]float64{ps[0], ps[1]}
		if len(th) > 0 {
			g.thickness = th[0]
		}
		if err := checkOrientation(g.orientation); err != nil {
			return nil, nil, newErr(ErrGeometry, a.instance, where(f, tag.ImageOrientationPatient), "%v", err)
		}
		for _, v := range append(append([]float64{}, iop...), ipp...) {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, nil, newErr(ErrGeometry, a.instance, where(f, tag.ImagePositionPatient), "not a finite number")
			}
		}
		slope, err := lookup(f, tagPixelValueXfrm, tag.RescaleSlope)
		if err != nil {
			return nil, nil, err
		}
		icpt, err := lookup(f, tagPixelValueXfrm, tag.RescaleIntercept)
		if err != nil {
			return nil, nil, err
		}
		rescales[f] = rescale{slope: 1}
		if len(slope) > 0 {
			if slope[0] == 0 || math.IsNaN(slope[0]) || math.IsInf(slope[0], 0) {
				return nil, nil, newErr(ErrUnsupportedPixelFormat, a.instance, where(f, tag.RescaleSlope), "%v", slope[0])
			}
			rescales[f].slope = slope[0]
		}
		if len(icpt) > 0 {
			rescales[f].intercept = icpt[0]
		}
	}
	return geoms, rescales, nil
}

// checkOrientation requires two unit, orthogonal direction cosines.
func checkOrientation(o [6]float64) error {
	r := Vec3{o[0], o[1], o[2]}
	c := Vec3{o[3], o[4], o[5]}
	if math.Abs(r.norm()-1) > 1e-3 || math.Abs(c.norm()-1) > 1e-3 {
		return fmt.Errorf("direction cosines %v are not unit vectors", o)
	}
	if math.Abs(r.dot(c)) > 1e-3 {
		return fmt.Errorf("row and column directions %v are not orthogonal", o)
	}
	return nil
}

// decodeFrames turns native pixel data into per-frame modality values.
func decodeFrames(raw []byte, bigEndian bool, pf pixelFormat, nFrames int, rs []rescale, name string) ([][]float32, error) {
	bytesPer := pf.bitsAllocated / 8
	n := pf.rows * pf.cols
	need := n * nFrames * bytesPer
	if len(raw) < need {
		return nil, newErr(ErrTruncatedPixelData, name, tagName(tag.PixelData), "%d bytes, %d rows x %d columns x %d frames x %d bytes need %d", len(raw), pf.rows, pf.cols, nFrames, bytesPer, need)
	}
	signed := pf.pixelRep == 1
	mask := uint32(1)<<uint(pf.bitsStored) - 1
	if pf.bitsStored == 32 {
		mask = 0xffffffff
	}
	signBit := uint32(1) << uint(pf.bitsStored-1)
	out := make([][]float32, nFrames)
	for f := 0; f < nFrames; f++ {
		px := make([]float32, n)
		base := raw[f*n*bytesPer:]
		slope, icpt := rs[f].slope, rs[f].intercept
		for i := 0; i < n; i++ {
			var u uint32
			switch bytesPer {
			case 1:
				u = uint32(base[i])
			case 2:
				if bigEndian {
					u = uint32(base[2*i])<<8 | uint32(base[2*i+1])
				} else {
					u = uint32(base[2*i]) | uint32(base[2*i+1])<<8
				}
			case 4:
				b := base[4*i : 4*i+4]
				if bigEndian {
					u = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
				} else {
					u = uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
				}
			}
			u &= mask
			var v float64
			if signed && u&signBit != 0 {
				v = float64(int64(u) - int64(mask) - 1)
			} else {
				v = float64(u)
			}
			px[i] = float32(v*slope + icpt)
		}
		out[f] = px
	}
	return out, nil
}

// assemble checks that the instances form one consistent series and sorts its slices.
func assemble(insts []*instance, opt LoadOptions) (*Series, error) {
	first := insts[0]
	s := &Series{
		StudyInstanceUID:          first.studyUID,
		SeriesInstanceUID:         first.seriesUID,
		FrameOfReferenceUID:       first.forUID,
		Modality:                  first.modality,
		SOPClassUID:               first.sopClassUID,
		SeriesNumber:              first.seriesNumber,
		SeriesDescription:         first.seriesDescription,
		Rows:                      first.rows,
		Cols:                      first.cols,
		PhotometricInterpretation: first.photometric,
		patientStudy:              first.patientStudy,
	}
	g0 := first.frames[0]
	s.Orientation = g0.orientation
	s.PixelSpacing = g0.pixelSpacing
	s.SliceThickness = g0.thickness
	rowDir := Vec3{g0.orientation[0], g0.orientation[1], g0.orientation[2]}
	colDir := Vec3{g0.orientation[3], g0.orientation[4], g0.orientation[5]}
	s.Normal = cross(rowDir, colDir)
	seen := map[string]string{}
	for _, in := range insts {
		name := in.path + " (SOP Instance UID " + in.sopInstanceUID + ")"
		mixed := func(t tag.Tag, got, want string) error {
			return newErr(ErrMixedSeries, name, tagName(t), "%q differs from %q of %s", got, want, first.path)
		}
		switch {
		case in.seriesUID != first.seriesUID:
			return nil, mixed(tag.SeriesInstanceUID, in.seriesUID, first.seriesUID)
		case in.studyUID != first.studyUID:
			return nil, mixed(tag.StudyInstanceUID, in.studyUID, first.studyUID)
		case in.forUID != first.forUID:
			return nil, mixed(tag.FrameOfReferenceUID, in.forUID, first.forUID)
		case in.sopClassUID != first.sopClassUID:
			return nil, mixed(tag.SOPClassUID, in.sopClassUID, first.sopClassUID)
		case in.modality != first.modality:
			return nil, mixed(tag.Modality, in.modality, first.modality)
		}
		if prev, dup := seen[in.sopInstanceUID]; dup {
			return nil, newErr(ErrMixedSeries, name, tagName(tag.SOPInstanceUID), "same SOP Instance UID as %s", prev)
		}
		seen[in.sopInstanceUID] = in.path
		if in.rows != s.Rows || in.cols != s.Cols {
			return nil, newErr(ErrGeometry, name, tagName(tag.Rows)+" / "+tagName(tag.Columns), "%dx%d differs from %dx%d of %s", in.rows, in.cols, s.Rows, s.Cols, first.path)
		}
		for f, g := range in.frames {
			where := name
			if len(in.frames) > 1 {
				where = fmt.Sprintf("%s frame %d", name, f+1)
			}
			for k := 0; k < 6; k++ {
				if math.Abs(g.orientation[k]-s.Orientation[k]) > 1e-3 {
					return nil, newErr(ErrGeometry, where, tagName(tag.ImageOrientationPatient), "%v differs from %v of %s", g.orientation, s.Orientation, first.path)
				}
			}
			for k := 0; k < 2; k++ {
				if math.Abs(g.pixelSpacing[k]-s.PixelSpacing[k]) > 1e-4*s.PixelSpacing[k]+1e-6 {
					return nil, newErr(ErrGeometry, where, tagName(tag.PixelSpacing), "%v differs from %v of %s", g.pixelSpacing, s.PixelSpacing, first.path)
				}
			}
			frameNo := 0
			if len(in.frames) > 1 || hasFrames(in) {
				frameNo = f + 1
			}
			s.Slices = append(s.Slices, Slice{
				Path: in.path, SOPInstanceUID: in.sopInstanceUID, SOPClassUID: in.sopClassUID,
				FrameNumber: frameNo, InstanceNumber: in.instanceNumber,
				Position: g.position, Location: g.position.dot(s.Normal), Pixels: in.pixels[f],
			})
		}
	}
	if len(s.Slices) < opt.MinSlices {
		return nil, newErr(ErrTooFewSlices, "", "", "%d slices, at least %d needed", len(s.Slices), opt.MinSlices)
	}
	sort.SliceStable(s.Slices, func(i, j int) bool { return s.Slices[i].Location < s.Slices[j].Location })
	return s, s.checkSpacing(opt)
}

// hasFrames reports whether an instance is a (possibly single-frame) enhanced multi-frame image,
// whose frames are referenced by number.
func hasFrames(in *instance) bool { return in.multiFrame }

func sliceName(sl Slice) string {
	if sl.FrameNumber > 0 {
		return fmt.Sprintf("%s frame %d", sl.SOPInstanceUID, sl.FrameNumber)
	}
	return sl.SOPInstanceUID
}

// checkSpacing looks at every pair of neighbouring slices (not just the first two): two slices at
// the same location are an error; gaps, irregular spacing and in-plane shifts are warnings.
func (s *Series) checkSpacing(opt LoadOptions) error {
	n := len(s.Slices)
	if n < 2 {
		return nil
	}
	d := make([]float64, n-1)
	for i := 1; i < n; i++ {
		d[i-1] = s.Slices[i].Location - s.Slices[i-1].Location
		if d[i-1] < 1e-3 {
			return newErr(ErrGeometry, s.Slices[i].Path+" (SOP Instance UID "+sliceName(s.Slices[i])+")", tagName(tag.ImagePositionPatient),
				"same location along the slice normal (%.4f mm) as %s", s.Slices[i].Location, sliceName(s.Slices[i-1]))
		}
	}
	sorted := append([]float64{}, d...)
	sort.Float64s(sorted)
	median := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		median = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	s.SliceSpacing = median
	tol := math.Max(0.01, 0.02*median)
	for i, di := range d {
		a, b := s.Slices[i], s.Slices[i+1]
		var msg string
		switch {
		case di > 1.5*median:
			msg = fmt.Sprintf("gap of %.4g mm (about %d missing slices) between %s and %s; median spacing %.4g mm", di, int(math.Round(di/median))-1, sliceName(a), sliceName(b), median)
		case math.Abs(di-median) > tol:
			msg = fmt.Sprintf("irregular spacing %.4g mm between %s and %s; median spacing %.4g mm", di, sliceName(a), sliceName(b), median)
		}
		if msg != "" {
			if opt.RejectIrregularSpacing {
				return newErr(ErrIrregularSpacing, b.Path, tagName(tag.ImagePositionPatient), "%s", msg)
			}
			s.Warnings = append(s.Warnings, msg)
		}
	}
	rowDir := Vec3{s.Orientation[0], s.Orientation[1], s.Orientation[2]}
	colDir := Vec3{s.Orientation[3], s.Orientation[4], s.Orientation[5]}
	p0 := s.Slices[0].Position
	for _, sl := range s.Slices[1:] {
		off := sl.Position.sub(p0)
		dx, dy := off.dot(rowDir), off.dot(colDir)
		if math.Abs(dx) > 0.5*s.PixelSpacing[1] || math.Abs(dy) > 0.5*s.PixelSpacing[0] {
			s.Warnings = append(s.Warnings, fmt.Sprintf("in-plane shift of (%.3g, %.3g) mm of %s relative to %s", dx, dy, sliceName(sl), sliceName(s.Slices[0])))
		}
	}
	return nil
}

// SeriesFiles lists the Part-10 files (those with the DICM prefix) directly in dir, sorted, so a
// folder holding a series plus other files (notes, masks) can be loaded.
func SeriesFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		var head [132]byte
		n, _ := io.ReadFull(f, head[:])
		f.Close()
		if n == 132 && string(head[128:]) == "DICM" {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}
