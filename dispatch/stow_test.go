package dispatch

import (
	"context"
	"strings"
	"testing"

	"dpersona/internal/testutil"
)

// TestSTOWPerFileStatusAgainstOrthanc: one request with a valid SEG and an unreadable file. Orthanc
// stores the first and refuses the request as a whole (400); the exporter reports the stored file
// as stored and only the unreadable one as rejected for good.
func TestSTOWPerFileStatusAgainstOrthanc(t *testing.T) {
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	good := segFile(t, testutil.Testdata("dicom", "seg-highdicom", "seg_image_ct_binary.dcm"))
	bad := ExportFile{SOPClassUID: SOPClassSegmentation, SOPInstanceUID: "2.25.1", Data: append(make([]byte, 128), []byte("DICMnot a data set")...)}
	e := &STOWExporter{URL: orthanc.URL() + "/dicom-web"}
	st, err := e.Export(context.Background(), []ExportFile{good, bad})
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Err != nil {
		t.Fatalf("valid SEG: %v (status %s)", st[0].Err, st[0].Status)
	}
	if st[1].Err == nil || !IsPermanent(st[1].Err) || !strings.HasPrefix(st[1].Status, "HTTP 4") {
		t.Fatalf("unreadable file: status %q, err %v; want a permanent 4xx", st[1].Status, st[1].Err)
	}
	segs := orthancSEGs(t, orthanc)
	if len(segs) != 1 || segs[good.SOPInstanceUID] == "" {
		t.Fatalf("Orthanc holds %v", segs)
	}
}
