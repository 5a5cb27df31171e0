package dicomio

import (
	"fmt"
	"math"

	"dpersona/internal/modelspec"
)

// The model-input description is modelspec's, the same type inference loads from the manifest
// (and validates at bundle load): dicomio consumes it without knowing about bundles.
type (
	// InputSpec is the manifest's `input` object (modelspec.Input).
	InputSpec = modelspec.Input
	// IntensitySpec maps modality values to model input (modelspec.Intensity).
	IntensitySpec = modelspec.Intensity
	// TilingSpec says how a slice becomes fixed-size model inputs (modelspec.Tiling).
	TilingSpec = modelspec.Tiling
)

// validateSpec checks a spec with modelspec's rules (filling its defaults) and reports a problem
// as ErrInvalidSpec.
func validateSpec(s *InputSpec) error {
	if err := s.Validate(); err != nil {
		return newErr(ErrInvalidSpec, "", "", "%v", err)
	}
	return nil
}

// Tile is a region of the source slice. In tile mode a region smaller than the model input
// (a slice smaller than one tile) sits at the input's top-left and is padded by repeating its
// edge pixels. In resize mode the one tile is the whole slice.
type Tile struct{ Y, X, H, W int }

// TilePlan maps one slice geometry to model inputs and back. It is safe for concurrent use.
type TilePlan struct {
	Spec       InputSpec
	Rows, Cols int
	Tiles      []Tile
	// Invert flips the mapped [0,1] input (x -> 1-x) in minmax and window modes, so a
	// MONOCHROME1 image reaches the model as it is displayed (dark = low). PlanTilesForSeries
	// sets it from the series; scale mode ignores it.
	Invert bool
	// weightY and weightX are every tile's blend weights along y and x: all tiles of a plan have
	// the same size, so they share one ramp per axis.
	weightY, weightX []float32
}

// PlanTiles validates spec and lays tiles over a rows x cols slice: tiles start every
// (tile - overlap) pixels and the last one is aligned with the far edge, so every source pixel
// is covered and no tile reaches outside the slice unless the slice is smaller than a tile.
func PlanTiles(spec InputSpec, rows, cols int) (*TilePlan, error) {
	if err := validateSpec(&spec); err != nil {
		return nil, err
	}
	if rows < 1 || cols < 1 {
		return nil, newErr(ErrInvalidSpec, "", "rows/cols", "%dx%d slice", rows, cols)
	}
	p := &TilePlan{Spec: spec, Rows: rows, Cols: cols}
	if spec.Tiling.Mode == "resize" {
		p.Tiles = []Tile{{0, 0, rows, cols}}
		return p, nil
	}
	ys := axisStarts(rows, spec.Height, spec.Tiling.Overlap)
	xs := axisStarts(cols, spec.Width, spec.Tiling.Overlap)
	p.weightY = rampWeights(min(spec.Height, rows), spec.Tiling.Overlap)
	p.weightX = rampWeights(min(spec.Width, cols), spec.Tiling.Overlap)
	for _, y := range ys {
		for _, x := range xs {
			p.Tiles = append(p.Tiles, Tile{Y: y, X: x, H: min(spec.Height, rows), W: min(spec.Width, cols)})
		}
	}
	return p, nil
}

// PlanTilesForSeries is PlanTiles for the slices of s, inverting MONOCHROME1 images.
func PlanTilesForSeries(spec InputSpec, s *Series) (*TilePlan, error) {
	p, err := PlanTiles(spec, s.Rows, s.Cols)
	if err != nil {
		return nil, err
	}
	p.Invert = s.PhotometricInterpretation == "MONOCHROME1"
	return p, nil
}

func axisStarts(n, t, overlap int) []int {
	if n <= t {
		return []int{0}
	}
	stride := t - overlap
	var out []int
	for s := 0; s+t < n; s += stride {
		out = append(out, s)
	}
	return append(out, n-t)
}

// rampWeights gives blend weights that rise linearly over the overlap at both ends of a tile
// and are 1 in the middle: in an overlap the two tiles cross-fade, so no seam appears where
// one tile's border (where the model sees least context) meets the other's interior.
func rampWeights(n, overlap int) []float32 {
	w := make([]float32, n)
	for i := range w {
		d := min(i, n-1-i) + 1
		v := float32(d) / float32(overlap+1)
		if v > 1 || overlap == 0 {
			v = 1
		}
		w[i] = v
	}
	return w
}

// InputSize is the number of float32 values of one model input: Channels*Height*Width.
func (p *TilePlan) InputSize() int { return p.Spec.Channels * p.Spec.Height * p.Spec.Width }

