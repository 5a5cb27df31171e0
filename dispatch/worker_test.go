package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dpersona/internal/testutil"
)

func ctRoute(dests ...string) Routing {
	return Routing{Routes: []Route{{Name: "lung", Modality: "CT", Model: "models/test", Outputs: []string{OutputRaters, OutputSamples}, Destinations: dests}}}
}

// countingExporter observes a real exporter: how many times each SOP instance was stored.
type countingExporter struct {
	inner  Exporter
	mu     sync.Mutex
	stored map[string]int
	tries  int
}

func (c *countingExporter) Export(ctx context.Context, files []ExportFile) ([]FileStatus, error) {
	st, err := c.inner.Export(ctx, files)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tries++
	if err == nil {
		for i, s := range st {
			if s.Err == nil {
				c.stored[files[i].SOPInstanceUID]++
			}
		}
	}
	return st, err
}

func orthancSTOW(o *testutil.Orthanc) Destination {
	return Destination{Name: "orthanc-web", Kind: KindSTOW, URL: o.URL() + "/dicom-web", Timeout: Duration(10 * time.Second)}
}

// orthancSEGs returns the SEG instances Orthanc holds: SOPInstanceUID -> StudyInstanceUID.
func orthancSEGs(t testing.TB, o *testutil.Orthanc) map[string]string {
	t.Helper()
	ids, err := o.Instances()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, id := range ids {
		var tags map[string]any
		if err := o.GetJSON("/instances/"+id+"/simplified-tags", &tags); err != nil {
			t.Fatal(err)
		}
		if tags["Modality"] == "SEG" {
			out[fmt.Sprint(tags["SOPInstanceUID"])] = fmt.Sprint(tags["StudyInstanceUID"])
		}
	}
	return out
}

func TestStudyToOrthancOverSTOW(t *testing.T) {
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	dest := orthancSTOW(orthanc)
	routing := ctRoute(dest.Name)
	routing.Destinations = []Destination{dest}
	proc := newFixtureProcessor("w1")
	h.infer(b, fastInfer(proc, routing))
	exp := &countingExporter{inner: &STOWExporter{URL: dest.URL}, stored: map[string]int{}}
	h.export(b, fastExport(dest, exp))
	h.mover(b)

	ev := ct2Study(t, data, "DPERSONA", ct2StudyUID)
	if err := b.PublishStudyComplete(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, "DPERSONA", ct2StudyUID, StateDone, 30*time.Second)
	if len(st.Results) != 2 {
		t.Fatalf("results = %+v, want rater and samples", st.Results)
	}
	segs := orthancSEGs(t, orthanc)
	for _, r := range st.Results {
		if len(r.Deliveries) != 1 || r.Deliveries[0].State != DeliveryDelivered || r.Deliveries[0].Status != "HTTP 200" {
			t.Fatalf("delivery of %s = %+v", r.Output, r.Deliveries)
		}
		if segs[r.SOPInstanceUID] != ct2StudyUID {
			t.Fatalf("Orthanc does not hold %s SEG %s in study %s: %v", r.Output, r.SOPInstanceUID, ct2StudyUID, segs)
		}
	}
	// The SEG objects are in the study Orthanc made of them, next to nothing else.
	var studies []string
	if err := orthanc.GetJSON("/studies", &studies); err != nil || len(studies) != 1 {
		t.Fatalf("orthanc studies = %v, %v", studies, err)
	}
	var study map[string]any
	orthanc.GetJSON("/studies/"+studies[0], &study)
	if tags, _ := study["MainDicomTags"].(map[string]any); tags["StudyInstanceUID"] != ct2StudyUID {
		t.Fatalf("orthanc study tags = %v", study["MainDicomTags"])
	}
	// Nothing is left in the work queues and no message carried a SEG inline.
	if n := streamMsgs(t, b, StreamStudies); n != 0 {
		t.Fatalf("study queue holds %d messages after done", n)
	}
	if n := streamMsgs(t, b, StreamResults); n != 0 {
		t.Fatalf("results queue holds %d messages after done", n)
	}
	objs, err := b.results.List(context.Background())
	if err != nil || len(objs) != 2 {
		t.Fatalf("results object store holds %d objects (%v), want 2", len(objs), err)
	}
	if proc.Calls(ct2StudyUID) != 1 {
		t.Fatalf("processor ran %d times", proc.Calls(ct2StudyUID))
	}

	// A replay after the duplicate window (the stream forgot the Msg-Id) is acknowledged without
	// running the model or sending anything again.
	shortenDuplicateWindow(t, b, StreamStudies)
	if err := b.PublishStudyComplete(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "replayed event consumed", func() bool { return streamMsgs(t, b, StreamStudies) == 0 })
	time.Sleep(300 * time.Millisecond)
	if proc.Calls(ct2StudyUID) != 1 || exp.tries != 1 {
		t.Fatalf("replay ran the model %d times and the exporter %d times, want 1 and 1", proc.Calls(ct2StudyUID), exp.tries)
	}
	if st, _ := b.StudyState(context.Background(), "DPERSONA", ct2StudyUID); st.State != StateDone {
		t.Fatalf("replay changed the state to %s", st.State)
	}
}

