package inference

import (
	"math"
	"testing"
)

// Values printed by PyTorch 1.13 (Debian python3-torch) for
//
//	g = torch.Generator().manual_seed(1337)
//	a = torch.randn(16, 10, 6, generator=g); b = torch.randn(16, 100, 6, generator=g)
//	c = torch.randn(3, 7, generator=g)   # 21 values: exercises the redrawn tail
//
// first five and last three values of each.
func TestTorchRandnMatchesPyTorch(t *testing.T) {
	want := []struct {
		n           int
		first, last []float64
	}{
		{960, []float64{0.180771589, -0.0699880943, -0.359623492, -0.915204465, 0.625765324}, []float64{1.93588388, 2.03498268, 2.01868773}},
		{9600, []float64{0.0323395096, -0.633720756, 0.293805242, 1.79849279, -0.363822639}, []float64{0.381756783, -0.456386238, 0.56752038}},
		{21, []float64{3.30572271, -1.92918098, 0.346765727, 1.22247946, 0.76155293}, []float64{0.70506984, 2.24316835, 0.862758875}},
	}
	g := NewTorchRandn(1337)
	for k, w := range want {
		got, err := g.Randn(w.n)
		if err != nil {
			t.Fatal(err)
		}
		check := func(i int, exp float64) {
			if math.Abs(float64(got[i])-exp) > 2e-6*max(1, math.Abs(exp)) {
				t.Errorf("draw %d value %d = %.9g, PyTorch gives %.9g", k, i, got[i], exp)
			}
		}
		for i, e := range w.first {
			check(i, e)
		}
		for i, e := range w.last {
			check(w.n-len(w.last)+i, e)
		}
	}
	if _, err := g.Randn(15); err == nil {
		t.Error("a draw of fewer than 16 values must be refused (PyTorch uses another path)")
	}
}
