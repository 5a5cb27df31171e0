package dispatch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/dicomio"
	"dpersona/inference"
	"dpersona/internal/testutil"
	"dpersona/pipeline"
)

// tinyModels opens the committed test model the way serve does.
func tinyModels(t testing.TB) (*pipeline.Models, string) {
	t.Helper()
	lib := testutil.RequireORT(t, inference.ORTLibEnv, inference.ORTLibName)
	dir := filepath.Join(testutil.RepoRoot(), "inference", "testdata", "tiny")
	m, err := pipeline.OpenModels(context.Background(), []string{dir}, func(d string) (*inference.Engine, error) {
		b, err := inference.LoadBundle(d)
		if err != nil {
			return nil, err
		}
		return inference.NewEngine(b, inference.EngineOptions{LibraryPath: lib})
	}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, dir
}

// lidcStudy lays out lidc-ct-0005 (and the given prompt fixtures, each as a series of its own)
// under dataDir as the gateway stores them, and describes them as the gateway would.
func lidcStudy(t testing.TB, dataDir, ae string, prompts ...string) StudyComplete {
	t.Helper()
	src, err := dicomio.LoadSeries(mustFiles(t, testutil.Testdata("dicom", "lidc-ct-0005")))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dataDir, "studies", ae, src.StudyInstanceUID)
	ev := StudyComplete{CalledAE: ae, CallingAE: "VIEWER", StudyInstanceUID: src.StudyInstanceUID, Dir: root, CompletedAt: time.Now()}
	ct := SeriesRef{SeriesInstanceUID: src.SeriesInstanceUID, Modality: "CT"}
	for _, sl := range src.Slices {
		ct.Instances = append(ct.Instances, place(t, root, src.SeriesInstanceUID, sl.SOPInstanceUID, src.SOPClassUID, sl.Path))
	}
	ev.Series = append(ev.Series, ct)
	for _, name := range prompts {
		path := testutil.Testdata("dicom", "prompts", name)
		obj, err := dicomio.ReadPrompts(path)
		if err != nil {
			t.Fatal(err)
		}
		modality := map[dicomio.PromptSource]string{dicomio.SourceSR: "SR", dicomio.SourceGSPS: "PR", dicomio.SourceRTSTRUCT: "RTSTRUCT"}[obj.Source]
		ev.Series = append(ev.Series, SeriesRef{SeriesInstanceUID: obj.SeriesInstanceUID, Modality: modality,
			Instances: []InstanceRef{place(t, root, obj.SeriesInstanceUID, obj.SOPInstanceUID, obj.SOPClassUID, path)}})
	}
	return ev
}

func place(t testing.TB, root, series, sop, class, from string) InstanceRef {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, series, sop+".dcm")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return InstanceRef{SOPInstanceUID: sop, SOPClassUID: class, Path: p, Size: int64(len(data))}
}

