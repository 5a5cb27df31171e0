package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Exporter delivers SEG objects to one destination.
type Exporter interface {
	// Export sends the files and returns one status per file, in order. A returned error means no
	// file got a verdict (destination unreachable, association rejected): mark it Permanent when
	// retrying cannot help (e.g. the destination rejects our AE title).
	Export(ctx context.Context, files []ExportFile) ([]FileStatus, error)
}

// ExportFile is one Part-10 file to deliver.
type ExportFile struct {
	SOPClassUID    string
	SOPInstanceUID string
	Data           []byte
}

// FileStatus is the destination's verdict on one file.
type FileStatus struct {
	Status string // what the destination answered: DIMSE status "0x0000", "HTTP 200", ...
	Err    error  // nil: stored. Permanent(...): rejected for good. Otherwise: retry later.
}

// ExportOptions configures the export worker of one destination.
type ExportOptions struct {
	Destination Destination
	Exporter    Exporter
	// AckWait: a delivery without progress for this long goes to another export worker (default
	// 60s; in-progress acks are sent every AckWait/3 while sending).
	AckWait time.Duration
	// MaxDeliver bounds the attempts while the destination is unreachable (default 120, which
	// with the default back-off keeps trying for about two hours).
	MaxDeliver int
	// Backoff between attempts (last value repeats).
	Backoff []time.Duration
}

func (o *ExportOptions) defaults() {
	if o.AckWait <= 0 {
		o.AckWait = 60 * time.Second
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 120
	}
	if len(o.Backoff) == 0 {
		o.Backoff = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute}
	}
}

// ExportConsumerName is the durable consumer of one destination's export jobs.
func ExportConsumerName(destination string) string { return "export-" + escapeToken(destination) }

// RunExportWorker delivers the export jobs of one destination until ctx ends.
func (b *Bus) RunExportWorker(ctx context.Context, opt ExportOptions) error {
	opt.defaults()
	if opt.Exporter == nil {
		return fmt.Errorf("export worker for %s: no exporter", opt.Destination.Name)
	}
	q, err := b.openWorkQueue(ctx, workQueueConfig{Stream: StreamResults, Durable: ExportConsumerName(opt.Destination.Name),
		Description: "export to " + opt.Destination.Name, Filter: SubjectResultPrefix + escapeToken(opt.Destination.Name),
		DeadKind: "result", AckWait: opt.AckWait, MaxDeliver: opt.MaxDeliver, Backoff: opt.Backoff})
	if err != nil {
		return err
	}
	w := &exportWorker{bus: b, q: q, opt: opt}
	b.log.Info("export worker started", "destination", opt.Destination.Name, "kind", opt.Destination.Kind)
	q.run(ctx, 1, w.handle)
	return nil
}

type exportWorker struct {
	bus *Bus
	q   *workQueue
	opt ExportOptions
}

// fileOutcome is what the state records for one file at one destination.
type fileOutcome struct {
	state, status, reason string
	skip                  bool // delivered by an earlier attempt: leave its record alone
}

