// Package pipeline is the processing step of the gateway: one DICOM series in, DICOM objects
// out. It reads the series with dicomio, cuts every slice into model inputs as the bundle's
// manifest says, runs both D-Persona stages with inference, blends the outputs back onto the
// source grid and encodes the requested outputs (outputs.go) for every finding:
//
//   - raters: BINARY SEG, one segment per stage-II rater style (segments may overlap),
//   - samples: BINARY SEG, one segment per stage-I plausible outline,
//   - consensus: BINARY SEG, the mean sample probability above the threshold,
//   - bands: BINARY SEG, one segment per probability band,
//   - probability: FRACTIONAL SEG (opt-in), the mean of the sample probabilities,
//   - rtstruct: RT Structure Set with the rater styles and the consensus as ROIs,
//
// plus, for a version that replaces earlier results, an IOCM rejection note listing them.
// Labels, codes and the algorithm identification come from the manifest. A series that cannot
// be processed returns a *Failure naming the study, series, stage and cause; Process never
// returns an empty result without an error.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"dpersona/dicomio"
	"dpersona/inference"
)

// Request is one series to process.
type Request struct {
	// SeriesFiles are the Part-10 files of one series.
	SeriesFiles []string
	// StudyInstanceUID, when set, must match the series; it also seeds the noise (with Seed).
	StudyInstanceUID string
	// Model names the bundle (manifest name); empty = the processor's default model.
	Model string
	// Outputs to produce; empty = DefaultOutputs (LesionDefaultOutputs in lesion mode).
	Outputs []Output
	// Encoding tunes the objects: probability bands, compact samples, RT interpreted type, and
	// the version this result is among those of the same series, output and model.
	Encoding Encoding
	// Seed for the study noise: the same study, model and seed give the same masks.
	Seed int64
	// Samples (S), BankSize (K) and Threshold override the manifest defaults when non-zero.
	Samples, BankSize int
	Threshold         float64
	// ROI overrides the manifest's input.tiling.roi when set: dicomio.ROIAll or dicomio.ROILung.
	ROI string
	// Progress, when set, is called after each slice with the slices done and the total.
	Progress func(done, total int)
	// Prompts and PromptObjects, when any is set, switch to lesion mode (lesion.go): the model
	// runs only on tiles centred on each lesion and followed through the neighbouring slices.
	Prompts       []dicomio.Prompt
	PromptObjects []*dicomio.PromptObject
	// Lesion bounds the follow in lesion mode.
	Lesion LesionOptions
	// SkipObjects are prompt objects (SOP Instance UIDs, or the ObjectUID of API prompts) whose
	// lesions were already processed: they are placed, so a new prompt on the same lesion is
	// merged into them, but not run again.
	SkipObjects map[string]bool
	// Screening labels a whole-lung run as the screening mode a lesion route falls back to when
	// no lesion was marked (series and content descriptions say so).
	Screening bool
}

// SEG is one encoded output object: a Segmentation, or for OutputRTStruct an RT Structure Set
// (then Segments counts its ROIs and Frames its contours).
type SEG struct {
	Output            Output
	Data              []byte // Part-10 file
	SOPInstanceUID    string
	SOPClassUID       string
	SeriesInstanceUID string
	Segments          int
	Frames            int
}

// Result is a processed series.
type Result struct {
	StudyInstanceUID  string
	SeriesInstanceUID string
	Slices            int
	Rows, Cols        int
	Model             string
	ModelVersion      string
	Device            string
	Samples, BankSize int
	Threshold         float64
	SEGs              []SEG
	// Consensus and Uncertainty are per slice (sorted order), Rows*Cols each: the mean sample
	// probability and the per-pixel standard deviation of the S sample probabilities.
	Consensus   [][]float32
	Uncertainty [][]float32
	// Warnings from reading the series (gaps, irregular spacing).
	Warnings []string
	Timings  Timings
	// Findings are what the SEG objects describe: in lesion mode one per lesion.
	Findings []Finding
	// PromptIssues are the prompts that gave no lesion, each with its reason (lesion mode).
	PromptIssues []dicomio.PromptIssue
}

