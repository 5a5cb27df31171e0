package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dpersona/gateway/assembly"
)

// Study states after the gateway's own "receiving" and "complete".
const (
	StateReceived  = "received"  // the bus has the study-complete event
	StateInferring = "inferring" // an inference worker is processing it
	StateWaiting   = "waiting"   // a lesion-mode route waits for a prompt (see Reason)
	StateExporting = "exporting" // SEG objects stored, deliveries pending
	StateDone      = "done"      // every result delivered to every destination
	StateFailed    = "failed"    // see Reason
)

// Delivery states of one result at one destination.
const (
	DeliveryPending   = "pending"
	DeliveryRetrying  = "retrying" // destination unreachable or busy; retried with back-off
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed" // rejected for good; in the dead-letter stream
)

// StudyState is the value kept per study in the state bucket and shown by GET /api/studies.
type StudyState struct {
	StudyInstanceUID string        `json:"study_instance_uid"`
	CalledAE         string        `json:"called_ae"`
	CallingAE        string        `json:"calling_ae,omitempty"`
	State            string        `json:"state"`
	Reason           string        `json:"reason,omitempty"`
	EventID          string        `json:"event_id"` // Nats-Msg-Id of the study-complete event
	Instances        int           `json:"instances"`
	Series           []SeriesState `json:"series,omitempty"`
	Results          []ResultState `json:"results,omitempty"`
	// Lesions are the prompts of lesion-mode routes and what became of each, over all events of
	// the study; Notes say why a route produced nothing (e.g. no prompt arrived).
	Lesions []LesionState `json:"lesions,omitempty"`
	// ImagesKey identifies the image instances (all but lesion prompts) of the last event whose
	// routes all ran: an event that only adds prompts does not run the whole-series routes again.
	ImagesKey string   `json:"images_key,omitempty"`
	Notes     []string `json:"notes,omitempty"`
	// Superseded lists every object a later version of the results replaced, oldest first.
	Superseded []ReplacedObject `json:"superseded,omitempty"`
	// Previous are the results of the last version produced by an earlier event of the study
	// (without deliveries): what the results of this event will replace.
	Previous   []ResultState `json:"previous,omitempty"`
	Attempts   int           `json:"attempts,omitempty"` // inference deliveries of the event
	Worker     string        `json:"worker,omitempty"`   // inference worker that produced the results
	ReceivedAt time.Time     `json:"received_at"`
	InferredAt *time.Time    `json:"inferred_at,omitempty"`
	DoneAt     *time.Time    `json:"done_at,omitempty"`
	UpdatedAt  time.Time     `json:"updated_at"`
}

// ShownOver is the state of a study that the gateway's assembly also knows, as gatewayState
// (receiving or complete): the gateway's receiving wins, since the study is getting new
// instances and will be published again; the bus's received says no more than the gateway's
// complete (handed to the bus); every later bus state wins.
func (s *StudyState) ShownOver(gatewayState string) string {
	if gatewayState == assembly.StateReceiving || s.State == StateReceived {
		return gatewayState
	}
	return s.State
}

// SeriesState mirrors the gateway's series summary.
type SeriesState struct {
	SeriesInstanceUID string `json:"series_instance_uid"`
	Modality          string `json:"modality"`
	Instances         int    `json:"instances"`
}

// ResultState is one object (SEG, RT Structure Set, rejection note) produced for a study.
type ResultState struct {
	Route          string `json:"route"`
	Model          string `json:"model"`
	ModelVersion   string `json:"model_version"`
	Output         string `json:"output"` // raters, samples, consensus, bands, probability, rtstruct, rejection-note
	Series         string `json:"source_series_instance_uid"`
	Object         string `json:"object"` // name in the results object store
	SOPInstanceUID string `json:"sop_instance_uid"`
	SOPClassUID    string `json:"sop_class_uid,omitempty"`
	// SeriesInstanceUID is the object's own series: the same for every version of one output.
	SeriesInstanceUID string `json:"series_instance_uid,omitempty"`
	// Version counts the results of this route and source series (1 = first); Replaces is the
	// object of the previous version this one supersedes.
	Version    int             `json:"version,omitempty"`
	Replaces   *ReplacedObject `json:"replaces,omitempty"`
	Segments   int             `json:"segments"`
	Frames     int             `json:"frames"`
	Bytes      int64           `json:"bytes"`
	Deliveries []DeliveryState `json:"deliveries,omitempty"`
}

