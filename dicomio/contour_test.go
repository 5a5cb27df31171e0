package dicomio

import (
	"bytes"
	"math/rand"
	"testing"
)

// rasterizeEvenOdd fills the pixels whose centre lies inside an odd number of loops.
func rasterizeEvenOdd(loops []Loop, rows, cols int) []uint8 {
	out := make([]uint8, rows*cols)
	for r := 0; r < rows; r++ {
		y := float64(r) + 0.5
		for c := 0; c < cols; c++ {
			x := float64(c) + 0.5
			inside := false
			for _, l := range loops {
				for i, j := 0, len(l)-1; i < len(l); j, i = i, i+1 {
					yi, yj := float64(l[i].Y), float64(l[j].Y)
					if (yi > y) != (yj > y) {
						xi, xj := float64(l[i].X), float64(l[j].X)
						if x < xi+(y-yi)*(xj-xi)/(yj-yi) {
							inside = !inside
						}
					}
				}
			}
			if inside {
				out[r*cols+c] = 1
			}
		}
	}
	return out
}

// signedArea is positive for loops clockwise on screen (Y down).
func signedArea(l Loop) int {
	a := 0
	for i, j := 0, len(l)-1; i < len(l); j, i = i, i+1 {
		a += l[j].X*l[i].Y - l[i].X*l[j].Y
	}
	return a / 2
}

func maskFrom(rows ...string) ([]uint8, int, int) {
	var m []uint8
	for _, r := range rows {
		for _, ch := range r {
			if ch == '#' {
				m = append(m, 1)
			} else {
				m = append(m, 0)
			}
		}
	}
	return m, len(rows), len(rows[0])
}

func TestTraceMaskShapes(t *testing.T) {
	cases := []struct {
		name          string
		rows          []string
		loops, points int // expected loops and total vertices
		holes         int
	}{
		{"one pixel", []string{"...", ".#.", "..."}, 1, 4, 0},
		{"one pixel in the corner", []string{"#.", ".."}, 1, 4, 0},
		{"whole image (touches every border)", []string{"###", "###"}, 1, 4, 0},
		{"L shape", []string{"#..", "#..", "###"}, 1, 6, 0},
		{"ring with a hole", []string{"###", "#.#", "###"}, 2, 8, 1},
		{"diagonal neighbours are separate parts", []string{"#.", ".#"}, 2, 8, 0},
		{"island in a hole", []string{"#####", "#...#", "#.#.#", "#...#", "#####"}, 3, 12, 1},
		{"two parts on a row", []string{"#.#"}, 2, 8, 0},
		// Holes are 8-connected (the dual of 4-connected parts): one hole loop touching itself.
		{"diagonal holes inside a ring", []string{"####", "#.##", "##.#", "####"}, 2, 12, 1},
		{"empty", []string{"...", "..."}, 0, 0, 0},
	}
	for _, c := range cases {
		m, rows, cols := maskFrom(c.rows...)
		loops := TraceMask(m, rows, cols)
		points, holes := 0, 0
		for _, l := range loops {
			points += len(l)
			if signedArea(l) < 0 {
				holes++
			}
		}
		if len(loops) != c.loops || points != c.points || holes != c.holes {
			t.Errorf("%s: %d loops, %d points, %d holes; want %d, %d, %d: %v", c.name, len(loops), points, holes, c.loops, c.points, c.holes, loops)
		}
		if got := rasterizeEvenOdd(loops, rows, cols); !bytes.Equal(got, m) {
			t.Errorf("%s: even-odd fill of the loops differs from the mask", c.name)
		}
	}
}

// TestTraceMaskIsExact: on random masks (noise, blobs with holes, touching the border) the
// loops enclose exactly the mask's pixels: the even-odd fill gives the mask back and the signed
// areas add up to the pixel count.
func TestTraceMaskIsExact(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	for it := 0; it < 300; it++ {
		rows, cols := 1+rng.Intn(40), 1+rng.Intn(40)
		m := make([]uint8, rows*cols)
		density := rng.Float64()
		n := 0
		for i := range m {
			if rng.Float64() < density {
				m[i] = 1
				n++
			}
		}
		loops := TraceMask(m, rows, cols)
		area := 0
		for _, l := range loops {
			area += signedArea(l)
			for k := range l {
				a, b := l[k], l[(k+1)%len(l)]
				if a.X != b.X && a.Y != b.Y {
					t.Fatalf("mask %d: diagonal segment %v-%v", it, a, b)
				}
				if a.X < 0 || a.X > cols || a.Y < 0 || a.Y > rows {
					t.Fatalf("mask %d: vertex %v outside the %dx%d grid", it, a, rows, cols)
				}
			}
		}
		if area != n {
			t.Fatalf("mask %d (%dx%d): loops enclose %d pixels, mask has %d", it, rows, cols, area, n)
		}
		if got := rasterizeEvenOdd(loops, rows, cols); !bytes.Equal(got, m) {
			t.Fatalf("mask %d (%dx%d): even-odd fill differs from the mask", it, rows, cols)
		}
	}
}