// Timings split the wall time of Process.
type Timings struct {
	Load, Infer, Encode, Total time.Duration
	// Tiles run through the model, of TilesPlanned (every tile of every slice); fewer when a
	// region of interest leaves tiles out.
	Tiles, TilesPlanned int
}

// Stage says where processing failed.
type Stage string

const (
	StageLoad   Stage = "load"
	StageModel  Stage = "model"
	StageInfer  Stage = "infer"
	StageEncode Stage = "encode"
	// StagePrompts: lesion mode, but no prompt could be placed in the series.
	StagePrompts Stage = "prompts"
)

// Failure is the error of a series that could not be processed.
type Failure struct {
	StudyInstanceUID  string
	SeriesInstanceUID string
	Stage             Stage
	Err               error
	// Issues are the reasons per prompt of a StagePrompts failure.
	Issues []dicomio.PromptIssue
}

func (f *Failure) Error() string {
	s := "study " + orUnknown(f.StudyInstanceUID)
	if f.SeriesInstanceUID != "" {
		s += " series " + f.SeriesInstanceUID
	}
	return fmt.Sprintf("%s failed at %s: %v", s, f.Stage, f.Err)
}

func (f *Failure) Unwrap() error { return f.Err }

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// Processor runs requests against one or more loaded models. It is safe for concurrent use;
// concurrent requests share each engine's session pool.
type Processor struct {
	engines  map[string]*inference.Engine
	fallback *inference.Engine
	// SoftwareVersion is written into the SEG objects (SoftwareVersions).
	SoftwareVersion string
	// DeviceSerialNumber identifies this installation in the objects it writes (Enhanced General
	// Equipment makes it Type 1); New defaults it to the host name.
	DeviceSerialNumber string
	Logger             *slog.Logger
}

// New returns a processor whose default model is def; others are selectable by manifest name.
func New(def *inference.Engine, others ...*inference.Engine) *Processor {
	p := &Processor{engines: map[string]*inference.Engine{}, fallback: def, SoftwareVersion: "dev", DeviceSerialNumber: hostSerial()}
	for _, e := range append([]*inference.Engine{def}, others...) {
		p.engines[e.Bundle().Manifest.Name] = e
	}
	return p
}

// Engine returns the engine serving a model name ("" = default).
func (p *Processor) Engine(model string) (*inference.Engine, error) {
	if model == "" {
		return p.fallback, nil
	}
	e, ok := p.engines[model]
	if !ok {
		return nil, fmt.Errorf("model %q is not loaded", model)
	}
	return e, nil
}

// sliceOutput is what is kept per slice after blending.
type sliceOutput struct {
	samples   [][]uint8 // [S] masks
	raters    [][]uint8 // [R] masks
	consensus []float32
	uncert    []float32
}

