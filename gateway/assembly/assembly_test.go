package assembly

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"dpersona/gateway/store"
	"dpersona/internal/testutil"
)

type sink struct {
	mu    sync.Mutex
	got   []CompletedStudy
	fails int
	calls int
}

func (s *sink) StudyComplete(_ context.Context, cs CompletedStudy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.calls <= s.fails {
		return errors.New("bus down")
	}
	s.got = append(s.got, cs)
	return nil
}

func (s *sink) accepted() []CompletedStudy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CompletedStudy(nil), s.got...)
}

// storeFixture stores fixture files into the store as the SCP would (Begin, data, Commit).
func storeFixture(t *testing.T, st *store.Store, ae string, files ...string) []store.StoredInstance {
	t.Helper()
	var out []store.StoredInstance
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		meta, _, off, err := readHeader(fh)
		if err != nil {
			t.Fatal(err)
		}
		fh.Seek(off, io.SeekStart)
		p, err := st.Begin(store.Incoming{CalledAE: ae, CallingAE: "MOD", SOPClassUID: meta.MediaStorageSOPClassUID, SOPInstanceUID: meta.MediaStorageSOPInstanceUID, TransferSyntaxUID: meta.TransferSyntaxUID})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(p, fh)
		fh.Close()
		inst, err := p.Commit()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, inst)
	}
	return out
}

func newAsm(t *testing.T, dir string, s StudySink, quiet time.Duration) (*Assembler, *store.Store) {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Store: st, QuietWindow: quiet, Sink: s, Logger: slog.New(slog.DiscardHandler), RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return a, st
}