func (w *exportWorker) handle(ctx context.Context, it *workItem) {
	b := w.bus
	dest := w.opt.Destination
	attempt := it.Attempt
	var job ExportJob
	if err := json.Unmarshal(it.Data(), &job); err != nil || len(job.Objects) == 0 {
		reason := "export job is not valid JSON or lists no objects"
		if err != nil {
			reason += ": " + err.Error()
		}
		w.deadLetter(ctx, it, reason)
		return
	}
	log := b.log.With("study", job.StudyInstanceUID, "destination", dest.Name, "attempt", attempt)

	// Files delivered by an earlier attempt are not sent again: delivery is exactly once as far
	// as this side can know (a crash between the peer's success and this record re-sends one
	// file, which a PACS stores once by SOP Instance UID).
	delivered := map[string]bool{}
	if st, err := b.stateByKey(ctx, job.StudyKey); err == nil {
		for _, r := range st.Results {
			for _, d := range r.Deliveries {
				if d.Destination == dest.Name && d.State == DeliveryDelivered {
					delivered[r.Object] = true
				}
			}
		}
	}
	outcomes := make([]fileOutcome, len(job.Objects))
	var files []ExportFile
	var index []int
	for i, o := range job.Objects {
		if delivered[o.Object] {
			outcomes[i] = fileOutcome{skip: true}
			continue
		}
		data, err := b.results.GetBytes(ctx, o.Object)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			outcomes[i] = fileOutcome{state: DeliveryFailed, reason: "SEG object " + o.Object + " is missing from the results store"}
			continue
		}
		if err != nil {
			w.retry(ctx, it, job, nil, fmt.Errorf("read SEG %s from the results store: %w", o.Object, err))
			return
		}
		files = append(files, ExportFile{SOPClassUID: o.SOPClassUID, SOPInstanceUID: o.SOPInstanceUID, Data: data})
		index = append(index, i)
	}
	if len(files) > 0 {
		timeout := time.Duration(dest.Timeout)
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		ectx, cancel := context.WithTimeout(ctx, timeout)
		stop := w.q.KeepInProgress(it)
		start := time.Now()
		statuses, err := w.opt.Exporter.Export(ectx, files)
		stop()
		cancel()
		if err == nil && len(statuses) != len(files) {
			err = fmt.Errorf("exporter returned %d statuses for %d files", len(statuses), len(files))
		}
		for k, i := range index {
			var st FileStatus
			if err != nil {
				st = FileStatus{Err: err}
			} else {
				st = statuses[k]
			}
			switch {
			case st.Err == nil:
				outcomes[i] = fileOutcome{state: DeliveryDelivered, status: st.Status}
			case IsPermanent(st.Err):
				outcomes[i] = fileOutcome{state: DeliveryFailed, status: st.Status, reason: st.Err.Error()}
			default:
				outcomes[i] = fileOutcome{state: DeliveryRetrying, status: st.Status, reason: st.Err.Error()}
			}
		}
		log.Info("export attempt", "files", len(files), "seconds", time.Since(start).Seconds(), "err", err)
		stored := 0
		for _, i := range index {
			if outcomes[i].state == DeliveryDelivered {
				stored++
			}
		}
		if f := b.obs.FilesExported; f != nil && stored > 0 {
			f(dest.Name, stored)
		}
		if f := b.obs.ExportFailed; f != nil && stored < len(index) {
			f(dest.Name)
		}
	}
	w.settle(ctx, it, job, outcomes)
}

// settle records the outcomes and acks, retries or dead-letters the job.
func (w *exportWorker) settle(ctx context.Context, it *workItem, job ExportJob, outcomes []fileOutcome) {
	attempt := it.Attempt
	var failed, retrying []string
	for i, o := range outcomes {
		switch o.state {
		case DeliveryFailed:
			failed = append(failed, job.Objects[i].Output+" SEG "+job.Objects[i].SOPInstanceUID+": "+o.reason)
		case DeliveryRetrying:
			retrying = append(retrying, job.Objects[i].Output+" SEG "+job.Objects[i].SOPInstanceUID+": "+o.reason)
		}
	}
	if len(retrying) > 0 && len(failed) == 0 && w.q.Exhausted(it) {
		for i := range outcomes {
			if outcomes[i].state == DeliveryRetrying {
				outcomes[i].state = DeliveryFailed
				outcomes[i].reason = fmt.Sprintf("gave up after %d attempts: %s", attempt, outcomes[i].reason)
			}
		}
		failed, retrying = retrying, nil
	}
	w.bus.recordDeliveries(ctx, job, outcomes, attempt)
	switch {
	case len(failed) > 0:
		// Files still retrying in the same job are failed with it: the job goes to the dead
		// letter stream as one unit, with every reason.
		w.deadLetter(ctx, it, fmt.Sprintf("destination %s: %s", w.opt.Destination.Name, strings.Join(failed, "; ")))
	case len(retrying) > 0:
		w.retry(ctx, it, job, outcomes, errors.New(strings.Join(retrying, "; ")))
	default:
		w.q.Done(ctx, it)
	}
}

