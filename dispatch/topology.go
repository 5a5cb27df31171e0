package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureTopology creates (or updates to the current definition) the streams, the study-state
// KV bucket and the object stores. Every role calls it at start; concurrent calls from several
// processes are safe.
func (b *Bus) EnsureTopology(ctx context.Context) error {
	r := b.cfg.Replicas
	streams := []jetstream.StreamConfig{
		{
			Name:        StreamStudies,
			Description: "study-complete events (claim checks) for the inference workers",
			Subjects:    []string{SubjectStudyComplete},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    r,
			Duplicates:  DuplicateWindow,
			// Claim checks are small; a big message means a caller put data where a reference belongs.
			MaxMsgSize: 256 << 10,
		},
		{
			Name:        StreamResults,
			Description: "export jobs: one per result and destination; SEG objects are in " + BucketResults,
			Subjects:    []string{SubjectResultPrefix + ">"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    r,
			Duplicates:  DuplicateWindow,
			MaxMsgSize:  256 << 10,
		},
		{
			Name:        StreamDeadLetter,
			Description: "events and export jobs that failed for good, with the reason in headers",
			Subjects:    []string{SubjectDeadPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    r,
			Duplicates:  DuplicateWindow,
		},
		{
			// The server publishes these advisories on core NATS only; capturing them in a stream
			// means a max-deliveries event is not lost while no dead-letter mover runs.
			Name:        StreamAdvisories,
			Description: "max-deliveries advisories of the work queues, consumed by the dead-letter mover",
			Subjects: []string{
				advisoryMaxDeliver + StreamStudies + ".*",
				advisoryMaxDeliver + StreamResults + ".*",
			},
			Retention: jetstream.WorkQueuePolicy,
			Storage:   jetstream.FileStorage,
			Replicas:  r,
		},
	}
	for _, sc := range streams {
		if err := retryTopology(ctx, func(ctx context.Context) error {
			_, err := b.js.CreateOrUpdateStream(ctx, sc)
			return err
		}); err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	if err := retryTopology(ctx, func(ctx context.Context) error {
		kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      BucketStudyState,
			Description: "study state: received, inferring, exporting, done, failed (with reason)",
			History:     8,
			Storage:     jetstream.FileStorage,
			Replicas:    r,
		})
		b.state = kv
		return err
	}); err != nil {
		return fmt.Errorf("kv bucket %s: %w", BucketStudyState, err)
	}
	for _, obj := range []struct {
		name, desc string
		dst        *jetstream.ObjectStore
	}{
		{BucketResults, "DICOM-SEG objects produced by the inference workers", &b.results},
		{BucketInstances, "source instances, when roles do not share the data directory", &b.instances},
	} {
		if err := retryTopology(ctx, func(ctx context.Context) error {
			store, err := b.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
				Bucket:      obj.name,
				Description: obj.desc,
				Storage:     jetstream.FileStorage,
				Replicas:    r,
			})
			*obj.dst = store
			return err
		}); err != nil {
			return fmt.Errorf("object store %s: %w", obj.name, err)
		}
	}
	return nil
}

// retryTopology retries calls that fail while a cluster elects its meta leader or while another
// process creates the same asset at the same moment.
func retryTopology(ctx context.Context, f func(ctx context.Context) error) error {
	var err error
	for attempt := 0; attempt < 40; attempt++ {
		// A request sent while the cluster has no meta leader may get no answer at all: bound
		// each attempt so it is retried instead of eating the caller's whole deadline.
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || isTransient(err) {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(backoffStep(attempt, 100*time.Millisecond, 2*time.Second)):
			}
			continue
		}
		return err
	}
	return err
}

// isTransient reports errors that go away by themselves: no JetStream leader yet, no responders
// while a node restarts, timeouts.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 503/504-like API errors: cluster not ready, leader election in progress.
		if apiErr.Code == 503 || apiErr.Code == 504 || apiErr.Code == 500 {
			return true
		}
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return true
		}
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		isNATSTransient(err)
}

// backoffStep is an exponential back-off from base, capped at max.
func backoffStep(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}
