package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// workQueue is the one place that says how a worker consumes a work-queue stream: a durable
// pull consumer with explicit acks, bounded attempts with back-off between them, in-progress acks
// while a message is worked on, and the dead-letter stream for what cannot succeed. The
// inference workers (study-complete events) and the export workers (results per destination)
// differ only in what they do with one message.
type workQueue struct {
	bus *Bus
	cfg workQueueConfig
	// cons is the durable consumer, created by open.
	cons jetstream.Consumer
}

// workQueueConfig describes one work queue.
type workQueueConfig struct {
	Stream      string
	Durable     string
	Description string
	Filter      string
	// DeadKind names the dead-letter subject (dpersona.dead.<kind>[.<destination>]).
	DeadKind string
	// AckWait: a message without an ack or in-progress ack for this long goes to another worker.
	AckWait time.Duration
	// MaxDeliver bounds the deliveries of one message.
	MaxDeliver int
	// Backoff is the delay before attempt n+1 after attempt n failed (the last value repeats).
	Backoff []time.Duration
}

// workItem is one delivery of a message, with the attempt it is (1 = first delivery).
type workItem struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	Attempt int
}

// Data is the message body.
func (it *workItem) Data() []byte { return it.msg.Data() }

// Header returns a message header.
func (it *workItem) Header(name string) string { return it.msg.Headers().Get(name) }

// openWorkQueue creates or updates the durable consumer of the queue.
func (b *Bus) openWorkQueue(ctx context.Context, cfg workQueueConfig) (*workQueue, error) {
	if len(cfg.Backoff) == 0 {
		return nil, fmt.Errorf("work queue %s: no back-off", cfg.Durable)
	}
	cons, err := b.ensureConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   cfg.Description,
		FilterSubject: cfg.Filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		MaxAckPending: 1000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, err
	}
	return &workQueue{bus: b, cfg: cfg, cons: cons}, nil
}

// run hands messages to handle from concurrency goroutines until ctx ends. A message without
// JetStream metadata cannot be acked or retried and is terminated.
func (q *workQueue) run(ctx context.Context, concurrency int, handle func(context.Context, *workItem)) {
	if concurrency <= 0 {
		concurrency = 1
	}
	var wg sync.WaitGroup
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.bus.consumeLoop(ctx, q.cons, func(ctx context.Context, msg jetstream.Msg) {
				meta, err := msg.Metadata()
				if err != nil {
					q.bus.log.Error("work message without metadata", "queue", q.cfg.Durable, "err", err)
					msg.Term()
					return
				}
				handle(ctx, &workItem{msg: msg, meta: meta, Attempt: int(meta.NumDelivered)})
			})
		}()
	}
	wg.Wait()
}

// Exhausted reports whether the item is on its last allowed attempt.
func (q *workQueue) Exhausted(it *workItem) bool { return it.Attempt >= q.cfg.MaxDeliver }

// Backoff is the delay before the attempt after it.
func (q *workQueue) Backoff(it *workItem) time.Duration {
	return q.cfg.Backoff[max(0, min(it.Attempt-1, len(q.cfg.Backoff)-1))]
}

// RetryLater gives the message back for another attempt after delay.
func (q *workQueue) RetryLater(it *workItem, delay time.Duration) { it.msg.NakWithDelay(delay) }

// Release hands the message to another worker now (this one is shutting down).
func (q *workQueue) Release(it *workItem) { it.msg.Nak() }

// KeepInProgress sends in-progress acks every AckWait/3 until the returned stop is called.
func (q *workQueue) KeepInProgress(it *workItem) (stop func()) {
	return keepInProgress(it.msg, q.cfg.AckWait)
}

// Done acknowledges the message and waits for the server's confirmation.
func (q *workQueue) Done(ctx context.Context, it *workItem) {
	ackAndRemove(ctx, q.bus, it.msg, it.meta)
}

// DeadLetter copies the message with the reason into the dead-letter stream, runs recorded (to
// write the failure into the study state, may be nil) and removes the message from the queue.
// When the dead letter cannot be published the message stays queued and comes back after a
// short delay, and DeadLetter returns false: nothing is dropped without its dead letter.
func (q *workQueue) DeadLetter(ctx context.Context, it *workItem, reason string, recorded func()) bool {
	b := q.bus
	if err := b.deadLetter(ctx, q.cfg.DeadKind, it.msg.Subject(), it.msg.Data(), it.msg.Headers(), it.meta.Stream, it.meta.Sequence.Stream, reason); err != nil {
		b.log.Error("dead-letter publish failed; the message stays queued", "queue", q.cfg.Durable, "err", err)
		it.msg.NakWithDelay(5 * time.Second)
		return false
	}
	if recorded != nil {
		recorded()
	}
	it.msg.TermWithReason(firstLine(reason))
	b.removeFromStream(ctx, it.meta.Stream, it.meta.Sequence.Stream)
	return true
}

func (b *Bus) ensureConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	var cons jetstream.Consumer
	err := retryTopology(ctx, func(ctx context.Context) error {
		c, err := b.js.CreateOrUpdateConsumer(ctx, stream, cfg)
		cons = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return cons, nil
}

// consumeLoop pulls one message at a time and hands it to handle until ctx ends. Pulling one at a
// time lets idle workers take the next study instead of one worker hoarding a batch.
func (b *Bus) consumeLoop(ctx context.Context, cons jetstream.Consumer, handle func(context.Context, jetstream.Msg)) {
	failures := 0
	for ctx.Err() == nil {
		if b.storageBlocked() {
			// Work taken now would fail for want of storage and spend an attempt: wait for the
			// store to recover (storage.go) instead.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
				failures = 0
				continue
			}
			failures++
			b.log.Debug("fetch failed", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoffStep(failures, 100*time.Millisecond, 5*time.Second)):
			}
			continue
		}
		failures = 0
		handle(ctx, msg)
	}
}

// ackAndRemove acknowledges and waits for the server's confirmation, so an acknowledged message is
// really gone from the work queue before the worker takes the next one.
func ackAndRemove(ctx context.Context, b *Bus, msg jetstream.Msg, meta *jetstream.MsgMetadata) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		// The work is done and idempotent: a redelivery finds the results and skips the work.
		b.log.Warn("ack not confirmed; the message may be redelivered", "stream", meta.Stream, "seq", meta.Sequence.Stream, "err", err)
	}
}

// removeFromStream deletes a dead-lettered message from its work queue (a terminated message
// would otherwise stay there forever).
func (b *Bus) removeFromStream(ctx context.Context, stream string, seq uint64) {
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return
	}
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		b.log.Debug("remove dead-lettered message", "stream", stream, "seq", seq, "err", err)
	}
}

// keepInProgress sends in-progress acks every AckWait/3 until the returned stop is called, so a
// long job is not redelivered to another worker while this one is still on it.
func keepInProgress(msg jetstream.Msg, ackWait time.Duration) (stop func()) {
	done := make(chan struct{})
	every := ackWait / 3
	if every <= 0 {
		every = time.Second
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				msg.InProgress()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}
