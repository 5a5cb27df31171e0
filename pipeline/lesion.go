package pipeline

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"

	"dpersona/dicomio"
	"dpersona/inference"
	"dpersona/internal/dicomstd"
)

// Lesion-targeted inference. D-Persona learned to outline a lesion in a 128x128 crop centred
// near it; run over every tile of a chest it outlines vessels and hilum too. In lesion mode the
// model sees only tiles centred on lesions people marked (dicomio prompts): the tile on the
// prompt's slice centred on the prompt, then the neighbouring slices one by one, each tile
// re-centred on the consensus outline of the slice before, until the consensus is empty on
// EmptySlicesToStop consecutive slices or MaxSlicesEachWay is reached. Everything outside the
// followed tiles is empty. Each lesion becomes one Finding; output encoding writes the segments
// of all findings of a series into the same SEG objects.

// LesionOptions bound the follow. The zero value gives the defaults.
type LesionOptions struct {
	// MaxExtentMM bounds how far from the prompt's slice a lesion is followed, each way
	// (default 30 mm: a lung nodule is at most 30 mm; larger is a mass). At least one slice
	// each way is always tried.
	MaxExtentMM float64
	// EmptySlicesToStop is the number of consecutive slices with an empty consensus after which
	// the follow stops in that direction (default 2: one empty slice may be a gap in a faint
	// outline).
	EmptySlicesToStop int
}

func (o LesionOptions) withDefaults() LesionOptions {
	if o.MaxExtentMM <= 0 {
		o.MaxExtentMM = 30
	}
	if o.EmptySlicesToStop <= 0 {
		o.EmptySlicesToStop = 2
	}
	return o
}

// FindingSlice holds a finding's probability maps on one slice, inside Region (the model tile);
// outside Region the finding is 0.
type FindingSlice struct {
	Slice   int          // index into the series' sorted slices
	Region  dicomio.Tile // Y, X, H, W on the slice
	Samples [][]float32  // [S][H*W] stage-I sample probabilities
	Raters  [][]float32  // [R][H*W] stage-II rater-head probabilities
	Mean    []float32    // [H*W] soft consensus (mean of the samples)
}

// Finding is one thing a series' outputs describe: a lesion followed from a prompt, or (for the
// whole-lung screening mode) the whole series without tracking identifiers.
type Finding struct {
	// Label names the finding in segment labels ("Nodule 1").
	Label string
	// TrackingID and TrackingUID identify the lesion across objects (TID 1500 measurement group,
	// SEG segments). From an SR they are the measurement group's; otherwise TrackingUID is
	// derived from the prompt (stable across re-runs) and TrackingID from its label.
	TrackingID, TrackingUID string
	// Screening is set for the whole-lung screening finding (no prompt, no tracking).
	Screening bool
	// Lesion is the placed prompt (nil for screening).
	Lesion *dicomio.Lesion
	// Slices are the followed slices in ascending slice order; slices not listed are empty.
	Slices []FindingSlice
	// Notes tell a reader what to know about this finding (e.g. nothing found at the prompt).
	Notes []string
}

// Map returns the finding's map on slice i expanded to rows*cols (nil when the finding is empty
// there): which selects Samples[k], Raters[k] or Mean.
func (f *Finding) Map(slice, rows, cols int, which func(FindingSlice) []float32) []float32 {
	for _, fs := range f.Slices {
		if fs.Slice != slice {
			continue
		}
		out := make([]float32, rows*cols)
		src := which(fs)
		r := fs.Region
		for y := 0; y < r.H; y++ {
			copy(out[(r.Y+y)*cols+r.X:(r.Y+y)*cols+r.X+r.W], src[y*r.W:(y+1)*r.W])
		}
		return out
	}
	return nil
}

