package dispatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SOPClassSegmentation is Segmentation Storage.
const SOPClassSegmentation = "1.2.840.10008.5.1.4.1.1.66.4"

// Processor runs a model on one series and returns SEG objects. The pipeline package does the
// work; cmd/dpersona adapts it to this interface so the workers can be tested on their own.
type Processor interface {
	// ModelVersion identifies the model bundle a route names. It is part of the result names and
	// Nats-Msg-Ids, so a new model version processes a replayed study again instead of skipping it.
	ModelVersion(model string) (string, error)
	// Process runs the model. An error marked Permanent (or a panic) fails the study at once;
	// any other error is retried with back-off, a bounded number of times.
	Process(ctx context.Context, job Job) ([]SEG, error)
}

// Job is one series to process with one route's model.
type Job struct {
	CalledAE          string
	StudyInstanceUID  string
	SeriesInstanceUID string
	Modality          string
	Files             []string // absolute paths of the series' Part-10 files on this worker
	Model             string
	Outputs           []string // raters, samples, consensus, bands, probability, rtstruct
	// Version of these results among those of the same route and source series (1 = first),
	// and the objects of the previous version they replace, by output. With predecessors the
	// processor also returns a rejection note (OutputRejectionNote) listing them.
	Version      int
	Predecessors map[string]ReplacedObject
	// Encoding are the route's encoding options.
	Encoding RouteEncoding
}

// OutputRejectionNote is the IOCM Key Object Selection "Rejected for Quality Reasons" that comes
// with a new version; it goes only to destinations with rejection_notes set.
const OutputRejectionNote = "rejection-note"

// SEG is one DICOM Segmentation object produced by a Processor.
type SEG struct {
	Output         string // which of the requested outputs this is
	SOPInstanceUID string
	SOPClassUID    string // Segmentation Storage when empty
	// SeriesInstanceUID is the object's own series (stable per output: a new version lands there).
	SeriesInstanceUID string
	Segments          int
	Frames            int
	Data              []byte // the Part-10 file
}

// InferOptions configures an inference worker.
type InferOptions struct {
	Routing   Routing
	Processor Processor
	// Name identifies the worker in logs and in the study state (default: host name + pid).
	Name string
	// Concurrency is how many studies this worker processes at once (default 1: inference
	// already uses every core).
	Concurrency int
	// AckWait is how long a study may go without an in-progress ack before another worker gets
	// it (default 30s; a running study sends in-progress acks every AckWait/3).
	AckWait time.Duration
	// MaxDeliver bounds the attempts per study (default 5); then it is failed and dead-lettered.
	MaxDeliver int
	// Backoff is the delay before attempt n+1 after attempt n failed (last value repeats).
	Backoff []time.Duration
	// TempDir receives instances fetched from the object store (default os.TempDir()).
	TempDir string
	// Timeout bounds the processing of one series (default 30m); a hung model then counts as a
	// failed attempt instead of holding the study forever with in-progress acks.
	Timeout time.Duration
}

func (o *InferOptions) defaults() {
	if o.Name == "" {
		h, _ := os.Hostname()
		o.Name = h + "-" + strconv.Itoa(os.Getpid())
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 5
	}
	if len(o.Backoff) == 0 {
		o.Backoff = []time.Duration{2 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute}
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Minute
	}
}

// ConsumerInfer is the durable consumer all inference workers share.
const ConsumerInfer = "infer"

// ExportJob is a results message: the SEG objects of one route for one study, to deliver to one
// destination. The objects themselves are in the results object store.
type ExportJob struct {
	StudyKey         string         `json:"study_key"`
	StudyInstanceUID string         `json:"study_instance_uid"`
	CalledAE         string         `json:"called_ae"`
	EventID          string         `json:"event_id"`
	Route            string         `json:"route"`
	Model            string         `json:"model"`
	ModelVersion     string         `json:"model_version"`
	Destination      string         `json:"destination"`
	Objects          []ExportObject `json:"objects"`
}

