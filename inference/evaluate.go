package inference

import (
	"context"
	"fmt"
	"sort"
)

// EvalSet is a multi-rater data set: Images uint8 [N,C,H,W] (0..255) and Masks uint8 [N,R,H,W]
// in {0,1}, as training/data.py reads it from an .npz.
type EvalSet struct {
	N, C, R, H, W int
	Images        []uint8
	Masks         []uint8
}

// LoadEvalNPZ reads `images` [N,H,W] or [N,C,H,W] and `masks` [N,R,H,W] (uint8) from an .npz.
func LoadEvalNPZ(path string) (*EvalSet, error) {
	arrays, err := ReadNPZ(path)
	if err != nil {
		return nil, err
	}
	img, ok1 := arrays["images"]
	msk, ok2 := arrays["masks"]
	if !ok1 || !ok2 {
		names := make([]string, 0, len(arrays))
		for k := range arrays {
			names = append(names, k)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%s: needs arrays 'images' and 'masks', has %v", path, names)
	}
	if img.Uint8 == nil || msk.Uint8 == nil {
		return nil, fmt.Errorf("%s: images and masks must be uint8, got %s and %s", path, img.DType, msk.DType)
	}
	s := &EvalSet{Images: img.Uint8, Masks: msk.Uint8}
	switch len(img.Shape) {
	case 3:
		s.N, s.C, s.H, s.W = img.Shape[0], 1, img.Shape[1], img.Shape[2]
	case 4:
		s.N, s.C, s.H, s.W = img.Shape[0], img.Shape[1], img.Shape[2], img.Shape[3]
	default:
		return nil, fmt.Errorf("%s: images must be [N,H,W] or [N,C,H,W], got %v", path, img.Shape)
	}
	if len(msk.Shape) != 4 || msk.Shape[0] != s.N || msk.Shape[2] != s.H || msk.Shape[3] != s.W {
		return nil, fmt.Errorf("%s: masks %v do not match images %v (want [N,R,H,W])", path, msk.Shape, img.Shape)
	}
	s.R = msk.Shape[1]
	for i, v := range s.Masks {
		if v > 1 {
			return nil, fmt.Errorf("%s: masks must be 0/1, found %d at index %d", path, v, i)
		}
	}
	return s, nil
}

// OrderRaters reorders each image's rater masks as training does: "as-is" keeps them, "area"
// sorts them by area, smallest first, stably (numpy argsort kind="stable").
func (s *EvalSet) OrderRaters(order string) error {
	switch order {
	case "as-is", "":
		return nil
	case "area":
	default:
		return fmt.Errorf("rater order must be 'area' or 'as-is', got %q", order)
	}
	hw := s.H * s.W
	tmp := make([]uint8, s.R*hw)
	for n := 0; n < s.N; n++ {
		block := s.Masks[n*s.R*hw : (n+1)*s.R*hw]
		area := make([]int, s.R)
		idx := make([]int, s.R)
		for r := 0; r < s.R; r++ {
			idx[r] = r
			for _, v := range block[r*hw : (r+1)*hw] {
				area[r] += int(v)
			}
		}
		sort.SliceStable(idx, func(a, b int) bool { return area[idx[a]] < area[idx[b]] })
		for r, src := range idx {
			copy(tmp[r*hw:(r+1)*hw], block[src*hw:(src+1)*hw])
		}
		copy(block, tmp)
	}
	return nil
}

// EvalOptions mirror `python3 -m training evaluate`.
type EvalOptions struct {
	Samples, BankSize int     // 0 = manifest defaults
	Seed              uint64  // torch generator seed (training's default 1337)
	BatchSize         int     // images per draw and graph run (training's default 16)
	Limit             int     // first N images only (0 = all)
	Threshold         float64 // 0 = manifest default
	Progress          func(done, total int)
}

// EvalReport is the JSON `dpersona eval --json` prints; Metrics has the keys of training's.
type EvalReport struct {
	Model    string         `json:"model"`
	Version  string         `json:"version"`
	Data     string         `json:"data"`
	Device   string         `json:"device"`
	Samples  int            `json:"samples"`
	BankSize int            `json:"bank_size"`
	Seed     uint64         `json:"seed"`
	Noise    string         `json:"noise"`
	Metrics  map[string]any `json:"metrics"`
}

// Evaluate runs the served engine on a data set and computes training's metrics. The noise is
// drawn exactly as training/evaluate.py draws it (torch.randn from a generator seeded with Seed,
// per batch of BatchSize images: eps_samples [n,S,L] then eps_bank [n,K,L]), so the two
// evaluations of the same model differ only by onnxruntime-vs-PyTorch arithmetic. Images are
// mapped as training maps them (uint8 / 255), rater masks ordered by the manifest's rater_order.
func Evaluate(ctx context.Context, e *Engine, set *EvalSet, opts EvalOptions) (*EvalReport, error) {
	m := e.Bundle().Manifest
	model := e.Bundle().Label()
	if set.C != m.Input.Channels || set.H != m.Input.Height || set.W != m.Input.Width {
		return nil, &BundleError{Model: model, Err: fmt.Errorf("data images are [%d,%d,%d] per image, the model takes [%d,%d,%d] (wrong channels or shape)", set.C, set.H, set.W, m.Input.Channels, m.Input.Height, m.Input.Width)}
	}
	if set.R != len(m.Raters) {
		return nil, &BundleError{Model: model, Err: fmt.Errorf("data has %d raters, the model %d", set.R, len(m.Raters))}
	}
	if err := set.OrderRaters(m.RaterOrder); err != nil {
		return nil, &BundleError{Model: model, Err: err}
	}
	serving, err := m.Defaults.Resolve(Defaults{Samples: opts.Samples, BankSize: opts.BankSize, Threshold: opts.Threshold})
	if err != nil {
		return nil, &BundleError{Model: model, Err: err}
	}
	S, K, thr := serving.Samples, serving.BankSize, serving.Threshold
	batch := opts.BatchSize
	if batch <= 0 {
		batch = 16
	}
	n := set.N
	if opts.Limit > 0 && opts.Limit < n {
		n = opts.Limit
	}
	L := m.LatentSize
	gen := NewTorchRandn(opts.Seed)
	acc := NewMetricAccumulator(set.R, thr)
	chw, hw := set.C*set.H*set.W, set.H*set.W
	for start := 0; start < n; start += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := min(batch, n-start)
		img := make([]float32, b*chw)
		for i, v := range set.Images[start*chw : (start+b)*chw] {
			img[i] = float32(v) / 255
		}
		epsS, err := gen.Randn(b * S * L)
		if err != nil {
			return nil, err
		}
		epsB, err := gen.Randn(b * K * L)
		if err != nil {
			return nil, err
		}
		sp, rp, err := e.Run(ctx, img, b, epsS, S, epsB, K)
		if err != nil {
			return nil, err
		}
		for j := 0; j < b; j++ {
			idx := start + j
			out := ImageOutputs{
				Raters:      splitMaps(set.Masks[idx*set.R*hw:(idx+1)*set.R*hw], set.R),
				SampleProbs: splitMaps(sp[j*S*hw:(j+1)*S*hw], S),
				RaterProbs:  splitMaps(rp[j*set.R*hw:(j+1)*set.R*hw], set.R),
			}
			if err := acc.Add(out); err != nil {
				return nil, fmt.Errorf("image %d: %w", idx, err)
			}
		}
		if opts.Progress != nil {
			opts.Progress(start+b, n)
		}
	}
	return &EvalReport{Model: m.Name, Version: m.Version, Device: e.Device(), Samples: S, BankSize: K,
		Seed: opts.Seed, Noise: "torch.randn (training/evaluate.py)", Metrics: acc.Result()}, nil
}

func splitMaps[T uint8 | float32](v []T, k int) [][]T {
	n := len(v) / k
	out := make([][]T, k)
	for i := range out {
		out[i] = v[i*n : (i+1)*n]
	}
	return out
}
