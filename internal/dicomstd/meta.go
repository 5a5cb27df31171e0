package dicomstd

import (
	"encoding/binary"
)

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
