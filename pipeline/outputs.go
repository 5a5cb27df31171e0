package pipeline

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"dpersona/dicomio"
	"dpersona/inference"
	"dpersona/internal/dicomstd"
)

// Output encoding: one function turns the findings of a series (the whole-series screening
// finding, or one finding per lesion) into every object a request asks for. Every object holds
// the segments or ROIs of all findings, in finding order.

// Output names one object a request can ask for.
type Output string

const (
	// OutputRaters is a BINARY SEG with one segment per rater style (stage-II head) per finding.
	OutputRaters Output = "raters"
	// OutputSamples is a BINARY SEG with one segment per plausible outline (stage-I sample).
	OutputSamples Output = "samples"
	// OutputConsensus is a BINARY SEG: the mean sample probability above the threshold.
	OutputConsensus Output = "consensus"
	// OutputBands is a BINARY SEG with one segment per probability band (mean >= 0.25, 0.5, 0.75).
	OutputBands Output = "bands"
	// OutputProbability is a FRACTIONAL SEG of the mean sample probability. Opt-in: OHIF,
	// Cornerstone and dcmjs cannot show FRACTIONAL segmentations.
	OutputProbability Output = "probability"
	// OutputRTStruct is an RT Structure Set with the rater styles and the consensus as ROIs
	// (and the samples with Encoding.RTStructSamples), for radiotherapy planning systems.
	OutputRTStruct Output = "rtstruct"
)

// OutputRejectionNote is not requested: it comes with a new version whenever
// Encoding.Predecessors names objects it replaces. It is an IHE IOCM Key Object Selection
// "Rejected for Quality Reasons" (DCM 113001) listing them, for destinations that accept it.
const OutputRejectionNote Output = "rejection-note"

// AllOutputs lists every output, in the order their series are numbered.
var AllOutputs = []Output{OutputRaters, OutputSamples, OutputConsensus, OutputBands, OutputProbability, OutputRTStruct}

// DefaultOutputs is what a whole-series request without Outputs gets: objects every viewer shows.
var DefaultOutputs = []Output{OutputRaters, OutputSamples, OutputConsensus}

// LesionDefaultOutputs is what a lesion request without Outputs gets: planning systems are among
// its first users, so the RT Structure Set comes too.
var LesionDefaultOutputs = []Output{OutputRaters, OutputSamples, OutputConsensus, OutputRTStruct}

// CheckOutputs reports the first unknown output name.
func CheckOutputs(outs []Output) error {
	for _, o := range outs {
		if outputSeriesNumber(o) == 0 {
			names := make([]string, len(AllOutputs))
			for i, a := range AllOutputs {
				names[i] = string(a)
			}
			return fmt.Errorf("unknown output %q (%s)", o, strings.Join(names, ", "))
		}
	}
	return nil
}

// outputSeriesNumber gives each output a fixed series number, so a viewer lists them in the same
// order for every study and a new version lands in the same place.
func outputSeriesNumber(o Output) int {
	for i, a := range AllOutputs {
		if a == o {
			return 9001 + i
		}
	}
	return 0
}

// DefaultBands are the probability bands of OutputBands.
var DefaultBands = []float64{0.25, 0.5, 0.75}

// Encoding tunes the objects of a request. The zero value gives the defaults.
type Encoding struct {
	// Bands are the lower bounds of OutputBands' segments (default DefaultBands), each in (0, 1).
	Bands []float64
	// CompactSamples leaves a finding's samples out of the samples SEG on slices where all of
	// them agree (there they equal the consensus); a 300-slice study's samples SEG shrinks to
	// the slices where the model is uncertain.
	CompactSamples bool
	// RTStructSamples adds the samples as ROIs to the RT Structure Set.
	RTStructSamples bool
	// RTInterpretedType is the RTROIInterpretedType of the ROIs (default GTV).
	RTInterpretedType string
	// Deflate writes every object in the Deflated Explicit VR Little Endian transfer syntax: a
	// BINARY SEG is mostly zero bits (a 300-slice whole-series samples SEG: 99.6 MB -> 0.26 MB).
	// The C-STORE exporter inflates for a peer that does not accept it.
	Deflate bool
	// Version numbers this result among those of the same (series, output, model): it is the
	// InstanceNumber of every object (default 1). The series of each output is stable per
	// (study, source series, output, model name), so a new version lands in the same series.
	Version int
	// Predecessors are the objects this version replaces, by output: an RT Structure Set names
	// its predecessor, and a rejection note (OutputRejectionNote) lists them all.
	Predecessors map[Output]Predecessor
}

