package inference

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"dpersona/internal/testutil"
)

func TestMinCostAssignmentAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		n := 1 + rng.IntN(4)
		m := n + rng.IntN(4)
		cost := make([][]float64, n)
		for i := range cost {
			cost[i] = make([]float64, m)
			for j := range cost[i] {
				cost[i][j] = float64(rng.IntN(5)) // ties on purpose
			}
		}
		got := MinCostAssignment(cost)
		seen := map[int]bool{}
		var sum float64
		for i, j := range got {
			if seen[j] {
				t.Fatalf("column %d assigned twice: %v", j, got)
			}
			seen[j] = true
			sum += cost[i][j]
		}
		if best := bruteForceAssignment(cost, 0, map[int]bool{}); math.Abs(sum-best) > 1e-12 {
			t.Fatalf("trial %d: cost %v, optimum %v (matrix %v, assignment %v)", trial, sum, best, cost, got)
		}
	}
}

func bruteForceAssignment(cost [][]float64, row int, used map[int]bool) float64 {
	if row == len(cost) {
		return 0
	}
	best := math.Inf(1)
	for j := range cost[row] {
		if used[j] {
			continue
		}
		used[j] = true
		best = min(best, cost[row][j]+bruteForceAssignment(cost, row+1, used))
		used[j] = false
	}
	return best
}

func TestMetricsHandComputed(t *testing.T) {
	a := []uint8{1, 1, 0, 0}
	b := []uint8{1, 0, 1, 0}
	empty := []uint8{0, 0, 0, 0}
	if d := Dice(a, b); math.Abs(d-0.5) > 1e-8 {
		t.Errorf("Dice = %v, want 0.5", d)
	}
	if d := Dice(empty, empty); d != 1 {
		t.Errorf("Dice(empty, empty) = %v, want 1", d)
	}
	// d(a,b) = 1 - 1/3. GED(L={a}, P={b}) = 2*(2/3) - 0 - 0 with the reference convention.
	ref, zero := GED([][]uint8{a}, [][]uint8{b})
	if math.Abs(ref-4.0/3) > 1e-7 || math.Abs(zero-4.0/3) > 1e-7 {
		t.Errorf("GED = %v, %v; want 4/3 for both", ref, zero)
	}
	// Empty vs empty: distance 1 in the reference convention, so GED = 2-1-1 = 0; 0 otherwise too.
	ref, zero = GED([][]uint8{empty}, [][]uint8{empty, a})
	// L-P: d(e,e)=1 (ref) / 0, d(e,a)=1 -> mean 1 / 0.5; L-L: 1 / 0; P-P: [1,1,1,0]/4 = 0.75 / [0,1,1,0]/4 = 0.5
	if math.Abs(ref-(2*1-1-0.75)) > 1e-7 || math.Abs(zero-(2*0.5-0-0.5)) > 1e-7 {
		t.Errorf("GED with empty masks = %v, %v; want 0.25, 0.5", ref, zero)
	}
	m, assign, err := DiceMatch([][]uint8{a, b}, [][]uint8{b, empty, a})
	if err != nil || math.Abs(m-1) > 1e-9 || assign[0] != 2 || assign[1] != 0 {
		t.Errorf("DiceMatch = %v %v %v, want 1 [2 0]", m, assign, err)
	}
	if _, _, err := DiceMatch([][]uint8{a, b}, [][]uint8{a}); err == nil {
		t.Error("DiceMatch with fewer predictions than raters must fail")
	}
}