// ExportObject names one SEG object in the results store.
type ExportObject struct {
	Object         string `json:"object"`
	Output         string `json:"output"`
	SOPInstanceUID string `json:"sop_instance_uid"`
	SOPClassUID    string `json:"sop_class_uid"`
	Series         string `json:"source_series_instance_uid"`
}

// ResultMsgID is the Nats-Msg-Id of an export job: derived from the study (its key and content,
// via the event id), the route, the model version and the destination, so re-running a study
// publishes nothing new while a changed study or model does.
func ResultMsgID(studyKey, eventID, route, modelVersion, destination string) string {
	h := sha256.New()
	for _, f := range []string{studyKey, eventID, route, modelVersion, destination} {
		writeField(h, f)
	}
	return "result." + hex.EncodeToString(h.Sum(nil))[:32]
}

// resultObjectName is where one SEG object lives in the results store.
func resultObjectName(studyKey, eventID, route, modelVersion, series, output string) string {
	ev := strings.TrimPrefix(eventID, "study-complete.")
	return strings.Join([]string{studyKey, ev, escapeToken(route), escapeToken(modelVersion), series, output + ".dcm"}, "/")
}

// RunInferWorker processes study-complete events until ctx ends. Several workers (goroutines,
// processes, machines) share the durable consumer, so a burst of studies spreads over them.
func (b *Bus) RunInferWorker(ctx context.Context, opt InferOptions) error {
	opt.defaults()
	if opt.Processor == nil {
		return errors.New("inference worker: no processor")
	}
	if err := opt.Routing.Validate(); err != nil {
		return err
	}
	q, err := b.openWorkQueue(ctx, workQueueConfig{Stream: StreamStudies, Durable: ConsumerInfer, Description: "inference workers",
		Filter: SubjectStudyComplete, DeadKind: "study", AckWait: opt.AckWait, MaxDeliver: opt.MaxDeliver, Backoff: opt.Backoff})
	if err != nil {
		return err
	}
	w := &inferWorker{bus: b, q: q, opt: opt, versions: map[string]string{}}
	b.log.Info("inference worker started", "worker", opt.Name, "concurrency", opt.Concurrency, "routes", len(opt.Routing.Routes))
	q.run(ctx, opt.Concurrency, w.handle)
	return nil
}

type inferWorker struct {
	bus      *Bus
	q        *workQueue
	opt      InferOptions
	mu       sync.Mutex
	versions map[string]string
}

func (w *inferWorker) modelVersion(model string) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if v, ok := w.versions[model]; ok {
		return v, nil
	}
	v, err := w.opt.Processor.ModelVersion(model)
	if err != nil {
		return "", fmt.Errorf("model %s: %w", model, err)
	}
	w.versions[model] = v
	return v, nil
}

