// Package httpapi serves the gateway's HTTP API: GET /api/studies lists the studies the gateway
// knows, each with its state, as the typed Study view; GET /api/status summarises the metrics;
// the dead-letter handlers list and replay what failed for good. The gateway's study assembly
// supplies the base list (receiving, complete, see GatewayStudies); the bus overlays its later
// states (inferring, exporting, done, failed, see BusOverlay).
package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"dpersona/dispatch"
	"dpersona/internal/obs"
)

// Series is one series of a study.
type Series struct {
	SeriesInstanceUID string `json:"series_instance_uid"`
	Modality          string `json:"modality"`
	Instances         int    `json:"instances"`
}

// Study is one entry of GET /api/studies: what the gateway's study assembly knows (first block),
// then what the bus knows once the study was handed to it (second block).
type Study struct {
	StudyInstanceUID string     `json:"study_instance_uid"`
	CalledAE         string     `json:"called_ae"`
	CallingAE        string     `json:"calling_ae,omitempty"`
	State            string     `json:"state"`
	Instances        int        `json:"instances"`
	Series           []Series   `json:"series"`
	FirstReceivedAt  *time.Time `json:"first_received_at,omitempty"`
	LastReceivedAt   *time.Time `json:"last_received_at,omitempty"`
	CompletedAt      *time.Time `json:"completed_at,omitempty"`
	// HandedOff says whether the bus has this instance set (set for studies this process
	// assembles); HandOffError is the last failure to hand it over (retried).
	HandedOff    *bool  `json:"handed_off,omitempty"`
	HandOffError string `json:"hand_off_error,omitempty"`

	// Reason explains the bus state (a failure, a retry in progress, no matching route).
	Reason   string                 `json:"reason,omitempty"`
	Results  []dispatch.ResultState `json:"results,omitempty"`  // SEG objects and their deliveries
	Attempts int                    `json:"attempts,omitempty"` // inference deliveries of the event
	Worker   string                 `json:"worker,omitempty"`   // inference worker that took it
	EventID  string                 `json:"event_id,omitempty"` // Nats-Msg-Id of the study-complete event
	// Lesions are the lesion prompts of lesion-mode routes (source SR, GSPS, RTSTRUCT or API) and
	// what became of each; Notes say why a route produced nothing.
	Lesions    []dispatch.LesionState `json:"lesions,omitempty"`
	Notes      []string               `json:"notes,omitempty"`
	InferredAt *time.Time             `json:"inferred_at,omitempty"`
	DoneAt     *time.Time             `json:"done_at,omitempty"`
	// Superseded lists the objects later versions replaced (each with the object that replaced it).
	Superseded []dispatch.ReplacedObject `json:"superseded,omitempty"`
}

// StudySource lists studies (the gateway's assembler).
type StudySource interface {
	Studies(ctx context.Context) ([]Study, error)
}

// StudySourceFunc adapts a function.
type StudySourceFunc func(ctx context.Context) ([]Study, error)

// Studies calls f.
func (f StudySourceFunc) Studies(ctx context.Context) ([]Study, error) { return f(ctx) }

// Overlay refines the list: it may change states (e.g. "complete" -> "inferring"), fill the
// later fields of the Study view, or add studies it knows and the source does not. An error is logged and the list is
// served without that overlay, so a slow bus never hides what the gateway has received.
type Overlay interface {
	Overlay(ctx context.Context, studies []Study) ([]Study, error)
}

// OverlayFunc adapts a function.
type OverlayFunc func(ctx context.Context, studies []Study) ([]Study, error)

// Overlay calls f.
func (f OverlayFunc) Overlay(ctx context.Context, s []Study) ([]Study, error) { return f(ctx, s) }

// API is the HTTP handler of /api/studies.
type API struct {
	source  StudySource
	log     *slog.Logger
	timeout time.Duration

	mu       sync.Mutex
	overlays []Overlay
}

// New creates the API over a study source.
func New(source StudySource, log *slog.Logger) *API {
	if log == nil {
		log = slog.Default()
	}
	return &API{source: source, log: log, timeout: 5 * time.Second}
}

// AddOverlay registers an overlay; overlays apply in registration order.
func (a *API) AddOverlay(o Overlay) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.overlays = append(a.overlays, o)
}

// Register mounts the API's routes on mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/studies", a.listStudies)
	mux.HandleFunc("GET /api/studies/{uid}", a.getStudy)
	mux.Handle("GET /api/status", StatusHandler())
}

// StatusHandler serves GET /api/status: the metrics summary (obs.Summary) as JSON, which
// `dpersona status` prints.
func StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(obs.Summarize())
	})
}

// Handler returns a mux serving only the API.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	a.Register(mux)
	return mux
}

// ListStudies returns the overlaid list (also used by tools that do not go through HTTP).
func (a *API) ListStudies(ctx context.Context) ([]Study, error) {
	studies, err := a.source.Studies(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	overlays := append([]Overlay(nil), a.overlays...)
	a.mu.Unlock()
	for _, o := range overlays {
		octx, cancel := context.WithTimeout(ctx, a.timeout)
		next, err := o.Overlay(octx, studies)
		cancel()
		if err != nil {
			a.log.Warn("study state overlay failed; serving without it", "err", err)
			continue
		}
		studies = next
	}
	for i := range studies {
		if studies[i].Series == nil {
			studies[i].Series = []Series{}
		}
	}
	return studies, nil
}

// listStudies serves GET /api/studies[?state=S][&called_ae=AE]: a JSON array, newest activity
// first.
func (a *API) listStudies(w http.ResponseWriter, r *http.Request) {
	studies, err := a.ListStudies(r.Context())
	if err != nil {
		a.log.Error("listing studies", "err", err)
		http.Error(w, "listing studies: "+err.Error(), http.StatusInternalServerError)
		return
	}
	q := r.URL.Query()
	out := make([]Study, 0, len(studies))
	for _, s := range studies {
		if st := q.Get("state"); st != "" && s.State != st {
			continue
		}
		if ae := q.Get("called_ae"); ae != "" && s.CalledAE != ae {
			continue
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool { return lastActivity(out[i]).After(lastActivity(out[j])) })
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		a.log.Warn("writing /api/studies", "err", err)
	}
}

// getStudy serves GET /api/studies/{uid}[?called_ae=AE]: one study object with its later states.
// The same study sent to two AE titles is two studies here; without called_ae that is ambiguous
// and answered 409 with the AE titles to choose from, rather than one picked at random.
func (a *API) getStudy(w http.ResponseWriter, r *http.Request) {
	uid, ae := r.PathValue("uid"), r.URL.Query().Get("called_ae")
	studies, err := a.ListStudies(r.Context())
	if err != nil {
		a.log.Error("listing studies", "err", err)
		http.Error(w, "listing studies: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var found []Study
	for _, s := range studies {
		if s.StudyInstanceUID == uid && (ae == "" || s.CalledAE == ae) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		http.Error(w, "no study "+uid+" (called AE "+ae+")", http.StatusNotFound)
		return
	case 1:
	default:
		aes := make([]string, len(found))
		for i, s := range found {
			aes[i] = s.CalledAE
		}
		http.Error(w, fmt.Sprintf("study %s was received by several AE titles %q: add ?called_ae=", uid, aes), http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(found[0]); err != nil {
		a.log.Warn("writing /api/studies/{uid}", "err", err)
	}
}

func lastActivity(s Study) time.Time {
	if s.LastReceivedAt != nil {
		return *s.LastReceivedAt
	}
	return time.Time{}
}