// Predecessor is an object of an earlier version.
type Predecessor struct {
	SOPInstanceUID    string
	SOPClassUID       string
	SeriesInstanceUID string
}

// Check reports the first option a request cannot use.
func (e Encoding) Check() error {
	for _, b := range e.Bands {
		if !(b > 0 && b < 1) {
			return fmt.Errorf("probability band %v must be in (0, 1)", b)
		}
	}
	if e.RTInterpretedType != "" && !dicomio.ValidRTROIInterpretedType(e.RTInterpretedType) {
		return fmt.Errorf("RT ROI interpreted type %q is not a defined term (GTV, CTV, PTV, ORGAN, CONTROL, ...)", e.RTInterpretedType)
	}
	return nil
}

// findingMaps gives one finding's masks and probabilities on the series grid.
type findingMaps struct {
	Finding *Finding
	// rater, sample: binary masks (nil = empty); mean: probability (nil = 0).
	rater  func(r, slice int) []uint8
	sample func(j, slice int) []uint8
	mean   func(slice int) []float32
}

// screeningMaps wraps the whole-series outputs.
func screeningMaps(f *Finding, outs []sliceOutput) findingMaps {
	return findingMaps{Finding: f,
		rater:  func(r, i int) []uint8 { return outs[i].raters[r] },
		sample: func(j, i int) []uint8 { return outs[i].samples[j] },
		mean:   func(i int) []float32 { return outs[i].consensus },
	}
}

// lesionMaps expands a lesion's tile maps, thresholded like the whole-series masks.
func lesionMaps(f *Finding, rows, cols int, thr float64) findingMaps {
	bin := func(v []float32) []uint8 {
		if v == nil {
			return nil
		}
		return inference.Threshold(v, thr)
	}
	return findingMaps{Finding: f,
		rater: func(r, i int) []uint8 {
			return bin(f.Map(i, rows, cols, func(fs FindingSlice) []float32 { return fs.Raters[r] }))
		},
		sample: func(j, i int) []uint8 {
			return bin(f.Map(i, rows, cols, func(fs FindingSlice) []float32 { return fs.Samples[j] }))
		},
		mean: func(i int) []float32 { return f.Map(i, rows, cols, func(fs FindingSlice) []float32 { return fs.Mean }) },
	}
}

// encodeJob is everything the encoders need besides the findings.
type encodeJob struct {
	manifest  *inference.Manifest
	series    *dicomio.Series
	samples   int
	threshold float64
	lung      bool // the series is a chest CT whose lung the pipeline found
	enc       Encoding
}

// Colours. Rater styles are an ordered ramp (yellow for the smallest outline to crimson for the
// largest), samples one blue family, bands one magenta family from faint to strong, and the
// consensus a green no other segment uses.
var (
	raterRamp      = [][3]uint8{{255, 225, 40}, {255, 150, 20}, {235, 75, 25}, {180, 20, 50}}
	sampleRamp     = [][3]uint8{{150, 205, 255}, {20, 70, 200}}
	bandRamp       = [][3]uint8{{250, 175, 250}, {150, 0, 160}}
	consensusColor = [3]uint8{40, 220, 90}
)

