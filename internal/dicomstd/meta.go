package dicomstd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrNotPart10 means the input has no "DICM" marker after a 128-byte preamble.
var ErrNotPart10 = errors.New("not a DICOM Part-10 file (no DICM marker after the 128-byte preamble)")

// ErrMalformed wraps data set and file meta structure errors.
var ErrMalformed = errors.New("malformed DICOM data")

// FileMeta is the file meta information (group 0002, PS3.10 7.1) that dpersona writes and reads.
type FileMeta struct {
	MediaStorageSOPClassUID    string
	MediaStorageSOPInstanceUID string
	TransferSyntaxUID          string
	ImplementationClassUID     string // empty: ours, with our version name
	ImplementationVersionName  string
	SourceAETitle              string // written only when set
}

// EncodeFileMeta returns the 128-byte preamble, "DICM" and the file meta group for m: the group
// length first, then the elements in ascending order, each value padded to even length (UIDs with
// NUL, text with a space). An empty ImplementationClassUID is written as ours.
func EncodeFileMeta(m FileMeta) []byte {
	if m.ImplementationClassUID == "" {
		m.ImplementationClassUID, m.ImplementationVersionName = ImplementationClassUID, ImplementationVersionName
	}
	type element struct {
		elem  uint16
		vr    string
		value string
		pad   byte
	}
	els := []element{ // ascending element numbers
		{0x0001, "OB", "\x00\x01", 0},
		{0x0002, "UI", m.MediaStorageSOPClassUID, 0},
		{0x0003, "UI", m.MediaStorageSOPInstanceUID, 0},
		{0x0010, "UI", m.TransferSyntaxUID, 0},
		{0x0012, "UI", m.ImplementationClassUID, 0},
	}
	if m.ImplementationVersionName != "" {
		els = append(els, element{0x0013, "SH", m.ImplementationVersionName, ' '})
	}
	if m.SourceAETitle != "" {
		els = append(els, element{0x0016, "AE", m.SourceAETitle, ' '})
	}
	var body []byte
	for _, e := range els {
		n := len(e.value) + len(e.value)%2
		body = binary.LittleEndian.AppendUint16(body, 0x0002)
		body = binary.LittleEndian.AppendUint16(body, e.elem)
		body = append(body, e.vr...)
		if LongVR(e.vr) {
			body = append(body, 0, 0)
			body = binary.LittleEndian.AppendUint32(body, uint32(n))
		} else {
			body = binary.LittleEndian.AppendUint16(body, uint16(n))
		}
		body = append(body, e.value...)
		if len(e.value)%2 == 1 {
			body = append(body, e.pad)
		}
	}
	out := make([]byte, 128, 128+4+12+len(body))
	out = append(out, "DICM"...)
	out = append(out, 0x02, 0x00, 0x00, 0x00, 'U', 'L', 4, 0) // (0002,0000) UL, 4 bytes
	out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
	return append(out, body...)
}

// MaxFileMetaLength bounds the file meta group: it holds a handful of UIDs and short strings.
const MaxFileMetaLength = 64 * 1024

// ReadFileMeta reads the preamble and the file meta group from r, leaving r at the first byte of
// the data set. It returns the meta information and the number of bytes consumed (the data set
// offset). The group is read element by element while the group number is 0002 (its group
// length is not trusted), at most MaxFileMetaLength bytes, and must name a transfer syntax.
func ReadFileMeta(r *bufio.Reader) (FileMeta, int64, error) {
	var m FileMeta
	head := make([]byte, 132)
	if _, err := io.ReadFull(r, head); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return m, 0, ErrNotPart10
		}
		return m, 0, err
	}
	if string(head[128:132]) != "DICM" {
		return m, 0, ErrNotPart10
	}
	off := int64(132)
	total := 0
	for {
		peek, err := r.Peek(8)
		if err != nil {
			if err == io.EOF && len(peek) == 0 {
				break // a file that is all meta: an empty data set
			}
			return m, off, fmt.Errorf("%w: file meta group truncated", ErrMalformed)
		}
		if binary.LittleEndian.Uint16(peek) != 0x0002 {
			break
		}
		elem := binary.LittleEndian.Uint16(peek[2:])
		vr := string(peek[4:6])
		hdr := 8
		var n uint32
		if LongVR(vr) {
			lb, err := r.Peek(12)
			if err != nil {
				return m, off, fmt.Errorf("%w: file meta element (0002,%04X) truncated", ErrMalformed, elem)
			}
			n = binary.LittleEndian.Uint32(lb[8:])
			hdr = 12
		} else {
			n = uint32(binary.LittleEndian.Uint16(peek[6:]))
		}
		total += hdr + int(n)
		if n == 0xFFFFFFFF || total > MaxFileMetaLength {
			return m, off, fmt.Errorf("%w: file meta group longer than %d bytes or of undefined length", ErrMalformed, MaxFileMetaLength)
		}
		if _, err := r.Discard(hdr); err != nil {
			return m, off, err
		}
		v := make([]byte, n)
		if _, err := io.ReadFull(r, v); err != nil {
			return m, off, fmt.Errorf("%w: file meta element (0002,%04X) truncated", ErrMalformed, elem)
		}
		off += int64(hdr) + int64(n)
		s := strings.TrimRight(string(v), "\x00 ")
		switch elem {
		case 0x0002:
			m.MediaStorageSOPClassUID = s
		case 0x0003:
			m.MediaStorageSOPInstanceUID = s
		case 0x0010:
			m.TransferSyntaxUID = s
		case 0x0012:
			m.ImplementationClassUID = s
		case 0x0013:
			m.ImplementationVersionName = s
		case 0x0016:
			m.SourceAETitle = strings.TrimSpace(s)
		}
	}
	if m.TransferSyntaxUID == "" {
		return m, off, fmt.Errorf("%w: file meta group has no TransferSyntaxUID (0002,0010)", ErrMalformed)
	}
	return m, off, nil
}