// lesionFinding follows one lesion through the series.
func lesionFinding(ctx context.Context, e *inference.Engine, plan *dicomio.TilePlan, series *dicomio.Series, l dicomio.Lesion, number int,
	noise inference.Noise, thr float64, opt LesionOptions) (Finding, error) {
	opt = opt.withDefaults()
	f := Finding{Lesion: &l}
	f.TrackingID, f.TrackingUID, f.Label = lesionIdentity(l, number)

	run := func(slice, row, col int) (FindingSlice, error) {
		sub, tile, err := plan.CentredOn(row, col)
		if err != nil {
			return FindingSlice{}, err
		}
		x, err := sub.ExtractTiles(series.Slices[slice].Pixels)
		if err != nil {
			return FindingSlice{}, err
		}
		pred, err := e.Predict(ctx, x, 1, noise)
		if err != nil {
			return FindingSlice{}, fmt.Errorf("slice %d (SOP Instance %s): %w", slice+1, series.Slices[slice].SOPInstanceUID, err)
		}
		hw := pred.H * pred.W
		fs := FindingSlice{Slice: slice, Region: tile}
		samples, raters := pred.Tile(0)
		fs.Samples = splitMaps(samples, pred.S, hw, pred.W, tile)
		fs.Raters = splitMaps(raters, pred.R, hw, pred.W, tile)
		fs.Mean, _ = inference.ConsensusAndUncertainty(flatten(fs.Samples), pred.S, tile.H*tile.W)
		return fs, nil
	}
	spacing := series.SliceSpacing
	if spacing <= 0 {
		spacing = math.Max(series.SliceThickness, 1)
	}
	maxSteps := max(1, int(math.Floor(opt.MaxExtentMM/spacing+1e-9)))
	loc := func(i int) float64 { return series.Slices[i].Location }

	// The prompt's slice and its two neighbours run at once (the neighbours centred on the
	// prompt too): the latency of a lesion is then that of the longer direction, not one slice
	// more. The neighbours are kept only when the prompt's slice outlines something.
	centreDone := make(chan struct{})
	var first FindingSlice
	var firstErr error
	found := false
	go func() {
		defer close(centreDone)
		if first, firstErr = run(l.Slice, l.Row, l.Column); firstErr == nil {
			_, _, found = recentre(first, l.Row, l.Column, thr)
		}
	}()
	var mu sync.Mutex
	var slices []FindingSlice
	var notes []string
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for d, dir := range []int{-1, 1} {
		wg.Add(1)
		go func(d, dir int) {
			defer wg.Done()
			row, col := l.Row, l.Column
			empty := 0
			for k := 1; k <= maxSteps; k++ {
				i := l.Slice + dir*k
				if i < 0 || i >= len(series.Slices) {
					return
				}
				// A gap (missing slices) is not followed across: what lies beyond it may be
				// another lesion.
				if gap := math.Abs(loc(i) - loc(i-dir)); gap > 1.5*spacing+1e-3 {
					mu.Lock()
					notes = append(notes, fmt.Sprintf("not followed across a gap of %.1f mm %s slice %d", gap, map[int]string{-1: "below", 1: "above"}[dir], i-dir+1))
					mu.Unlock()
					return
				}
				fs, err := run(i, row, col)
				if err != nil {
					errs[d] = err
					return
				}
				if k == 1 {
					<-centreDone
					if firstErr != nil || !found {
						return
					}
				}
				r, c, ok := recentre(fs, row, col, thr)
				if !ok {
					empty++
					if empty >= opt.EmptySlicesToStop {
						return
					}
					continue
				}
				empty = 0
				row, col = r, c
				mu.Lock()
				slices = append(slices, fs)
				mu.Unlock()
			}
			if k := maxSteps; l.Slice+dir*(k+1) >= 0 && l.Slice+dir*(k+1) < len(series.Slices) {
				mu.Lock()
				notes = append(notes, fmt.Sprintf("followed to the bound of %.0f mm (%d slices) %s the prompt while the outline continued", opt.MaxExtentMM, maxSteps, map[int]string{-1: "below", 1: "above"}[dir]))
				mu.Unlock()
			}
		}(d, dir)
	}
	wg.Wait()
	<-centreDone
	if firstErr != nil {
		return f, firstErr
	}
	for _, err := range errs {
		if err != nil {
			return f, err
		}
	}
	if !found {
		f.Notes = append(f.Notes, fmt.Sprintf("the model's consensus is empty at the prompt (slice %d, row %d, column %d): nothing outlined", l.Slice+1, l.Row, l.Column))
		// An empty finding still says the prompt was looked at: keep the prompt's slice.
		f.Slices = []FindingSlice{first}
		return f, nil
	}
	f.Notes = append(f.Notes, notes...)
	slices = append(slices, first)
	sort.Slice(slices, func(a, b int) bool { return slices[a].Slice < slices[b].Slice })
	f.Slices = slices
	return f, nil
}

