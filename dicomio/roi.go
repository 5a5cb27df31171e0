package dicomio

import "dpersona/internal/modelspec"

// Region of interest for tiling: which tiles of a slice are worth a model run.
//
// A lung-nodule model such as D-Persona on LIDC-IDRI was trained on crops of lung; on a 512x512
// chest CT slice most of its 25 tiles hold air around the patient, the table, the chest wall or the
// abdomen, where it has nothing to find (and where it was never trained, so whatever it says there
// is noise). With roi "lung" only the tiles that contain lung run; the rest of the slice gets
// probability 0. The lung is found the classic way, from Hounsfield units alone: air (below
// -400 HU) that is not connected to the border of the image, that is, air inside the body.

// ROI values of TilingSpec.ROI (manifest input.tiling.roi), defined with the spec in modelspec.
const (
	// ROIAll runs every tile (the default).
	ROIAll = modelspec.ROIAll
	// ROILung runs tiles placed on the lung: CT only, pixel values in Hounsfield units.
	ROILung = modelspec.ROILung
)

// Thresholds of the lung finder. Lung parenchyma is about -900 to -700 HU and soft tissue above
// -100, so -400 separates them with a wide margin on either side.
const (
	lungAirHU = -400
	// lungCellMM is the side of the cells the slice is reduced to before the air regions are
	// traced: fine enough to follow the lung's outline within a few millimetres (the margin
	// below covers that), coarse enough to make the trace cheap (a 512x512 slice at 0.7 mm
	// becomes 128x128 cells).
	lungCellMM = 2.8
	// lungMinAreaMM2 drops internal air pockets smaller than 1 cm^2: gas in the bowel or the
	// oesophagus, a small airway seen alone. A lung on any slice that shows it is far larger.
	lungMinAreaMM2 = 100
	// lungMarginMM grows the lung's bounding box so that a nodule on the pleura, outside the air
	// itself, is well inside a tile rather than on its fading edge.
	lungMarginMM = 10
)

// LungPlan returns the plan for one CT slice restricted to its lung (hu: Rows*Cols values in
// Hounsfield units, spacing: PixelSpacing in mm, row then column): tiles laid over the bounding
// box of the lung, grown by a margin, with the plan's tile size and overlap, keeping those that
// contain lung. Fewer, better placed tiles than the fixed grid: on a chest CT slice the fixed grid
// has lung in 20 of its 25 tiles, while tiles placed on the lung cover it with about half that.
// The finder treats air connected to the image border as outside the body, so a lung cut by the
// border of the field of view is not found; reconstructed chest CT keeps the whole body in view.
// A slice without lung gets a plan with no tiles (its outputs blend to 0). Plans of other tiling
// modes, or of slices smaller than a tile, are returned unchanged.
func (p *TilePlan) LungPlan(hu []float32, spacing [2]float64) (*TilePlan, error) {
	if len(hu) != p.Rows*p.Cols {
		return nil, newErr(ErrInvalidSpec, "", "pixels", "%d values for a %dx%d slice", len(hu), p.Rows, p.Cols)
	}
	H, W := p.Spec.Height, p.Spec.Width
	if p.Spec.Tiling.Mode != "tile" || p.Rows <= H || p.Cols <= W {
		return p, nil
	}
	cellY, cellX := cellSize(spacing[0]), cellSize(spacing[1])
	lung, gh, gw := lungCells(hu, p.Rows, p.Cols, cellY, cellX, spacing)
	// Bounding box of the lung cells, in pixels, grown by the margin.
	y0, x0, y1, x1 := gh, gw, -1, -1
	for i, l := range lung {
		if l {
			y, x := i/gw, i%gw
			y0, y1, x0, x1 = min(y0, y), max(y1, y), min(x0, x), max(x1, x)
		}
	}
	sub := &TilePlan{Spec: p.Spec, Rows: p.Rows, Cols: p.Cols, Invert: p.Invert, weightY: p.weightY, weightX: p.weightX}
	if y1 < 0 {
		return sub, nil
	}
	my, mx := int(lungMarginMM/spacingOr1(spacing[0])+0.5), int(lungMarginMM/spacingOr1(spacing[1])+0.5)
	py0, py1 := max(0, y0*cellY-my), min(p.Rows, (y1+1)*cellY+my)
	px0, px1 := max(0, x0*cellX-mx), min(p.Cols, (x1+1)*cellX+mx)
	for _, ty := range regionStarts(py0, py1, p.Rows, H, p.Spec.Tiling.Overlap) {
		for _, tx := range regionStarts(px0, px1, p.Cols, W, p.Spec.Tiling.Overlap) {
			// Keep the tile when a lung cell lies (at least partly) inside it.
			has := false
			for cy := ty / cellY; cy <= (ty+H-1)/cellY && !has; cy++ {
				for cx := tx / cellX; cx <= (tx+W-1)/cellX; cx++ {
					if lung[cy*gw+cx] {
						has = true
						break
					}
				}
			}
			if !has {
				continue
			}
			sub.Tiles = append(sub.Tiles, Tile{Y: ty, X: tx, H: H, W: W})
		}
	}
	return sub, nil
}

