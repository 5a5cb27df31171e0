package dicomio

import (
	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"dpersona/internal/dicomstd"
)

// SEG is a decoded Segmentation object.
type SEG struct {
	Path                string
	SOPInstanceUID      string
	SeriesInstanceUID   string
	StudyInstanceUID    string
	FrameOfReferenceUID string
	Type                SegmentationType
	FractionalType      string // PROBABILITY or OCCUPANCY for FRACTIONAL
	MaxFractionalValue  int
	Rows, Cols          int
	SegmentsOverlap     string
	ContentLabel        string
	Segments            []SegmentInfo
	Frames              []SEGFrame
	// PixelData is the raw (packed, for BINARY) pixel data as stored.
	PixelData []byte
}

// SegmentInfo is one SegmentSequence item.
type SegmentInfo struct {
	Number int
	SegmentDescription
}

// SEGFrame is one frame with its functional groups resolved.
type SEGFrame struct {
	SegmentNumber        int
	SourceSOPInstanceUID string
	SourceSOPClassUID    string
	SourceFrameNumber    int // 0 when the source is single-frame
	Position             Vec3
	HasPosition          bool
	DimensionIndex       []int
	// Pixels are Rows*Cols values: 0/1 for BINARY, 0..MaxFractionalValue for FRACTIONAL.
	Pixels []uint8
}

var (
	tagSegmentSequence   = tag.Tag{Group: 0x0062, Element: 0x0002}
	tagSegmentNumber     = tag.Tag{Group: 0x0062, Element: 0x0004}
	tagSegmentLabel      = tag.Tag{Group: 0x0062, Element: 0x0005}
	tagSegmentDesc       = tag.Tag{Group: 0x0062, Element: 0x0006}
	tagSegAlgoIdent      = tag.Tag{Group: 0x0062, Element: 0x0007}
	tagSegAlgoType       = tag.Tag{Group: 0x0062, Element: 0x0008}
	tagSegAlgoName       = tag.Tag{Group: 0x0062, Element: 0x0009}
	tagSegIdentSeq       = tag.Tag{Group: 0x0062, Element: 0x000A}
	tagRefSegmentNumber  = tag.Tag{Group: 0x0062, Element: 0x000B}
	tagMaxFractional     = tag.Tag{Group: 0x0062, Element: 0x000E}
	tagCategoryCode      = tag.Tag{Group: 0x0062, Element: 0x0003}
	tagTypeCode          = tag.Tag{Group: 0x0062, Element: 0x000F}
	tagSegmentationType  = tag.Tag{Group: 0x0062, Element: 0x0001}
	tagFractionalType    = tag.Tag{Group: 0x0062, Element: 0x0010}
	tagSegmentsOverlap   = tag.Tag{Group: 0x0062, Element: 0x0013}
	tagTrackingID        = tag.Tag{Group: 0x0062, Element: 0x0020}
	tagAlgoFamily        = tag.Tag{Group: 0x0066, Element: 0x002F}
	tagAlgoVersion       = tag.Tag{Group: 0x0066, Element: 0x0031}
	tagAlgoName          = tag.Tag{Group: 0x0066, Element: 0x0036}
	tagDerivationImage   = tag.Tag{Group: 0x0008, Element: 0x9124}
	tagSourceImage       = tag.Tag{Group: 0x0008, Element: 0x2112}
	tagFrameContent      = tag.Tag{Group: 0x0020, Element: 0x9111}
	tagDimIndexValues    = tag.Tag{Group: 0x0020, Element: 0x9157}
	tagContentLabel      = tag.Tag{Group: 0x0070, Element: 0x0080}
	tagCodeValue         = tag.Tag{Group: 0x0008, Element: 0x0100}
	tagCodingScheme      = tag.Tag{Group: 0x0008, Element: 0x0102}
	tagCodeMeaning       = tag.Tag{Group: 0x0008, Element: 0x0104}
	tagRefSOPClassUID    = tag.Tag{Group: 0x0008, Element: 0x1150}
	tagRefSOPInstanceUID = tag.Tag{Group: 0x0008, Element: 0x1155}
	tagRefFrameNumber    = tag.Tag{Group: 0x0008, Element: 0x1160}
)