func mustFiles(t testing.TB, dir string) []string {
	files, err := dicomio.SeriesFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func lesionsOf(st *StudyState, state string) []LesionState {
	var out []LesionState
	for _, l := range st.Lesions {
		if l.State == state {
			out = append(out, l)
		}
	}
	return out
}

// A lesion-mode route through the real bus and the real (tiny) model: the CT alone waits for
// prompts, then says why it produced nothing; the SR arriving later runs its lesion; an RTSTRUCT
// arriving after that runs only what is new (its seed on the same nodule merges into the SR's
// lesion, its bad ROIs are rejected with reasons); a prompt posted to the API runs that lesion
// only, with source API.
func TestLesionRouteWaitsThenRunsEachPromptOnce(t *testing.T) {
	models, modelDir := tinyModels(t)
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	routing := Routing{Routes: []Route{{Name: "lung-lesions", Modality: "CT", Model: modelDir, Outputs: []string{OutputRaters},
		Lesions: &LesionRouting{WaitForPrompts: Duration(1500 * time.Millisecond)}}}}
	h.infer(b, fastInfer(PipelineProcessor{Models: models}, routing))
	ctx := context.Background()

	ev := lidcStudy(t, data, "DPERSONA")
	if err := b.PublishStudyComplete(ctx, ev); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, "DPERSONA", ev.StudyInstanceUID, StateWaiting, 20*time.Second)
	if !strings.Contains(st.Reason, "waiting up to 1.5s") {
		t.Errorf("waiting reason %q", st.Reason)
	}
	st = waitState(t, b, "DPERSONA", ev.StudyInstanceUID, StateDone, 20*time.Second)
	if len(st.Results) != 0 || len(st.Notes) != 1 || !strings.Contains(st.Notes[0], "no lesion prompt") || !strings.Contains(st.Reason, "lesion mode produces nothing") {
		t.Fatalf("without prompts: results %v notes %v reason %q", st.Results, st.Notes, st.Reason)
	}

	// The measurement SR arrives: a new instance set, its lesion runs.
	ev = lidcStudy(t, data, "DPERSONA", "lidc-ct-0005-length-sr.dcm")
	ev.CompletedAt = time.Now()
	if err := b.PublishStudyComplete(ctx, ev); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the SR's lesion processed", func() bool {
		st, _ = b.StudyState(ctx, "DPERSONA", ev.StudyInstanceUID)
		return st != nil && st.State == StateDone && len(lesionsOf(st, LessionProcessed)) == 1
	})
	l := lesionsOf(st, LessionProcessed)[0]
	if l.Source != "SR" || l.TrackingID != "Nodule 1" || l.TrackingUID == "" || l.Slice != 4 || l.Row != 406 || l.Column < 306 || l.Column > 317 {
		t.Errorf("SR lesion %+v", l)
	}
	if len(st.Results) != 1 || st.Results[0].Segments != 4 {
		t.Fatalf("results after the SR: %+v", st.Results)
	}
	srSEG := st.Results[0].SOPInstanceUID

	// An RTSTRUCT follows: only its prompts run. Its seed and GTV mark the SR's nodule (merged),
	// the other ROIs are rejected with their reasons: nothing new to segment, no new SEG.
	ev = lidcStudy(t, data, "DPERSONA", "lidc-ct-0005-length-sr.dcm", "lidc-ct-0005-pydicom-rtstruct.dcm")
	ev.CompletedAt = time.Now()
	if err := b.PublishStudyComplete(ctx, ev); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the RTSTRUCT's prompts recorded", func() bool {
		st, _ = b.StudyState(ctx, "DPERSONA", ev.StudyInstanceUID)
		return st != nil && st.State == StateDone && len(st.Lesions) >= 5
	})
	if n := len(lesionsOf(st, LessionProcessed)); n != 1 {
		t.Errorf("%d processed lesions after the RTSTRUCT, want still 1: %+v", n, st.Lesions)
	}
	merged, rejected := lesionsOf(st, LesionMerged), lesionsOf(st, LesionRejected)
	if len(merged) != 2 || !strings.Contains(merged[0].Reason, "SR measurement group 1") || len(rejected) != 3 {
		t.Errorf("merged %+v\nrejected %+v", merged, rejected)
	}
	for _, r := range rejected {
		if r.Source != "RTSTRUCT" || r.Reason == "" {
			t.Errorf("rejected %+v", r)
		}
	}

	// A lesion posted to the API (the slice-6 nodule, in patient mm) runs alone.
	src, _ := dicomio.LoadSeries(mustFiles(t, testutil.Testdata("dicom", "lidc-ct-0005")))
	p := src.PixelToPatient(1, 125.5, 396.5)
	req, err := b.RequestLesions(ctx, "", ev.StudyInstanceUID, []APIPrompt{{PointMM: []float64{p[0], p[1], p[2]}, Label: "Nodule 2"}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the API lesion processed", func() bool {
		st, _ = b.StudyState(ctx, "DPERSONA", ev.StudyInstanceUID)
		return st != nil && st.State == StateDone && len(lesionsOf(st, LessionProcessed)) == 2
	})
	api := lesionsOf(st, LessionProcessed)[1]
	if api.Source != "API" || api.Object != "api:"+req.Prompts[0].ID || api.Slice != 2 || api.TrackingUID == "" {
		t.Errorf("API lesion %+v", api)
	}
	if len(st.Results) != 1 || st.Results[0].Segments != 4 || st.Results[0].SOPInstanceUID == srSEG {
		t.Errorf("results of the API request: %+v", st.Results)
	}
	// A prompt for a series no lesion route processes gets that reason, not silence.
	if _, err := b.RequestLesions(ctx, "DPERSONA", ev.StudyInstanceUID, []APIPrompt{{Series: "9.9.9", PointMM: []float64{p[0], p[1], p[2]}}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the unrouted API prompt recorded", func() bool {
		st, _ = b.StudyState(ctx, "DPERSONA", ev.StudyInstanceUID)
		for _, l := range lesionsOf(st, LesionRejected) {
			if l.Source == "API" && strings.Contains(l.Reason, "series 9.9.9 is not in the study") {
				return true
			}
		}
		return false
	})
	// Bad requests name the cause.
	if _, err := b.RequestLesions(ctx, "", ev.StudyInstanceUID, []APIPrompt{{SOPInstanceUID: "1.2.3"}}); err == nil || !strings.Contains(err.Error(), "row >= 0") {
		t.Errorf("pixel prompt without row: %v", err)
	}
	if _, err := b.RequestLesions(ctx, "", "1.2.3.4", []APIPrompt{{PointMM: []float64{1, 2, 3}}}); err == nil || !strings.Contains(err.Error(), "unknown study") {
		t.Errorf("unknown study: %v", err)
	}
}

