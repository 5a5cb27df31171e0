package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is a message in the dead-letter stream, as operators read it.
type DeadLetter struct {
	Seq         uint64
	Subject     string // dpersona.dead.study or dpersona.dead.result.<destination>
	OrigSubject string
	Source      string // stream:sequence the message came from
	StudyKey    string
	Destination string
	Reason      string
	Data        []byte // the original message body
}

// deadLetter copies a message that cannot be processed into the dead-letter stream with the
// reason. It is idempotent per source message (Nats-Msg-Id from the source stream and sequence).
func (b *Bus) deadLetter(ctx context.Context, kind, origSubject string, data []byte, hdr nats.Header, stream string, seq uint64, reason string) error {
	subject := SubjectDeadPrefix + kind
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if d := hdr.Get(HeaderDestination); d != "" {
		m.Subject += "." + escapeToken(d)
		m.Header.Set(HeaderDestination, d)
	}
	if k := hdr.Get(HeaderStudyKey); k != "" {
		m.Header.Set(HeaderStudyKey, k)
	}
	// Headers are single lines: keep the first line of the reason (stack traces stay in the log).
	m.Header.Set(HeaderReason, firstLine(reason))
	m.Header.Set(HeaderOrigSubject, origSubject)
	m.Header.Set(HeaderSource, stream+":"+strconv.FormatUint(seq, 10))
	m.Header.Set(jetstream.MsgIDHeader, "dead."+stream+"."+strconv.FormatUint(seq, 10))
	_, err := b.publishDurably(ctx, m)
	return err
}

// DeadLetters lists the dead-letter stream (operator tools and tests).
func (b *Bus) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	s, err := b.js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, DeadLetter{Seq: seq, Subject: raw.Subject, OrigSubject: raw.Header.Get(HeaderOrigSubject),
			Source: raw.Header.Get(HeaderSource), StudyKey: raw.Header.Get(HeaderStudyKey),
			Destination: raw.Header.Get(HeaderDestination), Reason: raw.Header.Get(HeaderReason), Data: raw.Data})
	}
	return out, nil
}

// ConsumerDeadLetter is the durable consumer of the advisories stream.
const ConsumerDeadLetter = "deadletter"

// maxDeliveriesAdvisory is the part of the server's max-deliveries advisory the mover needs.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// RunDeadLetterMover moves messages that ran out of deliveries without a worker deciding their
// fate (the worker died or timed out on every attempt, e.g. a study that crashes the process)
// into the dead-letter stream, records the failure in the study state and removes them from
// their work queue. It runs beside every worker; instances share one durable consumer.
func (b *Bus) RunDeadLetterMover(ctx context.Context) error {
	cons, err := b.ensureConsumer(ctx, StreamAdvisories, jetstream.ConsumerConfig{
		Durable:       ConsumerDeadLetter,
		Description:   "moves max-deliveries messages to " + StreamDeadLetter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return err
	}
	b.consumeLoop(ctx, cons, b.handleAdvisory)
	return nil
}

func (b *Bus) handleAdvisory(ctx context.Context, msg jetstream.Msg) {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(msg.Data(), &adv); err != nil || adv.Stream == "" || adv.StreamSeq == 0 {
		b.log.Error("unreadable max-deliveries advisory", "subject", msg.Subject())
		msg.Term()
		return
	}
	s, err := b.js.Stream(ctx, adv.Stream)
	if err != nil {
		msg.NakWithDelay(time.Second)
		return
	}
	raw, err := s.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// A worker already dead-lettered or finished it.
		msg.Ack()
		return
	}
	if err != nil {
		msg.NakWithDelay(time.Second)
		return
	}
	key := raw.Header.Get(HeaderStudyKey)
	reason := fmt.Sprintf("no worker finished it in %d deliveries (consumer %s): the worker crashed or timed out each time", adv.Deliveries, adv.Consumer)
	if key != "" {
		if st, err := b.stateByKey(ctx, key); err == nil && st != nil && st.Reason != "" {
			reason += "; last error: " + st.Reason
		}
	}
	kind := "study"
	if adv.Stream == StreamResults {
		kind = "result"
	}
	if err := b.deadLetter(ctx, kind, raw.Subject, raw.Data, raw.Header, adv.Stream, adv.StreamSeq, reason); err != nil {
		msg.NakWithDelay(time.Second)
		return
	}
	b.log.Error("message dead-lettered after max deliveries", "stream", adv.Stream, "seq", adv.StreamSeq, "study_key", key, "deliveries", adv.Deliveries)
	if key != "" {
		if kind == "study" {
			var ev *StudyComplete
			var parsed StudyComplete
			if json.Unmarshal(raw.Data, &parsed) == nil {
				ev = &parsed
			}
			b.markFailed(ctx, key, ev, reason)
		} else {
			var job ExportJob
			if json.Unmarshal(raw.Data, &job) == nil {
				outcomes := make([]fileOutcome, len(job.Objects))
				for i := range outcomes {
					outcomes[i] = fileOutcome{state: DeliveryFailed, reason: reason}
				}
				b.recordDeliveries(ctx, job, outcomes, int(adv.Deliveries))
			}
		}
	}
	b.removeFromStream(ctx, adv.Stream, adv.StreamSeq)
	msg.Ack()
}

