package dicomio

import (
	"fmt"
	"image"
	"image/color"
	"sort"
	"strings"
)

// PreviewOptions tune RenderPreview.
type PreviewOptions struct {
	// MinSize is the least width/height of the image part; small slices are enlarged by an
	// integer factor (nearest neighbour) so outlines stay visible. Default 384.
	MinSize int
	// Crop, when > 0, shows only a Crop x Crop pixel window of the slice centred on the
	// segments drawn on it (on the slice centre when none is), enlarged like a small slice: a
	// lesion's outlines stay readable instead of a few pixels in a whole chest.
	Crop int
}

// RenderPreview draws slice `index` of src in grey (window from the 1st to the 99th percentile
// of its values; MONOCHROME1 shown inverted, as a viewer would), each segment of seg that has a
// frame on that slice outlined in its Palette colour, and a legend below listing every segment
// ("-" marks segments without a frame on this slice). FRACTIONAL segments are outlined at half
// their maximum value. seg may be nil (plain slice).
func RenderPreview(src *Series, index int, seg *SEG, opt PreviewOptions) (*image.RGBA, error) {
	if index < 0 || index >= len(src.Slices) {
		return nil, fmt.Errorf("slice %d out of range: the series has %d slices", index, len(src.Slices))
	}
	if opt.MinSize <= 0 {
		opt.MinSize = 384
	}
	var masks [][][]uint8
	if seg != nil {
		var err error
		if masks, err = seg.MasksFor(src); err != nil {
			return nil, err
		}
	}
	// The window shown: the whole slice, or the Crop window around the segments.
	oy, ox, rows, cols := 0, 0, src.Rows, src.Cols
	if opt.Crop > 0 {
		cy, cx, n := 0, 0, 0
		for k := range masks {
			for i, v := range masks[k][index] {
				if v != 0 {
					cy, cx, n = cy+i/src.Cols, cx+i%src.Cols, n+1
				}
			}
		}
		if n > 0 {
			cy, cx = cy/n, cx/n
		} else {
			cy, cx = src.Rows/2, src.Cols/2
		}
		rows, cols = min(opt.Crop, src.Rows), min(opt.Crop, src.Cols)
		oy, ox = max(0, min(cy-rows/2, src.Rows-rows)), max(0, min(cx-cols/2, src.Cols-cols))
	}
	stride := src.Cols
	scale := 1
	for min(rows, cols)*scale < opt.MinSize && scale < 64 {
		scale++
	}
	w, h := cols*scale, rows*scale

	var labels []string
	var present []bool
	if seg != nil {
		for k := range masks {
			label := fmt.Sprintf("segment %d", k+1)
			if k < len(seg.Segments) && seg.Segments[k].Label != "" {
				label = seg.Segments[k].Label
			}
			labels = append(labels, fmt.Sprintf("%d %s", k+1, label))
			present = append(present, masks[k][index] != nil)
		}
	}
	const pad, lineH = 8, 14
	legendH := 0
	if len(labels) > 0 {
		legendH = pad + len(labels)*lineH + pad
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h+legendH))

	// Grey levels.
	px := src.Slices[index].Pixels
	sorted := append([]float32(nil), px...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	lo, hi := sorted[len(sorted)/100], sorted[len(sorted)-1-len(sorted)/100]
	if hi <= lo {
		lo, hi = sorted[0], sorted[len(sorted)-1]
	}
	invert := src.PhotometricInterpretation == "MONOCHROME1"
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := px[(oy+y/scale)*stride+ox+x/scale]
			g := float32(0)
			if hi > lo {
				g = (v - lo) / (hi - lo)
			}
			g = min(max(g, 0), 1)
			if invert {
				g = 1 - g
			}
			c := uint8(g*255 + 0.5)
			img.SetRGBA(x, y, color.RGBA{c, c, c, 255})
		}
	}

	// Outlines: a display pixel inside the segment whose 4-neighbour maps to a source pixel
	// outside it (or off the image) is drawn, giving 1-pixel lines at any enlargement.
	for k := range masks {
		m := masks[k][index]
		if m == nil {
			continue
		}
		thr := uint8(0)
		if seg.Type == Fractional {
			thr = uint8(seg.MaxFractionalValue / 2)
		}
		inside := func(y, x int) bool {
			if y < 0 || x < 0 || y >= h || x >= w {
				return false
			}
			return m[(oy+y/scale)*stride+ox+x/scale] > thr
		}
		col := Palette[k%len(Palette)]
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				if inside(y, x) && (!inside(y-1, x) || !inside(y+1, x) || !inside(y, x-1) || !inside(y, x+1)) {
					img.SetRGBA(x, y, color.RGBA{col[0], col[1], col[2], 255})
				}
			}
		}
	}

	// Legend: dark panel, a colour swatch and the label per segment.
	for y := h; y < h+legendH; y++ {
		for x := 0; x < w; x++ {
			img.SetRGBA(x, y, color.RGBA{24, 24, 24, 255})
		}
	}
	for i, l := range labels {
		y0 := h + pad + i*lineH
		col := Palette[i%len(Palette)]
		for y := y0 + 2; y < y0+11; y++ {
			for x := pad; x < pad+9 && x < w; x++ {
				img.SetRGBA(x, y, color.RGBA{col[0], col[1], col[2], 255})
			}
		}
		text := l
		if !present[i] {
			text = "- " + l
		}
		drawText(img, pad+14, y0+3, text, color.RGBA{230, 230, 230, 255})
	}
	return img, nil
}

// glyphs is a 5x7 bitmap font for the legend: upper-case letters, digits and some punctuation
// (lower case is drawn as upper case; anything else as a box). Rows top to bottom, '#' = ink.
var glyphs = map[rune][7]string{
	' ':  {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'A':  {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B':  {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C':  {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D':  {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."},
	'E':  {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F':  {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G':  {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H':  {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I':  {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J':  {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K':  {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L':  {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M':  {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N':  {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O':  {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P':  {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q':  {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R':  {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S':  {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T':  {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U':  {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V':  {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W':  {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X':  {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y':  {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z':  {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'0':  {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1':  {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2':  {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3':  {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."},
	'4':  {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5':  {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6':  {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7':  {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8':  {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9':  {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'-':  {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'_':  {".....", ".....", ".....", ".....", ".....", ".....", "#####"},
	'.':  {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',':  {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	':':  {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'(':  {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')':  {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'/':  {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."},
	'+':  {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	'%':  {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"},
	'#':  {".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."},
	'\'': {"..#..", "..#..", ".#...", ".....", ".....", ".....", "....."},
}

var unknownGlyph = [7]string{"#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####"}

// drawText writes s with the 5x7 font, 6 pixels per character, clipped to the image.
func drawText(img *image.RGBA, x0, y0 int, s string, c color.RGBA) {
	b := img.Bounds()
	i := 0
	for _, r := range strings.ToUpper(s) {
		i++
		g, ok := glyphs[r]
		if !ok {
			g = unknownGlyph
		}
		for gy, row := range g {
			for gx, ch := range row {
				x, y := x0+(i-1)*6+gx, y0+gy
				if ch == '#' && image.Pt(x, y).In(b) {
					img.SetRGBA(x, y, c)
				}
			}
		}
	}
}