// handle processes one study-complete event: run every matching route, store the SEG objects,
// publish one export job per (route, destination), then ack.
func (w *inferWorker) handle(ctx context.Context, it *workItem) {
	b := w.bus
	attempt := it.Attempt
	var ev StudyComplete
	if err := json.Unmarshal(it.Data(), &ev); err != nil {
		w.fail(ctx, it, it.Header(HeaderStudyKey), nil, fmt.Sprintf("study-complete event is not valid JSON: %v", err))
		return
	}
	if err := ev.Validate(); err != nil {
		w.fail(ctx, it, ev.StudyKey(), &ev, err.Error())
		return
	}
	eventID := it.Header(jetstream.MsgIDHeader)
	if eventID == "" {
		eventID = StudyCompleteMsgID(ev)
	}
	key := ev.StudyKey()
	log := b.log.With("study", ev.StudyInstanceUID, "called_ae", ev.CalledAE, "attempt", attempt, "worker", w.opt.Name)

	// A replay of a study already finished, or an older event of a study that has since gained
	// instances, is acknowledged without work.
	skip := ""
	if _, err := b.updateState(ctx, key, func(cur *StudyState) (*StudyState, error) {
		if cur != nil && cur.EventID == eventID && (cur.State == StateDone || cur.State == StateFailed) {
			skip = "already " + cur.State
			return nil, errNoChange
		}
		if cur != nil && cur.EventID != eventID && cur.ReceivedAt.After(ev.CompletedAt.UTC()) {
			skip = "superseded by a newer event of the same study"
			return nil, errNoChange
		}
		next := newReceivedState(ev, eventID).after(cur)
		if cur != nil && cur.EventID == eventID {
			c := *cur
			next = &c
		} else if cur != nil {
			next.Lesions = cur.Lesions // prompts already run stay run (a late prompt runs alone)
			next.ImagesKey = cur.ImagesKey
		}
		next.State, next.Reason, next.Attempts, next.Worker = StateInferring, "", attempt, w.opt.Name
		return next, nil
	}); err != nil {
		w.retry(ctx, it, key, &ev, fmt.Errorf("record inferring state: %w", err))
		return
	}
	if skip != "" {
		log.Info("study event acknowledged without work", "why", skip)
		w.q.Done(ctx, it)
		return
	}

	if len(ev.Prompts) == 0 && w.opt.Routing.hasLesionRoutes() {
		// Kept for POST /api/studies/{uid}/lesions, which runs the study again for new prompts.
		if err := b.keepEvent(ctx, ev); err != nil {
			log.Warn("study event not kept for lesion requests", "err", err)
		}
	}
	stop := w.q.KeepInProgress(it)
	taken := time.Now()
	results, err := w.runRoutes(ctx, ev, eventID, log)
	stop()
	var wait *errWaitForPrompts
	if errors.As(err, &wait) {
		w.waitForPrompts(ctx, it, key, wait, log)
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			// Shutting down: hand the study to another worker now rather than after AckWait.
			w.q.Release(it)
			return
		}
		if IsPermanent(err) {
			w.fail(ctx, it, key, &ev, err.Error())
		} else {
			w.retry(ctx, it, key, &ev, err)
		}
		return
	}
	if err := w.publishResults(ctx, ev, eventID, results, log); err != nil {
		w.retry(ctx, it, key, &ev, err)
		return
	}
	if f := b.obs.StudyInferred; f != nil && len(results) > 0 {
		f(time.Since(taken))
	}
	w.q.Done(ctx, it)
}

// routeResult is what one route produced for one study.
type routeResult struct {
	route   Route
	version string
	objects []ResultState
	// lesions and notes of a lesion-mode route (lesions.go).
	lesions []LesionState
	notes   []string
}