func (b *Bus) stateByKey(ctx context.Context, key string) (*StudyState, error) {
	entry, err := b.state.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	st := new(StudyState)
	return st, json.Unmarshal(entry.Value(), st)
}

// ReplayDeadLetter puts a dead-lettered message back on its work queue, after the cause was fixed
// (a destination's AE title corrected, a model that handles the study deployed), and removes it
// from the dead-letter stream. The study state goes back to received (a study event) or the
// failed deliveries back to pending (an export job), so the workers take it as new.
func (b *Bus) ReplayDeadLetter(ctx context.Context, seq uint64) error {
	s, err := b.js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return err
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("dead letter %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("dead letter %d: %w", seq, err)
	}
	orig := raw.Header.Get(HeaderOrigSubject)
	key := raw.Header.Get(HeaderStudyKey)
	dest := raw.Header.Get(HeaderDestination)
	if orig != SubjectStudyComplete && !strings.HasPrefix(orig, SubjectResultPrefix) {
		return fmt.Errorf("dead letter %d came from %q, which is not a work queue this gateway replays", seq, orig)
	}
	note := fmt.Sprintf("replayed from dead letter %d (was: %s)", seq, raw.Header.Get(HeaderReason))
	if key != "" {
		_, err := b.updateState(ctx, key, func(cur *StudyState) (*StudyState, error) {
			if cur == nil {
				return nil, errNoChange
			}
			if orig == SubjectStudyComplete {
				cur.State, cur.DoneAt = StateReceived, nil
			} else {
				for r := range cur.Results {
					for d := range cur.Results[r].Deliveries {
						ds := &cur.Results[r].Deliveries[d]
						if ds.Destination == dest && ds.State == DeliveryFailed {
							ds.State, ds.Reason = DeliveryPending, ""
						}
					}
				}
				cur.State, cur.DoneAt = deriveState(cur), nil
			}
			cur.Reason = firstLine(note)
			return cur, nil
		})
		if err != nil {
			return fmt.Errorf("dead letter %d: reset study state: %w", seq, err)
		}
	}
	m := &nats.Msg{Subject: orig, Data: raw.Data, Header: nats.Header{}}
	for _, h := range []string{HeaderStudyKey, HeaderDestination} {
		if v := raw.Header.Get(h); v != "" {
			m.Header.Set(h, v)
		}
	}
	m.Header.Set(jetstream.MsgIDHeader, "replay."+StreamDeadLetter+"."+strconv.FormatUint(seq, 10))
	if _, err := b.publishDurably(ctx, m); err != nil {
		return fmt.Errorf("dead letter %d: republish: %w", seq, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("dead letter %d republished but not removed: %w", seq, err)
	}
	b.log.Info("dead letter replayed", "seq", seq, "subject", orig, "study_key", key)
	return nil
}

// ErrNotFound says a dead letter (or other addressed item) does not exist.
var ErrNotFound = errors.New("not found")
