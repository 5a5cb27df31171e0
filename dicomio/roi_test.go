package dicomio

import (
	"errors"
	"testing"
)

// phantom draws a 512x512 axial CT slice at 0.7 mm: air outside, a soft-tissue body (40 HU) and,
// per lung, an ellipse of parenchyma (-850 HU) given as centre and radii in pixels.
func phantom(lungs ...[4]float64) []float32 {
	const n = 512
	px := make([]float32, n*n)
	inEllipse := func(y, x int, e [4]float64) bool {
		dy, dx := (float64(y)-e[0])/e[2], (float64(x)-e[1])/e[3]
		return dy*dy+dx*dx <= 1
	}
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			v := float32(-1000)
			if inEllipse(y, x, [4]float64{256, 256, 170, 230}) {
				v = 40
				for _, l := range lungs {
					if inEllipse(y, x, l) {
						v = -850
					}
				}
			}
			px[y*n+x] = v
		}
	}
	return px
}

var chestSpacing = [2]float64{0.703125, 0.703125}

// covered marks the pixels that some tile of p covers.
func covered(p *TilePlan) []bool {
	c := make([]bool, p.Rows*p.Cols)
	for _, t := range p.Tiles {
		for y := t.Y; y < t.Y+t.H; y++ {
			for x := t.X; x < t.X+t.W; x++ {
				c[y*p.Cols+x] = true
			}
		}
	}
	return c
}

func TestLungPlanCoversTheLungWithFewerTiles(t *testing.T) {
	spec := lidcInput(t)
	spec.Tiling.ROI = ROILung
	full, err := PlanTiles(spec, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	left, right := [4]float64{250, 160, 110, 70}, [4]float64{250, 352, 110, 70}
	hu := phantom(left, right)
	p, err := full.LungPlan(hu, chestSpacing)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Tiles) == 0 || len(p.Tiles) >= len(full.Tiles) {
		t.Fatalf("%d tiles on the lung, want between 1 and %d", len(p.Tiles), len(full.Tiles)-1)
	}
	cov := covered(p)
	for i, v := range hu {
		if v == -850 && !cov[i] {
			t.Fatalf("lung pixel (%d,%d) is in no tile", i/512, i%512)
		}
	}
	// Every tile is inside the slice and holds lung.
	for _, tl := range p.Tiles {
		if tl.Y < 0 || tl.X < 0 || tl.Y+tl.H > 512 || tl.X+tl.W > 512 {
			t.Fatalf("tile %+v leaves the slice", tl)
		}
		lung := 0
		for y := tl.Y; y < tl.Y+tl.H; y++ {
			for x := tl.X; x < tl.X+tl.W; x++ {
				if hu[y*512+x] == -850 {
					lung++
				}
			}
		}
		if lung == 0 {
			t.Errorf("tile %+v holds no lung", tl)
		}
	}
	// The air around the body is not lung: the top rows (outside air only) are in no tile.
	for x := 0; x < 512; x++ {
		if cov[x] {
			t.Fatalf("pixel (0,%d), outside the body, is in a tile", x)
		}
	}
	// The restricted plan extracts and blends like any plan; pixels outside its tiles blend to 0.
	batch, err := p.ExtractTiles(hu)
	if err != nil {
		t.Fatal(err)
	}
	maps, err := p.Blend(identityModel(batch, len(p.Tiles), 1, 128, 128, 2), 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range hu {
		if !cov[i] && (maps[0][i] != 0 || maps[1][i] != 0) {
			t.Fatalf("pixel %d outside every tile blended to %v", i, maps[0][i])
		}
	}
}

func TestLungPlanFindsNoLungWhereThereIsNone(t *testing.T) {
	spec := lidcInput(t)
	spec.Tiling.ROI = ROILung
	full, _ := PlanTiles(spec, 512, 512)
	// A gas bubble of 6 x 6 pixels (18 mm^2) inside the body: too small to be lung.
	bubble := phantom([4]float64{300, 300, 3, 3})
	noBody := make([]float32, 512*512)
	for i := range noBody {
		noBody[i] = -1000
	}
	for name, hu := range map[string][]float32{"abdomen": phantom(), "gas bubble": bubble, "air only": noBody} {
		p, err := full.LungPlan(hu, chestSpacing)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Tiles) != 0 {
			t.Errorf("%s: %d tiles, want none", name, len(p.Tiles))
		}
		maps, err := p.Blend(nil, 3)
		if err != nil || len(maps) != 3 || len(maps[0]) != 512*512 || maps[2][1000] != 0 {
			t.Errorf("%s: blending no tiles: %d maps, %v", name, len(maps), err)
		}
	}
	if _, err := full.LungPlan(make([]float32, 7), chestSpacing); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("wrong pixel count: %v", err)
	}
}

func TestLungPlanOnRealChestCT(t *testing.T) {
	for _, name := range []string{"lidc-ct-0004", "lidc-ct-0005"} {
		s := loadFixture(t, name)
		spec := lidcInput(t)
		spec.Tiling.ROI = ROILung
		full, err := PlanTilesForSeries(spec, s)
		if err != nil {
			t.Fatal(err)
		}
		readers := lidcReaderMasks(t, name, s) // [reader][slice]
		for si, sl := range s.Slices {
			p, err := full.LungPlan(sl.Pixels, s.PixelSpacing)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Tiles) == 0 || len(p.Tiles) >= len(full.Tiles) {
				t.Errorf("%s %s: %d tiles, want between 1 and %d", name, sl.SOPInstanceUID, len(p.Tiles), len(full.Tiles)-1)
			}
			// Every nodule pixel any LIDC reader marked lies in a tile.
			cov := covered(p)
			for r := range readers {
				for i, v := range readers[r][si] {
					if v != 0 && !cov[i] {
						t.Fatalf("%s %s: nodule pixel (%d,%d) is in no tile", name, sl.SOPInstanceUID, i/s.Cols, i%s.Cols)
					}
				}
			}
		}
	}
}
