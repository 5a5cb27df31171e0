package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"dpersona/gateway/assembly"
)

// FromCompletedStudy is the study-complete event of a study the gateway assembled: a claim check
// with the instance paths (made relative to the data directory when published).
func FromCompletedStudy(cs assembly.CompletedStudy) StudyComplete {
	ev := StudyComplete{CalledAE: cs.CalledAE, CallingAE: cs.CallingAE, StudyInstanceUID: cs.StudyInstanceUID, Dir: cs.Dir, CompletedAt: cs.CompletedAt.UTC()}
	for _, se := range cs.Series {
		ref := SeriesRef{SeriesInstanceUID: se.SeriesInstanceUID, Modality: se.Modality}
		for _, in := range se.Instances {
			ref.Instances = append(ref.Instances, InstanceRef{SOPInstanceUID: in.SOPInstanceUID, SOPClassUID: in.SOPClassUID, Path: in.Path, Size: in.Size, Frames: in.Frames})
		}
		ev.Series = append(ev.Series, ref)
	}
	return ev
}

// StudyComplete is the study-complete event: a claim check, never pixel data. Paths are relative
// to the data directory (BusConfig.DataDir) that every role mounts; with UploadInstances the
// instances are also in the instances object store under Object.
type StudyComplete struct {
	CalledAE         string      `json:"called_ae"`
	CallingAE        string      `json:"calling_ae"`
	StudyInstanceUID string      `json:"study_instance_uid"`
	Dir              string      `json:"dir"` // the study's directory, relative to the data directory
	Series           []SeriesRef `json:"series"`
	CompletedAt      time.Time   `json:"completed_at"`
	// Prompts, when set, make this a lesion request (POST /api/studies/{uid}/lesions): only the
	// lesion-mode routes run, for these prompts.
	Prompts []APIPrompt `json:"prompts,omitempty"`
}

// SeriesRef is one series of a completed study.
type SeriesRef struct {
	SeriesInstanceUID string        `json:"series_instance_uid"`
	Modality          string        `json:"modality"`
	Instances         []InstanceRef `json:"instances"`
}

// InstanceRef locates one acknowledged Part-10 file.
type InstanceRef struct {
	SOPInstanceUID string `json:"sop_instance_uid"`
	SOPClassUID    string `json:"sop_class_uid"`
	Path           string `json:"path"` // relative to the data directory, slash-separated
	Size           int64  `json:"size"`
	Object         string `json:"object,omitempty"` // name in the instances object store, if uploaded
	Frames         int    `json:"frames,omitempty"` // NumberOfFrames of a multi-frame instance (0 or absent: 1)
}

// Images is the number of images of a series: its instances, a multi-frame one counting each of
// its frames (a whole enhanced CT volume is one instance).
func (s SeriesRef) Images() int {
	n := 0
	for _, in := range s.Instances {
		n += max(in.Frames, 1)
	}
	return n
}

// InstanceCount is the number of instances over all series.
func (s StudyComplete) InstanceCount() int {
	n := 0
	for _, se := range s.Series {
		n += len(se.Instances)
	}
	return n
}

// StudyKey is the key of a study in the state bucket: (called AE, StudyInstanceUID), the same
// grouping the gateway assembles studies by.
func (s StudyComplete) StudyKey() string { return StudyKey(s.CalledAE, s.StudyInstanceUID) }

// StudyCompleteMsgID is the Nats-Msg-Id of a study-complete event:
// "study-complete." + sha256(called AE, study UID, sorted SOP instance UIDs)[:32]. A replay of the
// same study is deduplicated, a study that gained instances is published again.
func StudyCompleteMsgID(s StudyComplete) string {
	return "study-complete." + instancesDigest(s, func(InstanceRef) bool { return true })
}

