// Package part10 reads and writes the DICOM Part-10 file header (preamble, "DICM", the file meta
// group 0002) and scans a data set for the few top-level attributes the gateway checks, without
// decoding pixel data. It handles implicit VR little endian, explicit VR little endian (also the
// encoding of every compressed transfer syntax) and explicit VR big endian.
package part10

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"dpersona/internal/dicomstd"
)

// Transfer syntaxes this package knows by name (defined in dicomstd).
const (
	ImplicitVRLittleEndian = dicomstd.ImplicitVRLittleEndian
	ExplicitVRLittleEndian = dicomstd.ExplicitVRLittleEndian
	DeflatedExplicitVRLE   = dicomstd.DeflatedExplicitVRLittleEndian
	ExplicitVRBigEndian    = dicomstd.ExplicitVRBigEndian
)

// Tag is a (group, element) pair packed as group<<16 | element.
type Tag uint32

// Tags the gateway reads.
const (
	TagSOPClassUID       Tag = 0x00080016
	TagSOPInstanceUID    Tag = 0x00080018
	TagModality          Tag = 0x00080060
	TagNumberOfFrames    Tag = 0x00280008
	TagStudyInstanceUID  Tag = 0x0020000D
	TagSeriesInstanceUID Tag = 0x0020000E

	tagItem          Tag = 0xFFFEE000
	tagItemDelim     Tag = 0xFFFEE00D
	tagSequenceDelim Tag = 0xFFFEE0DD
)

func (t Tag) String() string { return fmt.Sprintf("(%04X,%04X)", uint32(t)>>16, uint32(t)&0xFFFF) }

// ErrNotPart10 means the input has no "DICM" marker after a 128-byte preamble; ErrMalformed wraps
// data set and file meta structure errors. Both are dicomstd's, so errors.Is works with either name.
var (
	ErrNotPart10 = dicomstd.ErrNotPart10
	ErrMalformed = dicomstd.ErrMalformed
)

// Meta is the file meta information the gateway writes and reads (dicomstd.FileMeta).
type Meta = dicomstd.FileMeta

// ReadMeta reads the preamble and the meta group from r, leaving r at the first byte of the data
// set (dicomstd.ReadFileMeta).
func ReadMeta(r *bufio.Reader) (Meta, int64, error) { return dicomstd.ReadFileMeta(r) }

// EncodeMeta returns the preamble, "DICM" and the meta group for m (see dicomstd.EncodeFileMeta).
func EncodeMeta(m Meta) []byte { return dicomstd.EncodeFileMeta(m) }

// Encoding describes how a transfer syntax encodes the data set.
type Encoding struct {
	Explicit  bool
	BigEndian bool
}

// EncodingOf returns the data set encoding of a transfer syntax, or an error for one whose data
// set cannot be scanned without inflating it.
func EncodingOf(ts string) (Encoding, error) {
	switch ts {
	case ImplicitVRLittleEndian:
		return Encoding{}, nil
	case ExplicitVRBigEndian:
		return Encoding{Explicit: true, BigEndian: true}, nil
	case DeflatedExplicitVRLE:
		return Encoding{}, fmt.Errorf("transfer syntax %s (deflate) is not supported", ts)
	case "":
		return Encoding{}, errors.New("no transfer syntax")
	}
	// Every other standard transfer syntax (explicit VR LE and the compressed ones) encodes the
	// data set in explicit VR little endian.
	return Encoding{Explicit: true}, nil
}

// maxScanValue bounds a value the scanner keeps; the attributes it looks for are short strings.
const maxScanValue = 1024

// maxScanDepth bounds nesting of sequences while skipping them.
const maxScanDepth = 64

type scanner struct {
	r   *bufio.Reader
	bo  binary.ByteOrder
	enc Encoding
}

// Scan reads top-level elements of a data set from r until it has passed the largest wanted tag,
// and returns the wanted values as trimmed strings (absent tags are absent from the map). Values
// of other elements are skipped without being read into memory; sequences of undefined length are
// walked item by item.
func Scan(r *bufio.Reader, ts string, wanted ...Tag) (map[Tag]string, error) {
	enc, err := EncodingOf(ts)
	if err != nil {
		return nil, err
	}
	s := &scanner{r: r, enc: enc, bo: binary.LittleEndian}
	if enc.BigEndian {
		s.bo = binary.BigEndian
	}
	var last Tag
	want := map[Tag]bool{}
	for _, t := range wanted {
		want[t] = true
		if t > last {
			last = t
		}
	}
	out := map[Tag]string{}
	var prev Tag
	for {
		tag, vr, n, err := s.header(s.enc.Explicit)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if tag < prev {
			return out, fmt.Errorf("%w: element %s follows %s (not in ascending order)", ErrMalformed, tag, prev)
		}
		prev = tag
		if tag > last {
			return out, nil
		}
		if want[tag] && n != 0xFFFFFFFF {
			if n > maxScanValue {
				return out, fmt.Errorf("%w: element %s is %d bytes, longer than any such value", ErrMalformed, tag, n)
			}
			v := make([]byte, n)
			if _, err := io.ReadFull(s.r, v); err != nil {
				return out, fmt.Errorf("%w: element %s truncated", ErrMalformed, tag)
			}
			out[tag] = strings.Trim(string(v), "\x00 ")
			continue
		}
		if err := s.skipValue(tag, vr, n, s.enc.Explicit, 0); err != nil {
			return out, err
		}
	}
}