// ExtractTiles maps one slice (Rows*Cols modality values, row-major) to the model input batch
// [len(Tiles), Channels, Height, Width]; a single-channel slice is repeated into every channel.
func (p *TilePlan) ExtractTiles(pixels []float32) ([]float32, error) {
	if len(pixels) != p.Rows*p.Cols {
		return nil, newErr(ErrInvalidSpec, "", "pixels", "%d values for a %dx%d slice", len(pixels), p.Rows, p.Cols)
	}
	H, W := p.Spec.Height, p.Spec.Width
	plane := H * W
	out := make([]float32, len(p.Tiles)*p.InputSize())
	var sliceLo, sliceHi float32
	if p.Spec.Intensity.Mode == "minmax" && (p.Spec.Intensity.Scope == "slice" || p.Spec.Tiling.Mode == "resize") {
		sliceLo, sliceHi = minMax(pixels)
	}
	for ti, t := range p.Tiles {
		dst := out[ti*p.InputSize() : ti*p.InputSize()+plane]
		if p.Spec.Tiling.Mode == "resize" {
			resizeBilinear(pixels, p.Rows, p.Cols, dst, H, W)
		} else {
			for y := 0; y < H; y++ {
				sy := t.Y + min(y, t.H-1)
				row := pixels[sy*p.Cols+t.X : sy*p.Cols+t.X+t.W]
				d := dst[y*W : (y+1)*W]
				copy(d, row)
				for x := t.W; x < W; x++ { // edge padding of a slice narrower than a tile
					d[x] = row[t.W-1]
				}
			}
		}
		lo, hi := sliceLo, sliceHi
		if p.Spec.Intensity.Mode == "minmax" && p.Spec.Intensity.Scope == "tile" && p.Spec.Tiling.Mode == "tile" {
			// Statistics over the tile's source pixels only, not the edge padding (the same set).
			lo, hi = minMax(dst)
		}
		p.mapIntensity(dst, lo, hi)
		for c := 1; c < p.Spec.Channels; c++ {
			copy(out[ti*p.InputSize()+c*plane:], dst)
		}
	}
	return out, nil
}

func minMax(v []float32) (float32, float32) {
	lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
	for _, x := range v {
		if x < lo {
			lo = x
		}
		if x > hi {
			hi = x
		}
	}
	return lo, hi
}

func (p *TilePlan) mapIntensity(v []float32, lo, hi float32) {
	is := p.Spec.Intensity
	switch is.Mode {
	case "minmax":
		r := float64(hi) - float64(lo)
		if r <= 0 {
			for i := range v {
				v[i] = 0
			}
			break
		}
		lo64, inv := float64(lo), 1/r
		for i, x := range v {
			v[i] = float32((float64(x) - lo64) * inv)
		}
	case "window":
		wlo := is.Center - is.Width/2
		for i, x := range v {
			f := (float64(x) - wlo) / is.Width
			v[i] = float32(math.Min(1, math.Max(0, f)))
		}
	case "scale":
		for i, x := range v {
			v[i] = float32(float64(x)*is.Scale + is.Offset)
		}
	}
	if p.Invert && is.Mode != "scale" {
		for i, x := range v {
			v[i] = 1 - x
		}
	}
	if q := is.QuantizeLevels; q > 1 {
		m := float64(q - 1)
		inv := 1 / m
		for i, x := range v {
			v[i] = float32(math.RoundToEven(float64(x)*m) * inv)
		}
	}
}

// Blender accumulates per-tile model outputs back onto the source grid. Not safe for
// concurrent Add calls.
type Blender struct {
	plan   *TilePlan
	maps   int
	sum    [][]float32
	weight []float32
	added  []bool
}

// NewBlender starts blending `maps` output maps per tile (e.g. the samples or rater heads).
func (p *TilePlan) NewBlender(maps int) *Blender {
	b := &Blender{plan: p, maps: maps, sum: make([][]float32, maps), added: make([]bool, len(p.Tiles))}
	for m := range b.sum {
		b.sum[m] = make([]float32, p.Rows*p.Cols)
	}
	if p.Spec.Tiling.Mode == "tile" {
		b.weight = make([]float32, p.Rows*p.Cols)
	}
	return b
}

