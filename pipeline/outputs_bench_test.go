package pipeline

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"dpersona/dicomio"
	"dpersona/inference"
	"dpersona/internal/dicomstd"
	"dpersona/internal/testutil"
)

// series300 is a 300-slice 512x512 CT: the LIDC fixture's first slice geometry repeated at
// 1.25 mm with new SOP Instance UIDs (only the geometry and identifiers matter to the encoders).
func series300(tb testing.TB) *dicomio.Series {
	files := seriesFiles(tb, testutil.Testdata("dicom", "lidc-ct-0004"))
	s, err := dicomio.LoadSeries(files)
	if err != nil {
		tb.Fatal(err)
	}
	out := *s
	out.Slices = make([]dicomio.Slice, 300)
	for i := range out.Slices {
		sl := s.Slices[0]
		sl.SOPInstanceUID = dicomstd.NewUID()
		sl.Position[2] = s.Slices[0].Position[2] + 1.25*float64(i)
		sl.Pixels = nil
		out.Slices[i] = sl
	}
	return &out
}

func defaultManifest(tb testing.TB) *inference.Manifest {
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "models", "default", "manifest.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var m inference.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	return &m
}

// syntheticFinding is a 15 mm nodule over 11 slices (rater styles from small to large, samples
// that differ at the rim and agree on the two end slices on each side), and for screening
// also one false-positive blob per slice and per head or sample elsewhere in the lung (the
// whole-series model marks some pixels on every slice).
func syntheticFinding(s *dicomio.Series, S, R int, screening bool) findingMaps {
	rows, cols := s.Rows, s.Cols
	disc := func(m []uint8, cy, cx, r float64) {
		for y := int(cy - r - 1); y <= int(cy+r+1); y++ {
			for x := int(cx - r - 1); x <= int(cx+r+1); x++ {
				if y >= 0 && y < rows && x >= 0 && x < cols && (float64(y)-cy)*(float64(y)-cy)+(float64(x)-cx)*(float64(x)-cx) <= r*r {
					m[y*cols+x] = 1
				}
			}
		}
	}
	centre := len(s.Slices) / 2
	radius := func(i int, scale float64) float64 {
		d := float64(i - centre)
		if math.Abs(d) > 5 {
			return 0
		}
		return 10.7 * scale * math.Sqrt(1-d*d/36)
	}
	mask := func(i, k int, scale float64) []uint8 {
		var m []uint8
		if r := radius(i, scale); r > 0 {
			m = make([]uint8, rows*cols)
			disc(m, 300, 330, r)
		}
		if screening {
			if m == nil {
				m = make([]uint8, rows*cols)
			}
			rng := rand.New(rand.NewSource(int64(i*100 + k)))
			disc(m, 150+200*rng.Float64(), 100+300*rng.Float64(), 5)
		}
		return m
	}
	sampleScale := func(i, j int) float64 {
		if d := i - centre; d <= -4 || d >= 4 {
			return 1 // the samples agree at the ends of the nodule
		}
		return 0.85 + 0.3*float64(j)/float64(S-1)
	}
	f := &Finding{Label: "Nodule", Screening: screening}
	if !screening {
		f.Label, f.TrackingID, f.TrackingUID = "Nodule 1", "Nodule 1", dicomstd.NewUID()
	}
	return findingMaps{Finding: f,
		rater:  func(r, i int) []uint8 { return mask(i, 1000+r, 0.8+0.4*float64(r)/float64(R-1)) },
		sample: func(j, i int) []uint8 { return mask(i, j, sampleScale(i, j)) },
		mean: func(i int) []float32 {
			var mean []float32
			for j := 0; j < S; j++ {
				m := mask(i, j, sampleScale(i, j))
				if m == nil {
					continue
				}
				if mean == nil {
					mean = make([]float32, rows*cols)
				}
				for k, v := range m {
					mean[k] += float32(v) / float32(S)
				}
			}
			return mean
		},
	}
}

