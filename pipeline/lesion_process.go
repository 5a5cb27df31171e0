package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"dpersona/dicomio"
	"dpersona/inference"
)

// lesionRun is what Process has worked out before it branches into lesion mode.
type lesionRun struct {
	engine    *inference.Engine
	manifest  *inference.Manifest
	series    *dicomio.Series
	plan      *dicomio.TilePlan
	samples   int
	bank      int
	threshold float64
	outputs   []Output
	start     time.Time
}

func (req Request) lesionMode() bool { return len(req.Prompts) > 0 || len(req.PromptObjects) > 0 }

// PlaceLesions places the prompts of a request in a series: the lesions, and the prompts that
// gave none with their reasons. Prompts of all objects are placed together, so two objects
// marking the same lesion (an SR and a GSPS from two readers) give one lesion.
func PlaceLesions(series *dicomio.Series, objects []*dicomio.PromptObject, prompts []dicomio.Prompt) ([]dicomio.Lesion, []dicomio.PromptIssue) {
	var issues []dicomio.PromptIssue
	var all []dicomio.Prompt
	for _, obj := range objects {
		issues = append(issues, obj.Issues...)
		if obj.StudyInstanceUID != "" && obj.StudyInstanceUID != series.StudyInstanceUID {
			_, is := series.ResolvePromptObject(obj)
			issues = append(issues, is...)
			continue
		}
		all = append(all, obj.Prompts...)
	}
	all = append(all, prompts...)
	lesions, is := series.ResolvePrompts(all)
	return lesions, append(issues, is...)
}

func (p *Processor) processLesions(ctx context.Context, req Request, r lesionRun, fail func(Stage, string, error) (*Result, error)) (*Result, error) {
	series, m := r.series, r.manifest
	lesions, issues := PlaceLesions(series, req.PromptObjects, req.Prompts)
	if len(req.SkipObjects) > 0 {
		kept := lesions[:0]
		for _, l := range lesions {
			if !req.SkipObjects[l.ObjectUID] {
				kept = append(kept, l)
			}
		}
		lesions = kept
		var fresh []dicomio.PromptIssue
		for _, is := range issues {
			if !req.SkipObjects[is.ObjectUID] {
				fresh = append(fresh, is)
			}
		}
		issues = fresh
	}
	if p.Logger != nil {
		for _, is := range issues {
			p.Logger.Warn("lesion prompt not used", "study", series.StudyInstanceUID, "series", series.SeriesInstanceUID,
				"source", is.Source, "object", is.ObjectUID, "item", is.Item, "reason", is.Err)
		}
	}
	if len(lesions) == 0 {
		reasons := make([]string, len(issues))
		for i, is := range issues {
			reasons[i] = is.Error()
		}
		if len(reasons) == 0 {
			reasons = []string{"no prompt given"}
		}
		res, err := fail(StagePrompts, series.SeriesInstanceUID, fmt.Errorf("no new lesion prompt could be placed in the series: %s", strings.Join(reasons, "; ")))
		var f *Failure
		if errors.As(err, &f) {
			f.Issues = issues
		}
		return res, err
	}
	if r.plan.Spec.Tiling.Mode != "tile" {
		return fail(StageModel, series.SeriesInstanceUID, fmt.Errorf("model %s: lesion mode needs tile input (tiling.mode tile), not %q", m.Name, r.plan.Spec.Tiling.Mode))
	}
	loaded := time.Now()
	noise := inference.StudyNoise(series.StudyInstanceUID, req.Seed, r.samples, r.bank, m.LatentSize)
	findings := make([]Finding, len(lesions))
	errs := make([]error, len(lesions))
	var wg sync.WaitGroup
	for i := range lesions {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			findings[i], errs[i] = lesionFinding(ctx, r.engine, r.plan, series, lesions[i], i+1, noise, r.threshold, req.Lesion)
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(StageInfer, series.SeriesInstanceUID, err)
	}
	inferred := time.Now()

	res := &Result{
		StudyInstanceUID: series.StudyInstanceUID, SeriesInstanceUID: series.SeriesInstanceUID,
		Slices: len(series.Slices), Rows: series.Rows, Cols: series.Cols,
		Model: m.Name, ModelVersion: m.Version, Device: r.engine.Device(),
		Samples: r.samples, BankSize: r.bank, Threshold: r.threshold, Warnings: append([]string{}, series.Warnings...),
		Findings: findings, PromptIssues: issues,
	}
	for _, f := range findings {
		for _, n := range f.Notes {
			res.Warnings = append(res.Warnings, f.Label+": "+n)
		}
	}
	// The soft consensus per slice: each finding's mean inside its tiles (the largest where two
	// findings' tiles overlap), 0 elsewhere.
	res.Consensus = make([][]float32, len(series.Slices))
	for _, f := range findings {
		for _, fs := range f.Slices {
			if res.Consensus[fs.Slice] == nil {
				res.Consensus[fs.Slice] = make([]float32, series.Rows*series.Cols)
			}
			dst, t := res.Consensus[fs.Slice], fs.Region
			for y := 0; y < t.H; y++ {
				for x := 0; x < t.W; x++ {
					if v := fs.Mean[y*t.W+x]; v > dst[(t.Y+y)*series.Cols+t.X+x] {
						dst[(t.Y+y)*series.Cols+t.X+x] = v
					}
				}
			}
			res.Timings.Tiles++
		}
	}
	for i := range res.Consensus {
		if res.Consensus[i] == nil {
			res.Consensus[i] = make([]float32, series.Rows*series.Cols)
		}
	}
	maps := make([]findingMaps, len(findings))
	for i := range findings {
		maps[i] = lesionMaps(&res.Findings[i], series.Rows, series.Cols, r.threshold)
	}
	job := encodeJob{manifest: m, series: series, samples: r.samples, threshold: r.threshold, enc: req.Encoding,
		lung: series.Modality == "CT" && r.plan.Spec.Tiling.ROI == dicomio.ROILung}
	var err error
	if res.SEGs, err = p.encodeOutputs(job, maps, r.outputs); err != nil {
		return fail(StageEncode, series.SeriesInstanceUID, err)
	}
	end := time.Now()
	res.Timings.Load, res.Timings.Infer, res.Timings.Encode, res.Timings.Total = loaded.Sub(r.start), inferred.Sub(loaded), end.Sub(inferred), end.Sub(r.start)
	res.Timings.TilesPlanned = len(r.plan.Tiles) * len(series.Slices)
	if p.Logger != nil {
		p.Logger.Info("lesions processed", "study", res.StudyInstanceUID, "series", res.SeriesInstanceUID,
			"lesions", len(findings), "prompt_issues", len(issues), "tiles", res.Timings.Tiles, "model", m.Name,
			"segs", len(res.SEGs), "ms", res.Timings.Total.Milliseconds())
	}
	return res, nil
}
