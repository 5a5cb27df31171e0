package dispatch

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestWorkQueueBackoffAndAttempts: the delay after attempt n is Backoff[n-1], the last value
// repeats, and the last allowed attempt is exhausted.
func TestWorkQueueBackoffAndAttempts(t *testing.T) {
	q := &workQueue{cfg: workQueueConfig{MaxDeliver: 3, Backoff: []time.Duration{time.Second, 5 * time.Second}}}
	for _, c := range []struct {
		attempt   int
		delay     time.Duration
		exhausted bool
	}{{1, time.Second, false}, {2, 5 * time.Second, false}, {3, 5 * time.Second, true}, {9, 5 * time.Second, true}} {
		it := &workItem{Attempt: c.attempt}
		if got := q.Backoff(it); got != c.delay {
			t.Errorf("attempt %d: back-off %s, want %s", c.attempt, got, c.delay)
		}
		if got := q.Exhausted(it); got != c.exhausted {
			t.Errorf("attempt %d: exhausted %v, want %v", c.attempt, got, c.exhausted)
		}
	}
	if _, err := (&Bus{}).openWorkQueue(context.Background(), workQueueConfig{Durable: "x"}); err == nil {
		t.Error("a work queue without back-off was accepted")
	}
}

// TestWorkQueueRetryThenDeadLetter drives one message through the helper on a real embedded
// JetStream: a retry comes back as attempt 2 after the back-off, and a dead letter runs the
// recorded callback, lands in the dead-letter stream with its reason and leaves the work queue.
func TestWorkQueueRetryThenDeadLetter(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := b.openWorkQueue(ctx, workQueueConfig{Stream: StreamStudies, Durable: ConsumerInfer, Filter: SubjectStudyComplete,
		DeadKind: "study", AckWait: 5 * time.Second, MaxDeliver: 3, Backoff: []time.Duration{200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PublishStudyComplete(ctx, ct2Study(t, data, "DPERSONA", "2.25.41")); err != nil {
		t.Fatal(err)
	}
	var attempts []int
	recorded := false
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		q.run(runCtx, 1, func(ctx context.Context, it *workItem) {
			attempts = append(attempts, it.Attempt)
			if it.Attempt == 1 {
				q.RetryLater(it, q.Backoff(it))
				return
			}
			if !q.DeadLetter(ctx, it, "bad study\nwith a stack", func() { recorded = true }) {
				t.Error("dead letter not published")
			}
			stop()
		})
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		stop()
		<-done
		t.Fatalf("the message did not come back for a second attempt (attempts %v)", attempts)
	}
	if len(attempts) != 2 || attempts[0] != 1 || attempts[1] != 2 || !recorded {
		t.Fatalf("attempts %v, recorded %v", attempts, recorded)
	}
	dls, err := b.DeadLetters(ctx)
	if err != nil || len(dls) != 1 || dls[0].Reason != "bad study" || dls[0].StudyKey != StudyKey("DPERSONA", "2.25.41") {
		t.Fatalf("dead letters = %+v, %v", dls, err)
	}
	if n, err := b.QueueDepth(ctx, StreamStudies); err != nil || n != 0 {
		t.Fatalf("work queue still holds %d messages (%v)", n, err)
	}
}