// rampColor picks colour i of n evenly along a ramp of anchor colours.
func rampColor(ramp [][3]uint8, i, n int) [3]uint8 {
	if n <= 1 || len(ramp) == 1 {
		return ramp[0]
	}
	t := float64(i) / float64(n-1) * float64(len(ramp)-1)
	k := int(t)
	if k >= len(ramp)-1 {
		return ramp[len(ramp)-1]
	}
	f := t - float64(k)
	var c [3]uint8
	for j := range c {
		c[j] = uint8(float64(ramp[k][j])*(1-f) + float64(ramp[k+1][j])*f + 0.5)
	}
	return c
}

// layer is one segment or ROI of one finding before encoding.
type layer struct {
	finding     *findingMaps
	label       string // segment label suffix after the finding's label
	roiSuffix   string // TG-263 suffix: R1, Cons, S01
	description string
	color       [3]uint8
	masks       func(slice int) []uint8
}

// encodeOutputs builds every requested object.
func (p *Processor) encodeOutputs(job encodeJob, findings []findingMaps, outputs []Output) ([]SEG, error) {
	var out []SEG
	for _, o := range outputs {
		var obj SEG
		var err error
		if o == OutputRTStruct {
			obj, err = p.encodeRTStruct(job, findings)
		} else {
			obj, err = p.encodeSEG(job, findings, o)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o, err)
		}
		out = append(out, obj)
	}
	if len(job.enc.Predecessors) > 0 {
		note, err := p.encodeRejectionNote(job)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", OutputRejectionNote, err)
		}
		out = append(out, note)
	}
	if job.enc.Deflate {
		for i := range out {
			d, err := dicomstd.DeflateFile(out[i].Data)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", out[i].Output, err)
			}
			out[i].Data = d
		}
	}
	return out, nil
}

// encodeRejectionNote lists every predecessor in an IOCM rejection note, in output order.
func (p *Processor) encodeRejectionNote(job encodeJob) (SEG, error) {
	m, series := job.manifest, job.series
	var refs []dicomio.KOSReference
	for _, o := range append(append([]Output(nil), AllOutputs...), OutputRejectionNote) {
		if pr, ok := job.enc.Predecessors[o]; ok {
			refs = append(refs, dicomio.KOSReference{SeriesInstanceUID: pr.SeriesInstanceUID, SOPClassUID: pr.SOPClassUID, SOPInstanceUID: pr.SOPInstanceUID})
		}
	}
	version := max(job.enc.Version, 1)
	data, info, err := dicomio.EncodeKOS(series, dicomio.KOSDescription{
		Title:       dicomio.RejectedForQualityReasons,
		Description: fmt.Sprintf("Replaced by version %d of the AI results of %s; the listed objects are out of date.", version, modelWords(m)),
		References:  refs, SeriesNumber: 9099, InstanceNumber: version,
		SeriesInstanceUID: StableSeriesUID(series.StudyInstanceUID, series.SeriesInstanceUID, OutputRejectionNote, m.Name),
		SeriesDescription: seriesDescription(m, "results replaced"),
		Equipment:         p.equipment(),
	})
	if err != nil {
		return SEG{}, err
	}
	return SEG{Output: OutputRejectionNote, Data: data, SOPInstanceUID: info.SOPInstanceUID, SOPClassUID: dicomio.KeyObjectSelectionDocumentStorage,
		SeriesInstanceUID: info.SeriesInstanceUID, Segments: info.References}, nil
}

func (p *Processor) equipment() dicomio.Equipment {
	return dicomio.Equipment{Manufacturer: dicomio.Manufacturer, ManufacturerModelName: "dpersona gateway",
		DeviceSerialNumber: truncate(p.DeviceSerialNumber, 64), SoftwareVersions: truncate(p.SoftwareVersion, 64)}
}

// StableSeriesUID is the Series Instance UID of an output: the same for every version of the
// results of one source series with one model (by name, so a new model version supersedes).
func StableSeriesUID(studyUID, sourceSeriesUID string, o Output, model string) string {
	return dicomstd.NameUID("dpersona-output-series/v1", studyUID, sourceSeriesUID, string(o), model)
}