// runRoutes runs every route matching each series. Results already in the object store (from an
// attempt that died after storing them) are reused, so a redelivery does not run the model again.
func (w *inferWorker) runRoutes(ctx context.Context, ev StudyComplete, eventID string, log *slog.Logger) ([]routeResult, error) {
	key := ev.StudyKey()
	byRoute := map[string]*routeResult{}
	var order []string
	matched := false
	prior, err := w.bus.StudyState(ctx, ev.CalledAE, ev.StudyInstanceUID)
	if err != nil {
		return nil, err
	}
	lesionSeries := map[string]bool{}
	imagesUnchanged := prior != nil && prior.ImagesKey != "" && prior.ImagesKey == imagesKey(ev)
	skippedUnchanged := false
	for _, se := range ev.Series {
		if promptSeries(se) {
			continue // prompts for the image series, never processed as images
		}
		for _, rt := range w.opt.Routing.Match(ev, se) {
			if rt.Lesions == nil && (len(ev.Prompts) > 0 || imagesUnchanged) {
				// A lesion request, or an event that only added prompts (an SR after the
				// images): the whole-series routes already ran on these images.
				skippedUnchanged = true
				continue
			}
			matched = true
			version, err := w.modelVersion(rt.Model)
			if err != nil {
				return nil, err
			}
			rr := byRoute[rt.Name]
			if rr == nil {
				rr = &routeResult{route: rt, version: version}
				byRoute[rt.Name] = rr
				order = append(order, rt.Name)
			}
			if rt.Lesions != nil {
				lesionSeries[se.SeriesInstanceUID] = true
				objs, lesions, note, err := w.processLesionRoute(ctx, ev, se, rt, version, eventID, prior)
				if err != nil {
					return nil, err
				}
				rr.objects = append(rr.objects, objs...)
				rr.lesions = append(rr.lesions, lesions...)
				if note != "" {
					rr.notes = append(rr.notes, note)
				}
				log.Info("series processed in lesion mode", "series", se.SeriesInstanceUID, "route", rt.Name, "lesions", len(lesions), "seg_objects", len(objs))
				continue
			}
			objs, reused, err := w.reuseResults(ctx, key, eventID, rt, version, se)
			if err != nil {
				return nil, err
			}
			if !reused {
				start := time.Now()
				objs, err = w.process(ctx, ev, se, rt, version, eventID)
				if err != nil {
					return nil, err
				}
				log.Info("series processed", "series", se.SeriesInstanceUID, "route", rt.Name, "model_version", version,
					"instances", len(se.Instances), "seg_objects", len(objs), "seconds", time.Since(start).Seconds())
			} else {
				log.Info("series results reused from the object store", "series", se.SeriesInstanceUID, "route", rt.Name)
			}
			rr.objects = append(rr.objects, objs...)
		}
	}
	unrouted := unroutedPrompts(ev, lesionSeries, eventID)
	if !matched {
		if len(unrouted) > 0 || skippedUnchanged {
			// Nothing ran; the study state still says why (each prompt, the unchanged images).
			var notes []string
			if skippedUnchanged && len(ev.Prompts) == 0 {
				notes = append(notes, "only lesion prompts (SR, GSPS, RTSTRUCT) arrived since the images were processed, and no lesion-mode route takes them: the earlier results stand")
			}
			return []routeResult{{lesions: unrouted, notes: notes}}, nil
		}
		return nil, nil
	}
	out := make([]routeResult, 0, len(order))
	var lesions []LesionState
	for _, name := range order {
		lesions = append(lesions, byRoute[name].lesions...)
	}
	lesions = reconcileLesions(ev, lesions)
	for _, name := range order {
		rr := *byRoute[name]
		rr.lesions = nil
		for _, l := range lesions {
			if l.Route == name {
				rr.lesions = append(rr.lesions, l)
			}
		}
		out = append(out, rr)
	}
	if len(out) > 0 {
		out[0].lesions = append(out[0].lesions, unrouted...)
	}
	return out, nil
}

func (w *inferWorker) reuseResults(ctx context.Context, key, eventID string, rt Route, version string, se SeriesRef) ([]ResultState, bool, error) {
	var out []ResultState
	for _, o := range rt.OutputNames() {
		name := resultObjectName(key, eventID, rt.Name, version, se.SeriesInstanceUID, o)
		info, err := w.bus.results.GetInfo(ctx, name)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("look up result %s: %w", name, err)
		}
		if info.Deleted || info.Metadata["sop_instance_uid"] == "" {
			return nil, false, nil
		}
		out = append(out, resultFromInfo(rt, version, se.SeriesInstanceUID, o, info))
	}
	// The rejection note exists only when the stored version replaced an earlier one.
	name := resultObjectName(key, eventID, rt.Name, version, se.SeriesInstanceUID, OutputRejectionNote)
	if info, err := w.bus.results.GetInfo(ctx, name); err == nil && !info.Deleted && info.Metadata["sop_instance_uid"] != "" {
		out = append(out, resultFromInfo(rt, version, se.SeriesInstanceUID, OutputRejectionNote, info))
	} else if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, false, fmt.Errorf("look up result %s: %w", name, err)
	}
	return out, true, nil
}

