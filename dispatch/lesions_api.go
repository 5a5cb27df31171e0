package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"dpersona/dicomio"
)

// APIPrompt is one lesion of POST /api/studies/{uid}/lesions: a pixel of an image
// ({sop_instance_uid, row, column}, rows and columns from 0 at the top left) or a point in
// patient millimetres (point_mm [x, y, z], in the series' frame of reference unless
// frame_of_reference_uid says otherwise). series_instance_uid restricts it to one series.
type APIPrompt struct {
	ID                  string    `json:"id,omitempty"` // set by the gateway
	Series              string    `json:"series_instance_uid,omitempty"`
	SOPInstanceUID      string    `json:"sop_instance_uid,omitempty"`
	Frame               int       `json:"frame,omitempty"`
	Row                 *int      `json:"row,omitempty"`
	Column              *int      `json:"column,omitempty"`
	PointMM             []float64 `json:"point_mm,omitempty"`
	FrameOfReferenceUID string    `json:"frame_of_reference_uid,omitempty"`
	Label               string    `json:"label,omitempty"`
}

// Prompt checks the API prompt and converts it.
func (p APIPrompt) Prompt() (dicomio.Prompt, error) {
	pixel := p.SOPInstanceUID != "" || p.Row != nil || p.Column != nil
	switch {
	case pixel && len(p.PointMM) > 0:
		return dicomio.Prompt{}, errors.New("give either sop_instance_uid with row and column, or point_mm, not both")
	case pixel:
		if p.SOPInstanceUID == "" || p.Row == nil || p.Column == nil || *p.Row < 0 || *p.Column < 0 || p.Frame < 0 {
			return dicomio.Prompt{}, errors.New("a pixel prompt needs sop_instance_uid, row >= 0 and column >= 0")
		}
		pr := dicomio.PixelPrompt(p.SOPInstanceUID, p.Frame, *p.Row, *p.Column)
		pr.Label = p.Label
		return pr, nil
	case len(p.PointMM) == 3:
		for _, v := range p.PointMM {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return dicomio.Prompt{}, errors.New("point_mm holds a value that is not a finite number")
			}
		}
		pr := dicomio.PatientPrompt(p.FrameOfReferenceUID, dicomio.Vec3{p.PointMM[0], p.PointMM[1], p.PointMM[2]})
		pr.Label = p.Label
		return pr, nil
	case len(p.PointMM) > 0:
		return dicomio.Prompt{}, fmt.Errorf("point_mm has %d values, want 3 (x, y, z in mm)", len(p.PointMM))
	}
	return dicomio.Prompt{}, errors.New("no coordinates: give sop_instance_uid with row and column, or point_mm")
}

func (p *APIPrompt) assignID() {
	p.ID = ""
	b, _ := json.Marshal(p)
	h := sha256.Sum256(b)
	p.ID = hex.EncodeToString(h[:])[:16]
}

// Errors of RequestLesions, for the HTTP status.
var (
	ErrBadLesionRequest = errors.New("bad lesion request")
	ErrUnknownStudy     = errors.New("unknown study")
	ErrAmbiguousStudy   = errors.New("study received under several AE titles")
	ErrStudyNotReady    = errors.New("study not processed yet")
)

// LesionRequest is what RequestLesions accepted.
type LesionRequest struct {
	StudyInstanceUID string      `json:"study_instance_uid"`
	CalledAE         string      `json:"called_ae"`
	EventID          string      `json:"event_id"`
	Prompts          []APIPrompt `json:"prompts"`
}

// eventObject is where the worker keeps a study's last study-complete event, so a lesion
// request can run the study again without the gateway sending it.
func eventObject(key string) string { return "events/" + key + ".json" }

// keepEvent stores the study's event for later lesion requests (lesion-mode routes only).
func (b *Bus) keepEvent(ctx context.Context, ev StudyComplete) error {
	ev.Prompts = nil
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = b.results.PutBytes(ctx, eventObject(ev.StudyKey()), data)
	return err
}

// RequestLesions runs the lesion-mode routes of a study again for the given prompts: the study's
// last event is published again with the prompts, under an id derived from them (posting the
// same prompts twice runs them once). calledAE may be empty when only one AE title received the
// study.
func (b *Bus) RequestLesions(ctx context.Context, calledAE, studyUID string, prompts []APIPrompt) (*LesionRequest, error) {
	if len(prompts) == 0 {
		return nil, fmt.Errorf("%w: no prompts", ErrBadLesionRequest)
	}
	for i := range prompts {
		if _, err := prompts[i].Prompt(); err != nil {
			return nil, fmt.Errorf("%w: prompt %d: %v", ErrBadLesionRequest, i+1, err)
		}
		prompts[i].assignID()
	}
	if calledAE == "" {
		states, err := b.StudyStates(ctx)
		if err != nil {
			return nil, err
		}
		var aes []string
		for _, st := range states {
			if st.StudyInstanceUID == studyUID {
				aes = append(aes, st.CalledAE)
			}
		}
		switch len(aes) {
		case 0:
			return nil, fmt.Errorf("%w: %s", ErrUnknownStudy, studyUID)
		case 1:
			calledAE = aes[0]
		default:
			return nil, fmt.Errorf("%w (%s): say which with called_ae", ErrAmbiguousStudy, strings.Join(aes, ", "))
		}
	}
	key := StudyKey(calledAE, studyUID)
	data, err := b.results.GetBytes(ctx, eventObject(key))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: no inference worker with a lesion-mode route has taken study %s (AE %s) yet", ErrStudyNotReady, studyUID, calledAE)
	}
	if err != nil {
		return nil, fmt.Errorf("read the event of study %s: %w", studyUID, err)
	}
	var ev StudyComplete
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, fmt.Errorf("stored event of study %s: %w", studyUID, err)
	}
	ev.Prompts = prompts
	ev.CompletedAt = time.Now().UTC()
	h := sha256.New()
	writeField(h, key)
	writeField(h, StudyCompleteMsgID(ev))
	for _, p := range prompts {
		writeField(h, p.ID)
	}
	id := "lesions." + hex.EncodeToString(h.Sum(nil))[:32]
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: SubjectStudyComplete, Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set(HeaderStudyKey, key)
	if _, err := b.publishDurably(ctx, msg); err != nil {
		return nil, fmt.Errorf("publish the lesion request of study %s: %w", studyUID, err)
	}
	b.log.Info("lesion request published", "study", studyUID, "called_ae", calledAE, "prompts", len(prompts), "msg_id", id)
	return &LesionRequest{StudyInstanceUID: studyUID, CalledAE: calledAE, EventID: id, Prompts: prompts}, nil
}
