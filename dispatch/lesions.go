package dispatch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"dpersona/dicomio"
	"dpersona/pipeline"
)

// Lesion mode in the workers. A route with "lesions" runs the model only on lesions marked in
// the study: the TID 1500 SRs, GSPS and RTSTRUCTs that arrive with (or after) the images, and
// prompts posted to POST /api/studies/{uid}/lesions. Prompt instances are never processed as
// image series; they travel with the study and are read where the series is processed.
//
//	{"name": "lung-lesions", "modality": "CT", "model": "models/default",
//	 "lesions": {"wait_for_prompts": "10m", "without_prompts": "skip"}}
//
// Without "outputs" a lesion route produces raters, samples, consensus and rtstruct
// (Route.OutputNames).
//
// The SR often arrives minutes after the images: a study without prompts waits up to
// wait_for_prompts after its images completed (the event goes back to the queue with that
// delay; a prompt arriving meanwhile publishes a newer event that supersedes it). Then, without
// any prompt, "skip" (default) produces nothing and says so in the study state, "screening" runs
// today's whole-lung screening mode, labelled as such in the SEG descriptions. A prompt arriving
// after the study was processed runs that lesion only: prompt objects already processed for a
// route and series (recorded in the study state) are not run again.

// Without-prompts behaviours of a lesion route.
const (
	WithoutPromptsSkip      = "skip"
	WithoutPromptsScreening = "screening"
)

// LesionRouting is the "lesions" object of a route.
type LesionRouting struct {
	// WaitForPrompts is how long after the images complete a study without prompts waits for one.
	WaitForPrompts Duration `json:"wait_for_prompts,omitempty"`
	// WithoutPrompts: "skip" (default) or "screening".
	WithoutPrompts string `json:"without_prompts,omitempty"`
}

func (l *LesionRouting) validate(route string) error {
	if l == nil {
		return nil
	}
	switch l.WithoutPrompts {
	case "":
		l.WithoutPrompts = WithoutPromptsSkip
	case WithoutPromptsSkip, WithoutPromptsScreening:
	default:
		return fmt.Errorf("route %s: lesions.without_prompts %q, want %s or %s", route, l.WithoutPrompts, WithoutPromptsSkip, WithoutPromptsScreening)
	}
	if l.WaitForPrompts < 0 {
		return fmt.Errorf("route %s: lesions.wait_for_prompts is negative", route)
	}
	return nil
}

// Lesion states.
const (
	LessionProcessed = "processed" // segmented; its segments are in the route's SEG objects
	LesionMerged     = "merged"    // the same lesion as another prompt, which was processed
	LesionRejected   = "rejected"  // not usable; Reason says why
)