// retry records the cause as the delivery state of every file (when the attempt got no
// per-file verdicts) and gives the job back for another attempt after the back-off.
func (w *exportWorker) retry(ctx context.Context, it *workItem, job ExportJob, outcomes []fileOutcome, cause error) {
	attempt := it.Attempt
	delay := w.q.Backoff(it)
	w.bus.log.Warn("export attempt failed, retrying", "destination", w.opt.Destination.Name, "study", job.StudyInstanceUID,
		"attempt", attempt, "retry_in", delay, "err", cause)
	if outcomes == nil {
		outcomes = make([]fileOutcome, len(job.Objects))
		for i := range outcomes {
			outcomes[i] = fileOutcome{state: DeliveryRetrying, reason: cause.Error()}
		}
		w.bus.recordDeliveries(ctx, job, outcomes, attempt)
	}
	w.q.RetryLater(it, delay)
}

// deadLetter moves the job to the dead-letter stream with the reason.
func (w *exportWorker) deadLetter(ctx context.Context, it *workItem, reason string) {
	w.bus.log.Error("export failed for good", "destination", w.opt.Destination.Name, "reason", reason)
	w.q.DeadLetter(ctx, it, reason, nil)
}

// recordDeliveries writes per-file delivery states into the study state and derives the study
// state from all deliveries (done when every file reached every destination).
func (b *Bus) recordDeliveries(ctx context.Context, job ExportJob, outcomes []fileOutcome, attempts int) {
	now := time.Now().UTC()
	var delivered *time.Time // set when this update completes the study
	_, err := b.updateState(ctx, job.StudyKey, func(cur *StudyState) (*StudyState, error) {
		delivered = nil
		if cur == nil {
			return nil, errNoChange
		}
		changed := false
		for i, o := range job.Objects {
			oc := outcomes[i]
			if oc.skip {
				continue
			}
			for r := range cur.Results {
				res := &cur.Results[r]
				if res.Object != o.Object {
					continue
				}
				found := false
				for d := range res.Deliveries {
					ds := &res.Deliveries[d]
					if ds.Destination != job.Destination {
						continue
					}
					found = true
					if ds.State == DeliveryDelivered {
						continue
					}
					ds.State, ds.Status, ds.Reason, ds.Attempts, ds.At = oc.state, oc.status, firstLine(oc.reason), attempts, now
					changed = true
				}
				if !found {
					res.Deliveries = append(res.Deliveries, DeliveryState{Destination: job.Destination, State: oc.state,
						Status: oc.status, Reason: firstLine(oc.reason), Attempts: attempts, At: now})
					changed = true
				}
			}
		}
		if !changed {
			return nil, errNoChange
		}
		if cur.State == StateInferring {
			// Only the inference worker moves a study out of inferring.
			return cur, nil
		}
		cur.State = deriveState(cur)
		cur.Reason = ""
		switch cur.State {
		case StateFailed:
			for _, r := range cur.Results {
				for _, d := range r.Deliveries {
					if d.State == DeliveryFailed && cur.Reason == "" {
						cur.Reason = fmt.Sprintf("%s SEG %s not delivered to %s: %s", r.Output, r.SOPInstanceUID, d.Destination, d.Reason)
					}
				}
			}
			cur.DoneAt = &now
		case StateDone:
			cur.DoneAt = &now
			delivered = cur.InferredAt
		case StateExporting:
			for _, r := range cur.Results {
				for _, d := range r.Deliveries {
					if d.State == DeliveryRetrying && cur.Reason == "" {
						cur.Reason = fmt.Sprintf("retrying %s: %s", d.Destination, d.Reason)
					}
				}
			}
		}
		return cur, nil
	})
	if err != nil {
		b.log.Error("could not record deliveries", "study_key", job.StudyKey, "err", err)
		return
	}
	if f := b.obs.StudyDelivered; f != nil && delivered != nil {
		f(now.Sub(*delivered))
	}
}
