package dicomio

// Exact pixel-boundary tracing of binary masks into closed planar contours.
//
// Every pixel is a square; a mask's boundary is the set of pixel edges with an inside pixel on
// one side and an outside pixel (or the image border) on the other. Those edges, directed so the
// inside is always on the right (clockwise on screen, rows going down), join into closed loops:
// one per part of the mask and one per hole. No edge is approximated, so the area enclosed by
// the loops is exactly the pixel count and rasterising them back at pixel centres (which never
// lie on a grid line) gives the mask back.
//
// Conventions:
//   - Parts are 4-connected: two pixels touching only at a corner belong to separate contours
//     (at such a saddle corner the trace turns towards the inside).
//   - Holes are contours of their own, traversed the other way round. A reader must combine the
//     contours of one ROI on one plane by the even-odd rule: a contour inside another is a hole
//     (the convention of the major planning systems; plastimatch convert --xor-contours). The
//     contours of one plane never cross; nested ones only touch at corners.
//   - Vertices are kept only where the direction changes.

// Point2 is a pixel-grid corner: X is the column edge (0..Cols), Y the row edge (0..Rows). The
// corner (X, Y) is the top-left corner of pixel (row Y, column X).
type Point2 struct{ X, Y int }

// Loop is one closed contour in grid corners (the last vertex joins the first).
type Loop []Point2

// directions on the grid, screen orientation (Y grows downwards)
const (
	east = iota
	south
	west
	north
)

var step = [4]Point2{{1, 0}, {0, 1}, {-1, 0}, {0, -1}}

// TraceMask returns the closed boundary loops of a rows x cols mask (non-zero = inside), outer
// boundaries clockwise and holes counter-clockwise on screen, in a deterministic order (by
// first vertex, row-major).
func TraceMask(mask []uint8, rows, cols int) []Loop {
	in := func(r, c int) bool { return r >= 0 && r < rows && c >= 0 && c < cols && mask[r*cols+c] != 0 }
	w := cols + 1
	// out[v] holds one bit per direction of an untraced boundary edge leaving corner v.
	out := make([]uint8, (rows+1)*w)
	edges := 0
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			if mask[r*cols+c] == 0 {
				continue
			}
			if !in(r-1, c) { // top edge, going east from (c, r)
				out[r*w+c] |= 1 << east
				edges++
			}
			if !in(r, c+1) { // right edge, going south from (c+1, r)
				out[r*w+c+1] |= 1 << south
				edges++
			}
			if !in(r+1, c) { // bottom edge, going west from (c+1, r+1)
				out[(r+1)*w+c+1] |= 1 << west
				edges++
			}
			if !in(r, c-1) { // left edge, going north from (c, r+1)
				out[(r+1)*w+c] |= 1 << north
				edges++
			}
		}
	}
	var loops []Loop
	for v := 0; v < len(out) && edges > 0; v++ {
		for out[v] != 0 {
			start := Point2{v % w, v / w}
			d0 := 0
			for out[v]&(1<<d0) == 0 {
				d0++
			}
			var loop Loop
			p, d, prev := start, d0, -1
			for {
				out[p.Y*w+p.X] &^= 1 << d
				edges--
				if d != prev {
					loop = append(loop, p)
				}
				prev = d
				p = Point2{p.X + step[d].X, p.Y + step[d].Y}
				bits := out[p.Y*w+p.X]
				if p == start {
					// Back at the start: close unless the turn rule leaves by another edge
					// (the start was a saddle corner shared with a part traced later).
					bits |= 1 << d0
				}
				d = nextDirection(bits, d)
				if p == start && d == d0 {
					break
				}
				if d < 0 {
					panic("dicomio: contour trace found a corner without a way out") // every corner balances in and out
				}
			}
			if prev == d0 && len(loop) > 1 { // the start lies mid-run
				loop = loop[1:]
			}
			loops = append(loops, loop)
		}
	}
	return loops
}

// nextDirection picks the edge to follow at a corner reached going d: at a saddle corner (two
// edges leave) it turns right, towards the inside, so diagonal neighbours stay separate parts.
func nextDirection(bits uint8, d int) int {
	for _, turn := range []int{1, 0, 3} { // right, straight, left
		nd := (d + turn) % 4
		if bits&(1<<nd) != 0 {
			return nd
		}
	}
	return -1
}