// LesionState is one prompt of a study and what became of it, shown by GET /api/studies/{uid}.
type LesionState struct {
	Route  string `json:"route"`
	Series string `json:"series_instance_uid,omitempty"`
	// Source is SR, GSPS, RTSTRUCT or API; Object the prompt object's SOP Instance UID (for the
	// API: "api:" and the request's id); Item where in the object.
	Source string `json:"source"`
	Object string `json:"object"`
	Item   string `json:"item,omitempty"`
	Label  string `json:"label,omitempty"`
	// TrackingID and TrackingUID are those of the SEG segments (from the SR measurement group).
	TrackingID  string `json:"tracking_id,omitempty"`
	TrackingUID string `json:"tracking_uid,omitempty"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	// Where the lesion was placed (1-based slice in the series' order, pixel row and column) and
	// over how many slices it was followed.
	Slice          int       `json:"slice,omitempty"`
	Row            int       `json:"row,omitempty"`
	Column         int       `json:"column,omitempty"`
	SlicesFollowed int       `json:"slices_followed,omitempty"`
	EventID        string    `json:"event_id,omitempty"`
	At             time.Time `json:"at"`
	// refSOP is the image the prompt references (for the reason of a prompt on another series).
	refSOP string
	// kind is the dicomio error kind of a rejection.
	kind error
}

// LesionJob is what lesion mode adds to a Job.
type LesionJob struct {
	// PromptFiles are the study's prompt objects (SR, GSPS, RTSTRUCT) on this worker.
	PromptFiles []string
	// Prompts come from the API.
	Prompts []dicomio.Prompt
	// Screening runs the whole-lung screening mode (no prompt at all, route opted in).
	Screening bool
	// Done are prompt objects already processed for this route and series: placed (a new prompt
	// on the same lesion merges into them) but not run again.
	Done map[string]bool
}

// LesionProcessor is implemented by processors with a lesion mode.
type LesionProcessor interface {
	ProcessLesions(ctx context.Context, job Job, lj LesionJob) ([]SEG, []LesionState, error)
}

// ProcessLesions runs lesion mode (or, with lj.Screening, the labelled whole-lung mode) on the
// job's series. A series where no prompt can be placed gives no SEG and the reasons per prompt.
func (p PipelineProcessor) ProcessLesions(ctx context.Context, job Job, lj LesionJob) ([]SEG, []LesionState, error) {
	req := pipeline.Request{SeriesFiles: job.Files, StudyInstanceUID: job.StudyInstanceUID, Outputs: pipelineOutputs(job.Outputs),
		Prompts: lj.Prompts, Screening: lj.Screening, SkipObjects: lj.Done, Encoding: job.Encoding.pipelineEncoding()}
	var states []LesionState
	for _, f := range lj.PromptFiles {
		obj, err := dicomio.ReadPrompts(f)
		if err != nil {
			states = append(states, LesionState{Source: "?", Object: filepath.Base(f), State: LesionRejected, Reason: err.Error(), kind: err})
			continue
		}
		req.PromptObjects = append(req.PromptObjects, obj)
	}
	res, err := p.Models.Process(ctx, job.Model, req)
	var f *pipeline.Failure
	if errors.As(err, &f) && f.Stage == pipeline.StagePrompts {
		// Nothing (new) to segment in this series: the reasons are the result.
		return nil, append(states, issueStates(f.Issues)...), nil
	}
	if err != nil {
		return nil, states, p.classify(ctx, err)
	}
	for _, f := range res.Findings {
		if f.Lesion == nil {
			continue
		}
		l := f.Lesion
		states = append(states, LesionState{Source: string(l.Source), Object: l.ObjectUID, Item: l.Item, Label: l.Label,
			TrackingID: f.TrackingID, TrackingUID: f.TrackingUID, State: LessionProcessed,
			Slice: l.Slice + 1, Row: l.Row, Column: l.Column, SlicesFollowed: len(f.Slices), Reason: strings.Join(f.Notes, "; ")})
	}
	states = append(states, issueStates(res.PromptIssues)...)
	return segsOf(res), states, nil
}

func issueStates(issues []dicomio.PromptIssue) []LesionState {
	var out []LesionState
	for _, is := range issues {
		st := LesionState{Source: string(is.Source), Object: is.ObjectUID, Item: is.Item, Label: is.Label, State: LesionRejected, Reason: is.Err.Error(), kind: is.Err, refSOP: is.RefSOPInstanceUID}
		if errors.Is(is.Err, dicomio.ErrPromptOverlap) {
			st.State = LesionMerged
		}
		var de *dicomio.Error
		if errors.As(is.Err, &de) {
			st.Reason = de.Detail
			if de.Attribute != "" {
				st.Reason = de.Attribute + ": " + de.Detail
			}
			st.Reason = de.Kind.Error() + ": " + st.Reason
		}
		out = append(out, st)
	}
	return out
}

// promptSeries reports whether a series holds only prompt objects (SR, GSPS, RTSTRUCT): such a
// series is read as prompts, never processed as images.
func promptSeries(se SeriesRef) bool {
	if len(se.Instances) == 0 {
		return false
	}
	for _, in := range se.Instances {
		if !dicomio.IsPromptSOPClass(in.SOPClassUID) {
			return false
		}
	}
	return true
}

// studyPrompts gathers the prompt instances of a study into one SeriesRef (for localFiles).
func studyPrompts(ev StudyComplete) SeriesRef {
	out := SeriesRef{SeriesInstanceUID: "prompts"}
	for _, se := range ev.Series {
		for _, in := range se.Instances {
			if dicomio.IsPromptSOPClass(in.SOPClassUID) {
				out.Instances = append(out.Instances, in)
			}
		}
	}
	return out
}

// errWaitForPrompts asks the worker to hand the study back until prompts may have arrived.
type errWaitForPrompts struct {
	delay  time.Duration
	reason string
}

func (e *errWaitForPrompts) Error() string { return e.reason }

// processLesionRoute runs one lesion route on one image series.
func (w *inferWorker) processLesionRoute(ctx context.Context, ev StudyComplete, se SeriesRef, rt Route, version, eventID string, prior *StudyState) ([]ResultState, []LesionState, string, error) {
	b := w.bus
	done := map[string]bool{} // prompt objects already run for this route and series
	if prior != nil {
		for _, l := range prior.Lesions {
			if l.Route == rt.Name && l.Series == se.SeriesInstanceUID {
				done[l.Object] = true
			}
		}
	}
	all := studyPrompts(ev)
	fresh := SeriesRef{SeriesInstanceUID: all.SeriesInstanceUID}
	for _, in := range all.Instances {
		if !done[in.SOPInstanceUID] {
			fresh.Instances = append(fresh.Instances, in)
		}
	}
	var api []dicomio.Prompt
	for _, p := range ev.Prompts {
		if p.Series != "" && p.Series != se.SeriesInstanceUID {
			continue
		}
		if done["api:"+p.ID] {
			continue
		}
		pr, err := p.Prompt()
		if err != nil {
			continue // validated when posted
		}
		pr.ObjectUID = "api:" + p.ID
		api = append(api, pr)
	}
	lj := LesionJob{Prompts: api, Done: done}
	if len(fresh.Instances) == 0 && len(api) == 0 {
		if len(all.Instances) > 0 || len(done) > 0 {
			// Every prompt of the study was already run: nothing new for this route.
			return nil, nil, "", nil
		}
		wait := time.Duration(rt.Lesions.WaitForPrompts)
		if left := wait - time.Since(ev.CompletedAt); left > 0 {
			return nil, nil, "", &errWaitForPrompts{delay: left, reason: fmt.Sprintf("route %s: waiting up to %s after the images for a lesion prompt (SR, GSPS, RTSTRUCT or POST /api/studies/{uid}/lesions)", rt.Name, wait)}
		}
		if rt.Lesions.WithoutPrompts != WithoutPromptsScreening {
			return nil, nil, fmt.Sprintf("route %s, series %s: no lesion prompt (SR, GSPS, RTSTRUCT or API) within %s of the images; lesion mode produces nothing without one (without_prompts: screening would run the whole-lung screening mode)", rt.Name, se.SeriesInstanceUID, wait), nil
		}
		lj.Screening = true
	}
	lp, ok := w.opt.Processor.(LesionProcessor)
	if !ok {
		return nil, nil, "", Permanentf("route %s is in lesion mode but the processor has none", rt.Name)
	}
	files, cleanup, err := b.localFiles(ctx, ev, se, w.opt.TempDir)
	if err != nil {
		return nil, nil, "", err
	}
	defer cleanup()
	if len(all.Instances) > 0 {
		pf, pclean, err := b.localFiles(ctx, ev, all, w.opt.TempDir)
		if err != nil {
			return nil, nil, "", err
		}
		defer pclean()
		lj.PromptFiles = pf
	}
	job := Job{CalledAE: ev.CalledAE, StudyInstanceUID: ev.StudyInstanceUID, SeriesInstanceUID: se.SeriesInstanceUID,
		Modality: se.Modality, Files: files, Model: rt.Model, Outputs: rt.OutputNames(), Encoding: rt.Encoding}
	pctx, cancel := context.WithTimeout(ctx, w.opt.Timeout)
	segs, states, err := lp.ProcessLesions(pctx, job, lj)
	cancel()
	if err != nil {
		return nil, nil, "", fmt.Errorf("series %s, route %s: %w", se.SeriesInstanceUID, rt.Name, err)
	}
	now := time.Now().UTC()
	for i := range states {
		states[i].Route, states[i].Series, states[i].EventID, states[i].At = rt.Name, se.SeriesInstanceUID, eventID, now
	}
	// Prompt objects that gave nothing at all (an SR without measurement groups is one issue) are
	// still recorded, so a later event does not run them again.
	seen := map[string]bool{}
	for _, s := range states {
		seen[s.Object] = true
	}
	for _, in := range fresh.Instances {
		if !seen[in.SOPInstanceUID] {
			states = append(states, LesionState{Route: rt.Name, Series: se.SeriesInstanceUID, Source: "?", Object: in.SOPInstanceUID,
				State: LesionRejected, Reason: "no lesion in the object", EventID: eventID, At: now})
		}
	}
	if len(segs) == 0 {
		return nil, states, "", nil
	}
	// A late prompt's lesions come in addition to the earlier ones (each prompt runs once), so
	// these objects replace nothing: version 1, no rejection note.
	objs, err := w.storeSEGs(ctx, ev, se, rt, version, eventID, segs, 1, nil)
	return objs, states, "", err
}

// unroutedPrompts reports the API prompts of a lesion request whose series no lesion-mode route
// processed (lesionSeries holds the series that were), so none vanishes without a reason.
func unroutedPrompts(ev StudyComplete, lesionSeries map[string]bool, eventID string) []LesionState {
	var out []LesionState
	modality := map[string]string{}
	for _, se := range ev.Series {
		modality[se.SeriesInstanceUID] = se.Modality
	}
	for _, p := range ev.Prompts {
		if p.Series == "" || lesionSeries[p.Series] {
			continue
		}
		reason := fmt.Sprintf("series %s is not in the study", p.Series)
		if m, ok := modality[p.Series]; ok {
			reason = fmt.Sprintf("series %s (modality %s) is processed by no lesion-mode route", p.Series, m)
		}
		out = append(out, LesionState{Series: p.Series, Source: string(dicomio.SourceAPI), Object: "api:" + p.ID, Label: p.Label,
			State: LesionRejected, Reason: reason, EventID: eventID, At: time.Now().UTC()})
	}
	return out
}

// reconcileLesions drops, per route, the rejections of a prompt that another series of the study
// processed (a prompt references one image, so every other series rejects it), and names the
// series a prompt is for when no series the route processes holds its image.
func reconcileLesions(ev StudyComplete, states []LesionState) []LesionState {
	used := map[string]bool{}
	for _, s := range states {
		if s.State != LesionRejected {
			used[s.Route+"\x00"+s.Object+"\x00"+s.Item] = true
		}
	}
	seriesOf := map[string]SeriesRef{}
	for _, se := range ev.Series {
		for _, in := range se.Instances {
			seriesOf[in.SOPInstanceUID] = se
		}
	}
	var out []LesionState
	dup := map[string]bool{}
	for _, s := range states {
		k := s.Route + "\x00" + s.Object + "\x00" + s.Item
		if s.State == LesionRejected && (used[k] || dup[k]) {
			continue
		}
		if s.State == LesionRejected && errors.Is(s.kind, dicomio.ErrPromptReference) {
			dup[k] = true
			if se, ok := seriesOf[s.refSOP]; ok {
				s.Reason = fmt.Sprintf("the prompt marks an image of series %s (modality %s), which route %s does not process", se.SeriesInstanceUID, se.Modality, s.Route)
				s.Series = ""
			}
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Route < out[j].Route })
	return out
}

// waitForPrompts hands the study back to the queue until its wait for prompts ends, with the
// reason in the study state. A prompt arriving meanwhile publishes a newer event, which
// supersedes this one.
func (w *inferWorker) waitForPrompts(ctx context.Context, it *workItem, key string, wait *errWaitForPrompts, log interface {
	Info(string, ...any)
}) {
	log.Info("study waits for lesion prompts", "retry_in", wait.delay)
	w.bus.updateState(ctx, key, func(cur *StudyState) (*StudyState, error) {
		if cur == nil {
			return nil, errNoChange
		}
		cur.State = StateWaiting
		cur.Reason = fmt.Sprintf("%s (%s left)", wait.reason, wait.delay.Round(time.Second))
		return cur, nil
	})
	w.q.RetryLater(it, wait.delay)
}

// pipelineOutputs converts a route's output names.
func pipelineOutputs(outputs []string) []pipeline.Output {
	outs := make([]pipeline.Output, 0, len(outputs))
	for _, o := range outputs {
		outs = append(outs, pipeline.Output(o))
	}
	return outs
}

// segsOf converts a pipeline result's SEG objects.
func segsOf(res *pipeline.Result) []SEG {
	segs := make([]SEG, 0, len(res.SEGs))
	for _, s := range res.SEGs {
		segs = append(segs, SEG{Output: string(s.Output), SOPInstanceUID: s.SOPInstanceUID, SOPClassUID: s.SOPClassUID,
			SeriesInstanceUID: s.SeriesInstanceUID, Segments: s.Segments, Frames: s.Frames, Data: s.Data})
	}
	return segs
}

// classify marks a pipeline failure Permanent (it fails the same way on the same input); a
// cancelled or timed-out run is retried.
func (p PipelineProcessor) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	var f *pipeline.Failure
	if errors.As(err, &f) {
		return Permanent(err)
	}
	return err
}

func (r Routing) hasLesionRoutes() bool {
	for _, rt := range r.Routes {
		if rt.Lesions != nil {
			return true
		}
	}
	return false
}

// imagesKey identifies the image instances of a study: every instance but the lesion prompts.
func imagesKey(ev StudyComplete) string {
	return instancesDigest(ev, func(in InstanceRef) bool { return !dicomio.IsPromptSOPClass(in.SOPClassUID) })
}