// ReadSEG reads a Segmentation object. Pixel data is unpacked here (LSB first, one continuous
// bit stream across frames), not by the parser, whose 1-bit decoding is wrong.
func ReadSEG(path string) (*SEG, error) {
	a, perr, err := parseFile(path)
	if err != nil {
		return nil, err
	}
	if perr != nil {
		if a.has(tag.Rows) && !a.has(tag.PixelData) {
			return nil, newErr(ErrTruncatedPixelData, path, tagName(tag.PixelData), "%v", perr)
		}
		return nil, newErr(ErrNotDICOM, path, "", "%v", perr)
	}
	s := &SEG{Path: path}
	if cls := a.str(tag.SOPClassUID); cls != SegmentationStorage {
		return nil, newErr(ErrInvalidSEG, path, tagName(tag.SOPClassUID), "%q is not Segmentation Storage", cls)
	}
	ts := a.str(tag.TransferSyntaxUID)
	if ts == "" {
		ts = dicomstd.ImplicitVRLittleEndian
	}
	if !nativeTransferSyntaxes[ts] || ts == dicomstd.ExplicitVRBigEndian {
		return nil, newErr(ErrCompressed, path, tagName(tag.TransferSyntaxUID), "%s", ts)
	}
	s.SOPInstanceUID = a.str(tag.SOPInstanceUID)
	a.instance = path + " (SOP Instance UID " + s.SOPInstanceUID + ")"
	s.SeriesInstanceUID = a.str(tag.SeriesInstanceUID)
	s.StudyInstanceUID = a.str(tag.StudyInstanceUID)
	s.FrameOfReferenceUID = a.str(tag.FrameOfReferenceUID)
	s.Type = SegmentationType(a.str(tagSegmentationType))
	s.FractionalType = a.str(tagFractionalType)
	s.SegmentsOverlap = a.str(tagSegmentsOverlap)
	s.ContentLabel = a.str(tagContentLabel)
	if s.Rows, err = a.requireInt(tag.Rows); err != nil {
		return nil, err
	}
	if s.Cols, err = a.requireInt(tag.Columns); err != nil {
		return nil, err
	}
	bits, err := a.requireInt(tag.BitsAllocated)
	if err != nil {
		return nil, err
	}
	nFrames, err := a.requireInt(tag.NumberOfFrames)
	if err != nil {
		return nil, err
	}
	switch s.Type {
	case Binary:
		if bits != 1 {
			return nil, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.BitsAllocated), "%d for BINARY", bits)
		}
	case Fractional:
		if bits != 8 {
			return nil, newErr(ErrUnsupportedPixelFormat, a.instance, tagName(tag.BitsAllocated), "%d for FRACTIONAL", bits)
		}
		if s.MaxFractionalValue, err = a.requireInt(tagMaxFractional); err != nil {
			return nil, err
		}
	default:
		return nil, newErr(ErrInvalidSEG, a.instance, tagName(tagSegmentationType), "%q", s.Type)
	}
	for _, it := range a.items(tagSegmentSequence) {
		var si SegmentInfo
		if si.Number, err = it.requireInt(tagSegmentNumber); err != nil {
			return nil, err
		}
		si.Label = it.str(tagSegmentLabel)
		si.Description = it.str(tagSegmentDesc)
		si.Algorithm.Type = AlgorithmType(it.str(tagSegAlgoType))
		si.Algorithm.Name = it.str(tagSegAlgoName)
		si.Category = readCode(it, tagCategoryCode)
		si.Type = readCode(it, tagTypeCode)
		si.TrackingID = it.str(tagTrackingID)
		si.TrackingUID = it.str(tag.TrackingUID)
		if _, ok := it.item(tag.AnatomicRegionSequence); ok {
			c := readCode(it, tag.AnatomicRegionSequence)
			si.AnatomicRegion = &c
		}
		if alg, ok := it.item(tagSegAlgoIdent); ok {
			si.Algorithm.Version = alg.str(tagAlgoVersion)
			if n := alg.str(tagAlgoName); n != "" {
				si.Algorithm.Name = n
			}
			si.Algorithm.Family = readCode(alg, tagAlgoFamily)
		}
		s.Segments = append(s.Segments, si)
	}

	pd := a.find(tag.PixelData)
	if pd == nil {
		return nil, newErr(ErrMissingAttribute, a.instance, tagName(tag.PixelData), "absent")
	}
	info, ok := pd.Value.GetValue().(dicom.PixelDataInfo)
	if !ok || info.IsEncapsulated {
		return nil, newErr(ErrCompressed, a.instance, tagName(tag.PixelData), "encapsulated pixel data")
	}
	s.PixelData = info.UnprocessedValueData
	n := s.Rows * s.Cols
	need := nFrames * n
	if s.Type == Binary {
		need = (need + 7) / 8
	}
	if len(s.PixelData) < need {
		return nil, newErr(ErrTruncatedPixelData, a.instance, tagName(tag.PixelData), "%d bytes for %d frames of %dx%d need %d", len(s.PixelData), nFrames, s.Rows, s.Cols, need)
	}

	shared, _ := a.item(tagSharedFG)
	perFrame := a.items(tagPerFrameFG)
	if len(perFrame) != nFrames {
		return nil, newErr(ErrInvalidSEG, a.instance, tagName(tagPerFrameFG), "%d items for %d frames", len(perFrame), nFrames)
	}
	// fg finds functional group macro seq for frame k: per-frame first, then shared.
	fg := func(k int, seq tag.Tag) (attrs, bool) {
		if it, ok := perFrame[k].item(seq); ok {
			return it, true
		}
		return shared.item(seq)
	}
	s.Frames = make([]SEGFrame, nFrames)
	for k := range s.Frames {
		fr := &s.Frames[k]
		if it, ok := fg(k, tagSegIdentSeq); ok {
			fr.SegmentNumber, _ = it.requireInt(tagRefSegmentNumber)
		}
		if fr.SegmentNumber == 0 {
			return nil, newErr(ErrInvalidSEG, a.instance, tagName(tagRefSegmentNumber), "frame %d has no segment number", k+1)
		}
		if it, ok := fg(k, tagDerivationImage); ok {
			if src, ok := it.item(tagSourceImage); ok {
				fr.SourceSOPInstanceUID = src.str(tagRefSOPInstanceUID)
				fr.SourceSOPClassUID = src.str(tagRefSOPClassUID)
				if v, _ := src.ints(tagRefFrameNumber); len(v) > 0 {
					fr.SourceFrameNumber = v[0]
				}
			}
		}
		if it, ok := fg(k, tagPlanePosition); ok {
			if p, err := it.floats(tag.ImagePositionPatient); err == nil && len(p) == 3 {
				copy(fr.Position[:], p)
				fr.HasPosition = true
			}
		}
		if it, ok := fg(k, tagFrameContent); ok {
			fr.DimensionIndex, _ = it.ints(tagDimIndexValues)
		}
		fr.Pixels = make([]uint8, n)
		if s.Type == Binary {
			unpackBits(s.PixelData, k*n, fr.Pixels)
		} else {
			copy(fr.Pixels, s.PixelData[k*n:(k+1)*n])
		}
	}
	return s, nil
}