// modelWords is the model's full name and version, e.g. "dpersona-lidc-lite 2026.11.28-2".
func modelWords(m *inference.Manifest) string { return m.Name + " " + m.Version }

// fitLO returns the first wording that fits an LO value (64 characters): a description is
// never cut in the middle of the model version.
func fitLO(wordings ...string) string {
	for _, w := range wordings {
		if utf8.RuneCountInString(w) <= 64 {
			return w
		}
	}
	return truncate(wordings[len(wordings)-1], 64)
}

// byModel says what an object holds and which model made it in at most 64 characters, keeping
// the model version whole: "expert styles by dpersona-lidc-lite 2026.11.28-2", else the model
// and version alone, else what and the version, else the version.
func byModel(what string, m *inference.Manifest) string {
	return fitLO(what+" by "+modelWords(m), modelWords(m), what+", model version "+m.Version, "model version "+m.Version)
}

// seriesDescription marks the series as AI output in the first words a PACS list shows.
func seriesDescription(m *inference.Manifest, what string) string {
	return fitLO("AI "+m.Algorithm.Name+" "+what, "AI "+what)
}

// layers lists the segments of one output for every finding.
func (job encodeJob) layers(findings []findingMaps, o Output, withSamples bool) []layer {
	m := job.manifest
	R := len(m.Raters)
	what := strings.ToLower(m.Segment.Label)
	var out []layer
	for fi := range findings {
		f := &findings[fi]
		if o == OutputRaters || o == OutputRTStruct {
			for r, rater := range m.Raters {
				name := rater.DisplayName
				if name == "" {
					name = fmt.Sprintf("Rater %d", r+1)
				}
				r := r
				out = append(out, layer{finding: f, label: name, roiSuffix: fmt.Sprintf("R%d", r+1),
					description: fmt.Sprintf("How expert %s would outline the %s: one of %d learned expert styles, ordered from the smallest to the largest outline", name, what, R),
					color:       rampColor(raterRamp, r, R),
					masks:       func(i int) []uint8 { return f.rater(r, i) }})
			}
		}
		if o == OutputConsensus || o == OutputRTStruct {
			thr := job.threshold
			out = append(out, layer{finding: f, label: "consensus", roiSuffix: "Cons",
				description: fmt.Sprintf("Consensus: pixels whose probability, averaged over %d plausible outlines, is above %g", job.samples, thr),
				color:       consensusColor,
				masks: func(i int) []uint8 {
					if v := f.mean(i); v != nil {
						return inference.Threshold(v, thr)
					}
					return nil
				}})
		}
		if o == OutputSamples || o == OutputRTStruct && withSamples {
			S := job.samples
			var agree []bool
			if o == OutputSamples && job.enc.CompactSamples {
				agree = samplesAgree(f, S, len(job.series.Slices), job.series.Rows*job.series.Cols)
			}
			for j := 0; j < S; j++ {
				j := j
				masks := func(i int) []uint8 { return f.sample(j, i) }
				if o == OutputSamples && job.enc.CompactSamples {
					masks = func(i int) []uint8 {
						if agree[i] {
							return nil
						}
						return f.sample(j, i)
					}
				}
				out = append(out, layer{finding: f, label: fmt.Sprintf("plausible outline %d", j+1), roiSuffix: fmt.Sprintf("S%02d", j+1),
					description: fmt.Sprintf("One of %d plausible outlines of the %s; together they show how much experts may disagree", S, what),
					color:       rampColor(sampleRamp, j, S),
					masks:       masks})
			}
		}
		if o == OutputBands {
			bands := job.enc.Bands
			if len(bands) == 0 {
				bands = DefaultBands
			}
			for b, lo := range bands {
				lo := lo
				out = append(out, layer{finding: f, label: fmt.Sprintf("probability %g%% or more", lo*100),
					description: fmt.Sprintf("Pixels whose probability, averaged over %d plausible outlines, is at least %g", job.samples, lo),
					color:       rampColor(bandRamp, b, len(bands)),
					masks: func(i int) []uint8 {
						v := f.mean(i)
						if v == nil {
							return nil
						}
						m := make([]uint8, len(v))
						for k, p := range v {
							if float64(p) >= lo {
								m[k] = 1
							}
						}
						return m
					}})
			}
		}
	}
	return out
}

