package modelspec

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const lidcInput = `{"channels": 1, "height": 128, "width": 128,
	"intensity": {"mode": "minmax", "scope": "tile", "quantize_levels": 256},
	"tiling": {"mode": "tile", "tile": [128, 128], "overlap": 32, "roi": "lung"}}`

func decode(t *testing.T, s string) Input {
	t.Helper()
	var in Input
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		t.Fatal(err)
	}
	return in
}

func TestValidateFillsDefaults(t *testing.T) {
	in := decode(t, `{"channels": 1, "height": 64, "width": 48, "intensity": {"mode": "minmax"}, "tiling": {"mode": "tile"}}`)
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	if in.Intensity.Scope != ScopeTile || in.Tiling.Tile != [2]int{64, 48} || in.Tiling.ROI != ROIAll {
		t.Fatalf("defaults not filled: %+v", in)
	}
	good := decode(t, lidcInput)
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	again := good
	if err := again.Validate(); err != nil || again != good {
		t.Fatalf("validating twice changed the spec or failed: %v", err)
	}
}

// TestValidateRefuses: every rule names its manifest key, and all problems are reported at once.
func TestValidateRefuses(t *testing.T) {
	cases := map[string]struct {
		json, want string
	}{
		"channels":       {`{"channels": 0, "height": 8, "width": 8, "intensity": {"mode": "minmax"}, "tiling": {"mode": "resize"}}`, "channels/height/width"},
		"mode":           {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "zscore"}, "tiling": {"mode": "resize"}}`, `intensity.mode "zscore"`},
		"scope":          {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "minmax", "scope": "volume"}, "tiling": {"mode": "resize"}}`, `intensity.scope "volume"`},
		"quantize":       {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "minmax", "quantize_levels": 1}, "tiling": {"mode": "resize"}}`, "quantize_levels 1"},
		"window centre":  {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "window", "width": 400}, "tiling": {"mode": "resize"}}`, "needs intensity.center"},
		"window width":   {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "window", "center": 0, "width": 0}, "tiling": {"mode": "resize"}}`, "intensity.width 0"},
		"scale offset":   {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "scale", "scale": 1}, "tiling": {"mode": "resize"}}`, "needs intensity.offset"},
		"scale quantize": {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "scale", "scale": 1, "offset": 0, "quantize_levels": 256}, "tiling": {"mode": "resize"}}`, "only for minmax and window"},
		"tiling mode":    {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "minmax"}, "tiling": {"mode": "sliding"}}`, `tiling.mode "sliding"`},
		"tile size":      {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "minmax"}, "tiling": {"mode": "tile", "tile": [4, 4]}}`, "tiling.tile [4 4]"},
		"overlap":        {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "minmax"}, "tiling": {"mode": "tile", "overlap": 8}}`, "tiling.overlap 8"},
		"roi":            {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "minmax"}, "tiling": {"mode": "tile", "roi": "liver"}}`, `tiling.roi "liver"`},
		"roi resize":     {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "minmax"}, "tiling": {"mode": "resize", "roi": "lung"}}`, "roi lung needs tiling.mode tile"},
		"two at once":    {`{"channels": 1, "height": 8, "width": 8, "intensity": {"mode": "zscore"}, "tiling": {"mode": "sliding"}}`, `intensity.mode "zscore" (minmax, window or scale); unknown tiling.mode "sliding"`},
	}
	for name, c := range cases {
		in := decode(t, c.json)
		err := in.Validate()
		var se *Error
		if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an *Error containing %q", name, err, c.want)
		}
	}
	// A window built in Go with centre 0 is a value, not a missing key.
	in := Input{Channels: 1, Height: 8, Width: 8, Intensity: Intensity{Mode: IntensityWindow, Width: 400}, Tiling: Tiling{Mode: TilingResize}}
	if err := in.Validate(); err != nil {
		t.Errorf("window centred on 0: %v", err)
	}
	var bad Input
	if err := json.Unmarshal([]byte(`{"tiling": {"mode": "tile", "tile": [8, 8, 8]}}`), &bad); err == nil || !strings.Contains(err.Error(), "[height, width]") {
		t.Errorf("a tile of three sizes: %v", err)
	}
}

// TestServingResolve: non-zero overrides win, the result is validated, the defaults stay.
func TestServingResolve(t *testing.T) {
	def := Serving{Samples: 10, BankSize: 100, Threshold: 0.5}
	if got, err := def.Resolve(Serving{}); err != nil || got != def {
		t.Fatalf("no override: %+v, %v", got, err)
	}
	if got, err := def.Resolve(Serving{Samples: 4, Threshold: 0.3}); err != nil || got != (Serving{Samples: 4, BankSize: 100, Threshold: 0.3}) {
		t.Fatalf("override: %+v, %v", got, err)
	}
	for _, o := range []Serving{{Threshold: 1}, {Threshold: -0.2}, {Samples: -1}, {BankSize: -3}} {
		if _, err := def.Resolve(o); err == nil {
			t.Errorf("override %+v accepted", o)
		}
	}
	if err := (Serving{Samples: 1, BankSize: 1, Threshold: 0}).Validate(); err == nil || !strings.Contains(err.Error(), "threshold 0 must be in (0, 1)") {
		t.Errorf("threshold 0: %v", err)
	}
}