func resultFromInfo(rt Route, version, series, output string, info *jetstream.ObjectInfo) ResultState {
	md := info.Metadata
	segs, _ := strconv.Atoi(md["segments"])
	frames, _ := strconv.Atoi(md["frames"])
	ver, _ := strconv.Atoi(md["version"])
	r := ResultState{Route: rt.Name, Model: rt.Model, ModelVersion: version, Output: output, Series: series,
		Object: info.Name, SOPInstanceUID: md["sop_instance_uid"], SOPClassUID: md["sop_class_uid"],
		SeriesInstanceUID: md["series_instance_uid"], Version: ver, Segments: segs, Frames: frames, Bytes: int64(info.Size)}
	if md["replaces_sop_instance_uid"] != "" {
		prev, _ := strconv.Atoi(md["replaces_version"])
		r.Replaces = &ReplacedObject{Output: output, SOPInstanceUID: md["replaces_sop_instance_uid"], SOPClassUID: md["replaces_sop_class_uid"],
			SeriesInstanceUID: md["replaces_series_instance_uid"], Version: prev, ReplacedBy: r.SOPInstanceUID}
	}
	return r
}

// predecessors finds, in the study's current results, the version of the results of one route
// and source series that a new run replaces: the objects by output and the next version number.
// Results of this very event (a redelivery after the results were recorded) are not
// predecessors: their own predecessors and version are reused.
func predecessors(st *StudyState, key, eventID string, rt Route, modelVersion, series string) (int, map[string]ReplacedObject) {
	version := 1
	preds := map[string]ReplacedObject{}
	if st == nil {
		return version, preds
	}
	for _, r := range append(append([]ResultState(nil), st.Previous...), st.Results...) {
		if r.Route != rt.Name || r.Series != series || r.Output == OutputRejectionNote {
			continue
		}
		v := max(r.Version, 1)
		if r.Object == resultObjectName(key, eventID, rt.Name, modelVersion, series, r.Output) {
			version = max(version, v)
			if r.Replaces != nil {
				preds[r.Output] = *r.Replaces
			}
			continue
		}
		version = max(version, v+1)
		class := r.SOPClassUID
		if class == "" {
			class = SOPClassSegmentation // recorded before the class was
		}
		preds[r.Output] = ReplacedObject{Output: r.Output, SOPInstanceUID: r.SOPInstanceUID, SOPClassUID: class,
			SeriesInstanceUID: r.SeriesInstanceUID, Version: v}
	}
	return version, preds
}