// samplesAgree reports, per slice, whether all samples of a finding are the same there.
func samplesAgree(f *findingMaps, S, slices, pixels int) []bool {
	at := func(m []uint8, k int) bool { return m != nil && m[k] != 0 }
	out := make([]bool, slices)
	for i := range out {
		out[i] = true
		first := f.sample(0, i)
	samples:
		for j := 1; j < S; j++ {
			m := f.sample(j, i)
			for k := 0; k < pixels; k++ {
				if at(m, k) != at(first, k) {
					out[i] = false
					break samples
				}
			}
		}
	}
	return out
}

func (job encodeJob) algorithm(f *Finding) dicomio.Algorithm {
	m := job.manifest
	family, ok := dicomio.AlgorithmFamily(m.Algorithm.Family)
	if !ok {
		family = dicomio.AlgorithmFamilyAI
	}
	alg := dicomio.Algorithm{Type: dicomio.SemiAutomatic, Name: m.Algorithm.Name, Version: m.Algorithm.Version, Family: family}
	if f.Screening {
		alg.Type = dicomio.Automatic // nobody pointed at a lesion
	}
	return alg
}

func (p *Processor) encodeSEG(job encodeJob, findings []findingMaps, o Output) (SEG, error) {
	m, series := job.manifest, job.series
	n := len(series.Slices)
	layers := job.layers(findings, o, false)
	if err := job.enc.Check(); err != nil {
		return SEG{}, err
	}
	var what, content string
	desc := dicomio.SEGDescription{Type: dicomio.Binary, SeriesNumber: outputSeriesNumber(o), InstanceNumber: max(job.enc.Version, 1),
		SeriesInstanceUID: StableSeriesUID(series.StudyInstanceUID, series.SeriesInstanceUID, o, m.Name),
		Equipment:         p.equipment()}
	switch o {
	case OutputRaters:
		what, desc.ContentLabel, content = "rater styles", "RATERS", "expert styles"
	case OutputSamples:
		what, desc.ContentLabel, content = "plausible outlines", "SAMPLES", fmt.Sprintf("%d plausible outlines", job.samples)
		if job.enc.CompactSamples {
			what, content = "plausible outlines where uncertain", fmt.Sprintf("%d outlines, where they differ", job.samples)
		}
	case OutputConsensus:
		what, desc.ContentLabel, content = "consensus", "CONSENSUS", fmt.Sprintf("consensus p>%g", job.threshold)
	case OutputBands:
		what, desc.ContentLabel, content = "probability bands", "BANDS", "probability bands"
	case OutputProbability:
		what, desc.ContentLabel, content = "probability", "PROBABILITY", "probability"
		desc.Type, desc.MaxFractionalValue = dicomio.Fractional, 255
	}
	desc.SeriesDescription = seriesDescription(m, m.Segment.Label+" "+what)
	desc.ContentDescription = byModel(content, m)
	var masks [][][]uint8
	for _, l := range layers {
		f := l.finding.Finding
		color := l.color
		sd := dicomio.SegmentDescription{
			Label: fitLO(f.Label+" - "+l.label, l.label), Description: l.description,
			Category: dicomio.Code(m.Segment.Category), Type: dicomio.Code(m.Segment.Type),
			Algorithm: job.algorithm(f), TrackingID: f.TrackingID, TrackingUID: f.TrackingUID,
			DisplayColor: &color,
		}
		if job.lung {
			sd.AnatomicRegion = &dicomio.Lung
		}
		desc.Segments = append(desc.Segments, sd)
		ms := make([][]uint8, n)
		for i := range ms {
			ms[i] = l.masks(i)
		}
		masks = append(masks, ms)
	}
	if o == OutputProbability {
		masks = nil
		for _, f := range findings {
			ms := make([][]uint8, n)
			for i := range ms {
				if v := f.mean(i); v != nil {
					ms[i] = dicomio.QuantizeFraction(v, 255)
				}
			}
			masks = append(masks, ms)
			color := consensusColor
			fd := f.Finding
			sd := dicomio.SegmentDescription{
				Label: fitLO(fd.Label+" - probability", "probability"),
				Description: fmt.Sprintf("Probability that a pixel belongs to the %s: the average over %d plausible outlines",
					strings.ToLower(m.Segment.Label), job.samples),
				Category: dicomio.Code(m.Segment.Category), Type: dicomio.Code(m.Segment.Type),
				Algorithm: job.algorithm(fd), TrackingID: fd.TrackingID, TrackingUID: fd.TrackingUID, DisplayColor: &color,
			}
			if job.lung {
				sd.AnatomicRegion = &dicomio.Lung
			}
			desc.Segments = append(desc.Segments, sd)
		}
	}
	data, info, err := dicomio.EncodeSEG(series, desc, masks)
	if err != nil {
		return SEG{}, err
	}
	return SEG{Output: o, Data: data, SOPInstanceUID: info.SOPInstanceUID, SOPClassUID: dicomio.SegmentationStorage,
		SeriesInstanceUID: info.SeriesInstanceUID, Segments: len(desc.Segments), Frames: info.Frames}, nil
}

