package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// The ct2-pydicom fixture: 4 real CT slices, and highdicom SEG objects referencing them.
const (
	ct2StudyUID  = "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.1"
	ct2SeriesUID = "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2"
	ctImage      = "1.2.840.10008.5.1.4.1.1.2"
)

var ct2Files = map[string]string{ // file -> SOPInstanceUID
	"17106": "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.93",
	"17136": "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.94",
	"17166": "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.95",
	"17196": "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.96",
}

// ct2Study lays the ct2 slices out under dataDir the way the gateway stores them and describes
// them as the gateway would. studyUID other than ct2StudyUID gives a distinct study (for bursts)
// whose files are the same slices.
func ct2Study(t testing.TB, dataDir, ae, studyUID string) StudyComplete {
	t.Helper()
	dir := filepath.Join(dataDir, "studies", ae, studyUID, ct2SeriesUID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	se := SeriesRef{SeriesInstanceUID: ct2SeriesUID, Modality: "CT"}
	for name, uid := range ct2Files {
		src, err := os.ReadFile(testutil.Testdata("dicom", "ct2-pydicom", name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, uid+".dcm")
		if err := os.WriteFile(p, src, 0o644); err != nil {
			t.Fatal(err)
		}
		se.Instances = append(se.Instances, InstanceRef{SOPInstanceUID: uid, SOPClassUID: ctImage, Path: p, Size: int64(len(src))})
	}
	return StudyComplete{CalledAE: ae, CallingAE: "CT01", StudyInstanceUID: studyUID,
		Dir: filepath.Join(dataDir, "studies", ae, studyUID), Series: []SeriesRef{se}, CompletedAt: time.Now()}
}

// fixtureProcessor stands in for the model: it answers each output with a real highdicom SEG of
// the ct2 study whose SOPInstanceUID is made unique per (study, output). Behaviour per study
// (fail, panic, delay) is set by the test.
type fixtureProcessor struct {
	name    string
	delay   time.Duration
	mu      sync.Mutex
	calls   map[string]int // study UID -> Process calls
	fail    map[string]error
	panicOn map[string]bool
	hang    map[string]bool
	counter atomic.Int64
}

var fixtureSEG = map[string]string{
	OutputRaters:      "seg_image_ct_binary_overlap.dcm",
	OutputSamples:     "seg_image_ct_binary.dcm",
	OutputProbability: "seg_image_ct_true_fractional.dcm",
}

func newFixtureProcessor(name string) *fixtureProcessor {
	return &fixtureProcessor{name: name, calls: map[string]int{}, fail: map[string]error{}, panicOn: map[string]bool{}, hang: map[string]bool{}}
}

func (p *fixtureProcessor) ModelVersion(model string) (string, error) {
	if model == "" {
		return "", errors.New("no model")
	}
	return "fixture-1.0", nil
}

func (p *fixtureProcessor) Calls(study string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[study]
}

func (p *fixtureProcessor) TotalCalls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.calls {
		n += c
	}
	return n
}

func (p *fixtureProcessor) Process(ctx context.Context, job Job) ([]SEG, error) {
	p.mu.Lock()
	p.calls[job.StudyInstanceUID]++
	failErr, panics, hangs := p.fail[job.StudyInstanceUID], p.panicOn[job.StudyInstanceUID], p.hang[job.StudyInstanceUID]
	p.mu.Unlock()
	for _, f := range job.Files {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("input %s: %w", f, err)
		}
	}
	if panics {
		var m map[string]int
		//lint:ignore SA5000 deliberate: a real nil-map panic, as a buggy model path would raise
		m["poison"]++
	}
	if hangs {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if failErr != nil {
		return nil, failErr
	}
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var out []SEG
	for _, o := range job.Outputs {
		data, err := os.ReadFile(testutil.Testdata("dicom", "seg-highdicom", fixtureSEG[o]))
		if err != nil {
			return nil, err
		}
		old := findSOPInstanceUID(data)
		uid := uniqueSameLength(old, p.counter.Add(1))
		data = bytes.ReplaceAll(data, []byte(old), []byte(uid))
		out = append(out, SEG{Output: o, SOPInstanceUID: uid, Segments: 1, Frames: 3, Data: data})
	}
	return out, nil
}

// findSOPInstanceUID returns the highdicom SOP Instance UID (root 1.2.826.0.1.3680043.10.511.3.)
// in a fixture file; it appears in the meta group and in (0008,0018).
func findSOPInstanceUID(data []byte) string {
	root := []byte("1.2.826.0.1.3680043.10.511.3.")
	i := bytes.Index(data, root)
	j := i + len(root)
	for j < len(data) && data[j] >= '0' && data[j] <= '9' {
		j++
	}
	return string(data[i:j])
}

// uniqueSameLength replaces the UID's trailing digits with n, keeping the length so the file's
// element lengths stay valid.
func uniqueSameLength(uid string, n int64) string {
	s := fmt.Sprintf("%09d", n)
	return uid[:len(uid)-len(s)] + s
}

// harness runs workers against one bus for a test and stops them (before the bus) at the end.
type harness struct {
	t      testing.TB
	bus    *Bus
	data   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newHarness(t testing.TB, bus *Bus, data string) *harness {
	h := &harness{t: t, bus: bus, data: data}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		h.cancel()
		h.wg.Wait()
	})
	return h
}

func (h *harness) goRun(what string, f func(ctx context.Context) error) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := f(h.ctx); err != nil && h.ctx.Err() == nil {
			h.t.Errorf("%s: %v", what, err)
		}
	}()
}

func (h *harness) infer(b *Bus, opt InferOptions) {
	h.goRun("inference worker", func(ctx context.Context) error { return b.RunInferWorker(ctx, opt) })
}

func (h *harness) export(b *Bus, opt ExportOptions) {
	h.goRun("export worker", func(ctx context.Context) error { return b.RunExportWorker(ctx, opt) })
}

func (h *harness) mover(b *Bus) {
	h.goRun("dead-letter mover", func(ctx context.Context) error { return b.RunDeadLetterMover(ctx) })
}

// waitState waits until the study reaches state and returns it; it fails early when the study
// reaches another final state.
func waitState(t testing.TB, b *Bus, ae, study, want string, timeout time.Duration) *StudyState {
	t.Helper()
	var last *StudyState
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, err := b.StudyState(context.Background(), ae, study)
		if err == nil && st != nil {
			last = st
			if st.State == want {
				return st
			}
			if (st.State == StateDone || st.State == StateFailed) && want != StateDone && want != StateFailed {
				t.Fatalf("study %s reached %s (%s) while waiting for %s", study, st.State, st.Reason, want)
			}
			if st.State == StateFailed && want == StateDone {
				t.Fatalf("study %s failed: %s", study, st.Reason)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("study %s did not reach %s within %v; last state %+v", study, want, timeout, last)
	return nil
}

func fastInfer(p Processor, routing Routing) InferOptions {
	return InferOptions{Routing: routing, Processor: p, AckWait: 2 * time.Second, MaxDeliver: 3,
		Backoff: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}}
}

func fastExport(d Destination, e Exporter) ExportOptions {
	return ExportOptions{Destination: d, Exporter: e, AckWait: 5 * time.Second, MaxDeliver: 200,
		Backoff: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}}
}
