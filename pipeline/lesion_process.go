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
		return fail(StagePrompts, series.SeriesInstanceUID, fmt.Errorf("no lesion prompt could be placed in the series: %s", strings.Join(reasons, "; ")))
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
	for i, o := range r.outputs {
		desc, masks := p.describeFindings(m, o, series, findings, r.samples, r.threshold, i)
		data, info, err := dicomio.EncodeSEG(series, desc, masks)
		if err != nil {
			return fail(StageEncode, series.SeriesInstanceUID, fmt.Errorf("%s SEG: %w", o, err))
		}
		res.SEGs = append(res.SEGs, SEG{Output: o, Data: data, SOPInstanceUID: info.SOPInstanceUID,
			SeriesInstanceUID: info.SeriesInstanceUID, Segments: len(desc.Segments), Frames: info.Frames})
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

// describeFindings builds one SEG's description and masks [segment][slice] holding the segments
// of every finding: per finding one segment per rater head (raters), per sample (samples) or the
// consensus probability (probability). Every segment of a lesion carries its tracking
// identifiers, so a viewer links it to the measurement; lesion segments are SEMIAUTOMATIC (a
// person chose the lesion).
func (p *Processor) describeFindings(m *inference.Manifest, o Output, series *dicomio.Series, findings []Finding, samples int, thr float64, index int) (dicomio.SEGDescription, [][][]uint8) {
	family, ok := dicomio.AlgorithmFamily(m.Algorithm.Family)
	if !ok {
		family = dicomio.AlgorithmFamilyAI
	}
	desc := dicomio.SEGDescription{Type: dicomio.Binary, SeriesNumber: 9000 + index,
		Equipment: dicomio.Equipment{Manufacturer: "dpersona", ManufacturerModelName: "dpersona",
			DeviceSerialNumber: truncate(p.DeviceSerialNumber, 64), SoftwareVersions: truncate(p.SoftwareVersion, 64)}}
	n := len(series.Slices)
	var masks [][][]uint8
	add := func(f Finding, label, description string, which func(FindingSlice) []float32, encode func([]float32) []uint8) {
		alg := dicomio.Algorithm{Type: dicomio.SemiAutomatic, Name: m.Algorithm.Name, Version: m.Algorithm.Version, Family: family}
		if f.Screening {
			alg.Type = dicomio.Automatic
		}
		desc.Segments = append(desc.Segments, dicomio.SegmentDescription{
			Label: truncate(label, 64), Description: description,
			Category: dicomio.Code(m.Segment.Category), Type: dicomio.Code(m.Segment.Type),
			Algorithm: alg, TrackingID: f.TrackingID, TrackingUID: f.TrackingUID,
		})
		ms := make([][]uint8, n)
		for _, fs := range f.Slices {
			ms[fs.Slice] = encode(f.Map(fs.Slice, series.Rows, series.Cols, which))
		}
		masks = append(masks, ms)
	}
	binary := func(v []float32) []uint8 { return inference.Threshold(v, thr) }
	what := fmt.Sprintf("%d lesion(s) marked in the study", len(findings))
	switch o {
	case OutputRaters:
		desc.SeriesDescription = truncate(m.Algorithm.Name+" raters (lesions)", 64)
		desc.ContentLabel = "RATERS"
		desc.ContentDescription = truncate(fmt.Sprintf("%s: one segment per rater head for %s", m.Segment.Label, what), 64)
		for _, f := range findings {
			for r, rater := range m.Raters {
				name := rater.DisplayName
				if name == "" {
					name = rater.Name
				}
				r := r
				add(f, f.Label+" - "+name, "personalised prediction of "+rater.Name+" for the marked lesion",
					func(fs FindingSlice) []float32 { return fs.Raters[r] }, binary)
			}
		}
	case OutputSamples:
		desc.SeriesDescription = truncate(m.Algorithm.Name+" samples (lesions)", 64)
		desc.ContentLabel = "SAMPLES"
		desc.ContentDescription = truncate(fmt.Sprintf("%s: %d diversified samples for %s", m.Segment.Label, samples, what), 64)
		for _, f := range findings {
			for j := 0; j < samples; j++ {
				j := j
				add(f, fmt.Sprintf("%s - sample %d", f.Label, j+1), "diversified stage-I sample for the marked lesion",
					func(fs FindingSlice) []float32 { return fs.Samples[j] }, binary)
			}
		}
	case OutputProbability:
		desc.Type = dicomio.Fractional
		desc.MaxFractionalValue = 255
		desc.SeriesDescription = truncate(m.Algorithm.Name+" consensus probability (lesions)", 64)
		desc.ContentLabel = "CONSENSUS"
		desc.ContentDescription = truncate(fmt.Sprintf("%s: mean of %d sample probabilities, %s", m.Segment.Label, samples, what), 64)
		for _, f := range findings {
			add(f, f.Label+" - consensus probability", "soft consensus of the marked lesion: mean of the stage-I sample probabilities",
				func(fs FindingSlice) []float32 { return fs.Mean }, func(v []float32) []uint8 { return dicomio.QuantizeFraction(v, 255) })
		}
	}
	return desc, masks
}