func (p *Processor) encodeRTStruct(job encodeJob, findings []findingMaps) (SEG, error) {
	m, series := job.manifest, job.series
	n := len(series.Slices)
	interpreted := job.enc.RTInterpretedType
	if interpreted == "" {
		interpreted = "GTV"
	}
	desc := dicomio.RTStructDescription{
		StructureSetLabel: "DPERSONA", StructureSetName: byModel(m.Segment.Label+" outlines", m),
		SeriesNumber: outputSeriesNumber(OutputRTStruct), InstanceNumber: max(job.enc.Version, 1),
		SeriesInstanceUID: StableSeriesUID(series.StudyInstanceUID, series.SeriesInstanceUID, OutputRTStruct, m.Name),
		SeriesDescription: seriesDescription(m, m.Segment.Label+" contours"),
		Equipment:         p.equipment(),
		Predecessor:       job.enc.Predecessors[OutputRTStruct].SOPInstanceUID,
	}
	var masks [][][]uint8
	prefix := map[*findingMaps]string{}
	for fi := range findings {
		prefix[&findings[fi]] = "GTVp"
		if len(findings) > 1 {
			prefix[&findings[fi]] = fmt.Sprintf("GTVp%d", fi+1)
		}
	}
	for _, l := range job.layers(findings, OutputRTStruct, job.enc.RTStructSamples) {
		f := l.finding.Finding
		about := f.Label
		if f.TrackingID != "" {
			about += " (tracking ID " + f.TrackingID + ")"
		}
		desc.ROIs = append(desc.ROIs, dicomio.ROIDescription{
			Name: prefix[l.finding] + "_" + l.roiSuffix, Description: about + ": " + l.description,
			InterpretedType: interpreted, Algorithm: job.algorithm(f), Color: l.color,
		})
		ms := make([][]uint8, n)
		for i := range ms {
			ms[i] = l.masks(i)
		}
		masks = append(masks, ms)
	}
	data, info, err := dicomio.EncodeRTStruct(series, desc, masks)
	if err != nil {
		return SEG{}, err
	}
	return SEG{Output: OutputRTStruct, Data: data, SOPInstanceUID: info.SOPInstanceUID, SOPClassUID: dicomio.RTStructureSetStorage,
		SeriesInstanceUID: info.SeriesInstanceUID, Segments: len(desc.ROIs), Frames: info.Contours}, nil
}
