package dicomstd

import (
	"bufio"
	"bytes"
	"compress/flate"
	"fmt"
	"io"
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

// splitFile reads the file meta group (ReadFileMeta) and returns it with the data set bytes after it.
func splitFile(data []byte) (FileMeta, []byte, error) {
	m, off, err := ReadFileMeta(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		return m, nil, err
	}
	return m, data[off:], nil
}
