package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/inference"
	"dpersona/internal/testutil"
)

// These tests run the real binary with every role: DICOM in with storescu, the tiny model bundle
// from inference/testdata, SEG objects out to a real Orthanc.

func ortLibrary(t *testing.T) string {
	t.Helper()
	return testutil.RequireORT(t, inference.ORTLibEnv, inference.ORTLibName)
}

// pipelineStudy is the /api/studies entry with the bus's fields.
type pipelineStudy struct {
	StudyInstanceUID string `json:"study_instance_uid"`
	State            string `json:"state"`
	Reason           string `json:"reason"`
	Attempts         int    `json:"attempts"`
	Worker           string `json:"worker"`
	Results          []struct {
		Output         string `json:"output"`
		SOPInstanceUID string `json:"sop_instance_uid"`
		Segments       int    `json:"segments"`
		Frames         int    `json:"frames"`
		Deliveries     []struct {
			Destination, State, Status, Reason string
			Attempts                           int
		} `json:"deliveries"`
	} `json:"results"`
}

func pipelineStudies(t *testing.T, httpPort int) []pipelineStudy {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/studies", httpPort))
	if err != nil {
		return nil // restarting: the caller polls
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []pipelineStudy
	if resp.StatusCode != 200 || json.Unmarshal(body, &out) != nil {
		return nil
	}
	return out
}

func waitStudyState(t *testing.T, httpPort int, study string, timeout time.Duration, want ...string) pipelineStudy {
	t.Helper()
	var last pipelineStudy
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, s := range pipelineStudies(t, httpPort) {
			if s.StudyInstanceUID != study {
				continue
			}
			last = s
			for _, w := range want {
				if s.State == w {
					return s
				}
			}
			if s.State == "failed" {
				t.Fatalf("study %s failed: %s", study, s.Reason)
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("study %s did not reach %v within %v; last %+v", study, want, timeout, last)
	return last
}

// sendStudy sends the .dcm files of a committed fixture folder (or of a directory) with storescu.
func sendStudy(t *testing.T, addr, calledAE, fixture string) (studyUID string, n int) {
	t.Helper()
	bin := testutil.RequireTool(t, "storescu")
	dir := fixture
	if !filepath.IsAbs(dir) {
		dir = testutil.Testdata("dicom", fixture)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.dcm"))
	if len(files) == 0 {
		t.Fatalf("no .dcm files in %s", dir)
	}
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(bin, append([]string{"-aet", "MODALITY", "-aec", calledAE, host, port}, files...)...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("storescu %s: %v\n%s", fixture, err, out)
	}
	return fileInstance(t, files[0]).StudyInstanceUID, len(files)
}

type orthancSEG struct{ SOPInstanceUID, StudyInstanceUID, ReferencedSeries string }

func orthancSEGs(t *testing.T, o *testutil.Orthanc) []orthancSEG {
	t.Helper()
	ids, err := o.Instances()
	if err != nil {
		t.Fatal(err)
	}
	var out []orthancSEG
	for _, id := range ids {
		var tags map[string]any
		if err := o.GetJSON("/instances/"+id+"/simplified-tags", &tags); err != nil {
			t.Fatal(err)
		}
		if tags["Modality"] != "SEG" {
			continue
		}
		s := orthancSEG{SOPInstanceUID: fmt.Sprint(tags["SOPInstanceUID"]), StudyInstanceUID: fmt.Sprint(tags["StudyInstanceUID"])}
		if refs, ok := tags["ReferencedSeriesSequence"].([]any); ok && len(refs) > 0 {
			if item, ok := refs[0].(map[string]any); ok {
				s.ReferencedSeries = fmt.Sprint(item["SeriesInstanceUID"])
			}
		}
		out = append(out, s)
	}
	return out
}

func orthancNewInstances(t *testing.T, o *testutil.Orthanc) int {
	t.Helper()
	var changes struct {
		Changes []struct{ ChangeType string } `json:"Changes"`
	}
	if err := o.GetJSON("/changes?limit=1000", &changes); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range changes.Changes {
		if c.ChangeType == "NewInstance" {
			n++
		}
	}
	return n
}

// TestServeStudyToOrthancSurvivesKill9MidPipeline: a CT study goes in with storescu; while the
// model runs, the gateway is killed with SIGKILL; restarted on the same data directory, it
// finishes the study, and Orthanc holds the three SEG objects exactly once, in the study,
// referencing the CT series.
func TestServeStudyToOrthancSurvivesKill9MidPipeline(t *testing.T) {
	lib := ortLibrary(t)
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	data := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "serve.json")
	// A short ack wait so the restarted gateway takes the interrupted study back within seconds.
	os.WriteFile(cfg, []byte(`{"workers": {"ack_wait": "3s"}}`), 0o644)
	args := []string{"--config", cfg, "--quiet-window", "500ms", "--ort-lib", lib,
		"--model", filepath.Join(testutil.RepoRoot(), "inference", "testdata", "tiny"),
		"--forward-to", fmt.Sprintf("%s@127.0.0.1:%d", orthanc.AET, orthanc.DICOMPort)}
	p := startServe(t, data, args...)
	study, n := sendStudy(t, p.dicomAddr(), "DPERSONA", "lidc-ct-0005")
	waitStudyState(t, p.httpPort, study, 60*time.Second, "inferring")
	p.kill9()
	if got := len(orthancSEGs(t, orthanc)); got != 0 {
		t.Fatalf("Orthanc already holds %d SEG objects: the kill was not mid-pipeline", got)
	}

	p2 := startServe(t, data, args...)
	st := waitStudyState(t, p2.httpPort, study, 5*time.Minute, "done")
	// The restarted process must have run the model itself. The delivery count is no proof either
	// way: the embedded server's consumer state is flushed asynchronously, so after a kill -9 the
	// interrupted delivery may or may not have been recorded (attempt 2, or attempt 1 again).
	if !strings.Contains(p2.logs.String(), `"msg":"series processed"`) {
		t.Fatalf("the restarted gateway did not redo the interrupted inference (attempts = %d)", st.Attempts)
	}
	if len(st.Results) != 3 {
		t.Fatalf("results = %+v, want raters, samples and consensus", st.Results)
	}
	segs := orthancSEGs(t, orthanc)
	if len(segs) != 3 {
		t.Fatalf("Orthanc holds %d SEG objects, want 3", len(segs))
	}
	bySOP := map[string]orthancSEG{}
	for _, s := range segs {
		bySOP[s.SOPInstanceUID] = s
	}
	ctSeries := fileInstance(t, mustGlob(t, testutil.Testdata("dicom", "lidc-ct-0005", "*.dcm"))[0]).SeriesInstanceUID
	for _, r := range st.Results {
		s, ok := bySOP[r.SOPInstanceUID]
		if !ok {
			t.Fatalf("%s SEG %s is not at Orthanc", r.Output, r.SOPInstanceUID)
		}
		if s.StudyInstanceUID != study || s.ReferencedSeries != ctSeries {
			t.Fatalf("%s SEG at Orthanc: study %s, referenced series %s; want %s, %s", r.Output, s.StudyInstanceUID, s.ReferencedSeries, study, ctSeries)
		}
		if len(r.Deliveries) != 1 || r.Deliveries[0].State != "delivered" || r.Deliveries[0].Status != "0x0000" {
			t.Fatalf("%s delivery = %+v", r.Output, r.Deliveries)
		}
		if r.Frames < 1 || r.Frames > 4*n || r.Segments < 1 {
			t.Fatalf("%s SEG: %d segments, %d frames for %d slices", r.Output, r.Segments, r.Frames, n)
		}
	}
	if got := orthancNewInstances(t, orthanc); got != 3 {
		t.Fatalf("Orthanc logged %d new instances, want exactly 3", got)
	}
	// The restarted gateway's metrics count what it did.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", p2.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`dpersona_exports_total{destination="forward"} 3`,
		`dpersona_study_stage_seconds_count{stage="infer"} 1`,
		`dpersona_study_stage_seconds_count{stage="export"} 1`,
		`dpersona_queue_depth{queue="study_complete"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, _ := filepath.Glob(pattern)
	if len(m) == 0 {
		t.Fatalf("nothing matches %s", pattern)
	}
	return m
}

// poisonStudy is a CT series the pipeline cannot load: the ct2 slices plus a LIDC slice relabelled
// into the same series (another frame of reference and size), as a misconfigured modality might
// send. Every instance is valid DICOM, so the gateway accepts it.
func poisonStudy(t *testing.T) string {
	t.Helper()
	dcmodify := testutil.RequireTool(t, "dcmodify")
	dir := t.TempDir()
	for _, f := range mustGlob(t, testutil.Testdata("dicom", "ct2-pydicom", "*")) {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(dir, filepath.Base(f)+".dcm"), b, 0o644)
	}
	ct2 := fileInstance(t, filepath.Join(dir, "17106.dcm"))
	big := filepath.Join(dir, "odd.dcm")
	b, _ := os.ReadFile(testutil.Testdata("dicom", "lidc-ct-0004", "001.dcm"))
	os.WriteFile(big, b, 0o644)
	out, err := exec.Command(dcmodify, "-nb", "-m", "(0020,000e)="+ct2.SeriesInstanceUID, "-m", "(0020,000d)="+ct2.StudyInstanceUID, big).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmodify: %v\n%s", err, out)
	}
	return dir
}

// TestServeRolesInSeparateProcesses: one process ingests and dispatches with its embedded NATS
// listening on loopback; two inference processes (with their own data directories: instances
// travel in the object store) join it with --nats-url and share a burst of studies. A poison
// study the pipeline cannot load fails with its reason and does not hold up the others.
func TestServeRolesInSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	lib := ortLibrary(t)
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	model := filepath.Join(testutil.RepoRoot(), "inference", "testdata", "tiny")
	natsPort := testutil.FreePort(t)
	// Every role reads the same routing (here the --forward-to flag; normally one config file):
	// inference decides which destinations get a result, dispatch delivers to them.
	forward := fmt.Sprintf("%s@127.0.0.1:%d", orthanc.AET, orthanc.DICOMPort)
	ingest := startServe(t, t.TempDir(), "--roles", "ingest,dispatch", "--nats-port", fmt.Sprint(natsPort),
		"--quiet-window", "300ms", "--upload-instances", "--forward-to", forward)
	for i := 0; i < 2; i++ {
		startServe(t, t.TempDir(), "--roles", "infer", "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
			"--model", model, "--ort-lib", lib, "--threads", "1", "--forward-to", forward)
	}
	poison, _ := sendStudy(t, ingest.dicomAddr(), "DPERSONA", poisonStudy(t))
	studyA, _ := sendStudy(t, ingest.dicomAddr(), "DPERSONA", "lidc-ct-0005")
	studyB, _ := sendStudy(t, ingest.dicomAddr(), "DPERSONA", "lidc-ct-0004")
	a := waitStudyState(t, ingest.httpPort, studyA, 5*time.Minute, "done")
	b := waitStudyState(t, ingest.httpPort, studyB, 5*time.Minute, "done")
	if a.Worker == "" || a.Worker == b.Worker {
		t.Fatalf("both studies were processed by %q and %q: the two workers did not share the burst", a.Worker, b.Worker)
	}
	if got := len(orthancSEGs(t, orthanc)); got != 6 {
		t.Fatalf("Orthanc holds %d SEG objects, want 6", got)
	}
	var failed pipelineStudy
	for _, s := range pipelineStudies(t, ingest.httpPort) {
		if s.StudyInstanceUID == poison {
			failed = s
		}
	}
	if failed.State != "failed" || !strings.Contains(failed.Reason, "failed at load") || !strings.Contains(failed.Reason, "FrameOfReferenceUID") {
		t.Fatalf("poison study: state %q, reason %q", failed.State, failed.Reason)
	}
	if failed.Attempts != 1 {
		t.Fatalf("poison study tried %d times; a load failure is not retried", failed.Attempts)
	}
	dls := deadLetters(t, ingest.httpPort)
	if len(dls) != 1 || dls[0].Kind != "study" || !strings.Contains(dls[0].StudyKey, poison) || dls[0].Reason == "" {
		t.Fatalf("dead letters = %+v", dls)
	}
	// Replaying it (nothing was fixed) runs it again and it comes back as a new dead letter.
	replay := func(seq uint64) int {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/api/dead-letters/%d/replay", ingest.httpPort, seq), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := replay(dls[0].Seq); code != 200 {
		t.Fatalf("replay: HTTP %d", code)
	}
	testutil.WaitFor(t, 60*time.Second, "the replayed poison study back in the dead-letter stream", func() bool {
		again := deadLetters(t, ingest.httpPort)
		return len(again) == 1 && again[0].Seq != dls[0].Seq
	})
	if code := replay(dls[0].Seq); code != 404 {
		t.Fatalf("replaying a dead letter already replayed: HTTP %d, want 404", code)
	}
}

type deadLetterEntry struct {
	Seq      uint64 `json:"seq"`
	Kind     string `json:"kind"`
	StudyKey string `json:"study_key"`
	Reason   string `json:"reason"`
}

func deadLetters(t *testing.T, httpPort int) []deadLetterEntry {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/dead-letters", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dls []deadLetterEntry
	if err := json.NewDecoder(resp.Body).Decode(&dls); err != nil {
		t.Fatal(err)
	}
	return dls
}

func TestParseRoles(t *testing.T) {
	r, err := parseRoles([]string{"ingest", " Infer "})
	if err != nil || !r.ingest || !r.infer || r.dispatch {
		t.Fatalf("ingest,infer = %+v, %v", r, err)
	}
	if _, err := parseRoles([]string{"ingest", "export"}); err == nil || !strings.Contains(err.Error(), `unknown role "export"`) {
		t.Fatalf("unknown role: %v", err)
	}
	if _, err := parseRoles([]string{""}); err == nil || !strings.Contains(err.Error(), "no role") {
		t.Fatalf("no role: %v", err)
	}
}