// ReplacedObject is an object of an earlier version of the results.
type ReplacedObject struct {
	Output            string    `json:"output"`
	SOPInstanceUID    string    `json:"sop_instance_uid"`
	SOPClassUID       string    `json:"sop_class_uid"`
	SeriesInstanceUID string    `json:"series_instance_uid,omitempty"`
	Version           int       `json:"version,omitempty"`
	ReplacedBy        string    `json:"replaced_by,omitempty"` // SOP Instance UID of the new object
	At                time.Time `json:"at,omitempty"`
}

// DeliveryState is the per-file status at one destination.
type DeliveryState struct {
	Destination string    `json:"destination"`
	State       string    `json:"state"`
	Status      string    `json:"status,omitempty"` // DIMSE status (0x0000) or HTTP status
	Reason      string    `json:"reason,omitempty"`
	Attempts    int       `json:"attempts"`
	At          time.Time `json:"at"`
}

var numericUID = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)

// StudyKey is the state-bucket key of (called AE, StudyInstanceUID): the AE title escaped to the
// characters NATS keys allow, a dot, and the UID.
func StudyKey(calledAE, studyUID string) string {
	uid := studyUID
	if !numericUID.MatchString(uid) {
		uid = escapeToken(uid)
	}
	return escapeToken(strings.TrimSpace(calledAE)) + "." + uid
}

// escapeToken keeps letters, digits and '-' and writes every other byte as _XX (hex), so the
// result is a valid single NATS subject token and KV key part, and the mapping is reversible.
func escapeToken(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "_%02X", c)
		}
	}
	if sb.Len() == 0 {
		return "_"
	}
	return sb.String()
}

// errNoChange tells updateState that the mutation decided to leave the value as it is.
var errNoChange = errors.New("no change")

// updateState applies mutate to the study's state with optimistic concurrency (several workers and
// export destinations update the same study). mutate gets nil when the key does not exist yet.
func (b *Bus) updateState(ctx context.Context, key string, mutate func(cur *StudyState) (*StudyState, error)) (*StudyState, error) {
	for attempt := 0; ; attempt++ {
		var cur *StudyState
		var rev uint64
		entry, err := b.state.Get(ctx, key)
		switch {
		case err == nil:
			cur = new(StudyState)
			if err := json.Unmarshal(entry.Value(), cur); err != nil {
				return nil, fmt.Errorf("study state %s is not valid JSON: %w", key, err)
			}
			rev = entry.Revision()
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			if isTransient(err) && ctx.Err() == nil && attempt < 50 {
				time.Sleep(backoffStep(attempt, 50*time.Millisecond, time.Second))
				continue
			}
			return nil, fmt.Errorf("read study state %s: %w", key, err)
		}
		next, err := mutate(cur)
		if errors.Is(err, errNoChange) {
			return cur, nil
		}
		if err != nil {
			return nil, err
		}
		next.UpdatedAt = time.Now().UTC()
		data, err := json.Marshal(next)
		if err != nil {
			return nil, err
		}
		if cur == nil {
			_, err = b.state.Create(ctx, key, data)
		} else {
			_, err = b.state.Update(ctx, key, data, rev)
		}
		if err == nil {
			return next, nil
		}
		conflict := errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
		if (conflict || isTransient(err)) && ctx.Err() == nil && attempt < 50 {
			time.Sleep(backoffStep(attempt, 5*time.Millisecond, 500*time.Millisecond))
			continue
		}
		return nil, fmt.Errorf("write study state %s: %w", key, err)
	}
}

// markReceived records a published study-complete event. A replay of the event already recorded
// changes nothing; a new event (the study gained instances) starts the study over.
func (b *Bus) markReceived(ctx context.Context, ev StudyComplete, eventID string) error {
	_, err := b.updateState(ctx, ev.StudyKey(), func(cur *StudyState) (*StudyState, error) {
		if cur != nil && cur.EventID == eventID {
			return nil, errNoChange
		}
		next := newReceivedState(ev, eventID).after(cur)
		if cur != nil {
			next.Lesions = cur.Lesions // prompts already run stay run (a late prompt runs alone)
			next.ImagesKey = cur.ImagesKey
		}
		return next, nil
	})
	return err
}

// after carries what a new event of the study must not forget over from the state of the
// previous one: the results of the last version produced (the objects a new version replaces)
// and the superseded objects of all earlier versions.
func (s *StudyState) after(prev *StudyState) *StudyState {
	if prev == nil {
		return s
	}
	s.Superseded = prev.Superseded
	// The latest object per (route, source series, output): an event that ran other routes only
	// (a lesion request) must not make the screening results forget their last version.
	latest := map[[3]string]int{}
	s.Previous = nil
	for _, r := range append(append([]ResultState(nil), prev.Previous...), prev.Results...) {
		r.Deliveries = nil
		k := [3]string{r.Route, r.Series, r.Output}
		if i, ok := latest[k]; ok {
			s.Previous[i] = r
			continue
		}
		latest[k] = len(s.Previous)
		s.Previous = append(s.Previous, r)
	}
	return s
}

