package inference

import (
	"fmt"
	"math"
)

// TorchRandn reproduces torch.randn on the CPU with a torch.Generator seeded by manual_seed, so
// that `dpersona eval` can feed the graph the very noise `python3 -m training evaluate` draws and
// the two evaluations differ only by onnxruntime-vs-PyTorch arithmetic, not by sampling.
//
// What it mirrors (PyTorch's CPU generator and its normal kernel for contiguous float32 tensors of
// at least 16 values): an MT19937 stream; every value first gets a 24-bit uniform
// u = (word & (2^24-1)) / 2^24; then each block of 16 becomes 8 Box-Muller pairs,
// x[j] = sqrt(-2 ln(1-u[j])) cos(2 pi u[j+8]), x[j+8] = the same radius times sin; when the size
// is not a multiple of 16, the last 16 values are drawn afresh and transformed again.
// PyTorch evaluates in float32 (AVX2 or scalar); this evaluates in float64 and rounds, which
// agrees to about 1e-6.
type TorchRandn struct {
	mt [624]uint32
	i  int
}

// NewTorchRandn seeds like torch.Generator().manual_seed(seed).
func NewTorchRandn(seed uint64) *TorchRandn {
	g := &TorchRandn{}
	g.mt[0] = uint32(seed)
	for i := 1; i < 624; i++ {
		prev := g.mt[i-1]
		g.mt[i] = 1812433253*(prev^(prev>>30)) + uint32(i)
	}
	g.i = 624
	return g
}

func (g *TorchRandn) next() uint32 {
	if g.i >= 624 {
		for k := 0; k < 624; k++ {
			y := (g.mt[k] & 0x80000000) | (g.mt[(k+1)%624] & 0x7fffffff)
			v := g.mt[(k+397)%624] ^ (y >> 1)
			if y&1 != 0 {
				v ^= 0x9908b0df
			}
			g.mt[k] = v
		}
		g.i = 0
	}
	y := g.mt[g.i]
	g.i++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

func (g *TorchRandn) uniform24() float32 {
	return float32(float64(g.next()&(1<<24-1)) / (1 << 24))
}

// Randn returns n standard normal values, as torch.randn(n) (any shape of n elements) would.
func (g *TorchRandn) Randn(n int) ([]float32, error) {
	if n < 16 {
		return nil, fmt.Errorf("torch-compatible noise needs at least 16 values per draw, got %d", n)
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = g.uniform24()
	}
	for i := 0; i+16 <= n; i += 16 {
		boxMuller16(data[i : i+16])
	}
	if n%16 != 0 {
		tail := data[n-16:]
		for i := range tail {
			tail[i] = g.uniform24()
		}
		boxMuller16(tail)
	}
	return data, nil
}

func boxMuller16(d []float32) {
	for j := 0; j < 8; j++ {
		u1 := 1 - float64(d[j])
		u2 := float64(d[j+8])
		r := math.Sqrt(-2 * math.Log(u1))
		theta := 2 * math.Pi * u2
		d[j] = float32(r * math.Cos(theta))
		d[j+8] = float32(r * math.Sin(theta))
	}
}