// instancesDigest is sha256(called AE, study UID, the sorted SOP Instance UIDs of the instances
// keep selects)[:32] in hex: the identity of a study's contents that StudyCompleteMsgID (every
// instance) and imagesKey (the images, without the lesion prompts) are made of.
func instancesDigest(s StudyComplete, keep func(InstanceRef) bool) string {
	var uids []string
	for _, se := range s.Series {
		for _, in := range se.Instances {
			if keep(in) {
				uids = append(uids, in.SOPInstanceUID)
			}
		}
	}
	sort.Strings(uids)
	h := sha256.New()
	writeField(h, s.CalledAE)
	writeField(h, s.StudyInstanceUID)
	for _, u := range uids {
		writeField(h, u)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// writeField writes a length-prefixed field so that ("ab","c") and ("a","bc") hash differently.
func writeField(h interface{ Write([]byte) (int, error) }, s string) {
	fmt.Fprintf(h, "%d:%s;", len(s), s)
}

// Validate checks what workers rely on.
func (s StudyComplete) Validate() error {
	if strings.TrimSpace(s.CalledAE) == "" {
		return errors.New("study-complete event: called AE is empty")
	}
	if s.StudyInstanceUID == "" {
		return errors.New("study-complete event: StudyInstanceUID is empty")
	}
	if len(s.Series) == 0 {
		return fmt.Errorf("study-complete event for study %s: no series", s.StudyInstanceUID)
	}
	for _, se := range s.Series {
		if se.SeriesInstanceUID == "" {
			return fmt.Errorf("study-complete event for study %s: a series has no SeriesInstanceUID", s.StudyInstanceUID)
		}
		for _, in := range se.Instances {
			if in.SOPInstanceUID == "" || (in.Path == "" && in.Object == "") {
				return fmt.Errorf("study-complete event for series %s: instance %q has no SOPInstanceUID or no location", se.SeriesInstanceUID, in.SOPInstanceUID)
			}
			if filepath.IsAbs(in.Path) || strings.HasPrefix(path.Clean(in.Path), "..") {
				return fmt.Errorf("study-complete event: instance %s path %q is not relative to the data directory", in.SOPInstanceUID, in.Path)
			}
		}
	}
	return nil
}

// PublishStudyComplete publishes the event and returns once JetStream has durably stored it (or
// recognised it as a duplicate). Absolute instance paths under BusConfig.DataDir are made
// relative; with UploadInstances the files go to the instances object store first. On success
// the study's state becomes "received" (unless this was a replay of an event already in hand).
// An error means the bus does not have the study: the gateway keeps it and retries.
func (b *Bus) PublishStudyComplete(ctx context.Context, ev StudyComplete) error {
	if b.state == nil {
		return errors.New("publish study-complete: EnsureTopology has not run")
	}
	ev, err := b.relativize(ev)
	if err != nil {
		return err
	}
	if b.cfg.UploadInstances {
		if err := b.uploadInstances(ctx, &ev); err != nil {
			return err
		}
	}
	if err := ev.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode study-complete for study %s: %w", ev.StudyInstanceUID, err)
	}
	id := StudyCompleteMsgID(ev)
	msg := &nats.Msg{Subject: SubjectStudyComplete, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set(HeaderStudyKey, ev.StudyKey())
	ack, err := b.publishDurably(ctx, msg)
	if err != nil {
		return fmt.Errorf("publish study-complete for study %s (AE %s): %w", ev.StudyInstanceUID, ev.CalledAE, err)
	}
	b.log.Info("study-complete published", "study", ev.StudyInstanceUID, "called_ae", ev.CalledAE,
		"series", len(ev.Series), "instances", ev.InstanceCount(), "seq", ack.Sequence, "duplicate", ack.Duplicate, "msg_id", id)
	if err := b.markReceived(ctx, ev, id); err != nil {
		// The event is safely in the stream; the worker will write the state again. Report it,
		// do not fail the publish (that would make the gateway publish again for nothing).
		b.log.Warn("study state not updated after publish", "study", ev.StudyInstanceUID, "err", err)
	}
	return nil
}

// Headers set on the bus's messages.
const (
	HeaderStudyKey    = "Dpersona-Study-Key"
	HeaderReason      = "Dpersona-Reason"
	HeaderSource      = "Dpersona-Source"       // stream and sequence a dead letter came from
	HeaderDestination = "Dpersona-Destination"  // export destination name
	HeaderOrigSubject = "Dpersona-Orig-Subject" // subject of the dead-lettered message
)

// publishDurably publishes and waits for the JetStream ack, retrying through transient failures
// (leader election, reconnect) until ctx ends. The Nats-Msg-Id makes the retries idempotent.
func (b *Bus) publishDurably(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := b.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil || !isTransient(err) {
			return nil, err
		}
		b.log.Debug("publish retry", "subject", msg.Subject, "attempt", attempt+1, "err", err)
		select {
		case <-ctx.Done():
			return nil, errors.Join(err, ctx.Err())
		case <-time.After(backoffStep(attempt, 50*time.Millisecond, 2*time.Second)):
		}
	}
}

func isNATSTransient(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, jetstream.ErrNoHeartbeat)
}

// relativize makes instance paths relative to the data directory and slash-separated.
func (b *Bus) relativize(ev StudyComplete) (StudyComplete, error) {
	out := ev
	out.Series = make([]SeriesRef, len(ev.Series))
	rel := func(p string) (string, error) {
		if p == "" || !filepath.IsAbs(p) {
			return filepath.ToSlash(p), nil
		}
		if b.cfg.DataDir == "" {
			return "", fmt.Errorf("study-complete for study %s: absolute path %s but the bus has no DataDir to make it relative to", ev.StudyInstanceUID, p)
		}
		r, err := filepath.Rel(b.cfg.DataDir, p)
		if err != nil || strings.HasPrefix(r, "..") {
			return "", fmt.Errorf("study-complete for study %s: %s is outside the data directory %s", ev.StudyInstanceUID, p, b.cfg.DataDir)
		}
		return filepath.ToSlash(r), nil
	}
	var err error
	if out.Dir, err = rel(ev.Dir); err != nil {
		return out, err
	}
	for i, se := range ev.Series {
		se.Instances = append([]InstanceRef(nil), se.Instances...)
		for j := range se.Instances {
			if se.Instances[j].Path, err = rel(se.Instances[j].Path); err != nil {
				return out, err
			}
		}
		out.Series[i] = se
	}
	return out, nil
}

// uploadInstances puts every instance in the instances object store (skipping ones already there
// with the same size, so a republish does not copy a study twice).
func (b *Bus) uploadInstances(ctx context.Context, ev *StudyComplete) error {
	for i := range ev.Series {
		for j := range ev.Series[i].Instances {
			in := &ev.Series[i].Instances[j]
			name := ev.StudyKey() + "/" + ev.Series[i].SeriesInstanceUID + "/" + in.SOPInstanceUID + ".dcm"
			if info, err := b.instances.GetInfo(ctx, name); err == nil && info.Size == uint64(in.Size) && in.Size > 0 {
				in.Object = name
				continue
			}
			f, err := os.Open(filepath.Join(b.cfg.DataDir, filepath.FromSlash(in.Path)))
			if err != nil {
				return fmt.Errorf("upload instance %s: %w", in.SOPInstanceUID, err)
			}
			_, err = b.instances.Put(ctx, jetstream.ObjectMeta{Name: name}, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("upload instance %s to object store %s: %w", in.SOPInstanceUID, BucketInstances, err)
			}
			in.Object = name
		}
	}
	return nil
}
