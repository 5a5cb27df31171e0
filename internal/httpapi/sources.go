package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"dpersona/dispatch"
	"dpersona/gateway/assembly"
)

// GatewayStudies lists the studies of the gateway's study assembly (receiving, complete). A nil
// assembler (a process without the ingest role) lists none.
func GatewayStudies(asm *assembly.Assembler) StudySource {
	return StudySourceFunc(func(context.Context) ([]Study, error) {
		if asm == nil {
			return nil, nil
		}
		return fromAssembly(asm.Studies()), nil
	})
}

func fromAssembly(in []assembly.StudyInfo) []Study {
	out := make([]Study, 0, len(in))
	for _, s := range in {
		handedOff := s.HandedOff
		st := Study{StudyInstanceUID: s.StudyInstanceUID, CalledAE: s.CalledAE, CallingAE: s.CallingAE, State: s.State, Instances: s.Instances,
			Series: make([]Series, 0, len(s.Series)), HandedOff: &handedOff, HandOffError: s.LastError}
		for _, se := range s.Series {
			st.Series = append(st.Series, Series{SeriesInstanceUID: se.SeriesInstanceUID, Modality: se.Modality, Instances: se.Instances})
		}
		first, last := s.FirstReceived, s.LastReceived
		st.FirstReceivedAt, st.LastReceivedAt = &first, &last
		if !s.CompletedAt.IsZero() {
			c := s.CompletedAt
			st.CompletedAt = &c
		}
		out = append(out, st)
	}
	return out
}

// StudyStates is the bus's view of the studies (dispatch.Bus).
type StudyStates interface {
	StudyStates(ctx context.Context) ([]dispatch.StudyState, error)
}

// BusOverlay puts the bus's later states (inferring, exporting, done, failed) over the gateway's,
// as dispatch.StudyState.ShownOver rules, with the reason and the per-file results, and adds the
// studies only the bus knows (ingested by another process).
func BusOverlay(bus StudyStates) Overlay {
	return OverlayFunc(func(ctx context.Context, studies []Study) ([]Study, error) {
		states, err := bus.StudyStates(ctx)
		if err != nil {
			return nil, err
		}
		index := map[string]int{}
		for i, s := range studies {
			index[dispatch.StudyKey(s.CalledAE, s.StudyInstanceUID)] = i
		}
		for _, st := range states {
			i, ok := index[dispatch.StudyKey(st.CalledAE, st.StudyInstanceUID)]
			if !ok {
				s := Study{StudyInstanceUID: st.StudyInstanceUID, CalledAE: st.CalledAE, CallingAE: st.CallingAE,
					State: st.State, Instances: st.Instances}
				for _, se := range st.Series {
					s.Series = append(s.Series, Series{SeriesInstanceUID: se.SeriesInstanceUID, Modality: se.Modality, Instances: se.Instances})
				}
				studies = append(studies, s)
				i = len(studies) - 1
			} else {
				studies[i].State = st.ShownOver(studies[i].State)
			}
			s := &studies[i]
			s.Reason, s.Results, s.Attempts, s.Worker, s.EventID = st.Reason, st.Results, st.Attempts, st.Worker, st.EventID
			s.InferredAt, s.DoneAt = st.InferredAt, st.DoneAt
			s.Lesions, s.Notes = st.Lesions, st.Notes
			s.Superseded = st.Superseded
		}
		return studies, nil
	})
}

// DeadLetterQueue is the bus's dead-letter stream (dispatch.Bus).
type DeadLetterQueue interface {
	DeadLetters(ctx context.Context) ([]dispatch.DeadLetter, error)
	ReplayDeadLetter(ctx context.Context, seq uint64) error
}

// DeadLetter is one entry of GET /api/dead-letters.
type DeadLetter struct {
	Seq         uint64 `json:"seq"`
	Kind        string `json:"kind"` // study or result
	StudyKey    string `json:"study_key,omitempty"`
	Destination string `json:"destination,omitempty"`
	Source      string `json:"source"` // stream:sequence it came from
	Reason      string `json:"reason"`
}

// DeadLettersHandler serves GET /api/dead-letters: what failed for good, and why.
func DeadLettersHandler(q DeadLetterQueue) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dls, err := q.DeadLetters(r.Context())
		if err != nil {
			http.Error(w, "dead letters: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		out := make([]DeadLetter, 0, len(dls))
		for _, d := range dls {
			kind := strings.TrimPrefix(d.Subject, dispatch.SubjectDeadPrefix)
			if i := strings.IndexByte(kind, '.'); i >= 0 {
				kind = kind[:i]
			}
			out = append(out, DeadLetter{Seq: d.Seq, Kind: kind, StudyKey: d.StudyKey, Destination: d.Destination, Source: d.Source, Reason: d.Reason})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
}

// ReplayHandler serves POST /api/dead-letters/{seq}/replay: one dead letter goes back on its
// work queue (after its cause was fixed).
func ReplayHandler(q DeadLetterQueue) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
		if err != nil || seq == 0 {
			http.Error(w, "dead letter sequence must be a positive integer", http.StatusBadRequest)
			return
		}
		switch err := q.ReplayDeadLetter(r.Context(), seq); {
		case errors.Is(err, dispatch.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusConflict)
		default:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"replayed": seq})
		}
	})
}
