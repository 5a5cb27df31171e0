package part10

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"dpersona/internal/dicomstd"
	"dpersona/internal/testutil"
)

// FuzzReadFileHeader: the scanner the gateway runs on every received data set survives any input
// (truncations, lying lengths, deep sequences) with an error, never a panic or a huge allocation.
// Seeds are the committed fixtures (their first 8 KiB: the header part the scanner reads).
func FuzzReadFileHeader(f *testing.F) {
	files, _ := filepath.Glob(testutil.Testdata("dicom", "*", "*"))
	compressed, _ := filepath.Glob(testutil.Testdata("dicom", "compressed", "*", "*.dcm"))
	files = append(files, compressed...)
	for _, p := range files {
		if st, err := os.Stat(p); err != nil || st.IsDir() || filepath.Ext(p) == ".npz" || filepath.Ext(p) == ".sh" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 8192)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, inst, off, err := ReadFileHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		if off < 132 || off > int64(len(b)) {
			t.Fatalf("data set offset %d outside the %d-byte input", off, len(b))
		}
		if len(inst.SOPInstanceUID) > maxScanValue || len(m.TransferSyntaxUID) > dicomstd.MaxFileMetaLength {
			t.Fatalf("value longer than its limit")
		}
	})
}