func run(t *testing.T, a *Assembler) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func TestQuietWindowRetryAndRestart(t *testing.T) {
	dir := t.TempDir()
	files := []string{testutil.Testdata("dicom", "ct2-pydicom", "17106"), testutil.Testdata("dicom", "ct2-pydicom", "17136")}
	s := &sink{fails: 2}
	a, st := newAsm(t, dir, s, 150*time.Millisecond)
	stop := run(t, a)
	for _, inst := range storeFixture(t, st, "AE_ONE", files...) {
		a.Add("AE_ONE", "MOD", inst)
	}
	if got := a.Studies(); len(got) != 1 || got[0].State != StateReceiving || got[0].Instances != 2 {
		t.Fatalf("before the quiet window: %+v", got)
	}
	testutil.WaitFor(t, 5*time.Second, "hand-off after two failures", func() bool { return len(s.accepted()) == 1 })
	cs := s.accepted()[0]
	if cs.CalledAE != "AE_ONE" || cs.CallingAE != "MOD" || len(cs.Series) != 1 || len(cs.Series[0].Instances) != 2 || cs.Series[0].Modality != "CT" || s.calls != 3 {
		t.Fatalf("completed study %+v after %d calls", cs, s.calls)
	}
	if info := a.Studies()[0]; info.State != StateComplete || !info.HandedOff {
		t.Fatalf("after hand-off: %+v", info)
	}
	stop()

	// Restart: the accepted study is rebuilt complete and not handed off again.
	s2 := &sink{}
	a2, st2 := newAsm(t, dir, s2, 100*time.Millisecond)
	stop2 := run(t, a2)
	defer stop2()
	if got := a2.Studies(); len(got) != 1 || got[0].State != StateComplete || !got[0].HandedOff || got[0].Instances != 2 || got[0].CalledAE != "AE_ONE" {
		t.Fatalf("rebuilt: %+v", got)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(s2.accepted()); n != 0 {
		t.Fatalf("an accepted study was handed off again after restart (%d times)", n)
	}
	// A third instance re-opens the study; it is handed off again with all three.
	for _, inst := range storeFixture(t, st2, "AE_ONE", testutil.Testdata("dicom", "ct2-pydicom", "17166")) {
		a2.Add("AE_ONE", "MOD", inst)
	}
	testutil.WaitFor(t, 5*time.Second, "second hand-off", func() bool { return len(s2.accepted()) == 1 })
	if n := len(s2.accepted()[0].Series[0].Instances); n != 3 {
		t.Fatalf("second hand-off has %d instances", n)
	}
	if s2.accepted()[0].InstanceSetKey() == cs.InstanceSetKey() {
		t.Fatal("a grown study kept its instance-set key")
	}
}

func TestRestartWithoutHandOffHandsOff(t *testing.T) {
	dir := t.TempDir()
	// Instances stored by a process that died before the quiet window: no sink ever saw them.
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	storeFixture(t, st, "AE_ONE", testutil.Testdata("dicom", "ct5n-pydicom", "2062"), testutil.Testdata("dicom", "ct5n-pydicom", "2392"))
	// Stored without the assembler: like a crash between the rename and the first study.json.
	if _, err := os.Stat(filepath.Join(st.StudyDir("AE_ONE", "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.1"), "study.json")); err == nil {
		t.Fatal("unexpected study.json")
	}
	s := &sink{}
	a, _ := newAsm(t, dir, s, 50*time.Millisecond)
	stop := run(t, a)
	defer stop()
	testutil.WaitFor(t, 5*time.Second, "hand-off of rebuilt study", func() bool { return len(s.accepted()) == 1 })
	if got := s.accepted()[0]; got.CalledAE != "AE_ONE" || got.CallingAE != "MOD" || len(got.Series[0].Instances) != 2 {
		t.Fatalf("rebuilt study %+v", got)
	}
}

func TestReSentInstanceCountsOnce(t *testing.T) {
	s := &sink{}
	a, st := newAsm(t, t.TempDir(), s, time.Hour)
	f := testutil.Testdata("dicom", "ct2-pydicom", "17106")
	for i := 0; i < 3; i++ {
		for _, inst := range storeFixture(t, st, "AE", f) {
			a.Add("AE", "MOD", inst)
		}
	}
	if got := a.Studies(); len(got) != 1 || got[0].Instances != 1 {
		t.Fatalf("re-sent instance counted: %+v", got)
	}
}

// TestCompletionAtTheQuietWindowDeadline: a study completes when its quiet window ends, not at the
// next tick of a poll. Studies whose last instance arrives at staggered moments (so that any
// fixed polling phase would land at every point of its period) are each handed off no earlier
// than the window and, in the median, within 5% of it after their last instance. A poll every
// QuietWindow/4 gives a median overshoot of about 12% here; the bound on the median (rather than
// the maximum) keeps the test steady on a loaded machine, where a single hand-off can be late.
func TestCompletionAtTheQuietWindowDeadline(t *testing.T) {
	const (
		window  = time.Second
		studies = 11
		stagger = 91 * time.Millisecond // coprime-ish with any period a poll would use
	)
	type mark struct{ added, handed time.Time }
	var mu sync.Mutex
	marks := map[string]*mark{}
	sink := StudySinkFunc(func(_ context.Context, cs CompletedStudy) error {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if m := marks[cs.CalledAE]; m != nil && m.handed.IsZero() {
			m.handed = now
		}
		return nil
	})
	a, st := newAsm(t, t.TempDir(), sink, window)
	stop := run(t, a)
	defer stop()
	f := testutil.Testdata("dicom", "ct2-pydicom", "17106")
	// One study per called AE (the study key is the called AE and the study UID): stored first,
	// then added one after the other, each add being that study's last instance.
	aes := make([]string, studies)
	insts := make([]store.StoredInstance, studies)
	for i := range aes {
		aes[i] = fmt.Sprintf("AE_%02d", i)
		insts[i] = storeFixture(t, st, aes[i], f)[0]
	}
	start := time.Now()
	for i, ae := range aes {
		time.Sleep(time.Until(start.Add(time.Duration(i) * stagger)))
		mu.Lock()
		marks[ae] = &mark{added: time.Now()}
		mu.Unlock()
		a.Add(ae, "MOD", insts[i])
	}
	testutil.WaitFor(t, 30*time.Second, "every study handed off", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range marks {
			if m.handed.IsZero() {
				return false
			}
		}
		return true
	})
	var over []time.Duration
	mu.Lock()
	for ae, m := range marks {
		d := m.handed.Sub(m.added)
		if d < window {
			t.Errorf("%s handed off %v after its last instance, before the %v quiet window ended", ae, d, window)
		}
		over = append(over, d-window)
	}
	mu.Unlock()
	slices.Sort(over)
	median := over[len(over)/2]
	t.Logf("completion after the quiet window: min %v, median %v, max %v (window %v)", over[0], median, over[len(over)-1], window)
	if median > window/20 {
		t.Fatalf("median completion %v after the quiet window (bound %v): completion is late, as if polled", median, window/20)
	}
}