// A lesion route that opted into screening runs the whole-lung mode when no prompt arrived, and
// every segment says it is whole-lung screening.
func TestLesionRouteWithoutPromptsScreens(t *testing.T) {
	models, modelDir := tinyModels(t)
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	routing := Routing{Routes: []Route{{Name: "lung-lesions", Modality: "CT", Model: modelDir, Outputs: []string{OutputRaters},
		Lesions: &LesionRouting{WithoutPrompts: WithoutPromptsScreening}}}}
	h.infer(b, fastInfer(PipelineProcessor{Models: models}, routing))
	ev := lidcStudy(t, data, "DPERSONA")
	if err := b.PublishStudyComplete(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, "DPERSONA", ev.StudyInstanceUID, StateDone, 60*time.Second)
	if len(st.Results) != 1 || len(st.Lesions) != 0 {
		t.Fatalf("results %+v lesions %+v", st.Results, st.Lesions)
	}
	data2, err := b.results.GetBytes(context.Background(), st.Results[0].Object)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "raters.dcm")
	if err := os.WriteFile(path, data2, 0o644); err != nil {
		t.Fatal(err)
	}
	seg, err := dicomio.ReadSEG(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seg.Segments {
		if !strings.Contains(s.Label, "whole-lung screening") || s.TrackingUID != "" {
			t.Errorf("segment %q (tracking %q): want the whole-lung screening label and no tracking", s.Label, s.TrackingUID)
		}
	}
}

// A lesion route that names no outputs, as a site writes it in its config file, produces the
// lesion default through the real bus and model: rater, samples and BINARY consensus SEGs and the
// RT Structure Set, each holding the SR's lesion.
func TestLesionRouteDefaultOutputs(t *testing.T) {
	models, modelDir := tinyModels(t)
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	cfg := filepath.Join(t.TempDir(), "dpersona.json")
	if err := os.WriteFile(cfg, []byte(`{"routes": [{"name": "lung-lesions", "modality": "CT", "model": "`+modelDir+`", "lesions": {}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	routing, err := LoadRouting(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.infer(b, fastInfer(PipelineProcessor{Models: models}, routing))
	ev := lidcStudy(t, data, "DPERSONA", "lidc-ct-0005-length-sr.dcm")
	if err := b.PublishStudyComplete(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, "DPERSONA", ev.StudyInstanceUID, StateDone, 60*time.Second)
	if n := len(lesionsOf(st, LessionProcessed)); n != 1 {
		t.Fatalf("%d processed lesions, want the SR's one: %+v (reason %q)", n, st.Lesions, st.Reason)
	}
	got := map[string]ResultState{}
	for _, r := range st.Results {
		got[r.Output] = r
	}
	for _, o := range []string{OutputRaters, OutputSamples, OutputConsensus, OutputRTStruct} {
		r, ok := got[o]
		if !ok || r.Segments == 0 {
			t.Errorf("output %s missing or empty: %+v", o, r)
		}
	}
	if len(got) != 4 {
		t.Errorf("outputs %v, want raters, samples, consensus, rtstruct", st.Results)
	}
	if r := got[OutputRTStruct]; r.SOPClassUID != "1.2.840.10008.5.1.4.1.1.481.3" {
		t.Errorf("rtstruct result has SOP class %q, want RT Structure Set Storage", r.SOPClassUID)
	}
	if r := got[OutputConsensus]; r.Segments != 1 {
		t.Errorf("consensus has %d segments, want 1 for the one lesion", r.Segments)
	}
}

// An SR that arrives after the images does not run the whole-series routes again on the same
// images: the model runs once, and the study says why nothing new was produced.
func TestPromptOnlyEventDoesNotRerunWholeSeriesRoutes(t *testing.T) {
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	proc := newFixtureProcessor("w1")
	h.infer(b, fastInfer(proc, ctRoute()))
	ctx := context.Background()
	ev := ct2Study(t, data, "DPERSONA", ct2StudyUID)
	if err := b.PublishStudyComplete(ctx, ev); err != nil {
		t.Fatal(err)
	}
	first := waitState(t, b, "DPERSONA", ct2StudyUID, StateDone, 30*time.Second)
	sr := place(t, ev.Dir, "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.840.10008.5.1.4.1.1.88.33",
		testutil.Testdata("dicom", "prompts", "lidc-ct-0005-length-sr.dcm"))
	ev.Series = append(ev.Series, SeriesRef{SeriesInstanceUID: "1.2.826.0.1.3680043.8.498.1", Modality: "SR", Instances: []InstanceRef{sr}})
	ev.CompletedAt = time.Now()
	if err := b.PublishStudyComplete(ctx, ev); err != nil {
		t.Fatal(err)
	}
	var st *StudyState
	testutil.WaitFor(t, 30*time.Second, "the SR event handled", func() bool {
		st, _ = b.StudyState(ctx, "DPERSONA", ct2StudyUID)
		return st != nil && st.State == StateDone && st.EventID != first.EventID
	})
	if proc.Calls(ct2StudyUID) != 1 || !strings.Contains(st.Reason, "only lesion prompts") {
		t.Fatalf("model ran %d times; state reason %q", proc.Calls(ct2StudyUID), st.Reason)
	}
}
