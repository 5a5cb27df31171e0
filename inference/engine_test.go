package inference

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"dpersona/internal/testutil"
)

// tinyBundle is a real bundle exported by `python3 -m training export` from a briefly trained
// `tiny` checkpoint (inference/testdata/README.md).
func tinyBundle() string { return filepath.Join(testutil.RepoRoot(), "inference", "testdata", "tiny") }

// requireORT returns the pinned onnxruntime library, skipping (failing under CI) when absent.
func requireORT(t testing.TB) string {
	t.Helper()
	return testutil.RequireORT(t, ORTLibEnv, ORTLibName)
}

func newTinyEngine(t testing.TB, opts EngineOptions) *Engine {
	t.Helper()
	opts.LibraryPath = requireORT(t)
	b, err := LoadBundle(tinyBundle())
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// copyBundle copies the tiny bundle so a test can break it.
func copyBundle(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(tinyBundle(), func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tinyBundle(), p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// editManifest rewrites manifest.json through a generic map.
func editManifest(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "manifest.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, _ := json.MarshalIndent(m, "", " ")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rehash records a file's current SHA-256 in the manifest (a consistent, re-signed bundle).
func rehash(t *testing.T, dir, name string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	editManifest(t, dir, func(m map[string]any) { m["files"].(map[string]any)[name] = hex.EncodeToString(sum[:]) })
}

func TestLoadBundle(t *testing.T) {
	b, err := LoadBundle(tinyBundle())
	if err != nil {
		t.Fatal(err)
	}
	m := b.Manifest
	if m.Name != "dpersona-test-tiny" || b.NumRaters() != 4 || m.LatentSize != 6 || m.Input.Height != 128 {
		t.Errorf("unexpected manifest: name %q, %d raters, latent %d, input %dx%d", m.Name, b.NumRaters(), m.LatentSize, m.Input.Height, m.Input.Width)
	}
}

func TestLoadBundleRefusesBrokenBundles(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   []string
	}{
		{"tampered graph", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "dpersona.onnx")
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 0xff
			os.WriteFile(p, data, 0o644)
		}, []string{"dpersona-test-tiny", "dpersona.onnx", "sha256 mismatch"}},
		{"missing golden file", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "golden", "val_image.f32"))
		}, []string{"dpersona-test-tiny", "golden/val_image.f32", "no such file"}},
		{"unknown format version", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["format_version"] = 2 })
		}, []string{"dpersona-test-tiny", "format_version 2"}},
		{"file outside the bundle", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["files"].(map[string]any)["../escape"] = strings.Repeat("0", 64) })
		}, []string{"../escape", "not a relative path inside the bundle"}},
		{"graph without checksum", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { delete(m["files"].(map[string]any), "dpersona.onnx") })
		}, []string{"dpersona.onnx", "no checksum"}},
		{"no raters", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["raters"] = []any{} })
		}, []string{"raters is empty"}},
		{"unknown intensity mode", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["input"].(map[string]any)["intensity"] = map[string]any{"mode": "zscore"} })
		}, []string{"intensity.mode \"zscore\""}},
		{"unknown region of interest", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				m["input"].(map[string]any)["tiling"].(map[string]any)["roi"] = "liver"
			})
		}, []string{"tiling.roi \"liver\""}},
		{"no manifest", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "manifest.json"))
		}, []string{"reading manifest"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyBundle(t)
			c.break_(t, dir)
			_, err := LoadBundle(dir)
			if err == nil {
				t.Fatal("broken bundle was accepted")
			}
			var be *BundleError
			if !errors.As(err, &be) {
				t.Errorf("error %T is not a *BundleError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestVerifyGoldenPasses(t *testing.T) {
	e := newTinyEngine(t, EngineOptions{})
	rep, err := VerifyGolden(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cases) != 2 || !rep.Pass {
		t.Fatalf("report %+v", rep)
	}
	for _, c := range rep.Cases {
		for name, d := range c.MaxAbsDiff {
			if d > 1e-4 {
				t.Errorf("%s %s differs by %g", c.Name, name, d)
			}
		}
	}
}

// A golden file that no longer matches the graph (re-signed, so only the comparison can catch
// it) must fail verification with the size of the difference.
func TestVerifyGoldenDetectsDrift(t *testing.T) {
	requireORT(t)
	dir := copyBundle(t)
	p := filepath.Join(dir, "golden", "val_rater_probs.f32")
	data, _ := os.ReadFile(p)
	data[4*1000+3] ^= 0x01 // flips a float's low exponent bit: a change far above 1e-4
	os.WriteFile(p, data, 0o644)
	rehash(t, dir, "golden/val_rater_probs.f32")
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(b, EngineOptions{LibraryPath: requireORT(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rep, err := VerifyGolden(context.Background(), e)
	if err == nil || rep == nil || rep.Pass {
		t.Fatalf("drifted golden passed: %+v %v", rep, err)
	}
	if rep.Cases[0].MaxAbsDiff[OutputRaterProb] <= 1e-4 || rep.Cases[0].MaxAbsDiff[OutputSampleProb] > 1e-4 {
		t.Errorf("diffs %v: only rater_probs should differ", rep.Cases[0].MaxAbsDiff)
	}
}

// A manifest whose input does not match the graph is refused when the engine is created.
func TestEngineRefusesManifestGraphMismatch(t *testing.T) {
	lib := requireORT(t)
	dir := copyBundle(t)
	editManifest(t, dir, func(m map[string]any) { m["input"].(map[string]any)["channels"] = 3 })
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewEngine(b, EngineOptions{LibraryPath: lib})
	if err == nil || !strings.Contains(err.Error(), `"image"`) || !strings.Contains(err.Error(), "dpersona-test-tiny") {
		t.Fatalf("error %v, want one naming the model and the image input", err)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	e := newTinyEngine(t, EngineOptions{})
	ctx := context.Background()
	noise := StudyNoise("1.2.3", 0, 2, 5, 6)
	img := make([]float32, 3*128*128)
	if _, _, err := e.Run(ctx, img[:128*127], 1, noise.Samples, 2, noise.Bank, 5); err == nil || !strings.Contains(err.Error(), "wrong channels or shape") {
		t.Errorf("short image: %v", err)
	}
	if _, err := e.Predict(ctx, img[:3*128*128-1], 3, noise); err == nil || !strings.Contains(err.Error(), "wrong channels or shape") {
		t.Errorf("Predict with a short image: %v", err)
	}
	bad := make([]float32, 128*128)
	bad[77] = float32(math.NaN())
	if _, _, err := e.Run(ctx, bad, 1, noise.Samples, 2, noise.Bank, 5); err == nil || !strings.Contains(err.Error(), "value 77") {
		t.Errorf("NaN input: %v", err)
	}
	if _, err := e.Predict(ctx, img[:128*128], 1, StudyNoise("1.2.3", 0, 2, 5, 4)); err == nil || !strings.Contains(err.Error(), "latent") {
		t.Errorf("wrong latent size: %v", err)
	}
}

// Predict splits tiles into batches and broadcasts the study noise; the result must equal one
// graph run per tile.
func TestPredictEqualsPerTileRuns(t *testing.T) {
	e := newTinyEngine(t, EngineOptions{BatchSize: 3})
	ctx := context.Background()
	const n, S, K = 7, 3, 9
	img := make([]float32, n*128*128)
	for i := range img {
		img[i] = float32((i*7919)%256) / 255
	}
	noise := StudyNoise("1.2.826.0.1.3680043.2.1125.1", 42, S, K, 6)
	pred, err := e.Predict(ctx, img, n, noise)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		sp, rp, err := e.Run(ctx, img[i*128*128:(i+1)*128*128], 1, noise.Samples, S, noise.Bank, K)
		if err != nil {
			t.Fatal(err)
		}
		gs, gr := pred.Tile(i)
		if d := maxDiff(sp, gs); d > 1e-5 {
			t.Errorf("tile %d samples differ by %g", i, d)
		}
		if d := maxDiff(rp, gr); d > 1e-5 {
			t.Errorf("tile %d raters differ by %g", i, d)
		}
	}
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// Two sessions of one thread each serve concurrent callers with the same answers as one
// caller at a time.
func TestSessionPoolConcurrentCallers(t *testing.T) {
	e := newTinyEngine(t, EngineOptions{Sessions: 2, IntraOpThreads: 1})
	if runtime.NumCPU() >= 2 && (e.Sessions() != 2 || e.Threads() != 1) {
		t.Fatalf("%d sessions x %d threads, want 2 x 1", e.Sessions(), e.Threads())
	}
	ctx := context.Background()
	img := make([]float32, 2*128*128)
	for i := range img {
		img[i] = float32(i%128) / 127
	}
	noise := StudyNoise("1.2.3.4", 1, 2, 4, 6)
	want, err := e.Predict(ctx, img, 2, noise)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for k := 0; k < 4; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := e.Predict(ctx, img, 2, noise)
			if err != nil {
				errs <- err
				return
			}
			if d := maxDiff(got.SampleProbs, want.SampleProbs); d > 1e-6 {
				errs <- errors.New("concurrent result differs")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The pinned library is CPU-only: asking for CUDA must fall back to the CPU and say why. (With a
// CUDA-enabled library on a GPU machine the engine would report cuda:0 instead.)
func TestCUDAFallsBackToCPU(t *testing.T) {
	e := newTinyEngine(t, EngineOptions{Device: "cuda:0"})
	switch e.Device() {
	case "cpu":
		if !strings.Contains(e.DeviceNote(), "cuda:0 unavailable") || !strings.Contains(e.DeviceNote(), "fell back to the CPU") {
			t.Errorf("fallback note %q", e.DeviceNote())
		}
	case "cuda:0":
		t.Log("a CUDA-enabled onnxruntime served cuda:0")
	default:
		t.Errorf("device %q", e.Device())
	}
	if _, err := VerifyGolden(context.Background(), e); err != nil {
		t.Error(err)
	}
	if _, _, _, err := parseDevice("gpu0"); err == nil {
		t.Error("device gpu0 accepted")
	}
}

func TestInitRuntimeRefusesNonLibrary(t *testing.T) {
	bogus := filepath.Join(t.TempDir(), "libonnxruntime.so")
	os.WriteFile(bogus, []byte("not a shared library"), 0o644)
	_, err := InitRuntime(bogus)
	if err == nil || !errors.Is(err, ErrRuntime) {
		t.Fatalf("bogus library: %v", err)
	}
	if _, err := InitRuntime(filepath.Join(t.TempDir(), "absent.so")); err == nil || !strings.Contains(err.Error(), "absent.so") {
		t.Fatalf("absent library: %v", err)
	}
	if !sameMinor("1.27.0", ORTVersion) || !sameMinor("1.27.3", ORTVersion) || sameMinor("1.26.0", ORTVersion) || sameMinor("", ORTVersion) {
		t.Error("version comparison is wrong")
	}
}

func TestStudyNoise(t *testing.T) {
	a := StudyNoise("1.2.3", 7, 50, 500, 6)
	b := StudyNoise("1.2.3", 7, 10, 100, 6)
	c := StudyNoise("1.2.4", 7, 10, 100, 6)
	d := StudyNoise("1.2.3", 8, 10, 100, 6)
	for i := range b.Samples {
		if a.Samples[i] != b.Samples[i] {
			t.Fatal("the first 10 of 50 samples differ from S=10: the stream is not prefix-stable")
		}
	}
	if maxDiff(b.Samples, c.Samples) == 0 || maxDiff(b.Samples, d.Samples) == 0 || maxDiff(b.Samples, b.Bank[:len(b.Samples)]) == 0 {
		t.Error("different studies, seeds or streams gave identical noise")
	}
	var sum, sq float64
	for _, x := range a.Bank {
		sum += float64(x)
		sq += float64(x) * float64(x)
	}
	n := float64(len(a.Bank))
	mean, sd := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
	if math.Abs(mean) > 0.05 || math.Abs(sd-1) > 0.05 {
		t.Errorf("bank noise mean %v sd %v, want about 0 and 1", mean, sd)
	}
}

func TestConsensusAndUncertainty(t *testing.T) {
	// Two pixels, three samples: (0,0,0) -> mean 0, sd 0; (0,1,0.5) -> mean 0.5, sd sqrt(1/6).
	c, u := ConsensusAndUncertainty([]float32{0, 0, 0, 1, 0, 0.5}, 3, 2)
	if c[0] != 0 || u[0] != 0 || math.Abs(float64(c[1])-0.5) > 1e-7 || math.Abs(float64(u[1])-math.Sqrt(1.0/6)) > 1e-6 {
		t.Errorf("consensus %v uncertainty %v", c, u)
	}
}

// A graph that honours the tensor contract but computes sqrt(image - 2) (NaN for inputs in
// [0,1]) must be stopped by the output check with an error naming the model and the output.
func TestRunRejectsNonFiniteOutputs(t *testing.T) {
	lib := requireORT(t)
	python := requirePython(t, "onnx")
	dir := copyBundle(t)
	runPython(t, python, `
import sys, onnx
from onnx import helper, TensorProto as T
R = 4
nodes = [
    helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", T.FLOAT, [], [2.0])),
    helper.make_node("Sub", ["image", "two"], ["shifted"]),
    helper.make_node("Sqrt", ["shifted"], ["bad"]),                      # [N,1,H,W], NaN
    helper.make_node("ReduceMean", ["eps_samples"], ["es"], axes=[2], keepdims=1),  # [N,S,1]
    helper.make_node("Constant", [], ["ax3"], value=helper.make_tensor("ax3", T.INT64, [1], [3])),
    helper.make_node("Unsqueeze", ["es", "ax3"], ["es4"]),                 # [N,S,1,1]
    helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("zero", T.FLOAT, [], [0.0])),
    helper.make_node("Mul", ["es4", "zero"], ["es0"]),
    helper.make_node("Add", ["bad", "es0"], ["sample_probs"]),
    helper.make_node("ReduceMean", ["eps_bank"], ["eb"], axes=[1, 2], keepdims=1),  # [N,1,1]
    helper.make_node("Constant", [], ["reps"], value=helper.make_tensor("reps", T.INT64, [4], [1, R, 1, 1])),
    helper.make_node("Tile", ["bad", "reps"], ["rater_probs"]),
]
g = helper.make_graph(nodes, "nan",
    [helper.make_tensor_value_info("image", T.FLOAT, ["N", 1, 128, 128]),
     helper.make_tensor_value_info("eps_samples", T.FLOAT, ["N", "S", 6]),
     helper.make_tensor_value_info("eps_bank", T.FLOAT, ["N", "K", 6])],
    [helper.make_tensor_value_info("sample_probs", T.FLOAT, ["N", "S", 128, 128]),
     helper.make_tensor_value_info("rater_probs", T.FLOAT, ["N", R, 128, 128])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 7
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1] + "/dpersona.onnx")
`, dir)
	rehash(t, dir, "dpersona.onnx")
	b, err := LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(b, EngineOptions{LibraryPath: lib})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	noise := StudyNoise("1.2.3", 0, 2, 3, 6)
	_, err = e.Predict(context.Background(), make([]float32, 128*128), 1, noise)
	if err == nil || !strings.Contains(err.Error(), "not finite") || !strings.Contains(err.Error(), OutputSampleProb) || !strings.Contains(err.Error(), "dpersona-test-tiny") {
		t.Fatalf("NaN output: %v", err)
	}
}

// A cancelled context stops a run and leaves the session usable for the next caller.
func TestRunCancellation(t *testing.T) {
	e := newTinyEngine(t, EngineOptions{})
	img := make([]float32, 4*128*128)
	noise := StudyNoise("1.2.3", 0, 50, 500, 6)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Predict(ctx, img, 4, noise); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled predict: %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	go cancel2()
	e.Predict(ctx2, img, 4, noise) // may or may not be cut short
	if _, err := e.Predict(context.Background(), img[:128*128], 1, StudyNoise("1.2.3", 0, 2, 3, 6)); err != nil {
		t.Fatalf("the session is unusable after a cancelled run: %v", err)
	}
}
