package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"dpersona/dispatch"
	"dpersona/internal/obs"
)

type fakeBus struct {
	states   []dispatch.StudyState
	dead     []dispatch.DeadLetter
	replayed []uint64
}

func (b *fakeBus) StudyStates(context.Context) ([]dispatch.StudyState, error) { return b.states, nil }
func (b *fakeBus) DeadLetters(context.Context) ([]dispatch.DeadLetter, error) { return b.dead, nil }
func (b *fakeBus) ReplayDeadLetter(_ context.Context, seq uint64) error {
	for _, d := range b.dead {
		if d.Seq == seq {
			b.replayed = append(b.replayed, seq)
			return nil
		}
	}
	return fmt.Errorf("dead letter %d: %w", seq, dispatch.ErrNotFound)
}

// TestBusOverlayTypedView: the bus's states and details land in the typed fields, the gateway's
// receiving wins, and studies only the bus knows are added.
func TestBusOverlayTypedView(t *testing.T) {
	done := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bus := &fakeBus{states: []dispatch.StudyState{
		{StudyInstanceUID: "1.1", CalledAE: "DPERSONA", State: dispatch.StateDone, EventID: "study-complete.a", Worker: "w1", Attempts: 1, DoneAt: &done,
			Results: []dispatch.ResultState{{Output: "raters", SOPInstanceUID: "2.25.9"}}},
		{StudyInstanceUID: "1.2", CalledAE: "DPERSONA", State: dispatch.StateDone, EventID: "study-complete.b"},
		{StudyInstanceUID: "1.3", CalledAE: "OTHER", State: dispatch.StateFailed, Reason: "no pixels", Instances: 2,
			Series: []dispatch.SeriesState{{SeriesInstanceUID: "1.3.1", Modality: "CT", Instances: 2}}},
	}}
	yes := true
	api := New(StudySourceFunc(func(context.Context) ([]Study, error) {
		return []Study{
			{StudyInstanceUID: "1.1", CalledAE: "DPERSONA", State: "complete", HandedOff: &yes},
			{StudyInstanceUID: "1.2", CalledAE: "DPERSONA", State: "receiving"},
		}, nil
	}), nil)
	api.AddOverlay(BusOverlay(bus))
	studies, err := api.ListStudies(context.Background())
	if err != nil || len(studies) != 3 {
		t.Fatalf("studies = %+v, %v", studies, err)
	}
	s := studies[0]
	if s.State != dispatch.StateDone || s.Worker != "w1" || s.Attempts != 1 || s.DoneAt == nil || len(s.Results) != 1 || s.EventID != "study-complete.a" {
		t.Errorf("overlaid study = %+v", s)
	}
	if studies[1].State != "receiving" {
		t.Errorf("receiving lost to the bus: %+v", studies[1])
	}
	if s := studies[2]; s.State != dispatch.StateFailed || s.Reason != "no pixels" || len(s.Series) != 1 || s.CalledAE != "OTHER" {
		t.Errorf("bus-only study = %+v", s)
	}
	b, _ := json.Marshal(studies[0])
	for _, want := range []string{`"handed_off":true`, `"worker":"w1"`, `"results":[`, `"done_at":"2026-01-02T03:04:05Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	if b, _ := json.Marshal(studies[2]); strings.Contains(string(b), "handed_off") {
		t.Errorf("a study this process did not assemble says handed_off: %s", b)
	}
	if got, _ := GatewayStudies(nil).Studies(context.Background()); len(got) != 0 {
		t.Errorf("no assembler listed %v", got)
	}
}

func TestDeadLetterHandlers(t *testing.T) {
	bus := &fakeBus{dead: []dispatch.DeadLetter{
		{Seq: 4, Subject: dispatch.SubjectDeadPrefix + "result.pacs", StudyKey: "k", Destination: "pacs", Source: "RESULTS:9", Reason: "rejected"},
	}}
	mux := http.NewServeMux()
	mux.Handle("GET /api/dead-letters", DeadLettersHandler(bus))
	mux.Handle("POST /api/dead-letters/{seq}/replay", ReplayHandler(bus))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/dead-letters")
	if err != nil {
		t.Fatal(err)
	}
	var list []DeadLetter
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list) != 1 || list[0].Kind != "result" || list[0].Destination != "pacs" || list[0].Reason != "rejected" {
		t.Fatalf("dead letters = %+v", list)
	}
	for path, want := range map[string]int{"/api/dead-letters/4/replay": 200, "/api/dead-letters/5/replay": 404, "/api/dead-letters/x/replay": 400} {
		resp, err := http.Post(srv.URL+path, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if len(bus.replayed) != 1 || bus.replayed[0] != 4 {
		t.Errorf("replayed %v", bus.replayed)
	}
}

func TestStatusEndpoint(t *testing.T) {
	obs.InstancesReceived.Add(1)
	rec := httptest.NewRecorder()
	New(StudySourceFunc(func(context.Context) ([]Study, error) { return nil, nil }), nil).Handler().
		ServeHTTP(rec, httptest.NewRequest("GET", "/api/status", nil))
	var s obs.Summary
	if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil || rec.Code != 200 || s.InstancesReceived < 1 {
		t.Fatalf("GET /api/status: %d %s (%v)", rec.Code, rec.Body, err)
	}
}
