package dicomstd

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// DeflateFile re-encodes a Part-10 file in explicit VR little endian with the deflated transfer
// syntax (same file meta otherwise).
func DeflateFile(data []byte) ([]byte, error) {
	m, body, err := splitFile(data)
	if err != nil {
		return nil, err
	}
	if m.TransferSyntaxUID != ExplicitVRLittleEndian {
		return nil, fmt.Errorf("deflate: the file is in transfer syntax %s, not explicit VR little endian", m.TransferSyntaxUID)
	}
	var out bytes.Buffer
	m.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
	out.Write(EncodeFileMeta(m))
	w, err := flate.NewWriter(&out, flate.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(body); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if out.Len()%2 == 1 {
		out.WriteByte(0) // even length; inflate stops at the end of the deflate stream
	}
	return out.Bytes(), nil
}

// InflateFile turns a deflated Part-10 file back into explicit VR little endian.
func InflateFile(data []byte) ([]byte, error) {
	m, body, err := splitFile(data)
	if err != nil {
		return nil, err
	}
	if m.TransferSyntaxUID != DeflatedExplicitVRLittleEndian {
		return nil, fmt.Errorf("inflate: the file is in transfer syntax %s, not deflated", m.TransferSyntaxUID)
	}
	plain, err := io.ReadAll(flate.NewReader(bytes.NewReader(body)))
	if err != nil {
		return nil, fmt.Errorf("inflate: %w", err)
	}
	m.TransferSyntaxUID = ExplicitVRLittleEndian
	return append(EncodeFileMeta(m), plain...), nil
}

// splitFile reads the file meta group (explicit VR little endian, PS3.10 7.1) and returns it with
// the data set bytes after it.
func splitFile(data []byte) (FileMeta, []byte, error) {
	var m FileMeta
	if len(data) < 144 || string(data[128:132]) != "DICM" {
		return m, nil, errors.New("not a Part-10 file (no DICM prefix)")
	}
	if binary.LittleEndian.Uint16(data[132:]) != 0x0002 || binary.LittleEndian.Uint16(data[134:]) != 0x0000 || string(data[136:138]) != "UL" {
		return m, nil, errors.New("file meta group does not start with its group length")
	}
	end := 144 + int(binary.LittleEndian.Uint32(data[140:]))
	if end > len(data) {
		return m, nil, errors.New("file meta group length runs past the end of the file")
	}
	for p := 144; p < end; {
		if p+8 > end {
			return m, nil, errors.New("truncated file meta element")
		}
		elem, vr := binary.LittleEndian.Uint16(data[p+2:]), string(data[p+4:p+6])
		n, hdr := int(binary.LittleEndian.Uint16(data[p+6:])), 8
		if LongVR(vr) {
			if p+12 > end {
				return m, nil, errors.New("truncated file meta element")
			}
			n, hdr = int(binary.LittleEndian.Uint32(data[p+8:])), 12
		}
		if p+hdr+n > end {
			return m, nil, errors.New("file meta element runs past the group")
		}
		v := strings.TrimRight(string(data[p+hdr:p+hdr+n]), " \x00")
		switch elem {
		case 0x0002:
			m.MediaStorageSOPClassUID = v
		case 0x0003:
			m.MediaStorageSOPInstanceUID = v
		case 0x0010:
			m.TransferSyntaxUID = v
		case 0x0012:
			m.ImplementationClassUID = v
		case 0x0013:
			m.ImplementationVersionName = v
		case 0x0016:
			m.SourceAETitle = v
		}
		p += hdr + n
	}
	return m, data[end:], nil
}