// Add blends one tile's outputs, laid out [maps, Height, Width].
func (b *Blender) Add(tile int, out []float32) error {
	p := b.plan
	H, W := p.Spec.Height, p.Spec.Width
	if tile < 0 || tile >= len(p.Tiles) {
		return newErr(ErrInvalidSpec, "", "tile", "index %d of %d tiles", tile, len(p.Tiles))
	}
	if len(out) != b.maps*H*W {
		return newErr(ErrInvalidSpec, "", "output", "%d values for %d maps of %dx%d", len(out), b.maps, H, W)
	}
	if b.added[tile] {
		return newErr(ErrInvalidSpec, "", "tile", "tile %d added twice", tile)
	}
	b.added[tile] = true
	if p.Spec.Tiling.Mode == "resize" {
		for m := 0; m < b.maps; m++ {
			resizeBilinear(out[m*H*W:(m+1)*H*W], H, W, b.sum[m], p.Rows, p.Cols)
		}
		return nil
	}
	t := p.Tiles[tile]
	wy, wx := p.weightY, p.weightX
	rowW := make([]float32, t.W)
	for y := 0; y < t.H; y++ {
		d0 := (t.Y+y)*p.Cols + t.X
		for x := range rowW {
			rowW[x] = wy[y] * wx[x]
		}
		ws := b.weight[d0 : d0+t.W]
		for x, w := range rowW {
			ws[x] += w
		}
		for m := 0; m < b.maps; m++ {
			dst := b.sum[m][d0 : d0+t.W]
			src := out[m*H*W+y*W : m*H*W+y*W+t.W]
			for x, w := range rowW {
				dst[x] += w * src[x]
			}
		}
	}
	return nil
}

// AddBatch blends outputs [n, maps, Height, Width] of tiles first .. first+n-1.
func (b *Blender) AddBatch(first int, out []float32) error {
	per := b.maps * b.plan.Spec.Height * b.plan.Spec.Width
	if per == 0 || len(out)%per != 0 {
		return newErr(ErrInvalidSpec, "", "output", "%d values is not a multiple of %d", len(out), per)
	}
	for i := 0; i < len(out)/per; i++ {
		if err := b.Add(first+i, out[i*per:(i+1)*per]); err != nil {
			return err
		}
	}
	return nil
}

// Result returns the blended maps, each Rows*Cols on the source grid. Every tile must have
// been added.
func (b *Blender) Result() ([][]float32, error) {
	for i, ok := range b.added {
		if !ok {
			return nil, newErr(ErrInvalidSpec, "", "tile", "tile %d of %d was not added", i, len(b.added))
		}
	}
	if b.weight != nil {
		inv := make([]float32, len(b.weight))
		for i, w := range b.weight {
			if w > 0 { // 0: no tile covers the pixel (a plan restricted to a region of interest)
				inv[i] = 1 / w
			}
		}
		for m := range b.sum {
			s := b.sum[m]
			for i, w := range inv {
				s[i] *= w
			}
		}
		b.weight = nil // normalise once
	}
	return b.sum, nil
}

// Blend is the one-call form: outputs [len(Tiles), maps, Height, Width] -> maps x Rows*Cols.
func (p *TilePlan) Blend(outputs []float32, maps int) ([][]float32, error) {
	if len(outputs) != len(p.Tiles)*maps*p.Spec.Height*p.Spec.Width {
		return nil, newErr(ErrInvalidSpec, "", "output", "%d values for %d tiles x %d maps of %dx%d", len(outputs), len(p.Tiles), maps, p.Spec.Height, p.Spec.Width)
	}
	b := p.NewBlender(maps)
	if err := b.AddBatch(0, outputs); err != nil {
		return nil, err
	}
	return b.Result()
}

// resizeBilinear resamples src (sh x sw) to dst (dh x dw) with half-pixel centres and clamped
// edges (PyTorch's interpolate(mode="bilinear", align_corners=False) without antialiasing).
func resizeBilinear(src []float32, sh, sw int, dst []float32, dh, dw int) {
	if sh == dh && sw == dw {
		copy(dst, src)
		return
	}
	type tap struct {
		i0, i1 int
		f      float32
	}
	taps := func(n, m int) []tap {
		out := make([]tap, m)
		scale := float64(n) / float64(m)
		for i := range out {
			s := (float64(i)+0.5)*scale - 0.5
			if s < 0 {
				s = 0
			}
			i0 := int(s)
			if i0 > n-1 {
				i0 = n - 1
			}
			i1 := min(i0+1, n-1)
			out[i] = tap{i0, i1, float32(s - float64(i0))}
		}
		return out
	}
	ty, tx := taps(sh, dh), taps(sw, dw)
	for y, a := range ty {
		r0, r1 := src[a.i0*sw:], src[a.i1*sw:]
		for x, b := range tx {
			top := r0[b.i0]*(1-b.f) + r0[b.i1]*b.f
			bot := r1[b.i0]*(1-b.f) + r1[b.i1]*b.f
			dst[y*dw+x] = top*(1-a.f) + bot*a.f
		}
	}
}

// String describes a plan for logs.
func (p *TilePlan) String() string {
	return fmt.Sprintf("%s %dx%d -> %d inputs of %dx%dx%d", p.Spec.Tiling.Mode, p.Rows, p.Cols, len(p.Tiles), p.Spec.Channels, p.Spec.Height, p.Spec.Width)
}
