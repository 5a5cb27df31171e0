package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/dicomio"
	"dpersona/inference"
	"dpersona/internal/testutil"
)

func defaultEngine(t testing.TB) *inference.Engine {
	t.Helper()
	return bundleEngine(t, "models", "default")
}

func promptObject(t testing.TB, name string) *dicomio.PromptObject {
	t.Helper()
	obj, err := dicomio.ReadPrompts(testutil.Testdata("dicom", "prompts", name))
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// Lesion mode with the small test model: every output holds one segment per lesion and style,
// each carrying the prompt's tracking identifiers; nothing is written outside the followed
// tiles; bad prompts come back as issues while the good ones are processed; the objects pass
// dciodvfy and read back.
func TestProcessLesions(t *testing.T) {
	e := tinyEngine(t)
	files := seriesFiles(t, testutil.Testdata("dicom", "lidc-ct-0005"))
	p := New(e)
	sr := promptObject(t, "lidc-ct-0005-length-sr.dcm")
	gsps := promptObject(t, "lidc-ct-0005-pydicom-gsps.dcm") // same nodule (merged), one on slice 6, two bad
	res, err := p.Process(context.Background(), Request{SeriesFiles: files, Seed: 1, PromptObjects: []*dicomio.PromptObject{sr, gsps},
		Lesion: LesionOptions{MaxExtentMM: 5}})
	if err != nil {
		t.Fatal(err)
	}
	m := e.Bundle().Manifest
	if len(res.Findings) != 2 {
		t.Fatalf("%d findings, want 2 (the SR nodule, the GSPS DISPLAY-unit nodule): %+v", len(res.Findings), res.PromptIssues)
	}
	f0 := res.Findings[0]
	if f0.TrackingID != "Nodule 1" || f0.TrackingUID != sr.Prompts[0].TrackingUID || f0.Label != "Nodule 1" {
		t.Errorf("finding 0 identity %q %q %q", f0.TrackingID, f0.TrackingUID, f0.Label)
	}
	f1 := res.Findings[1]
	if f1.TrackingUID == "" || !strings.HasPrefix(f1.TrackingUID, "2.25.") || f1.TrackingUID == f0.TrackingUID {
		t.Errorf("finding 1 (GSPS) tracking UID %q", f1.TrackingUID)
	}
	// 3 GSPS objects merged into the SR nodule, one outside the image, one on an image not in the study.
	kinds := map[error]int{}
	for _, is := range res.PromptIssues {
		for _, k := range []error{dicomio.ErrPromptOverlap, dicomio.ErrPromptOutside, dicomio.ErrPromptReference} {
			if errors.Is(is.Err, k) {
				kinds[k]++
			}
		}
	}
	if kinds[dicomio.ErrPromptOverlap] != 4 || kinds[dicomio.ErrPromptOutside] != 1 || kinds[dicomio.ErrPromptReference] != 1 {
		t.Errorf("issues %v", res.PromptIssues)
	}
	// The follow is bounded: 5 mm at 2.5 mm spacing is at most 2 slices each way.
	for _, f := range res.Findings {
		if len(f.Slices) == 0 || len(f.Slices) > 5 {
			t.Errorf("%s: %d slices", f.Label, len(f.Slices))
		}
		for _, fs := range f.Slices {
			if d := fs.Slice - f.Lesion.Slice; d < -2 || d > 2 {
				t.Errorf("%s followed to slice %d from %d", f.Label, fs.Slice, f.Lesion.Slice)
			}
			if fs.Region.H != 128 || fs.Region.W != 128 || len(fs.Raters) != len(m.Raters) || len(fs.Samples) != res.Samples {
				t.Errorf("%s slice %d: region %+v, %d raters %d samples", f.Label, fs.Slice, fs.Region, len(fs.Raters), len(fs.Samples))
			}
		}
	}
	src, err := dicomio.LoadSeries(files)
	if err != nil {
		t.Fatal(err)
	}
	dciodvfy := testutil.RequireTool(t, "dciodvfy")
	for _, seg := range res.SEGs {
		path := writeSEG(t, seg)
		// dciodvfy exits non-zero on warnings too; its "Error" lines are what must not appear.
		out, _ := exec.Command(dciodvfy, path).CombinedOutput()
		if !strings.Contains(string(out), "Segmentation") && !strings.Contains(string(out), "RTStructureSet") {
			t.Errorf("%s: dciodvfy did not recognise the object:\n%s", seg.Output, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "Error") {
				t.Errorf("%s: dciodvfy: %s", seg.Output, line)
			}
		}
		if seg.Output == OutputRTStruct {
			// Both lesions' rater styles and consensus as ROIs (rtstruct_test.go checks the contours).
			if seg.SOPClassUID != dicomio.RTStructureSetStorage || seg.Segments != 2*(len(m.Raters)+1) {
				t.Errorf("rtstruct: class %s with %d ROIs, want %d", seg.SOPClassUID, seg.Segments, 2*(len(m.Raters)+1))
			}
			continue
		}
		back, err := dicomio.ReadSEG(path)
		if err != nil {
			t.Fatalf("%s: %v", seg.Output, err)
		}
		per := map[Output]int{OutputRaters: len(m.Raters), OutputSamples: res.Samples, OutputConsensus: 1, OutputProbability: 1}[seg.Output]
		if len(back.Segments) != 2*per {
			t.Fatalf("%s: %d segments, want %d", seg.Output, len(back.Segments), 2*per)
		}
		for i, sg := range back.Segments {
			f := res.Findings[i/per]
			if sg.TrackingUID != f.TrackingUID || !strings.HasPrefix(sg.Label, f.Label+" - ") {
				t.Errorf("%s segment %d: label %q tracking %q, want %s* / %s", seg.Output, i+1, sg.Label, sg.TrackingUID, f.Label, f.TrackingUID)
			}
		}
		masks, err := back.MasksFor(src)
		if err != nil {
			t.Fatal(err)
		}
		// Nothing outside the followed tiles.
		for i, segMasks := range masks {
			f := res.Findings[i/per]
			for slice, mk := range segMasks {
				for px, v := range mk {
					if v != 0 && !insideFinding(f, slice, px/src.Cols, px%src.Cols) {
						t.Fatalf("%s segment %d: pixel (%d, %d) of slice %d is set outside the finding's tiles", seg.Output, i+1, px/src.Cols, px%src.Cols, slice)
					}
				}
			}
		}
	}
}

func insideFinding(f Finding, slice, row, col int) bool {
	for _, fs := range f.Slices {
		r := fs.Region
		if fs.Slice == slice && row >= r.Y && row < r.Y+r.H && col >= r.X && col < r.X+r.W {
			return true
		}
	}
	return false
}

// Only bad prompts: the series fails at the prompts stage with every reason, never an empty result.
func TestProcessLesionsWithoutUsablePrompt(t *testing.T) {
	e := tinyEngine(t)
	files := seriesFiles(t, testutil.Testdata("dicom", "lidc-ct-0004"))
	_, err := New(e).Process(context.Background(), Request{SeriesFiles: files, PromptObjects: []*dicomio.PromptObject{promptObject(t, "lidc-ct-0005-length-sr.dcm")},
		Prompts: []dicomio.Prompt{dicomio.PixelPrompt("1.2.3", 0, 10, 10)}})
	var f *Failure
	if !errors.As(err, &f) || f.Stage != StagePrompts || !strings.Contains(err.Error(), "another study") || !strings.Contains(err.Error(), "1.2.3 is not in series") {
		t.Fatalf("err = %v, want a prompts-stage failure naming both reasons", err)
	}
}

// readerMasks loads the LIDC readers' outlines of a fixture: [slice][reader] Rows*Cols, in the
// series' slice order.
func readerMasks(t testing.TB, dir string, s *dicomio.Series) [][][]uint8 {
	t.Helper()
	arrs, err := inference.ReadNPZ(filepath.Join(dir, "reader_masks.npz"))
	if err != nil {
		t.Fatal(err)
	}
	out := make([][][]uint8, len(s.Slices))
	for i, sl := range s.Slices {
		a := arrs[sl.SOPInstanceUID]
		if a == nil {
			continue
		}
		n := s.Rows * s.Cols
		for r := 0; r < a.Shape[0]; r++ {
			m := make([]uint8, n)
			for k := 0; k < n; k++ {
				if a.Uint8 != nil {
					m[k] = a.Uint8[r*n+k]
				} else if a.Data[r*n+k] != 0 {
					m[k] = 1
				}
			}
			out[i] = append(out[i], m)
		}
	}
	return out
}

// quality compares predicted rater-head masks [head][slice] with the readers' outlines of the
// prompted nodule (reader pixels within radius px of the prompt, so other nodules in the series
// do not count as truth): mean over heads of the best Dice against any reader (over the whole
// volume), and false-positive pixels (set, but outside every reader's outline of any nodule)
// per slice per head.
func quality(heads [][][]uint8, readers [][][]uint8, promptRow, promptCol, radius, cols int) (bestDice, fpPerSlice float64) {
	nReaders := 0
	for _, rs := range readers {
		nReaders = max(nReaders, len(rs))
	}
	var sumBest, fp float64
	slices := len(readers)
	for _, h := range heads {
		best := 0.0
		for r := 0; r < nReaders; r++ {
			var inter, a, b float64
			for s := range readers {
				for px := range h[s] {
					hv := h[s] != nil && h[s][px] != 0
					y, x := px/cols, px%cols
					rv := readers[s] != nil && readers[s][r][px] != 0 && math.Hypot(float64(y-promptRow), float64(x-promptCol)) <= float64(radius)
					if hv {
						a++
					}
					if rv {
						b++
					}
					if hv && rv {
						inter++
					}
				}
			}
			if b == 0 {
				continue
			}
			best = math.Max(best, 2*inter/(a+b))
		}
		sumBest += best
		for s := range readers {
			for px := range h[s] {
				if h[s] == nil || h[s][px] == 0 {
					continue
				}
				anyReader := false
				for _, rm := range readers[s] {
					anyReader = anyReader || rm[px] != 0
				}
				if !anyReader {
					fp++
				}
			}
		}
	}
	return sumBest / float64(len(heads)), fp / float64(len(heads)*slices)
}

// Lesion mode against today's whole-lung mode on the real fixtures with the default model, in the
// same run: Dice of the rater segments against the LIDC readers' outlines of the measured nodule
// and false-positive pixels per slice per segment. The prompts are the measurement SRs of
// ../shared/data/dicom/prompts (copied to testdata/dicom/prompts).
func TestLesionModeAgainstWholeLung(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the default model over two series twice")
	}
	e := defaultEngine(t)
	p := New(e)
	type row struct {
		fixture, mode string
		dice, fp      float64
		tiles         int
		infer         time.Duration
	}
	var rows []row
	for _, fx := range []string{"lidc-ct-0004", "lidc-ct-0005"} {
		dir := testutil.Testdata("dicom", fx)
		files := seriesFiles(t, dir)
		src, err := dicomio.LoadSeries(files)
		if err != nil {
			t.Fatal(err)
		}
		readers := readerMasks(t, dir, src)
		sr := promptObject(t, fx+"-length-sr.dcm")
		lesions, _ := src.ResolvePromptObject(sr)
		if len(lesions) != 1 {
			t.Fatalf("%s: %d lesions", fx, len(lesions))
		}
		l := lesions[0]
		for _, mode := range []string{"whole-lung", "lesion"} {
			req := Request{SeriesFiles: files, Seed: 1, Outputs: []Output{OutputRaters}}
			if mode == "lesion" {
				req.PromptObjects = []*dicomio.PromptObject{sr}
			}
			res, err := p.Process(context.Background(), req)
			if err != nil {
				t.Fatalf("%s %s: %v", fx, mode, err)
			}
			path := writeSEG(t, res.SEGs[0])
			back, err := dicomio.ReadSEG(path)
			if err != nil {
				t.Fatal(err)
			}
			heads, err := back.MasksFor(src)
			if err != nil {
				t.Fatal(err)
			}
			d, fp := quality(heads, readers, l.Row, l.Column, 40, src.Cols)
			rows = append(rows, row{fx, mode, d, fp, res.Timings.Tiles, res.Timings.Infer})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| fixture | mode | rater-head Dice vs readers (best match, mean over heads) | false-positive px / slice / head | tiles run | model time |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %.3f | %.1f | %d | %s |\n", r.fixture, r.mode, r.dice, r.fp, r.tiles, r.infer.Round(time.Millisecond))
	}
	t.Log(b.String())
	for i := 0; i+1 < len(rows); i += 2 {
		whole, lesion := rows[i], rows[i+1]
		if lesion.fp > whole.fp {
			t.Errorf("%s: lesion mode has more false positives (%.1f) than whole-lung (%.1f)", lesion.fixture, lesion.fp, whole.fp)
		}
		if lesion.dice < whole.dice {
			t.Errorf("%s: lesion mode Dice %.3f below whole-lung %.3f", lesion.fixture, lesion.dice, whole.dice)
		}
	}
}
