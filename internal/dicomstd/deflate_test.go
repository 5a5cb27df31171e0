package dicomstd

import (
	"bytes"
	"testing"
)

// A deflated file keeps its meta (but the transfer syntax), is smaller for mostly-zero data, and
// inflates back to the same bytes; files in other encodings are refused.
func TestDeflateFileRoundTrip(t *testing.T) {
	meta := EncodeFileMeta(FileMeta{MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.1.66.4", MediaStorageSOPInstanceUID: "2.25.7",
		TransferSyntaxUID: ExplicitVRLittleEndian})
	body := append([]byte{0x08, 0x00, 0x18, 0x00, 'U', 'I', 6, 0, '2', '.', '2', '5', '.', '7'}, make([]byte, 100000)...)
	plain := append(append([]byte(nil), meta...), body...)
	d, err := DeflateFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(d)%2 != 0 || len(d) > len(meta)+1000 {
		t.Fatalf("deflated file has %d bytes (plain %d)", len(d), len(plain))
	}
	m, _, err := splitFile(d)
	if err != nil || m.TransferSyntaxUID != DeflatedExplicitVRLittleEndian || m.MediaStorageSOPInstanceUID != "2.25.7" {
		t.Fatalf("deflated meta %+v, %v", m, err)
	}
	back, err := InflateFile(d)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, plain) {
		t.Fatal("inflate(deflate(file)) differs from the file")
	}
	if _, err := DeflateFile(d); err == nil {
		t.Fatal("a deflated file was deflated again")
	}
	if _, err := InflateFile(plain); err == nil {
		t.Fatal("a plain file was inflated")
	}
	if _, err := DeflateFile([]byte("not DICOM")); err == nil {
		t.Fatal("garbage accepted")
	}
}
