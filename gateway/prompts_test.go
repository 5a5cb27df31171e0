package gateway

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/dicomio"
	"dpersona/internal/testutil"
)

// The lesion prompt objects a viewer or planning system stores in a study (TID 1500 SRs written
// by pydicom and dcmjs, Comprehensive 3D SR, GSPS, RTSTRUCT) are accepted by the default policy
// from dcmtk's storescu, stored beside the CT and handed over with it in one study, so the
// pipeline finds them next to the images they mark.
func TestStoreSCUAcceptsPromptObjects(t *testing.T) {
	testutil.RequireTool(t, "storescu")
	g := startGateway(t, gatewayOptions{})
	ct := dicomFiles(t, testutil.Testdata("dicom", "lidc-ct-0005"))
	prompts, err := filepath.Glob(testutil.Testdata("dicom", "prompts", "lidc-ct-0005-*.dcm"))
	if err != nil || len(prompts) < 5 {
		t.Fatalf("prompt fixtures: %v %v", prompts, err)
	}
	classes := map[string]bool{}
	for _, p := range prompts {
		obj, err := dicomio.ReadPrompts(p)
		if err != nil {
			t.Fatal(err)
		}
		classes[obj.SOPClassUID] = true
	}
	// Enhanced SR (dcmjs), Comprehensive SR, Comprehensive 3D SR, GSPS, RTSTRUCT.
	for _, c := range []string{"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.481.3"} {
		if !classes[c] {
			t.Fatalf("no fixture of SOP class %s", c)
		}
	}
	// -R proposes exactly the files' SOP classes, as a PACS forwarding them would.
	args := append([]string{"-R", "-aet", "VIEWER", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)}, append(ct, prompts...)...)
	if out, err := runTool(t, 60*time.Second, "storescu", args...); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	stored := storedFiles(t, g.dataDir)
	if len(stored) != len(ct)+len(prompts) {
		t.Fatalf("stored %d files, sent %d", len(stored), len(ct)+len(prompts))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(g.sink.completed()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	done := g.sink.completed()
	if len(done) != 1 {
		t.Fatalf("%d completed studies, want 1", len(done))
	}
	promptInstances := 0
	for _, se := range done[0].Series {
		for _, in := range se.Instances {
			if dicomio.IsPromptSOPClass(in.SOPClassUID) {
				promptInstances++
				if !strings.HasPrefix(in.Path, done[0].Dir) {
					t.Errorf("prompt %s stored outside the study directory: %s", in.SOPInstanceUID, in.Path)
				}
			}
		}
	}
	if promptInstances != len(prompts) {
		t.Errorf("%d prompt instances in the completed study, want %d", promptInstances, len(prompts))
	}
}