// unpackBits reads len(dst) bits starting at bit offset first of an LSB-first bit stream.
func unpackBits(packed []byte, first int, dst []uint8) {
	for i := range dst {
		b := first + i
		dst[i] = (packed[b>>3] >> uint(b&7)) & 1
	}
}

func readCode(a attrs, seq tag.Tag) Code {
	it, ok := a.item(seq)
	if !ok {
		return Code{}
	}
	return Code{Scheme: it.str(tagCodingScheme), Code: it.str(tagCodeValue), Meaning: it.str(tagCodeMeaning)}
}

// Mask returns the pixels of segment `segment` on the source slice (SOP Instance UID and frame
// number, 0 for single-frame), or nil when the SEG has no such frame (an empty frame).
func (s *SEG) Mask(segment int, sopInstanceUID string, frameNumber int) []uint8 {
	for i := range s.Frames {
		f := &s.Frames[i]
		if f.SegmentNumber == segment && f.SourceSOPInstanceUID == sopInstanceUID && f.SourceFrameNumber == frameNumber {
			return f.Pixels
		}
	}
	return nil
}

// MasksFor lays the SEG's frames out like WriteSEG's input: [segment][slice of src] -> pixels,
// nil where the SEG has no frame. A frame that references an instance not in src is an error,
// as is a frame whose position differs from its source slice's.
func (s *SEG) MasksFor(src *Series) ([][][]uint8, error) {
	if s.Rows != src.Rows || s.Cols != src.Cols {
		return nil, newErr(ErrGeometry, s.Path, "Rows/Columns", "SEG %dx%d, source %dx%d", s.Rows, s.Cols, src.Rows, src.Cols)
	}
	index := map[[2]any]int{}
	for i, sl := range src.Slices {
		index[[2]any{sl.SOPInstanceUID, sl.FrameNumber}] = i
	}
	maxSeg := len(s.Segments)
	for _, f := range s.Frames {
		if f.SegmentNumber > maxSeg {
			maxSeg = f.SegmentNumber
		}
	}
	out := make([][][]uint8, maxSeg)
	for i := range out {
		out[i] = make([][]uint8, len(src.Slices))
	}
	for k, f := range s.Frames {
		i, ok := index[[2]any{f.SourceSOPInstanceUID, f.SourceFrameNumber}]
		if !ok {
			return nil, newErr(ErrGeometry, s.Path, "ReferencedSOPInstanceUID (0008,1155)", "frame %d references %s frame %d, not in the source series", k+1, f.SourceSOPInstanceUID, f.SourceFrameNumber)
		}
		if f.HasPosition && f.Position.sub(src.Slices[i].Position).norm() > 1e-3 {
			return nil, newErr(ErrGeometry, s.Path, "ImagePositionPatient (0020,0032)", "frame %d at %v, its source slice at %v", k+1, f.Position, src.Slices[i].Position)
		}
		out[f.SegmentNumber-1][i] = f.Pixels
	}
	return out, nil
}