// shortenDuplicateWindow makes the stream forget Msg-Ids quickly, as if a replay came a day later.
func shortenDuplicateWindow(t testing.TB, b *Bus, stream string) {
	t.Helper()
	ctx := context.Background()
	s, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	cfg := info.Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := b.JetStream().UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // the server prunes the window about once a second
}

func TestOrthancDownDuringDispatchDeliveredExactlyOnceAfterRestart(t *testing.T) {
	for _, kind := range []string{KindSTOW, KindDICOM} {
		t.Run(kind, func(t *testing.T) { orthancDownThenBack(t, kind) })
	}
}

func orthancDownThenBack(t *testing.T, kind string) {
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	dest := orthancSTOW(orthanc)
	var inner Exporter = &STOWExporter{URL: dest.URL}
	if kind == KindDICOM {
		dest = Destination{Name: "orthanc-web", Kind: KindDICOM, AETitle: orthanc.AET, Host: "127.0.0.1", Port: orthanc.DICOMPort}
		inner = NewCStoreExporter(dest, "DPERSONA")
	}
	routing := ctRoute(dest.Name)
	routing.Destinations = []Destination{dest}
	h.infer(b, fastInfer(newFixtureProcessor("w1"), routing))
	exp := &countingExporter{inner: inner, stored: map[string]int{}}
	h.export(b, fastExport(dest, exp))

	orthanc.Stop()
	if err := b.PublishStudyComplete(context.Background(), ct2Study(t, data, "DPERSONA", ct2StudyUID)); err != nil {
		t.Fatal(err)
	}
	// While the PACS is down the study waits in exporting, retried with back-off.
	testutil.WaitFor(t, 20*time.Second, "retries while Orthanc is down", func() bool {
		st, _ := b.StudyState(context.Background(), "DPERSONA", ct2StudyUID)
		return st != nil && st.State == StateExporting && len(st.Results) == 2 &&
			st.Results[0].Deliveries[0].State == DeliveryRetrying && st.Results[0].Deliveries[0].Attempts >= 3
	})
	st, _ := b.StudyState(context.Background(), "DPERSONA", ct2StudyUID)
	if !strings.Contains(st.Reason, "retrying orthanc-web") || !strings.Contains(st.Reason, "connection refused") {
		t.Fatalf("state reason while down = %q", st.Reason)
	}
	orthanc.Restart(t)
	st = waitState(t, b, "DPERSONA", ct2StudyUID, StateDone, 30*time.Second)
	segs := orthancSEGs(t, orthanc)
	if len(segs) != 2 {
		t.Fatalf("Orthanc holds %d SEG objects after the restart, want 2", len(segs))
	}
	for _, r := range st.Results {
		if n := exp.stored[r.SOPInstanceUID]; n != 1 {
			t.Fatalf("%s SEG stored %d times, want exactly once", r.Output, n)
		}
		if segs[r.SOPInstanceUID] != ct2StudyUID {
			t.Fatalf("%s SEG missing from Orthanc", r.Output)
		}
	}
	// Orthanc's own change log: each SEG arrived as a new instance once.
	var changes struct {
		Changes []struct{ ChangeType string } `json:"Changes"`
	}
	if err := orthanc.GetJSON("/changes?limit=1000", &changes); err != nil {
		t.Fatal(err)
	}
	newInstances := 0
	for _, c := range changes.Changes {
		if c.ChangeType == "NewInstance" {
			newInstances++
		}
	}
	if newInstances != 2 {
		t.Fatalf("Orthanc logged %d NewInstance changes, want 2", newInstances)
	}
	if exp.tries < 4 {
		t.Fatalf("exporter tried %d times, expected retries while down", exp.tries)
	}
}