func newReceivedState(ev StudyComplete, eventID string) *StudyState {
	st := &StudyState{
		StudyInstanceUID: ev.StudyInstanceUID,
		CalledAE:         ev.CalledAE,
		CallingAE:        ev.CallingAE,
		State:            StateReceived,
		EventID:          eventID,
		Instances:        ev.InstanceCount(),
		ReceivedAt:       ev.CompletedAt.UTC(),
	}
	if st.ReceivedAt.IsZero() {
		st.ReceivedAt = time.Now().UTC()
	}
	for _, se := range ev.Series {
		st.Series = append(st.Series, SeriesState{SeriesInstanceUID: se.SeriesInstanceUID, Modality: se.Modality, Instances: len(se.Instances)})
	}
	return st
}

// StudyState returns the state of one study (nil, nil when the bus has never seen it).
func (b *Bus) StudyState(ctx context.Context, calledAE, studyUID string) (*StudyState, error) {
	entry, err := b.state.Get(ctx, StudyKey(calledAE, studyUID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state of study %s: %w", studyUID, err)
	}
	st := new(StudyState)
	if err := json.Unmarshal(entry.Value(), st); err != nil {
		return nil, fmt.Errorf("state of study %s is not valid JSON: %w", studyUID, err)
	}
	return st, nil
}

// StudyStates lists every study the bus knows, oldest first (from the watch when one runs).
func (b *Bus) StudyStates(ctx context.Context) ([]StudyState, error) {
	if out, ok := b.cachedStates(); ok {
		return out, nil
	}
	lister, err := b.state.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list study states: %w", err)
	}
	var out []StudyState
	for key := range lister.Keys() {
		entry, err := b.state.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted between list and get
		}
		if err != nil {
			lister.Stop()
			return nil, fmt.Errorf("read study state %s: %w", key, err)
		}
		var st StudyState
		if err := json.Unmarshal(entry.Value(), &st); err != nil {
			continue
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ReceivedAt.Before(out[j].ReceivedAt) })
	return out, nil
}

// stateCache mirrors the state bucket in memory from a KV watch, so listing studies (every GET
// /api/studies) does not read every key from the server.
type stateCache struct {
	mu     sync.RWMutex
	ready  bool
	states map[string]StudyState
}

// WatchStudyStates keeps an in-memory copy of every study state until ctx ends; StudyStates
// serves from it once the initial values have arrived. It returns when ctx ends, and re-watches
// after a connection loss.
func (b *Bus) WatchStudyStates(ctx context.Context) {
	for ctx.Err() == nil {
		if err := b.watchStates(ctx); err != nil && ctx.Err() == nil {
			b.log.Debug("study state watch ended; restarting", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	b.cache.mu.Lock()
	b.cache.ready = false
	b.cache.mu.Unlock()
}

func (b *Bus) watchStates(ctx context.Context) error {
	w, err := b.state.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	fresh := map[string]StudyState{}
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				b.cache.mu.Lock()
				b.cache.ready = false
				b.cache.mu.Unlock()
				return errors.New("watch closed")
			}
			if e == nil { // end of the initial values
				initial = false
				b.cache.mu.Lock()
				b.cache.states, b.cache.ready = fresh, true
				b.cache.mu.Unlock()
				continue
			}
			var st StudyState
			del := e.Operation() != jetstream.KeyValuePut
			if !del && json.Unmarshal(e.Value(), &st) != nil {
				continue
			}
			if initial {
				if !del {
					fresh[e.Key()] = st
				}
				continue
			}
			b.cache.mu.Lock()
			if del {
				delete(b.cache.states, e.Key())
			} else {
				b.cache.states[e.Key()] = st
			}
			b.cache.mu.Unlock()
		}
	}
}

// cachedStates returns the watched states, or false when no watch is ready.
func (b *Bus) cachedStates() ([]StudyState, bool) {
	b.cache.mu.RLock()
	defer b.cache.mu.RUnlock()
	if !b.cache.ready {
		return nil, false
	}
	out := make([]StudyState, 0, len(b.cache.states))
	for _, st := range b.cache.states {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ReceivedAt.Before(out[j].ReceivedAt) })
	return out, true
}
