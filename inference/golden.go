package inference

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// Golden is golden/golden.json: parity cases whose expected outputs are PyTorch's.
type Golden struct {
	Tolerance float64      `json:"tolerance"`
	Cases     []GoldenCase `json:"cases"`
}

// GoldenCase is one set of graph inputs with the outputs training computed for them.
type GoldenCase struct {
	Name    string                 `json:"name"`
	Inputs  map[string]GoldenArray `json:"inputs"`
	Outputs map[string]GoldenArray `json:"outputs"`
}

// GoldenArray names a raw little-endian float32 file and its shape.
type GoldenArray struct {
	Shape []int  `json:"shape"`
	File  string `json:"file"`
}

// CaseResult is the outcome of one golden case.
type CaseResult struct {
	Name       string             `json:"name"`
	MaxAbsDiff map[string]float64 `json:"max_abs_diff"`
	Pass       bool               `json:"pass"`
}

// VerifyReport is the outcome of VerifyGolden.
type VerifyReport struct {
	Model     string       `json:"model"`
	Version   string       `json:"version"`
	Device    string       `json:"device"`
	Tolerance float64      `json:"tolerance"`
	Cases     []CaseResult `json:"cases"`
	Pass      bool         `json:"pass"`
}

// DefaultGoldenTolerance applies when golden.json names none.
const DefaultGoldenTolerance = 1e-4

// LoadGolden reads the bundle's golden vectors.
func (b *Bundle) LoadGolden() (*Golden, error) {
	if b.Manifest.Golden == "" {
		return nil, &BundleError{Model: b.Label(), Err: fmt.Errorf("manifest names no golden vectors")}
	}
	p := filepath.Join(b.Dir, filepath.FromSlash(b.Manifest.Golden))
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, &BundleError{Model: b.Label(), Err: fmt.Errorf("golden vectors: %w", err)}
	}
	var g Golden
	if err := json.Unmarshal(raw, &g); err != nil {
		return nil, &BundleError{Model: b.Label(), Err: fmt.Errorf("golden vectors %s: %w", b.Manifest.Golden, err)}
	}
	if len(g.Cases) == 0 {
		return nil, &BundleError{Model: b.Label(), Err: fmt.Errorf("golden vectors %s hold no cases", b.Manifest.Golden)}
	}
	if g.Tolerance <= 0 {
		g.Tolerance = DefaultGoldenTolerance
	}
	return &g, nil
}

func (b *Bundle) readGoldenArray(a GoldenArray) ([]float32, error) {
	if !localPath(a.File) {
		return nil, fmt.Errorf("golden file %q is not a path inside golden/", a.File)
	}
	rel := filepath.ToSlash(filepath.Join(filepath.Dir(filepath.FromSlash(b.Manifest.Golden)), filepath.FromSlash(a.File)))
	if _, listed := b.Manifest.Files[rel]; !listed {
		return nil, fmt.Errorf("golden file %s has no checksum in the manifest", rel)
	}
	raw, err := os.ReadFile(filepath.Join(b.Dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	if len(raw) != 4*n {
		return nil, fmt.Errorf("golden file %s has %d bytes, shape %v needs %d", rel, len(raw), a.Shape, 4*n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, nil
}

// VerifyGolden runs every golden case through the engine and compares the probabilities with
// training's within the golden tolerance. The report is returned even when a case fails; the
// error is non-nil when any case fails or cannot run.
func VerifyGolden(ctx context.Context, e *Engine) (*VerifyReport, error) {
	b := e.Bundle()
	g, err := b.LoadGolden()
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{Model: b.Manifest.Name, Version: b.Manifest.Version, Device: e.Device(), Tolerance: g.Tolerance, Pass: true}
	for _, c := range g.Cases {
		res, err := e.verifyCase(ctx, c, g.Tolerance)
		if err != nil {
			return rep, &BundleError{Model: b.Label(), Err: fmt.Errorf("golden case %s: %w", c.Name, err)}
		}
		rep.Cases = append(rep.Cases, res)
		rep.Pass = rep.Pass && res.Pass
	}
	if !rep.Pass {
		return rep, &BundleError{Model: b.Label(), Err: fmt.Errorf("golden vectors differ from training by more than %g", g.Tolerance)}
	}
	return rep, nil
}

func (e *Engine) verifyCase(ctx context.Context, c GoldenCase, tol float64) (CaseResult, error) {
	b := e.Bundle()
	in := map[string][]float32{}
	for _, name := range []string{InputImage, InputEpsSamples, InputEpsBank} {
		a, ok := c.Inputs[name]
		if !ok {
			return CaseResult{}, fmt.Errorf("input %s is missing", name)
		}
		v, err := b.readGoldenArray(a)
		if err != nil {
			return CaseResult{}, err
		}
		in[name] = v
	}
	img, eps, bank := c.Inputs[InputImage], c.Inputs[InputEpsSamples], c.Inputs[InputEpsBank]
	if len(img.Shape) != 4 || len(eps.Shape) != 3 || len(bank.Shape) != 3 {
		return CaseResult{}, fmt.Errorf("input shapes %v %v %v are not [N,C,H,W] [N,S,L] [N,K,L]", img.Shape, eps.Shape, bank.Shape)
	}
	sp, rp, err := e.Run(ctx, in[InputImage], img.Shape[0], in[InputEpsSamples], eps.Shape[1], in[InputEpsBank], bank.Shape[1])
	if err != nil {
		return CaseResult{}, err
	}
	res := CaseResult{Name: c.Name, MaxAbsDiff: map[string]float64{}, Pass: true}
	for name, got := range map[string][]float32{OutputSampleProb: sp, OutputRaterProb: rp} {
		a, ok := c.Outputs[name]
		if !ok {
			return CaseResult{}, fmt.Errorf("expected output %s is missing", name)
		}
		want, err := b.readGoldenArray(a)
		if err != nil {
			return CaseResult{}, err
		}
		if len(want) != len(got) {
			return CaseResult{}, fmt.Errorf("output %s: engine gave %d values, golden has %d (shape %v)", name, len(got), len(want), a.Shape)
		}
		var worst float64
		for i := range want {
			worst = max(worst, math.Abs(float64(got[i])-float64(want[i])))
		}
		res.MaxAbsDiff[name] = worst
		if !(worst <= tol) {
			res.Pass = false
		}
	}
	return res, nil
}