func TestPermanentRejectionGoesToDeadLetterNotRetried(t *testing.T) {
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	// A wrong DICOMweb root: Orthanc answers 404 to every STOW request.
	dest := Destination{Name: "wrong-root", Kind: KindSTOW, URL: orthanc.URL() + "/not-dicom-web"}
	routing := ctRoute(dest.Name)
	routing.Destinations = []Destination{dest}
	h.infer(b, fastInfer(newFixtureProcessor("w1"), routing))
	exp := &countingExporter{inner: &STOWExporter{URL: dest.URL}, stored: map[string]int{}}
	h.export(b, fastExport(dest, exp))
	if err := b.PublishStudyComplete(context.Background(), ct2Study(t, data, "DPERSONA", ct2StudyUID)); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, "DPERSONA", ct2StudyUID, StateFailed, 20*time.Second)
	if !strings.Contains(st.Reason, "404") || !strings.Contains(st.Reason, "wrong-root") {
		t.Fatalf("failure reason = %q, want the 404 and the destination", st.Reason)
	}
	time.Sleep(500 * time.Millisecond)
	if exp.tries != 1 {
		t.Fatalf("a permanent rejection was tried %d times", exp.tries)
	}
	dls, err := b.DeadLetters(context.Background())
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters = %+v, %v", dls, err)
	}
	if dls[0].Destination != "wrong-root" || !strings.Contains(dls[0].Reason, "404") || dls[0].Subject != SubjectDeadPrefix+"result.wrong-root" {
		t.Fatalf("dead letter = %+v", dls[0])
	}
	var job ExportJob
	if err := json.Unmarshal(dls[0].Data, &job); err != nil || len(job.Objects) != 2 {
		t.Fatalf("dead letter does not carry the export job: %v %s", err, dls[0].Data)
	}
	if n := streamMsgs(t, b, StreamResults); n != 0 {
		t.Fatalf("rejected job still queued (%d)", n)
	}
}

