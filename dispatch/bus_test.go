package dispatch

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dpersona/internal/testutil"
)

// sampleStudy writes n small files under dataDir/studies/AE/study/series and describes them with
// absolute paths, as the gateway hands them over.
func sampleStudy(t testing.TB, dataDir, ae, studyUID string, n int) StudyComplete {
	t.Helper()
	series := studyUID + ".1"
	dir := filepath.Join(dataDir, "studies", ae, studyUID, series)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ev := StudyComplete{CalledAE: ae, CallingAE: "MODALITY", StudyInstanceUID: studyUID,
		Dir: filepath.Join(dataDir, "studies", ae, studyUID), CompletedAt: time.Now()}
	se := SeriesRef{SeriesInstanceUID: series, Modality: "CT"}
	for i := 0; i < n; i++ {
		uid := series + "." + string(rune('1'+i))
		p := filepath.Join(dir, uid+".dcm")
		if err := os.WriteFile(p, []byte("instance "+uid), 0o644); err != nil {
			t.Fatal(err)
		}
		se.Instances = append(se.Instances, InstanceRef{SOPInstanceUID: uid, SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", Path: p, Size: int64(len("instance " + uid))})
	}
	ev.Series = []SeriesRef{se}
	return ev
}

func openEmbedded(t testing.TB, storeDir, dataDir string, listen int) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := OpenBus(ctx, BusConfig{StoreDir: storeDir, DataDir: dataDir, ListenPort: listen}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureTopology(ctx); err != nil {
		b.Close()
		t.Fatal(err)
	}
	return b
}

func streamMsgs(t testing.TB, b *Bus, stream string) uint64 {
	t.Helper()
	s, err := b.JetStream().Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestEmbeddedBusPublishStudyCompleteDedupAndDurability(t *testing.T) {
	data := t.TempDir()
	store := filepath.Join(data, "nats")
	b := openEmbedded(t, store, data, 0)
	ctx := context.Background()

	ev := sampleStudy(t, data, "DPERSONA", "1.2.3.4", 3)
	if err := b.PublishStudyComplete(ctx, ev); err != nil {
		t.Fatal(err)
	}
	// A replay (the gateway retrying after a lost reply, or after a restart) is deduplicated.
	if err := b.PublishStudyComplete(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, b, StreamStudies); n != 1 {
		t.Fatalf("after publish + replay the study stream holds %d messages, want 1", n)
	}
	// The stored message is a claim check with relative paths and the documented Msg-Id.
	s, _ := b.JetStream().Stream(ctx, StreamStudies)
	raw, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := raw.Header.Get(jetstream.MsgIDHeader), StudyCompleteMsgID(ev); got != want || !strings.HasPrefix(got, "study-complete.") || len(got) != len("study-complete.")+32 {
		t.Fatalf("Nats-Msg-Id = %q, want %q (study-complete. + 32 hex)", got, want)
	}
	var stored StudyComplete
	if err := json.Unmarshal(raw.Data, &stored); err != nil {
		t.Fatal(err)
	}
	if p := stored.Series[0].Instances[0].Path; filepath.IsAbs(p) || !strings.HasPrefix(p, "studies/DPERSONA/1.2.3.4/") {
		t.Fatalf("instance path in the event = %q, want relative to the data dir", p)
	}
	if stored.Dir != "studies/DPERSONA/1.2.3.4" {
		t.Fatalf("study dir in the event = %q", stored.Dir)
	}
	if len(raw.Data) > 4096 {
		t.Fatalf("study-complete for 3 instances is %d bytes: not a claim check", len(raw.Data))
	}
	st, err := b.StudyState(ctx, "DPERSONA", "1.2.3.4")
	if err != nil || st == nil {
		t.Fatalf("state after publish: %v %v", st, err)
	}
	if st.State != StateReceived || st.Instances != 3 || st.EventID != StudyCompleteMsgID(ev) {
		t.Fatalf("state after publish = %+v", st)
	}

	// The same study with one more instance is a new event, not a duplicate.
	bigger := sampleStudy(t, data, "DPERSONA", "1.2.3.4", 4)
	if err := b.PublishStudyComplete(ctx, bigger); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, b, StreamStudies); n != 2 {
		t.Fatalf("a study that gained an instance was not published again: %d messages", n)
	}
	if st, _ := b.StudyState(ctx, "DPERSONA", "1.2.3.4"); st.Instances != 4 || st.EventID != StudyCompleteMsgID(bigger) {
		t.Fatalf("state after the bigger study = %+v", st)
	}
	// The same study UID under another called AE is another study.
	if StudyCompleteMsgID(ev) == StudyCompleteMsgID(StudyComplete{CalledAE: "OTHER", StudyInstanceUID: ev.StudyInstanceUID, Series: ev.Series}) {
		t.Fatal("Msg-Id ignores the called AE")
	}
	b.Close()

	// Everything survives a restart of the embedded server from the same store.
	b2 := openEmbedded(t, store, data, 0)
	defer b2.Close()
	if n := streamMsgs(t, b2, StreamStudies); n != 2 {
		t.Fatalf("after restart the study stream holds %d messages, want 2", n)
	}
	states, err := b2.StudyStates(ctx)
	if err != nil || len(states) != 1 || states[0].Instances != 4 {
		t.Fatalf("states after restart = %+v, %v", states, err)
	}
	// Still deduplicated after the restart (the window is persisted with the stream).
	if err := b2.PublishStudyComplete(ctx, bigger); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, b2, StreamStudies); n != 2 {
		t.Fatalf("replay after restart was not deduplicated: %d messages", n)
	}
}

func TestPublishStudyCompleteRejectsBadEvents(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	ctx := context.Background()
	ev := sampleStudy(t, data, "DPERSONA", "1.2.3.5", 1)

	outside := ev
	outside.Series = []SeriesRef{{SeriesInstanceUID: "1.2.3.5.1", Instances: []InstanceRef{{SOPInstanceUID: "1.2", Path: "/etc/passwd"}}}}
	if err := b.PublishStudyComplete(ctx, outside); err == nil || !strings.Contains(err.Error(), "outside the data directory") {
		t.Fatalf("path outside the data dir: err = %v", err)
	}
	noUID := ev
	noUID.StudyInstanceUID = ""
	if err := b.PublishStudyComplete(ctx, noUID); err == nil || !strings.Contains(err.Error(), "StudyInstanceUID") {
		t.Fatalf("missing study UID: err = %v", err)
	}
	if n := streamMsgs(t, b, StreamStudies); n != 0 {
		t.Fatalf("bad events reached the stream: %d", n)
	}
}

func TestStudyKeyEscapesAETitles(t *testing.T) {
	cases := map[[2]string]string{
		{"DPERSONA", "1.2.3"}:  "DPERSONA.1.2.3",
		{"MY AE", "1.2.3"}:     "MY_20AE.1.2.3",
		{"A.B*>", "1.2"}:       "A_2EB_2A_3E.1.2",
		{"AE ", "1..2"}:        "AE.1_2E_2E2",
		{"  ", "1.2"}:          "_.1.2",
		{"X_Y", "1.2.840.1"}:   "X_5FY.1.2.840.1",
		{"ae-1", "2.25.12345"}: "ae-1.2.25.12345",
	}
	for in, want := range cases {
		if got := StudyKey(in[0], in[1]); got != want {
			t.Errorf("StudyKey(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
}

// TestBusJoinsExternalServerProcess connects to a separately started nats-server process (what
// --nats-url does) and to an embedded server's loopback listener from a second client.
func TestBusJoinsExternalServerProcess(t *testing.T) {
	data := t.TempDir()
	srv := startNATSProcess(t, filepath.Join(t.TempDir(), "js"), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := OpenBus(ctx, BusConfig{URL: srv.URL(), DataDir: data}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, srv.log())
	}
	if err := b.PublishStudyComplete(ctx, sampleStudy(t, data, "EXT", "1.9", 2)); err != nil {
		t.Fatal(err)
	}
	// A second process-like client sees the same stream and state.
	b2, err := OpenBus(ctx, BusConfig{URL: srv.URL(), DataDir: data}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if err := b2.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, b2, StreamStudies); n != 1 {
		t.Fatalf("second client sees %d study events, want 1", n)
	}
	if st, err := b2.StudyState(ctx, "EXT", "1.9"); err != nil || st == nil || st.State != StateReceived {
		t.Fatalf("second client state = %+v, %v", st, err)
	}

	// Embedded server with a loopback listener: another client joins through ClientURL.
	emb := openEmbedded(t, filepath.Join(t.TempDir(), "nats"), data, -1)
	defer emb.Close()
	if emb.ListenAddr() == "" || !strings.HasPrefix(emb.ListenAddr(), "127.0.0.1:") {
		t.Fatalf("embedded listener = %q, want a loopback address", emb.ListenAddr())
	}
	joined, err := OpenBus(ctx, BusConfig{URL: emb.ClientURL(), DataDir: data}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer joined.Close()
	if err := joined.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	if err := joined.PublishStudyComplete(ctx, sampleStudy(t, data, "JOIN", "1.8", 1)); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, emb, StreamStudies); n != 1 {
		t.Fatalf("embedded server did not get the joined client's event: %d", n)
	}
	// Without a listen port the embedded server accepts no TCP clients at all.
	inproc := openEmbedded(t, filepath.Join(t.TempDir(), "nats"), data, 0)
	defer inproc.Close()
	if inproc.ListenAddr() != "" || inproc.ClientURL() != "" {
		t.Fatalf("in-process-only server exposes %q / %q", inproc.ListenAddr(), inproc.ClientURL())
	}
}

func TestUploadInstancesToObjectStore(t *testing.T) {
	data := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := OpenBus(ctx, BusConfig{StoreDir: filepath.Join(data, "nats"), DataDir: data, UploadInstances: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	ev := sampleStudy(t, data, "UP", "1.7", 2)
	if err := b.PublishStudyComplete(ctx, ev); err != nil {
		t.Fatal(err)
	}
	s, _ := b.JetStream().Stream(ctx, StreamStudies)
	raw, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var stored StudyComplete
	json.Unmarshal(raw.Data, &stored)
	for _, in := range stored.Series[0].Instances {
		if in.Object == "" {
			t.Fatalf("instance %s not uploaded", in.SOPInstanceUID)
		}
		got, err := b.instances.GetBytes(ctx, in.Object)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join(data, in.Path))
		if string(got) != string(want) {
			t.Fatalf("object %s differs from the file", in.Object)
		}
	}
}

func TestWatchedStudyStatesFollowTheBucket(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := b.PublishStudyComplete(ctx, sampleStudy(t, data, "AE1", "1.5.1", 2)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { b.WatchStudyStates(ctx); close(done) }()
	testutil.WaitFor(t, 5*time.Second, "watch ready with the existing study", func() bool {
		st, ok := b.cachedStates()
		return ok && len(st) == 1 && st[0].StudyInstanceUID == "1.5.1"
	})
	if err := b.PublishStudyComplete(ctx, sampleStudy(t, data, "AE1", "1.5.2", 1)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "new study in the watched states", func() bool {
		st, _ := b.StudyStates(ctx)
		return len(st) == 2 && st[1].StudyInstanceUID == "1.5.2"
	})
	if err := b.state.Delete(ctx, StudyKey("AE1", "1.5.1")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "deleted study gone", func() bool {
		st, _ := b.StudyStates(ctx)
		return len(st) == 1 && st[0].StudyInstanceUID == "1.5.2"
	})
	cancel()
	<-done
	if _, ok := b.cachedStates(); ok {
		t.Fatal("cache still claims to be live after the watch stopped")
	}
}