// process runs the processor on one series and stores its SEG objects.
func (w *inferWorker) process(ctx context.Context, ev StudyComplete, se SeriesRef, rt Route, version, eventID string) ([]ResultState, error) {
	b := w.bus
	files, cleanup, err := b.localFiles(ctx, ev, se, w.opt.TempDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var cur *StudyState
	if st, err := b.stateByKey(ctx, ev.StudyKey()); err == nil {
		cur = st
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("read the study state for earlier versions: %w", err)
	}
	resultVersion, preds := predecessors(cur, ev.StudyKey(), eventID, rt, version, se.SeriesInstanceUID)
	job := Job{CalledAE: ev.CalledAE, StudyInstanceUID: ev.StudyInstanceUID, SeriesInstanceUID: se.SeriesInstanceUID,
		Modality: se.Modality, Files: files, Model: rt.Model, Outputs: rt.OutputNames(), Version: resultVersion, Predecessors: preds,
		Encoding: rt.Encoding}
	pctx, cancel := context.WithTimeout(ctx, w.opt.Timeout)
	start := time.Now()
	segs, err := safeProcess(pctx, w.opt.Processor, job)
	timedOut := pctx.Err() != nil && ctx.Err() == nil
	cancel()
	if err == nil {
		if f := b.obs.SeriesProcessed; f != nil {
			f(time.Since(start))
		}
	} else if f := b.obs.InferenceFailed; f != nil && ctx.Err() == nil {
		f()
	}
	if err != nil && timedOut {
		err = fmt.Errorf("processing did not finish within %s: %w", w.opt.Timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("series %s, route %s: %w", se.SeriesInstanceUID, rt.Name, err)
	}
	return w.storeSEGs(ctx, ev, se, rt, version, eventID, segs, resultVersion, preds)
}

// storeSEGs puts a route's SEG objects for one series into the results store, with the version
// they are and the objects they replace (preds, by output; a rejection note comes with them).
func (w *inferWorker) storeSEGs(ctx context.Context, ev StudyComplete, se SeriesRef, rt Route, version, eventID string, segs []SEG,
	resultVersion int, preds map[string]ReplacedObject) ([]ResultState, error) {
	b := w.bus
	got := map[string]SEG{}
	for _, s := range segs {
		got[s.Output] = s
	}
	var out []ResultState
	outputs := rt.OutputNames()
	if len(preds) > 0 {
		if _, ok := got[OutputRejectionNote]; ok {
			outputs = append(append([]string(nil), outputs...), OutputRejectionNote)
		}
	}
	for _, o := range outputs {
		s, ok := got[o]
		if !ok || len(s.Data) == 0 {
			return nil, Permanentf("series %s, route %s: the processor returned no %s SEG", se.SeriesInstanceUID, rt.Name, o)
		}
		if s.SOPClassUID == "" {
			s.SOPClassUID = SOPClassSegmentation
		}
		name := resultObjectName(ev.StudyKey(), eventID, rt.Name, version, se.SeriesInstanceUID, o)
		md := map[string]string{
			"sop_instance_uid": s.SOPInstanceUID, "sop_class_uid": s.SOPClassUID, "series_instance_uid": s.SeriesInstanceUID,
			"segments": strconv.Itoa(s.Segments), "frames": strconv.Itoa(s.Frames),
			"study_instance_uid": ev.StudyInstanceUID, "model_version": version, "version": strconv.Itoa(resultVersion),
		}
		if p, ok := preds[o]; ok {
			md["replaces_sop_instance_uid"], md["replaces_sop_class_uid"] = p.SOPInstanceUID, p.SOPClassUID
			md["replaces_series_instance_uid"], md["replaces_version"] = p.SeriesInstanceUID, strconv.Itoa(p.Version)
		}
		// Name, data and metadata in one put: a SEG object without its metadata must never exist,
		// since a redelivered study reuses stored objects by their metadata.
		info, err := b.results.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: md}, bytes.NewReader(s.Data))
		if err != nil {
			return nil, fmt.Errorf("store SEG %s: %w", name, err)
		}
		out = append(out, resultFromInfo(rt, version, se.SeriesInstanceUID, o, info))
	}
	return out, nil
}

// safeProcess turns a panic in the model code into a permanent failure of this study: a poison
// study must not take the worker (and the queue behind it) down.
func safeProcess(ctx context.Context, p Processor, job Job) (segs []SEG, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Permanentf("processor panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return p.Process(ctx, job)
}

// localFiles returns the series' files on this machine: from the shared data directory when
// present, otherwise fetched from the instances object store into a temporary directory.
func (b *Bus) localFiles(ctx context.Context, ev StudyComplete, se SeriesRef, tempDir string) ([]string, func(), error) {
	var files []string
	var tmp string
	cleanup := func() {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
	}
	for _, in := range se.Instances {
		if in.Path != "" && b.cfg.DataDir != "" {
			p := filepath.Join(b.cfg.DataDir, filepath.FromSlash(in.Path))
			if _, err := os.Stat(p); err == nil {
				files = append(files, p)
				continue
			}
		}
		if in.Object == "" {
			cleanup()
			return nil, nil, Permanentf("instance %s: %s is not on this worker (data dir %q) and was not uploaded to the object store", in.SOPInstanceUID, in.Path, b.cfg.DataDir)
		}
		if tmp == "" {
			var err error
			if tmp, err = os.MkdirTemp(tempDir, "dpersona-series-"); err != nil {
				return nil, nil, err
			}
		}
		p := filepath.Join(tmp, in.SOPInstanceUID+".dcm")
		if err := b.instances.GetFile(ctx, in.Object, p); err != nil {
			cleanup()
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				return nil, nil, Permanentf("instance %s: object %s is missing from %s", in.SOPInstanceUID, in.Object, BucketInstances)
			}
			return nil, nil, fmt.Errorf("fetch instance %s: %w", in.SOPInstanceUID, err)
		}
		files = append(files, p)
	}
	return files, cleanup, nil
}