// Process runs one series. On failure the error is a *Failure.
func (p *Processor) Process(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	fail := func(stage Stage, series string, err error) (*Result, error) {
		f := &Failure{StudyInstanceUID: req.StudyInstanceUID, SeriesInstanceUID: series, Stage: stage, Err: err}
		if p.Logger != nil {
			p.Logger.Warn("series failed", "study", f.StudyInstanceUID, "series", series, "stage", stage, "error", err)
		}
		return nil, f
	}
	engine, err := p.Engine(req.Model)
	if err != nil {
		return fail(StageModel, "", err)
	}
	m := &engine.Bundle().Manifest
	outputs := req.Outputs
	if len(outputs) == 0 {
		outputs = DefaultOutputs
		if req.lesionMode() {
			outputs = LesionDefaultOutputs
		}
	}
	if err := CheckOutputs(outputs); err != nil {
		return fail(StageModel, "", err)
	}
	serving, err := m.Defaults.Resolve(inference.Defaults{Samples: req.Samples, BankSize: req.BankSize, Threshold: req.Threshold})
	if err != nil {
		return fail(StageModel, "", err)
	}
	S, K, thr := serving.Samples, serving.BankSize, serving.Threshold
	if len(req.SeriesFiles) == 0 {
		return fail(StageLoad, "", errors.New("no files in the series"))
	}

	series, err := dicomio.LoadSeries(req.SeriesFiles)
	if err != nil {
		return fail(StageLoad, "", err)
	}
	if req.StudyInstanceUID != "" && series.StudyInstanceUID != req.StudyInstanceUID {
		return fail(StageLoad, series.SeriesInstanceUID, fmt.Errorf("the files belong to study %s, not the requested study", series.StudyInstanceUID))
	}
	req.StudyInstanceUID = series.StudyInstanceUID
	if m.Input.Channels != 1 {
		return fail(StageModel, series.SeriesInstanceUID, fmt.Errorf("model %s takes %d input channels; a single series gives 1", m.Name, m.Input.Channels))
	}
	spec := m.Input // validated at bundle load; a copy, so the ROI override stays in this request
	if req.ROI != "" {
		spec.Tiling.ROI = req.ROI
	}
	plan, err := tilePlan(spec, series)
	if err != nil {
		return fail(StageModel, series.SeriesInstanceUID, fmt.Errorf("model %s input spec: %w", m.Name, err))
	}
	if req.lesionMode() {
		return p.processLesions(ctx, req, lesionRun{engine: engine, manifest: m, series: series, plan: plan,
			samples: S, bank: K, threshold: thr, outputs: outputs, start: start}, fail)
	}
	plans, warnings, err := slicePlans(plan, series)
	if err != nil {
		return fail(StageModel, series.SeriesInstanceUID, fmt.Errorf("model %s: %w", m.Name, err))
	}
	loaded := time.Now()

	noise := inference.StudyNoise(series.StudyInstanceUID, req.Seed, S, K, m.LatentSize)
	outs := make([]sliceOutput, len(series.Slices))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		done     int
		wg       sync.WaitGroup
	)
	next := make(chan int)
	workers := min(engine.Sessions(), len(series.Slices))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				o, err := inferSlice(ctx, engine, plans[i], series.Slices[i].Pixels, noise, thr)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("slice %d (SOP Instance %s): %w", i+1, series.Slices[i].SOPInstanceUID, err)
						cancel()
					}
				} else {
					outs[i] = o
					done++
					if req.Progress != nil {
						req.Progress(done, len(series.Slices))
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range series.Slices {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return fail(StageInfer, series.SeriesInstanceUID, firstErr)
	}
	inferred := time.Now()

	res := &Result{
		StudyInstanceUID: series.StudyInstanceUID, SeriesInstanceUID: series.SeriesInstanceUID,
		Slices: len(series.Slices), Rows: series.Rows, Cols: series.Cols,
		Model: m.Name, ModelVersion: m.Version, Device: engine.Device(),
		Samples: S, BankSize: K, Threshold: thr, Warnings: append(series.Warnings, warnings...),
	}
	for _, o := range outs {
		res.Consensus = append(res.Consensus, o.consensus)
		res.Uncertainty = append(res.Uncertainty, o.uncert)
	}
	screening := &Finding{Label: m.Segment.Label, Screening: true}
	if req.Screening {
		// A lesion route without any prompt fell back to this mode: every segment says so.
		screening.Label = m.Segment.Label + " (whole-lung screening)"
	}
	res.Findings = []Finding{*screening}
	job := encodeJob{manifest: m, series: series, samples: S, threshold: thr, enc: req.Encoding,
		lung: series.Modality == "CT" && plan.Spec.Tiling.ROI == dicomio.ROILung}
	if res.SEGs, err = p.encodeOutputs(job, []findingMaps{screeningMaps(screening, outs)}, outputs); err != nil {
		return fail(StageEncode, series.SeriesInstanceUID, err)
	}
	end := time.Now()
	res.Timings = Timings{Load: loaded.Sub(start), Infer: inferred.Sub(loaded), Encode: end.Sub(inferred),
		Total: end.Sub(start), TilesPlanned: len(plan.Tiles) * len(series.Slices)}
	for _, sp := range plans {
		res.Timings.Tiles += len(sp.Tiles)
	}
	if p.Logger != nil {
		p.Logger.Info("series processed", "study", res.StudyInstanceUID, "series", res.SeriesInstanceUID,
			"slices", res.Slices, "model", m.Name, "device", res.Device, "segs", len(res.SEGs),
			"ms", res.Timings.Total.Milliseconds())
	}
	return res, nil
}

// slicePlans gives each slice its tile plan: the series plan, or with roi "lung" the plan
// restricted to the slice's lung (a slice without lung runs no tile). A series in which no slice
// shows lung fails, because empty segmentations would read as "no nodule" when the truth is "not a
// chest CT". A series that is not CT runs every tile, with a warning: the lung finder needs
// Hounsfield units.
func slicePlans(plan *dicomio.TilePlan, series *dicomio.Series) ([]*dicomio.TilePlan, []string, error) {
	plans := make([]*dicomio.TilePlan, len(series.Slices))
	if plan.Spec.Tiling.ROI != dicomio.ROILung || series.Modality != "CT" {
		var warnings []string
		if plan.Spec.Tiling.ROI == dicomio.ROILung {
			warnings = append(warnings, fmt.Sprintf("region of interest %q needs CT; modality %s: every tile runs", dicomio.ROILung, orUnknown(series.Modality)))
		}
		for i := range plans {
			plans[i] = plan
		}
		return plans, warnings, nil
	}
	found := false
	for i, sl := range series.Slices {
		p, err := plan.LungPlan(sl.Pixels, series.PixelSpacing)
		if err != nil {
			return nil, nil, err
		}
		plans[i] = p
		found = found || len(p.Tiles) > 0
	}
	if !found {
		return nil, nil, fmt.Errorf("region of interest %q: no slice of the series shows lung (air inside the body); is it a chest CT?", dicomio.ROILung)
	}
	return plans, nil, nil
}

// inferSlice runs the model on one slice's tiles and blends the outputs back; pixels that no tile
// covers come out as probability 0.
func inferSlice(ctx context.Context, e *inference.Engine, plan *dicomio.TilePlan, pixels []float32, noise inference.Noise, thr float64) (sliceOutput, error) {
	pixelsN := plan.Rows * plan.Cols
	S, R := noise.S, len(e.Bundle().Manifest.Raters)
	// A plan without tiles (a slice without lung) blends to zero maps.
	var sampleProbs, raterProbs []float32
	if len(plan.Tiles) > 0 {
		tiles, err := plan.ExtractTiles(pixels)
		if err != nil {
			return sliceOutput{}, err
		}
		pred, err := e.Predict(ctx, tiles, len(plan.Tiles), noise)
		if err != nil {
			return sliceOutput{}, err
		}
		sampleProbs, raterProbs = pred.SampleProbs, pred.RaterProbs
	}
	sampleMaps, err := plan.Blend(sampleProbs, S)
	if err != nil {
		return sliceOutput{}, err
	}
	raterMaps, err := plan.Blend(raterProbs, R)
	if err != nil {
		return sliceOutput{}, err
	}
	flat := make([]float32, 0, S*pixelsN)
	for _, m := range sampleMaps {
		flat = append(flat, m...)
	}
	var o sliceOutput
	o.consensus, o.uncert = inference.ConsensusAndUncertainty(flat, S, pixelsN)
	for _, m := range sampleMaps {
		o.samples = append(o.samples, inference.Threshold(m, thr))
	}
	for _, m := range raterMaps {
		o.raters = append(o.raters, inference.Threshold(m, thr))
	}
	return o, nil
}

// hostSerial is the host name, the best installation identifier a processor has by itself.
func hostSerial() string {
	h, err := os.Hostname()
	if err != nil || strings.TrimSpace(h) == "" {
		return "unnamed host"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == '\\' {
			return '_'
		}
		return r
	}, h)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// tilePlan plans the model input of a series. A MONOCHROME1 image shows low values bright, so a
// model trained on how images look needs its input inverted; CT values are Hounsfield units,
// whose meaning the photometric interpretation does not change, so CT is never inverted (an
// inverted CT would show the model air as tissue).
func tilePlan(spec dicomio.InputSpec, series *dicomio.Series) (*dicomio.TilePlan, error) {
	plan, err := dicomio.PlanTilesForSeries(spec, series)
	if err != nil {
		return nil, err
	}
	if series.Modality == "CT" {
		plan.Invert = false
	}
	return plan, nil
}