// regionStarts lays tiles of size t with the given overlap over [lo, hi) of an axis of length n
// (n > t), centred on the region when one tile covers it, and kept inside the axis.
func regionStarts(lo, hi, n, t, overlap int) []int {
	if hi-lo <= t {
		return []int{min(max(0, (lo+hi-t)/2), n-t)}
	}
	var out []int
	for _, s := range axisStarts(hi-lo, t, overlap) {
		out = append(out, min(lo+s, n-t))
	}
	return out
}

// lungCells reduces the slice to cells of cellY x cellX pixels and marks the lung cells: cells
// whose mean is air, not connected to the image border through air, in an internal air region of
// at least lungMinAreaMM2.
func lungCells(hu []float32, rows, cols, cellY, cellX int, spacing [2]float64) (lung []bool, gh, gw int) {
	gh, gw = (rows+cellY-1)/cellY, (cols+cellX-1)/cellX
	sum := make([]float32, gh*gw)
	cnt := make([]int32, gh*gw)
	for y := 0; y < rows; y++ {
		row := hu[y*cols : (y+1)*cols]
		base := (y / cellY) * gw
		for x, v := range row {
			sum[base+x/cellX] += v
			cnt[base+x/cellX]++
		}
	}
	const (
		tissue uint8 = iota
		air
		outside
		inside
	)
	cell := make([]uint8, gh*gw)
	for i := range cell {
		if sum[i] < lungAirHU*float32(cnt[i]) {
			cell[i] = air
		}
	}
	// trace relabels the air region connected to the cells on the stack as `to` and returns its
	// cells.
	var stack, region []int
	trace := func(to uint8) []int {
		region = region[:0]
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			region = append(region, i)
			y, x := i/gw, i%gw
			for _, n := range [4][2]int{{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}} {
				if n[0] >= 0 && n[0] < gh && n[1] >= 0 && n[1] < gw && cell[n[0]*gw+n[1]] == air {
					cell[n[0]*gw+n[1]] = to
					stack = append(stack, n[0]*gw+n[1])
				}
			}
		}
		return region
	}
	// The air that touches the border is outside the body.
	for i := range cell {
		y, x := i/gw, i%gw
		if cell[i] == air && (y == 0 || y == gh-1 || x == 0 || x == gw-1) {
			cell[i] = outside
			stack = append(stack, i)
		}
	}
	trace(outside)
	cellArea := float64(cellY) * spacingOr1(spacing[0]) * float64(cellX) * spacingOr1(spacing[1])
	minCells := int(lungMinAreaMM2/cellArea + 0.5)
	lung = make([]bool, gh*gw)
	for i := range cell {
		if cell[i] != air {
			continue
		}
		cell[i] = inside
		stack = append(stack, i)
		if r := trace(inside); len(r) >= minCells {
			for _, j := range r {
				lung[j] = true
			}
		}
	}
	return lung, gh, gw
}

func cellSize(mm float64) int {
	return max(1, int(lungCellMM/spacingOr1(mm)+0.5))
}

// spacingOr1 treats an unknown spacing as 1 mm (the thresholds then count pixels).
func spacingOr1(mm float64) float64 {
	if mm > 0 {
		return mm
	}
	return 1
}