// header reads one element header. io.EOF is returned only at a clean element boundary.
func (s *scanner) header(explicit bool) (Tag, string, uint32, error) {
	b, err := s.r.Peek(8)
	if len(b) == 0 && err == io.EOF {
		return 0, "", 0, io.EOF
	}
	if err != nil {
		return 0, "", 0, fmt.Errorf("%w: element header truncated", ErrMalformed)
	}
	tag := Tag(uint32(s.bo.Uint16(b))<<16 | uint32(s.bo.Uint16(b[2:])))
	if tag == tagItem || tag == tagItemDelim || tag == tagSequenceDelim || !explicit {
		n := s.bo.Uint32(b[4:])
		s.r.Discard(8)
		return tag, "", n, nil
	}
	vr := string(b[4:6])
	if dicomstd.LongVR(vr) {
		lb, err := s.r.Peek(12)
		if err != nil {
			return 0, "", 0, fmt.Errorf("%w: element %s header truncated", ErrMalformed, tag)
		}
		n := s.bo.Uint32(lb[8:])
		s.r.Discard(12)
		return tag, vr, n, nil
	}
	if vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z' {
		return 0, "", 0, fmt.Errorf("%w: element %s has no valid VR (bytes %q)", ErrMalformed, tag, vr)
	}
	n := uint32(s.bo.Uint16(b[6:]))
	s.r.Discard(8)
	return tag, vr, n, nil
}

func (s *scanner) discard(n uint32, tag Tag) error {
	if _, err := s.r.Discard(int(n)); err != nil {
		return fmt.Errorf("%w: value of %s truncated (%d bytes declared)", ErrMalformed, tag, n)
	}
	return nil
}

// skipValue skips the value of an element whose header was read.
func (s *scanner) skipValue(tag Tag, vr string, n uint32, explicit bool, depth int) error {
	if n != 0xFFFFFFFF {
		return s.discard(n, tag)
	}
	if depth >= maxScanDepth {
		return fmt.Errorf("%w: sequences nested deeper than %d", ErrMalformed, maxScanDepth)
	}
	// Undefined length: a sequence (SQ, or UN/implicit whose contents are implicit VR LE per
	// PS3.5 6.2.2) or encapsulated pixel data (items of defined length).
	if vr == "UN" {
		explicit = false
	}
	for {
		itag, _, in, err := s.header(false)
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("%w: sequence %s not terminated", ErrMalformed, tag)
			}
			return err
		}
		switch itag {
		case tagSequenceDelim:
			return nil
		case tagItem:
			if in != 0xFFFFFFFF {
				if err := s.discard(in, tag); err != nil {
					return err
				}
				continue
			}
			if err := s.skipItem(explicit, depth+1); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: %s inside sequence %s where an item was expected", ErrMalformed, itag, tag)
		}
	}
}

// skipItem skips the elements of an item of undefined length up to its delimiter.
func (s *scanner) skipItem(explicit bool, depth int) error {
	for {
		tag, vr, n, err := s.header(explicit)
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("%w: item not terminated", ErrMalformed)
			}
			return err
		}
		if tag == tagItemDelim {
			return nil
		}
		if tag == tagItem || tag == tagSequenceDelim {
			return fmt.Errorf("%w: %s directly inside an item", ErrMalformed, tag)
		}
		if err := s.skipValue(tag, vr, n, explicit, depth); err != nil {
			return err
		}
	}
}

// Instance identifies one received or stored instance.
type Instance struct {
	SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID, Modality string
	// Frames is NumberOfFrames (0028,0008): the images of a multi-frame instance; 1 when absent.
	Frames int
}

// ScanInstance reads the identifying attributes of a data set.
func ScanInstance(r *bufio.Reader, ts string) (Instance, error) {
	v, err := Scan(r, ts, TagSOPClassUID, TagSOPInstanceUID, TagModality, TagStudyInstanceUID, TagSeriesInstanceUID, TagNumberOfFrames)
	inst := Instance{
		SOPClassUID:       v[TagSOPClassUID],
		SOPInstanceUID:    v[TagSOPInstanceUID],
		StudyInstanceUID:  v[TagStudyInstanceUID],
		SeriesInstanceUID: v[TagSeriesInstanceUID],
		Modality:          v[TagModality],
		Frames:            1,
	}
	if n, perr := strconv.Atoi(strings.TrimSpace(v[TagNumberOfFrames])); perr == nil && n > 1 {
		inst.Frames = n
	}
	return inst, err
}

// ReadFileHeader reads the meta group and the identifying attributes of a Part-10 stream.
func ReadFileHeader(r io.Reader) (Meta, Instance, int64, error) {
	// Small buffer: the attributes sit in the first kilobytes, and a rebuild reads every file.
	br := bufio.NewReaderSize(r, 8*1024)
	m, off, err := ReadMeta(br)
	if err != nil {
		return m, Instance{}, off, err
	}
	inst, err := ScanInstance(br, m.TransferSyntaxUID)
	return m, inst, off, err
}

// bytesReader helps tests and fuzzers scan an in-memory data set.
func bytesReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
