package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"dpersona/dicomio"
	"dpersona/inference"
	"dpersona/internal/testutil"
)

// The model commands run as an operator runs them: the real binary, the committed tiny bundle,
// the pinned onnxruntime library.
func modelCommandEnv(t *testing.T) (bin, bundle string, env []string) {
	t.Helper()
	lib := ortLibrary(t)
	return testutil.BuildDpersona(t), filepath.Join(testutil.RepoRoot(), "inference", "testdata", "tiny"),
		append(os.Environ(), inference.ORTLibEnv+"="+lib)
}

func runDpersona(t *testing.T, bin string, env []string, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestModelsVerifyCommand(t *testing.T) {
	bin, bundle, env := modelCommandEnv(t)
	out, err := runDpersona(t, bin, env, "", "models", "verify", bundle)
	if err != nil {
		t.Fatalf("verify failed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "dpersona-test-tiny") || strings.Count(out, "(tolerance 0.0001) ok") != 2 {
		t.Errorf("verify output:\n%s", out)
	}
	// A bundle whose golden file was altered (without re-signing) is refused, naming the file.
	broken := filepath.Join(t.TempDir(), "bundle")
	if err := os.CopyFS(broken, os.DirFS(bundle)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(broken, "golden", "val_sample_probs.f32")
	data, _ := os.ReadFile(p)
	data[100] ^= 1
	os.WriteFile(p, data, 0o644)
	out, err = runDpersona(t, bin, env, "", "models", "verify", broken)
	if err == nil || !strings.Contains(out, "golden/val_sample_probs.f32") || !strings.Contains(out, "sha256 mismatch") {
		t.Errorf("tampered bundle: %v\n%s", err, out)
	}
	// Without a directory the default model is looked up relative to the working directory.
	empty := t.TempDir()
	out, err = runDpersona(t, bin, env, empty, "models", "verify")
	if err == nil || !strings.Contains(out, "models/default") {
		t.Errorf("missing default model: %v\n%s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(empty, "models"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bundle, filepath.Join(empty, "models", "default")); err != nil {
		t.Fatal(err)
	}
	if out, err = runDpersona(t, bin, env, empty, "models", "verify"); err != nil {
		t.Errorf("default model in the working directory: %v\n%s", err, out)
	}
}

func TestInferCommand(t *testing.T) {
	bin, bundle, env := modelCommandEnv(t)
	out := t.TempDir()
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "readme.txt"), []byte("no DICOM here"), 0o644)
	series := testutil.Testdata("dicom", "ct5n-pydicom")
	text, err := runDpersona(t, bin, env, "", "infer", "--model", bundle, "--out", out, series, bad)
	if err == nil || !strings.Contains(text, "1 of 2 series failed") || !strings.Contains(text, "FAILED "+bad) {
		t.Fatalf("a failing input must be reported and fail the command: %v\n%s", err, text)
	}
	files, _ := dicomio.SeriesFiles(series)
	src, err := dicomio.LoadSeries(files)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"raters", "samples", "consensus"} { // the defaults
		p := filepath.Join(out, src.SeriesInstanceUID, name+".dcm")
		seg, err := dicomio.ReadSEG(p)
		if err != nil {
			t.Errorf("%s: %v\n%s", name, err, text)
			continue
		}
		if seg.StudyInstanceUID != src.StudyInstanceUID {
			t.Errorf("%s SEG belongs to study %s", name, seg.StudyInstanceUID)
		}
	}
}

func TestEvalCommandJSON(t *testing.T) {
	bin, bundle, env := modelCommandEnv(t)
	lidc := filepath.Join(testutil.RepoRoot(), "inference", "testdata", "lidc-val-16.npz")
	text, err := runDpersona(t, bin, env, "", "eval", "--model", bundle, "--data", lidc, "--limit", "8", "--json")
	if err != nil {
		t.Fatalf("eval: %v\n%s", err, text)
	}
	var rep struct {
		Model   string         `json:"model"`
		Metrics map[string]any `json:"metrics"`
	}
	if err := json.Unmarshal([]byte(text), &rep); err != nil {
		t.Fatalf("eval --json output is not JSON: %v\n%s", err, text)
	}
	for _, k := range []string{"ged", "ged_empty0", "dice_soft", "dice_max", "dice_match", "heads_dice_match", "personalised_dice", "personalised_dice_per_rater"} {
		if _, ok := rep.Metrics[k]; !ok {
			t.Errorf("metric %s missing", k)
		}
	}
	if rep.Metrics["images"] != float64(8) {
		t.Errorf("images = %v", rep.Metrics["images"])
	}
	text, err = runDpersona(t, bin, env, "", "eval", "--model", bundle, "--data", filepath.Join(t.TempDir(), "absent.npz"))
	if err == nil || !strings.Contains(text, "absent.npz") {
		t.Errorf("missing data file: %v\n%s", err, text)
	}
}

// Lesion mode from the command line: an SR and an RTSTRUCT file plus --lesion points; the
// outputs hold one segment set per lesion; the unusable prompts are listed with their reasons.
func TestInferCommandLesions(t *testing.T) {
	bin, bundle, env := modelCommandEnv(t)
	out := t.TempDir()
	series := testutil.Testdata("dicom", "lidc-ct-0005")
	src, err := dicomio.LoadSeries(mustSeriesFiles(t, series))
	if err != nil {
		t.Fatal(err)
	}
	lowest := src.Slices[0].SOPInstanceUID // the slice-6/7 nodule lies at rows 393-400, columns 122-129
	text, err := runDpersona(t, bin, env, "", "infer", "--model", bundle, "--out", out, "--outputs", "raters",
		"--prompts", testutil.Testdata("dicom", "prompts", "lidc-ct-0005-length-sr.dcm"),
		"--prompts", testutil.Testdata("dicom", "prompts", "lidc-ct-0005-pydicom-rtstruct.dcm"),
		"--lesion", lowest+":396,125", "--lesion", "1.2.3:1,1", series)
	if err != nil {
		t.Fatalf("infer: %v\n%s", err, text)
	}
	for _, want := range []string{"lesion Nodule 1 (SR measurement group 1)", "lesion Lesion 2 (API --lesion " + lowest,
		"prompt not used: RTSTRUCT ROI 3", "outside the image volume", "prompt not used: API --lesion 1.2.3:1,1", "is not in series"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	seg, err := dicomio.ReadSEG(filepath.Join(out, src.SeriesInstanceUID, "raters.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	if len(seg.Segments) != 8 || seg.Segments[0].TrackingID != "Nodule 1" || seg.Segments[4].TrackingID == "Nodule 1" {
		t.Errorf("segments %+v", seg.Segments)
	}
	text, err = runDpersona(t, bin, env, "", "infer", "--model", bundle, "--out", out, "--lesion", "1.2.3", series)
	if err == nil || !strings.Contains(text, "SOP_INSTANCE_UID:ROW,COLUMN") {
		t.Errorf("bad --lesion: %v\n%s", err, text)
	}
}

func mustSeriesFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := dicomio.SeriesFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}
