// Package modelspec is the one description of what a model bundle takes and how it is served:
// Input (the manifest's "input" object: shape, intensity mapping, tiling) and Serving (the
// manifest's "defaults": samples S, bank size K, threshold), each with the one set of rules that
// checks it.
//
// It is a leaf package (standard library only) because two packages that must not know each
// other share it: inference loads the manifest and validates it once at bundle load
// (inference.LoadBundle), dicomio cuts slices into model inputs by it (dicomio.PlanTiles, which
// re-checks a spec built by hand with the same Validate). inference knows no DICOM and dicomio
// knows no onnxruntime; neither has to convert the other's type.
package modelspec

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Intensity modes, tiling modes and regions of interest.
const (
	IntensityMinMax = "minmax" // (v-min)/(max-min) over Scope; a constant region maps to 0
	IntensityWindow = "window" // clip to Center +- Width/2, map to [0,1]
	IntensityScale  = "scale"  // v*Scale + Offset

	ScopeTile  = "tile"  // minmax statistics of each model input on its own (default)
	ScopeSlice = "slice" // minmax statistics of the whole slice

	TilingTile   = "tile"   // overlapping native-resolution tiles, blended back
	TilingResize = "resize" // the whole slice resampled to Height x Width and back

	ROIAll  = "all"  // every tile runs (the default)
	ROILung = "lung" // chest CT: only tiles placed on the lung (tile mode)
)

// Input says how a slice becomes the graph's `image` input (docs/model-bundle.md, "input").
type Input struct {
	Channels  int       `json:"channels"`
	Height    int       `json:"height"`
	Width     int       `json:"width"`
	Intensity Intensity `json:"intensity"`
	Tiling    Tiling    `json:"tiling"`
}

// Intensity maps modality values to model input values (input.intensity).
type Intensity struct {
	// Mode is IntensityMinMax, IntensityWindow or IntensityScale.
	Mode string `json:"mode"`
	// Scope of the minmax statistics: ScopeTile (default) or ScopeSlice.
	Scope string `json:"scope,omitempty"`
	// QuantizeLevels, when > 1, rounds the [0,1] result to that many levels (256 reproduces
	// training crops stored as 8-bit PNG: x = round(x*255)/255). Only for minmax and window.
	QuantizeLevels int     `json:"quantize_levels,omitempty"`
	Center         float64 `json:"center,omitempty"` // window
	Width          float64 `json:"width,omitempty"`  // window
	Scale          float64 `json:"scale,omitempty"`  // scale
	Offset         float64 `json:"offset,omitempty"` // scale

	// missing marks the keys a manifest must give for its mode but did not (a window centre of
	// 0 is a value, an absent one a mistake); set by UnmarshalJSON, reported by Validate. A bit
	// set, so that specs stay comparable.
	missing keySet
}

// keySet is a set of the optional intensity keys.
type keySet uint8

var intensityKeys = []string{"center", "width", "scale", "offset"}

func (k keySet) names() []string {
	var out []string
	for i, name := range intensityKeys {
		if k&(1<<i) != 0 {
			out = append(out, name)
		}
	}
	return out
}

// UnmarshalJSON decodes input.intensity and notes the keys its mode needs that are absent.
func (in *Intensity) UnmarshalJSON(b []byte) error {
	type plain Intensity
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	*in = Intensity(p)
	var need []string
	switch in.Mode {
	case IntensityWindow:
		need = []string{"center", "width"}
	case IntensityScale:
		need = []string{"scale", "offset"}
	}
	for _, k := range need {
		if _, ok := keys[k]; !ok {
			for i, name := range intensityKeys {
				if name == k {
					in.missing |= 1 << i
				}
			}
		}
	}
	return nil
}

// Tiling says how a slice larger or smaller than the graph input is covered (input.tiling).
type Tiling struct {
	// Mode is TilingTile or TilingResize.
	Mode string `json:"mode"`
	// Tile is [height, width]; it must equal the model's Height and Width (defaults to them).
	Tile [2]int `json:"tile,omitempty"`
	// Overlap in pixels between neighbouring tiles (tile mode), less than the tile size.
	Overlap int `json:"overlap,omitempty"`
	// ROI says which tiles run: ROIAll (default) or ROILung (tile mode).
	ROI string `json:"roi,omitempty"`
}

