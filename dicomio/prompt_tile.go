package dicomio

// CentredOn returns a plan of one model-input tile centred on pixel (row, column) of a slice,
// moved inward where the centre is nearer the border than half a tile, so the tile lies inside
// the slice (a slice smaller than a tile keeps the whole-slice tile). Extracting it applies the
// spec's intensity mapping to that tile alone ("minmax" with scope "tile" normalises over the
// tile, as the training crops were), which is what lesion-targeted inference feeds the model.
// Only tile mode has tiles to place; other modes return an error.
func (p *TilePlan) CentredOn(row, column int) (*TilePlan, Tile, error) {
	if p.Spec.Tiling.Mode != "tile" {
		return nil, Tile{}, newErr(ErrInvalidSpec, "", "tiling.mode", "%q: a tile centred on a lesion needs tile mode", p.Spec.Tiling.Mode)
	}
	if row < 0 || column < 0 || row >= p.Rows || column >= p.Cols {
		return nil, Tile{}, newErr(ErrInvalidSpec, "", "row/column", "(%d, %d) outside the %dx%d slice", row, column, p.Rows, p.Cols)
	}
	H, W := min(p.Spec.Height, p.Rows), min(p.Spec.Width, p.Cols)
	t := Tile{Y: clampInt(row-H/2, 0, p.Rows-H), X: clampInt(column-W/2, 0, p.Cols-W), H: H, W: W}
	sub := &TilePlan{Spec: p.Spec, Rows: p.Rows, Cols: p.Cols, Invert: p.Invert, weightY: p.weightY, weightX: p.weightX, Tiles: []Tile{t}}
	return sub, t, nil
}

func clampInt(v, lo, hi int) int {
	return max(lo, min(v, hi))
}
