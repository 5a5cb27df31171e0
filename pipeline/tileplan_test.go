package pipeline

import (
	"testing"

	"dpersona/dicomio"
)

func TestTilePlanInvertsOnlyUncalibratedMonochrome1(t *testing.T) {
	spec := dicomio.InputSpec{Channels: 1, Height: 128, Width: 128,
		Intensity: dicomio.IntensitySpec{Mode: "minmax", Scope: "tile"},
		Tiling:    dicomio.TilingSpec{Mode: "tile", Overlap: 32}}
	cases := []struct {
		modality, photometric string
		invert                bool
	}{
		{"CT", "MONOCHROME2", false},
		{"CT", "MONOCHROME1", false},
		{"MR", "MONOCHROME2", false},
		{"MR", "MONOCHROME1", true},
		{"CR", "MONOCHROME1", true},
	}
	for _, c := range cases {
		s := &dicomio.Series{Rows: 256, Cols: 256, Modality: c.modality, PhotometricInterpretation: c.photometric}
		plan, err := tilePlan(spec, s)
		if err != nil {
			t.Fatalf("%s %s: %v", c.modality, c.photometric, err)
		}
		if plan.Invert != c.invert {
			t.Errorf("%s %s: invert = %v, want %v", c.modality, c.photometric, plan.Invert, c.invert)
		}
	}
}
