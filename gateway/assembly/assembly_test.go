package assembly

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