// UnmarshalJSON decodes input.tiling, refusing a tile that is not [height, width] (a Go array
// would silently drop extra elements).
func (t *Tiling) UnmarshalJSON(b []byte) error {
	var p struct {
		Mode    string `json:"mode"`
		Tile    []int  `json:"tile"`
		Overlap int    `json:"overlap"`
		ROI     string `json:"roi"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*t = Tiling{Mode: p.Mode, Overlap: p.Overlap, ROI: p.ROI}
	switch len(p.Tile) {
	case 0:
	case 2:
		t.Tile = [2]int{p.Tile[0], p.Tile[1]}
	default:
		return fmt.Errorf("tiling.tile %v: want [height, width]", p.Tile)
	}
	return nil
}

// Error lists every problem of a spec, each naming its manifest key.
type Error struct{ Problems []string }

func (e *Error) Error() string { return strings.Join(e.Problems, "; ") }

// Validate checks the spec and fills its defaults (scope tile, tile = model size, roi all). It
// reports every problem, not just the first, as an *Error.
func (s *Input) Validate() error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if s.Channels < 1 || s.Height < 1 || s.Width < 1 {
		bad("input channels/height/width must be positive, got %d/%d/%d", s.Channels, s.Height, s.Width)
	}
	in := &s.Intensity
	for _, k := range in.missing.names() {
		bad("intensity mode %s needs intensity.%s", in.Mode, k)
	}
	switch in.Mode {
	case IntensityMinMax:
		switch in.Scope {
		case "":
			in.Scope = ScopeTile
		case ScopeTile, ScopeSlice:
		default:
			bad("intensity.scope %q is not tile or slice", in.Scope)
		}
	case IntensityWindow:
		if !(in.Width > 0) {
			bad("intensity.width %v of a window must be positive", in.Width)
		}
	case IntensityScale:
		if in.Scale == 0 {
			bad("intensity.scale must not be 0")
		}
		if in.QuantizeLevels != 0 {
			bad("intensity.quantize_levels is only for minmax and window")
		}
	default:
		bad("unknown intensity.mode %q (minmax, window or scale)", in.Mode)
	}
	if q := in.QuantizeLevels; q != 0 && q < 2 {
		bad("intensity.quantize_levels %d must be 0 (off) or at least 2", q)
	}
	t := &s.Tiling
	switch t.Mode {
	case TilingTile:
		if t.Tile == [2]int{} {
			t.Tile = [2]int{s.Height, s.Width}
		}
		if t.Tile != [2]int{s.Height, s.Width} {
			bad("tiling.tile %v must equal the input [height, width] [%d, %d]", t.Tile, s.Height, s.Width)
		} else if t.Overlap < 0 || t.Overlap >= s.Height || t.Overlap >= s.Width {
			bad("tiling.overlap %d must be in [0, tile size)", t.Overlap)
		}
	case TilingResize:
	default:
		bad("unknown tiling.mode %q (tile or resize)", t.Mode)
	}
	switch t.ROI {
	case "":
		t.ROI = ROIAll
	case ROIAll:
	case ROILung:
		if t.Mode != TilingTile {
			bad("tiling.roi lung needs tiling.mode tile")
		}
	default:
		bad("unknown tiling.roi %q (all or lung)", t.ROI)
	}
	if len(problems) > 0 {
		return &Error{Problems: problems}
	}
	return nil
}

// Serving are the serving parameters: D-Persona's stage-I samples S, the stage-II bank size K
// and the mask threshold. A manifest's "defaults" are the ones the bundle was validated with.
type Serving struct {
	Samples   int     `json:"samples"`
	BankSize  int     `json:"bank_size"`
	Threshold float64 `json:"threshold"`
}

// Validate checks S and K are positive and the threshold is in (0, 1).
func (s Serving) Validate() error {
	var problems []string
	if s.Samples < 1 || s.BankSize < 1 {
		problems = append(problems, fmt.Sprintf("samples %d and bank_size %d must be positive", s.Samples, s.BankSize))
	}
	if !(s.Threshold > 0 && s.Threshold < 1) {
		problems = append(problems, fmt.Sprintf("threshold %v must be in (0, 1)", s.Threshold))
	}
	if len(problems) > 0 {
		return &Error{Problems: problems}
	}
	return nil
}

// Resolve is the one place where a request's S, K and threshold meet the bundle's: each
// non-zero field of override replaces the default, and the result is validated.
func (s Serving) Resolve(override Serving) (Serving, error) {
	if override.Samples != 0 {
		s.Samples = override.Samples
	}
	if override.BankSize != 0 {
		s.BankSize = override.BankSize
	}
	if override.Threshold != 0 {
		s.Threshold = override.Threshold
	}
	return s, s.Validate()
}
