package inference

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"dpersona/internal/testutil"
)

// `dpersona eval` must report what `python3 -m training evaluate` reports for the same model
// (the bundle was exported from this checkpoint) within 1e-3: same data, same rater order, same
// noise (torch.randn reproduced), metrics computed independently in Go and in Python.
func TestEvaluateAgreesWithTrainingCLI(t *testing.T) {
	// 16 LIDC-IDRI validation crops with their 4 readers' masks (inference/testdata/README.md).
	data := filepath.Join(testutil.RepoRoot(), "inference", "testdata", "lidc-val-16.npz")
	python := requirePython(t, "torch", "numpy", "scipy")
	const limit = 16
	checkpoint := filepath.Join(testutil.RepoRoot(), "inference", "testdata", "tiny-stage2.pt")
	cmd := exec.Command(python, "-m", "training", "evaluate", "--checkpoint", checkpoint, "--data", data,
		"--limit", "16", "--threads", "1", "--device", "cpu", "--json")
	cmd.Dir = testutil.RepoRoot()
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("training evaluate: %v", err)
	}
	var py struct {
		Samples  int            `json:"samples"`
		BankSize int            `json:"bank_size"`
		Metrics  map[string]any `json:"metrics"`
	}
	if err := json.Unmarshal(out, &py); err != nil {
		t.Fatalf("training evaluate output: %v\n%s", err, out)
	}

	e := newTinyEngine(t, EngineOptions{})
	set, err := LoadEvalNPZ(data)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Evaluate(context.Background(), e, set, EvalOptions{Seed: 1337, Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Samples != py.Samples || rep.BankSize != py.BankSize {
		t.Fatalf("Go used S=%d K=%d, Python S=%d K=%d", rep.Samples, rep.BankSize, py.Samples, py.BankSize)
	}
	compareMetricMaps(t, rep.Metrics, py.Metrics, 1e-3)
	if rep.Metrics["images"] != limit {
		t.Errorf("images = %v, want %d", rep.Metrics["images"], limit)
	}
}

func TestEvaluateRefusesMismatchedData(t *testing.T) {
	e := newTinyEngine(t, EngineOptions{})
	set := &EvalSet{N: 1, C: 1, R: 4, H: 64, W: 64, Images: make([]uint8, 64*64), Masks: make([]uint8, 4*64*64)}
	if _, err := Evaluate(context.Background(), e, set, EvalOptions{}); err == nil {
		t.Fatal("64x64 images accepted by a 128x128 model")
	}
	set = &EvalSet{N: 1, C: 1, R: 3, H: 128, W: 128, Images: make([]uint8, 128*128), Masks: make([]uint8, 3*128*128)}
	if _, err := Evaluate(context.Background(), e, set, EvalOptions{}); err == nil {
		t.Fatal("3 raters accepted by a 4-head model")
	}
}

func TestOrderRatersByArea(t *testing.T) {
	// One image, three 1x4 raters with areas 3, 1, 1: stable order 1, 2, 0.
	s := &EvalSet{N: 1, C: 1, R: 3, H: 1, W: 4, Masks: []uint8{1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0}}
	if err := s.OrderRaters("area"); err != nil {
		t.Fatal(err)
	}
	want := []uint8{0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0}
	for i := range want {
		if s.Masks[i] != want[i] {
			t.Fatalf("ordered masks %v, want %v", s.Masks, want)
		}
	}
	if err := s.OrderRaters("random"); err == nil {
		t.Error("unknown order accepted")
	}
}