// publishResults records the results in the study state (keeping any delivery already made)
// and publishes one export job per route and destination.
func (w *inferWorker) publishResults(ctx context.Context, ev StudyComplete, eventID string, results []routeResult, log *slog.Logger) error {
	b := w.bus
	key := ev.StudyKey()
	now := time.Now().UTC()
	_, err := b.updateState(ctx, key, func(cur *StudyState) (*StudyState, error) {
		next := newReceivedState(ev, eventID)
		if cur != nil {
			c := *cur
			next = &c
		}
		old := map[[2]string]DeliveryState{}
		for _, r := range next.Results {
			for _, d := range r.Deliveries {
				old[[2]string{r.Object, d.Destination}] = d
			}
		}
		next.Results = nil
		next.Notes = nil
		next.ImagesKey = imagesKey(ev)
		for _, rr := range results {
			next.Lesions = append(next.Lesions, rr.lesions...)
			next.Notes = append(next.Notes, rr.notes...)
		}
		superseded := map[string]bool{}
		for _, r := range next.Superseded {
			superseded[r.SOPInstanceUID] = true
		}
		for _, rr := range results {
			for _, obj := range rr.objects {
				if p := obj.Replaces; p != nil && !superseded[p.SOPInstanceUID] {
					superseded[p.SOPInstanceUID] = true
					rep := *p
					rep.ReplacedBy, rep.At = obj.SOPInstanceUID, now
					next.Superseded = append(next.Superseded, rep)
				}
				for _, d := range w.destinationsFor(rr.route, obj.Output) {
					ds, ok := old[[2]string{obj.Object, d}]
					if !ok {
						ds = DeliveryState{Destination: d, State: DeliveryPending, At: now}
					}
					obj.Deliveries = append(obj.Deliveries, ds)
				}
				next.Results = append(next.Results, obj)
			}
		}
		next.InferredAt = &now
		next.Worker = w.opt.Name
		next.Reason = ""
		next.State = deriveState(next)
		if len(next.Results) == 0 && len(next.Notes) > 0 {
			next.Reason = strings.Join(next.Notes, "; ")
		}
		if len(results) == 0 {
			next.State = StateDone
			next.Reason = fmt.Sprintf("no route matches this study (called AE %s, modalities %s): %s", ev.CalledAE, modalities(ev), w.opt.Routing.explainStudy(ev))
		}
		if next.State == StateDone && next.DoneAt == nil {
			next.DoneAt = &now
		}
		return next, nil
	})
	if err != nil {
		return fmt.Errorf("record results: %w", err)
	}
	for _, rr := range results {
		for _, d := range rr.route.Destinations {
			job := ExportJob{StudyKey: key, StudyInstanceUID: ev.StudyInstanceUID, CalledAE: ev.CalledAE, EventID: eventID,
				Route: rr.route.Name, Model: rr.route.Model, ModelVersion: rr.version, Destination: d}
			for _, o := range rr.objects {
				if o.Output == OutputRejectionNote && !w.acceptsRejectionNotes(d) {
					continue
				}
				class := o.SOPClassUID
				if class == "" {
					class = SOPClassSegmentation
				}
				job.Objects = append(job.Objects, ExportObject{Object: o.Object, Output: o.Output, SOPInstanceUID: o.SOPInstanceUID,
					SOPClassUID: class, Series: o.Series})
			}
			data, err := json.Marshal(job)
			if err != nil {
				return err
			}
			m := &nats.Msg{Subject: SubjectResultPrefix + escapeToken(d), Data: data, Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, ResultMsgID(key, eventID, rr.route.Name, rr.version, d))
			m.Header.Set(HeaderStudyKey, key)
			m.Header.Set(HeaderDestination, d)
			if _, err := b.publishDurably(ctx, m); err != nil {
				return fmt.Errorf("publish export job for destination %s: %w", d, err)
			}
		}
		log.Info("results published", "route", rr.route.Name, "objects", len(rr.objects), "destinations", len(rr.route.Destinations))
	}
	return nil
}