// BenchmarkOutputSizes300Slices measures the object of every output mode for a 300-slice
// 512x512 CT: a lesion (one nodule over 11 slices) and the whole-series screening mode (the nodule
// plus false-positive pixels on every slice). MB is the Part-10 size; deflateMB what the Deflated
// Explicit VR Little Endian transfer syntax would make of it (flate level 6), for comparison.
// Run: go test ./pipeline -run '^$' -bench OutputSizes -benchtime 1x
func BenchmarkOutputSizes300Slices(b *testing.B) {
	s := series300(b)
	m := defaultManifest(b)
	S, R := m.Defaults.Samples, len(m.Raters)
	p := &Processor{SoftwareVersion: "bench", DeviceSerialNumber: "bench"}
	modes := []struct {
		name string
		out  Output
		enc  Encoding
	}{
		{"raters", OutputRaters, Encoding{}},
		{"samples", OutputSamples, Encoding{}},
		{"samples-compact", OutputSamples, Encoding{CompactSamples: true}},
		{"consensus", OutputConsensus, Encoding{}},
		{"bands", OutputBands, Encoding{}},
		{"probability", OutputProbability, Encoding{}},
		{"rtstruct", OutputRTStruct, Encoding{}},
		{"rtstruct+samples", OutputRTStruct, Encoding{RTStructSamples: true}},
	}
	for _, scenario := range []string{"lesion", "screening"} {
		f := syntheticFinding(s, S, R, scenario == "screening")
		job := encodeJob{manifest: m, series: s, samples: S, threshold: m.Defaults.Threshold, lung: true}
		for _, mode := range modes {
			b.Run(scenario+"/"+mode.name, func(b *testing.B) {
				job := job
				job.enc = mode.enc
				var obj SEG
				for i := 0; i < b.N; i++ {
					objs, err := p.encodeOutputs(job, []findingMaps{f}, []Output{mode.out})
					if err != nil {
						b.Fatal(err)
					}
					obj = objs[0]
				}
				var z bytes.Buffer
				w, _ := flate.NewWriter(&z, 6)
				w.Write(obj.Data)
				w.Close()
				b.ReportMetric(float64(len(obj.Data))/1e6, "MB")
				b.ReportMetric(float64(z.Len())/1e6, "deflateMB")
				b.ReportMetric(float64(obj.Frames), "frames")
				b.Logf("%s %s: %d bytes, %d segments, %d frames/contours", scenario, mode.name, len(obj.Data), obj.Segments, obj.Frames)
			})
		}
	}
}

// nodulePatch is the encoding set-up the output tests share: the 21 slices of series300 around
// its synthetic nodule and a margin, the default manifest, a finding with `samples` synthetic
// samples, a processor with test identities and a job at threshold 0.5.
func nodulePatch(tb testing.TB, samples int) (*Processor, encodeJob, findingMaps) {
	s := series300(tb)
	s.Slices = s.Slices[140:161]
	m := defaultManifest(tb)
	f := syntheticFinding(s, samples, len(m.Raters), false)
	p := &Processor{SoftwareVersion: "test", DeviceSerialNumber: "test"}
	return p, encodeJob{manifest: m, series: s, samples: samples, threshold: 0.5}, f
}

// TestCompactSamplesLeaveOutOnlyAgreeingSlices: the compact samples SEG drops exactly the slices
// where every sample is the same, and keeps every slice where they differ.
func TestCompactSamplesLeaveOutOnlyAgreeingSlices(t *testing.T) {
	const S = 4
	p, job, f := nodulePatch(t, S)
	s := job.series
	full, err := p.encodeOutputs(job, []findingMaps{f}, []Output{OutputSamples})
	if err != nil {
		t.Fatal(err)
	}
	job.enc.CompactSamples = true
	compact, err := p.encodeOutputs(job, []findingMaps{f}, []Output{OutputSamples})
	if err != nil {
		t.Fatal(err)
	}
	agree := samplesAgree(&f, S, len(s.Slices), s.Rows*s.Cols)
	wantDropped := 0
	for i, a := range agree {
		if a && f.sample(0, i) != nil {
			wantDropped += S
		}
	}
	if wantDropped == 0 || compact[0].Frames != full[0].Frames-wantDropped {
		t.Fatalf("compact SEG has %d frames, full %d, want %d dropped", compact[0].Frames, full[0].Frames, wantDropped)
	}
	if len(compact[0].Data) >= len(full[0].Data) {
		t.Fatalf("compact SEG %d bytes, full %d", len(compact[0].Data), len(full[0].Data))
	}
}