func TestPoisonStudiesFailWithReasonAndDoNotBlockTheQueue(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	proc := newFixtureProcessor("w1")
	proc.fail["2.25.1"] = Permanentf("model input: series has 4 slices of 16x16, the model needs at least 64x64")
	proc.panicOn["2.25.2"] = true
	proc.fail["2.25.3"] = errors.New("onnxruntime: out of memory") // transient: retried, then given up
	h.infer(b, fastInfer(proc, ctRoute()))
	h.mover(b)

	ctx := context.Background()
	for _, uid := range []string{"2.25.1", "2.25.2", "2.25.3", "2.25.4", "2.25.5"} {
		if err := b.PublishStudyComplete(ctx, ct2Study(t, data, "DPERSONA", uid)); err != nil {
			t.Fatal(err)
		}
	}
	// Good studies behind the poison ones complete.
	waitState(t, b, "DPERSONA", "2.25.4", StateDone, 20*time.Second)
	waitState(t, b, "DPERSONA", "2.25.5", StateDone, 20*time.Second)
	st1 := waitState(t, b, "DPERSONA", "2.25.1", StateFailed, 20*time.Second)
	if !strings.Contains(st1.Reason, "at least 64x64") {
		t.Fatalf("poison reason = %q", st1.Reason)
	}
	st2 := waitState(t, b, "DPERSONA", "2.25.2", StateFailed, 20*time.Second)
	if !strings.Contains(st2.Reason, "panicked") || !strings.Contains(st2.Reason, "nil map") {
		t.Fatalf("panic reason = %q", st2.Reason)
	}
	st3 := waitState(t, b, "DPERSONA", "2.25.3", StateFailed, 20*time.Second)
	if !strings.Contains(st3.Reason, "gave up after 3 attempts") || !strings.Contains(st3.Reason, "out of memory") {
		t.Fatalf("transient-until-exhausted reason = %q", st3.Reason)
	}
	if proc.Calls("2.25.1") != 1 || proc.Calls("2.25.2") != 1 || proc.Calls("2.25.3") != 3 {
		t.Fatalf("attempts: permanent %d, panic %d, transient %d; want 1, 1, 3",
			proc.Calls("2.25.1"), proc.Calls("2.25.2"), proc.Calls("2.25.3"))
	}
	dls, err := b.DeadLetters(ctx)
	if err != nil || len(dls) != 3 {
		t.Fatalf("dead letters = %d (%v), want 3", len(dls), err)
	}
	for _, d := range dls {
		if d.Reason == "" || d.Subject != SubjectDeadPrefix+"study" || !strings.HasPrefix(d.Source, StreamStudies+":") {
			t.Fatalf("dead letter = %+v", d)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "empty study queue", func() bool { return streamMsgs(t, b, StreamStudies) == 0 })
}

func TestTransientFailureIsRetriedWithBackoff(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	proc := &flakyProcessor{fixtureProcessor: newFixtureProcessor("w1"), failures: 1}
	opt := fastInfer(proc, ctRoute())
	opt.Backoff = []time.Duration{700 * time.Millisecond}
	h.infer(b, opt)
	start := time.Now()
	if err := b.PublishStudyComplete(context.Background(), ct2Study(t, data, "DPERSONA", "2.25.9")); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, "DPERSONA", "2.25.9", StateDone, 20*time.Second)
	if st.Attempts != 2 || proc.Calls("2.25.9") != 2 {
		t.Fatalf("attempts = %d, calls = %d, want 2", st.Attempts, proc.Calls("2.25.9"))
	}
	if el := time.Since(start); el < 700*time.Millisecond {
		t.Fatalf("retry came after %v, before the 700ms back-off", el)
	}
}

type flakyProcessor struct {
	*fixtureProcessor
	mu       sync.Mutex
	failures int
}

func (f *flakyProcessor) Process(ctx context.Context, job Job) ([]SEG, error) {
	f.mu.Lock()
	fail := f.failures > 0
	f.failures--
	f.mu.Unlock()
	segs, err := f.fixtureProcessor.Process(ctx, job)
	if fail {
		return nil, errors.New("model server busy")
	}
	return segs, err
}