// recentre returns the centroid of the consensus component nearest to (row, col) (pixels of the
// slice), or ok=false when the consensus is empty in the tile.
func recentre(fs FindingSlice, row, col int, thr float64) (int, int, bool) {
	r := fs.Region
	mask := make([]bool, r.H*r.W)
	any := false
	for i, v := range fs.Mean {
		if float64(v) > thr {
			mask[i] = true
			any = true
		}
	}
	if !any {
		return row, col, false
	}
	// Label 4-connected components; keep the one with the pixel nearest to (row, col).
	label := make([]int, len(mask))
	best, bestD := 0, math.Inf(1)
	next := 0
	stack := []int{}
	var sumY, sumX, count []float64
	for i := range mask {
		if !mask[i] || label[i] != 0 {
			continue
		}
		next++
		sumY, sumX, count = append(sumY, 0), append(sumX, 0), append(count, 0)
		label[i] = next
		stack = append(stack[:0], i)
		for len(stack) > 0 {
			j := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			y, x := j/r.W, j%r.W
			sumY[next-1] += float64(y)
			sumX[next-1] += float64(x)
			count[next-1]++
			if d := math.Hypot(float64(r.Y+y-row), float64(r.X+x-col)); d < bestD {
				best, bestD = next, d
			}
			for _, n := range [4][2]int{{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}} {
				if n[0] < 0 || n[1] < 0 || n[0] >= r.H || n[1] >= r.W {
					continue
				}
				k := n[0]*r.W + n[1]
				if mask[k] && label[k] == 0 {
					label[k] = next
					stack = append(stack, k)
				}
			}
		}
	}
	b := best - 1
	return r.Y + int(math.Round(sumY[b]/count[b])), r.X + int(math.Round(sumX[b]/count[b])), true
}

// splitMaps cuts n maps of a model tile (h*w each, model width w) down to the tile's region
// (which is smaller only when the slice is smaller than a tile).
func splitMaps(flat []float32, n, hw, w int, t dicomio.Tile) [][]float32 {
	out := make([][]float32, n)
	for k := range out {
		m := make([]float32, t.H*t.W)
		src := flat[k*hw : (k+1)*hw]
		for y := 0; y < t.H; y++ {
			copy(m[y*t.W:(y+1)*t.W], src[y*w:y*w+t.W])
		}
		out[k] = m
	}
	return out
}

func flatten(maps [][]float32) []float32 {
	if len(maps) == 0 {
		return nil
	}
	out := make([]float32, 0, len(maps)*len(maps[0]))
	for _, m := range maps {
		out = append(out, m...)
	}
	return out
}

// lesionIdentity gives a lesion's tracking identifier, tracking UID and label. An SR measurement
// group brings both identifiers; other prompts get a UID derived from the prompt object and item
// (so a re-run writes the same identity) and the prompt's label as identifier.
func lesionIdentity(l dicomio.Lesion, number int) (id, uid, label string) {
	name := l.Finding
	if name == "" {
		name = "Lesion"
	}
	label = fmt.Sprintf("%s %d", name, number)
	if l.TrackingID != "" && l.TrackingUID != "" {
		// A short identifier a person typed ("Nodule 1") labels the segments; a viewer's
		// internal one ("Cornerstone3DTools@^0.1.0:Length") does not.
		if len(l.TrackingID) <= 32 && !strings.ContainsAny(l.TrackingID, "@:") {
			label = l.TrackingID
		}
		return l.TrackingID, l.TrackingUID, label
	}
	id = l.Label
	if id == "" || strings.Contains(id, "\\") {
		id = label
	}
	return id, dicomstd.NameUID("dpersona-lesion/v1", string(l.Source), l.ObjectUID, l.Item), label
}