// The metrics must agree with training/metrics.py (the Python evaluation) on the same masks.
func TestMetricsAgreeWithTrainingPython(t *testing.T) {
	python := requirePython(t, "numpy", "scipy")
	if _, err := os.Stat(filepath.Join(repoTraining(), "metrics.py")); err != nil {
		t.Skip("training/metrics.py is absent")
	}
	dir := t.TempDir()
	runPython(t, python, `
import sys, json, numpy as np
from training.metrics import MetricAccumulator
rng = np.random.default_rng(11)
R, S, H, W, N = 4, 10, 24, 20, 6
raters = np.zeros((N, R, H, W), np.uint8)
yy, xx = np.mgrid[:H, :W]
for n in range(N):
    for r in range(R):
        if n == 0 and r > 0:
            continue  # some empty raters, as in LIDC
        cy, cx, rad = rng.uniform(6, 16), rng.uniform(6, 14), rng.uniform(2, 7)
        raters[n, r] = ((yy - cy) ** 2 + (xx - cx) ** 2 < rad ** 2)
sp = rng.random((N, S, H, W)).astype(np.float32) * 0.6 + raters.mean(1, keepdims=True).astype(np.float32) * 0.5
sp[1] = 0  # an image with no predicted foreground at all
rp = np.clip(raters + rng.normal(0, 0.4, raters.shape), 0, 1).astype(np.float32)
acc = MetricAccumulator(R, 0.5)
for n in range(N):
    acc.update(raters[n], sp[n], rp[n])
np.savez(sys.argv[1] + "/in.npz", raters=raters, sp=sp, rp=rp)
json.dump(acc.result(), open(sys.argv[1] + "/out.json", "w"))
`, dir)
	arrays, err := ReadNPZ(filepath.Join(dir, "in.npz"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	raw, _ := os.ReadFile(filepath.Join(dir, "out.json"))
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	raters, sp, rp := arrays["raters"], arrays["sp"], arrays["rp"]
	n, r, s := raters.Shape[0], raters.Shape[1], sp.Shape[1]
	hw := raters.Shape[2] * raters.Shape[3]
	acc := NewMetricAccumulator(r, 0.5)
	for i := 0; i < n; i++ {
		img := ImageOutputs{Raters: splitMaps(raters.Uint8[i*r*hw:(i+1)*r*hw], r),
			SampleProbs: splitMaps(sp.Data[i*s*hw:(i+1)*s*hw], s),
			RaterProbs:  splitMaps(rp.Data[i*r*hw:(i+1)*r*hw], r)}
		if err := acc.Add(img); err != nil {
			t.Fatal(err)
		}
	}
	got := acc.Result()
	compareMetricMaps(t, got, want, 1e-9)
}

func compareMetricMaps(t *testing.T, got map[string]any, want map[string]any, tol float64) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("metric %s missing from the Go result", k)
			continue
		}
		switch wv := w.(type) {
		case float64:
			if math.Abs(toFloat(g)-wv) > tol {
				t.Errorf("%s: Go %v, Python %v", k, g, wv)
			}
		case []any:
			gv, ok := g.([]float64)
			if !ok || len(gv) != len(wv) {
				t.Errorf("%s: Go %v, Python %v", k, g, wv)
				continue
			}
			for i := range wv {
				if math.Abs(gv[i]-wv[i].(float64)) > tol {
					t.Errorf("%s[%d]: Go %v, Python %v", k, i, gv[i], wv[i])
				}
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("metric %s is reported by Go but not by Python", k)
		}
	}
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int:
		return float64(x)
	}
	return math.NaN()
}

func repoTraining() string { return filepath.Join(testutil.RepoRoot(), "training") }

// With ties, SciPy's linear_sum_assignment (used by training/metrics.py) picks one of several
// optimal assignments; MinCostAssignment must pick the same one so that per-rater matched
// scores agree too.
func TestMinCostAssignmentBreaksTiesLikeSciPy(t *testing.T) {
	python := requirePython(t, "numpy", "scipy")
	dir := t.TempDir()
	runPython(t, python, `
import sys, json, numpy as np
from scipy.optimize import linear_sum_assignment
rng = np.random.default_rng(5)
cases = []
for k in range(300):
    n = int(rng.integers(1, 6)); m = n + int(rng.integers(0, 6))
    c = rng.integers(0, 3, size=(n, m)).astype(float) * (-0.5)   # many ties, like Dice of empty masks
    if k % 3 == 0:
        c = np.round(-rng.random((n, m)), 1)
    rows, cols = linear_sum_assignment(c)
    cases.append({"cost": c.tolist(), "cols": cols.tolist()})
json.dump(cases, open(sys.argv[1] + "/lsap.json", "w"))
`, dir)
	raw, err := os.ReadFile(filepath.Join(dir, "lsap.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Cost [][]float64 `json:"cost"`
		Cols []int       `json:"cols"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	for k, c := range cases {
		got := MinCostAssignment(c.Cost)
		for i := range got {
			if got[i] != c.Cols[i] {
				t.Fatalf("case %d %v: Go %v, SciPy %v", k, c.Cost, got, c.Cols)
			}
		}
	}
}