// TestCrashedWorkersEndInDeadLetterViaAdvisory: a worker that takes a study and dies (never acks,
// never naks) on every delivery. The server's max-deliveries advisory, captured in a stream, makes
// the mover dead-letter the study and record the failure.
func TestCrashedWorkersEndInDeadLetterViaAdvisory(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	ctx := context.Background()
	cons, err := b.ensureConsumer(ctx, StreamStudies, jetstream.ConsumerConfig{
		Durable: ConsumerInfer, FilterSubject: SubjectStudyComplete, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 300 * time.Millisecond, MaxDeliver: 2, MaxAckPending: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.mover(b)
	if err := b.PublishStudyComplete(ctx, ct2Study(t, data, "DPERSONA", "2.25.7")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // two deliveries, both "crash"
		if _, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	// Workers keep pulling; the server does not deliver a third time, it raises the advisory.
	if m, err := cons.Next(jetstream.FetchMaxWait(1500 * time.Millisecond)); err == nil {
		t.Fatalf("third delivery beyond MaxDeliver: %s", m.Subject())
	}
	st := waitState(t, b, "DPERSONA", "2.25.7", StateFailed, 15*time.Second)
	if !strings.Contains(st.Reason, "2 deliveries") {
		t.Fatalf("reason = %q", st.Reason)
	}
	dls, _ := b.DeadLetters(ctx)
	if len(dls) != 1 || dls[0].StudyKey != StudyKey("DPERSONA", "2.25.7") {
		t.Fatalf("dead letters = %+v", dls)
	}
	var ev StudyComplete
	if err := json.Unmarshal(dls[0].Data, &ev); err != nil || ev.StudyInstanceUID != "2.25.7" {
		t.Fatalf("dead letter does not carry the event: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "study removed from the work queue", func() bool { return streamMsgs(t, b, StreamStudies) == 0 })
}

// TestTwoInferenceWorkersShareABurst: two worker processes (each with its own connection to the
// gateway's embedded server, as `serve --roles infer --nats-url` does) split a burst of studies.
func TestTwoInferenceWorkersShareABurst(t *testing.T) {
	data := t.TempDir()
	gw := openEmbedded(t, filepath.Join(data, "nats"), data, -1)
	defer gw.Close()
	h := newHarness(t, gw, data)
	ctx := context.Background()
	procs := []*fixtureProcessor{newFixtureProcessor("A"), newFixtureProcessor("B")}
	for i, p := range procs {
		p.delay = 150 * time.Millisecond
		w, err := OpenBus(ctx, BusConfig{URL: gw.ClientURL(), DataDir: data}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if err := w.EnsureTopology(ctx); err != nil {
			t.Fatal(err)
		}
		opt := fastInfer(p, ctRoute())
		opt.Name = fmt.Sprintf("worker-%c", 'A'+i)
		h.infer(w, opt)
	}
	const n = 12
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := gw.PublishStudyComplete(ctx, ct2Study(t, data, "DPERSONA", fmt.Sprintf("2.25.100%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	byWorker := map[string]int{}
	for i := 0; i < n; i++ {
		st := waitState(t, gw, "DPERSONA", fmt.Sprintf("2.25.100%d", i), StateDone, 30*time.Second)
		byWorker[st.Worker]++
	}
	elapsed := time.Since(start)
	if procs[0].TotalCalls()+procs[1].TotalCalls() != n {
		t.Fatalf("processed %d + %d studies, want %d in total (each once)", procs[0].TotalCalls(), procs[1].TotalCalls(), n)
	}
	if byWorker["worker-A"] == 0 || byWorker["worker-B"] == 0 {
		t.Fatalf("one worker took the whole burst: %v", byWorker)
	}
	t.Logf("burst of %d studies (150 ms each) on two workers: %v, split %v", n, elapsed, byWorker)
}

// TestStudyWithoutMatchingRouteIsReportedNotDropped: an MR study sent to a CT-only routing ends
// done with the reason, and the model never runs.
func TestStudyWithoutMatchingRouteIsReportedNotDropped(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	proc := newFixtureProcessor("w")
	h.infer(b, fastInfer(proc, ctRoute()))
	ev := ct2Study(t, data, "DPERSONA", "2.25.55")
	ev.Series[0].Modality = "MR"
	if err := b.PublishStudyComplete(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, "DPERSONA", "2.25.55", StateDone, 10*time.Second)
	if !strings.Contains(st.Reason, "no route matches") || !strings.Contains(st.Reason, "MR") || len(st.Results) != 0 {
		t.Fatalf("state = %+v", st)
	}
	if proc.TotalCalls() != 0 {
		t.Fatalf("the model ran %d times for an unrouted study", proc.TotalCalls())
	}
}

// TestLongStudyKeepsItsWorkerWithInProgressAcks: a study that takes three times the ack wait is
// not handed to the second, idle worker: the first keeps it with in-progress acks.
func TestLongStudyKeepsItsWorkerWithInProgressAcks(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	proc := newFixtureProcessor("slow")
	proc.delay = 1800 * time.Millisecond
	for i := 0; i < 2; i++ {
		opt := fastInfer(proc, ctRoute())
		opt.AckWait = 600 * time.Millisecond
		opt.Name = fmt.Sprintf("w%d", i)
		h.infer(b, opt)
	}
	if err := b.PublishStudyComplete(context.Background(), ct2Study(t, data, "DPERSONA", "2.25.66")); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, "DPERSONA", "2.25.66", StateDone, 15*time.Second)
	if proc.Calls("2.25.66") != 1 || st.Attempts != 1 {
		t.Fatalf("a study of 3x the ack wait ran %d times (attempts %d): in-progress acks did not hold it", proc.Calls("2.25.66"), st.Attempts)
	}
}

// TestReplayDeadLettersAfterTheCauseIsFixed: a poison study (the model fails on it) and an export
// to a misconfigured destination end in the dead-letter stream; once the model and the
// destination are fixed, replaying the dead letters completes both.
func TestReplayDeadLettersAfterTheCauseIsFixed(t *testing.T) {
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	ctx := context.Background()
	proc := newFixtureProcessor("w")
	proc.fail["2.25.31"] = Permanentf("model cannot take this series")
	dest := Destination{Name: "pacs-web", Kind: KindSTOW, URL: orthanc.URL() + "/wrong-root"}
	routing := ctRoute(dest.Name)
	routing.Destinations = []Destination{dest}
	h.infer(b, fastInfer(proc, routing))
	badCtx, stopBad := context.WithCancel(ctx)
	badDone := make(chan struct{})
	go func() { b.RunExportWorker(badCtx, fastExport(dest, &STOWExporter{URL: dest.URL})); close(badDone) }()
	defer func() { stopBad(); <-badDone }()

	for _, uid := range []string{"2.25.31", "2.25.32"} {
		if err := b.PublishStudyComplete(ctx, ct2Study(t, data, "DPERSONA", uid)); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, b, "DPERSONA", "2.25.31", StateFailed, 20*time.Second)
	waitState(t, b, "DPERSONA", "2.25.32", StateFailed, 20*time.Second)
	dls, err := b.DeadLetters(ctx)
	if err != nil || len(dls) != 2 {
		t.Fatalf("dead letters = %d, %v", len(dls), err)
	}

	// Fix both causes: the model now handles the study, the destination has the right URL.
	proc.mu.Lock()
	delete(proc.fail, "2.25.31")
	proc.mu.Unlock()
	stopBad()
	<-badDone
	fixed := dest
	fixed.URL = orthanc.URL() + "/dicom-web"
	h.export(b, fastExport(fixed, &STOWExporter{URL: fixed.URL}))
	for _, d := range dls {
		if err := b.ReplayDeadLetter(ctx, d.Seq); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, b, "DPERSONA", "2.25.31", StateDone, 20*time.Second)
	st := waitState(t, b, "DPERSONA", "2.25.32", StateDone, 20*time.Second)
	if len(st.Results) != 2 || len(orthancSEGs(t, orthanc)) != 4 {
		t.Fatalf("after replay Orthanc holds %d SEG objects, want 4", len(orthancSEGs(t, orthanc)))
	}
	if left, _ := b.DeadLetters(ctx); len(left) != 0 {
		t.Fatalf("dead letters left after replay: %+v", left)
	}
	if err := b.ReplayDeadLetter(ctx, dls[0].Seq); !errors.Is(err, ErrNotFound) {
		t.Fatalf("replaying a replayed dead letter: %v", err)
	}
}