// destinationsFor lists the route's destinations an output goes to: a rejection note only to
// those configured to accept rejection notes.
func (w *inferWorker) destinationsFor(rt Route, output string) []string {
	if output != OutputRejectionNote {
		return rt.Destinations
	}
	var out []string
	for _, d := range rt.Destinations {
		if w.acceptsRejectionNotes(d) {
			out = append(out, d)
		}
	}
	return out
}

func (w *inferWorker) acceptsRejectionNotes(name string) bool {
	for _, d := range w.opt.Routing.Destinations {
		if d.Name == name {
			return d.RejectionNotes
		}
	}
	return false
}

func modalities(ev StudyComplete) string {
	seen := map[string]bool{}
	var out []string
	for _, se := range ev.Series {
		if !seen[se.Modality] {
			seen[se.Modality] = true
			out = append(out, se.Modality)
		}
	}
	return strings.Join(out, ",")
}

// deriveState is the study state implied by its deliveries.
func deriveState(st *StudyState) string {
	pending := false
	for _, r := range st.Results {
		for _, d := range r.Deliveries {
			switch d.State {
			case DeliveryFailed:
				return StateFailed
			case DeliveryDelivered:
			default:
				pending = true
			}
		}
	}
	if pending {
		return StateExporting
	}
	return StateDone
}

// retry schedules another attempt with back-off, or fails the study when attempts are used up.
func (w *inferWorker) retry(ctx context.Context, it *workItem, key string, ev *StudyComplete, cause error) {
	attempt := it.Attempt
	if w.q.Exhausted(it) {
		w.fail(ctx, it, key, ev, fmt.Sprintf("gave up after %d attempts: %v", attempt, cause))
		return
	}
	delay := w.q.Backoff(it)
	w.bus.log.Warn("study attempt failed, retrying", "study_key", key, "attempt", attempt, "max", w.opt.MaxDeliver, "retry_in", delay, "err", cause)
	if key != "" {
		w.bus.updateState(ctx, key, func(cur *StudyState) (*StudyState, error) {
			if cur == nil {
				return nil, errNoChange
			}
			cur.Reason = fmt.Sprintf("attempt %d of %d failed, retrying in %s: %v", attempt, w.opt.MaxDeliver, delay, cause)
			return cur, nil
		})
	}
	w.q.RetryLater(it, delay)
}

// fail marks the study failed with the reason, puts the event in the dead-letter stream and
// removes it from the work queue.
func (w *inferWorker) fail(ctx context.Context, it *workItem, key string, ev *StudyComplete, reason string) {
	b := w.bus
	b.log.Error("study failed", "study_key", key, "reason", firstLine(reason))
	w.q.DeadLetter(ctx, it, reason, func() {
		if key != "" {
			b.markFailed(ctx, key, ev, reason)
		}
	})
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// markFailed sets a study's state to failed with the reason (creating the state if needed).
func (b *Bus) markFailed(ctx context.Context, key string, ev *StudyComplete, reason string) {
	now := time.Now().UTC()
	_, err := b.updateState(ctx, key, func(cur *StudyState) (*StudyState, error) {
		next := cur
		if next == nil {
			if ev == nil {
				next = &StudyState{ReceivedAt: now}
			} else {
				next = newReceivedState(*ev, StudyCompleteMsgID(*ev))
			}
		}
		next.State = StateFailed
		next.Reason = firstLine(reason)
		next.DoneAt = &now
		return next, nil
	})
	if err != nil {
		b.log.Error("could not record failed state", "study_key", key, "err", err)
	}
}
