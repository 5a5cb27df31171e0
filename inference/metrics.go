package inference

import (
	"fmt"
	"math"
	"math/bits"
)

// The evaluation metrics of D-Persona (docs: /shared/docs/dpersona-model.md, "Metrics"),
// computed per image on binary masks of equal size; ScoreSet averages them over a data set.

// diceEps is the reference's smoothing term: Dice(a,b) = (2|a.b| + eps) / (|a| + |b| + eps), so
// two empty masks have Dice 1.
const diceEps = 1e-8

// SoftDiceThresholds are the thresholds of Dice_soft.
var SoftDiceThresholds = []float64{0.1, 0.3, 0.5, 0.7, 0.9}

// Dice of two binary masks (values 0 or 1).
func Dice(a, b []uint8) float64 {
	inter, sa, sb := overlap(a, b)
	return (2*float64(inter) + diceEps) / (float64(sa+sb) + diceEps)
}

func overlap(a, b []uint8) (inter, sa, sb int) {
	for i, x := range a {
		y := b[i]
		sa += int(x)
		sb += int(y)
		inter += int(x & y)
	}
	return
}

// maskSet holds masks as bitsets with their areas, so that the many pairwise intersections
// of GED and the Dice matrices cost a popcount per 64 pixels.
type maskSet struct {
	bits [][]uint64
	area []int
}

func newMaskSet(masks [][]uint8) maskSet {
	s := maskSet{bits: make([][]uint64, len(masks)), area: make([]int, len(masks))}
	for i, m := range masks {
		b := make([]uint64, (len(m)+63)/64)
		for j, x := range m {
			if x != 0 {
				b[j>>6] |= 1 << uint(j&63)
			}
		}
		s.bits[i] = b
		n := 0
		for _, w := range b {
			n += bits.OnesCount64(w)
		}
		s.area[i] = n
	}
	return s
}

func intersection(a, b []uint64) int {
	n := 0
	for i, w := range a {
		n += bits.OnesCount64(w & b[i])
	}
	return n
}

// iouDistance is 1 - IoU. With referenceEmpty the reference's convention applies (IoU of two
// empty masks is 0/(0+1e-8) = 0, so their distance is 1); otherwise two empty masks are at
// distance 0 (they agree perfectly).
func iouDistance(inter, sa, sb int, referenceEmpty bool) float64 {
	union := sa + sb - inter
	if union == 0 {
		if referenceEmpty {
			return 1
		}
		return 0
	}
	return 1 - float64(inter)/(float64(union)+1e-8)
}

// meanDistance is the mean of d over all ordered pairs (i in x, j in y), including i = j when
// x and y are the same set.
func meanDistance(x, y maskSet, referenceEmpty bool) float64 {
	var sum float64
	for i, a := range x.bits {
		for j, b := range y.bits {
			sum += iouDistance(intersection(a, b), x.area[i], y.area[j], referenceEmpty)
		}
	}
	return sum / float64(len(x.bits)*len(y.bits))
}

// GED is the squared generalised energy distance between the rater masks and the predicted
// masks: 2 E[d(L,P)] - E[d(L,L')] - E[d(P,P')], d = 1 - IoU. It returns the reference-compatible
// value (empty-vs-empty pairs at distance 1) and the value with empty-vs-empty at distance 0.
func GED(raters, preds [][]uint8) (reference, emptyZero float64) {
	l, p := newMaskSet(raters), newMaskSet(preds)
	ged := func(ref bool) float64 {
		return 2*meanDistance(l, p, ref) - meanDistance(l, l, ref) - meanDistance(p, p, ref)
	}
	return ged(true), ged(false)
}

// meanMap averages maps (float32 or 0/1 values) pixelwise.
func meanMap[T uint8 | float32](maps [][]T) []float64 {
	out := make([]float64, len(maps[0]))
	for _, m := range maps {
		for i, x := range m {
			out[i] += float64(x)
		}
	}
	inv := 1 / float64(len(maps))
	for i := range out {
		out[i] *= inv
	}
	return out
}

func thresholdMap(m []float64, t float64) []uint8 {
	out := make([]uint8, len(m))
	for i, x := range m {
		if x > t {
			out[i] = 1
		}
	}
	return out
}

// DiceSoft is the mean over SoftDiceThresholds of Dice(mean rater mask > t, mean predicted
// probability > t).
func DiceSoft(raters [][]uint8, probs [][]float32) float64 {
	lm, pm := meanMap(raters), meanMap(probs)
	var sum float64
	for _, t := range SoftDiceThresholds {
		sum += Dice(thresholdMap(lm, t), thresholdMap(pm, t))
	}
	return sum / float64(len(SoftDiceThresholds))
}

// diceMatrix[i][j] = Dice(raters[i], preds[j]).
func diceMatrix(raters, preds [][]uint8) [][]float64 {
	l, p := newMaskSet(raters), newMaskSet(preds)
	d := make([][]float64, len(raters))
	for i, a := range l.bits {
		d[i] = make([]float64, len(preds))
		for j, b := range p.bits {
			d[i][j] = (2*float64(intersection(a, b)) + diceEps) / (float64(l.area[i]+p.area[j]) + diceEps)
		}
	}
	return d
}

// DiceMax is the mean over predictions of the best Dice against any rater.
func DiceMax(raters, preds [][]uint8) float64 {
	d := diceMatrix(raters, preds)
	var sum float64
	for j := range preds {
		best := math.Inf(-1)
		for i := range raters {
			best = max(best, d[i][j])
		}
		sum += best
	}
	return sum / float64(len(preds))
}

// DiceMatch matches each rater to a distinct prediction maximising the total Dice (Hungarian
// method) and returns the mean matched Dice and, per rater, the matched prediction's index.
// It needs at least as many predictions as raters.
func DiceMatch(raters, preds [][]uint8) (float64, []int, error) {
	if len(preds) < len(raters) {
		return 0, nil, fmt.Errorf("matching predictions to raters (Dice_match) needs at least as many predictions (%d) as raters (%d)", len(preds), len(raters))
	}
	d := diceMatrix(raters, preds)
	cost := make([][]float64, len(d))
	for i, row := range d {
		cost[i] = make([]float64, len(row))
		for j, x := range row {
			cost[i][j] = -x
		}
	}
	assign := MinCostAssignment(cost)
	var sum float64
	for i, j := range assign {
		sum += d[i][j]
	}
	return sum / float64(len(raters)), assign, nil
}

// PersonalDice is Dice(head r, rater r) for each rater, without matching.
func PersonalDice(raters, heads [][]uint8) ([]float64, error) {
	if len(raters) != len(heads) {
		return nil, fmt.Errorf("personalised Dice needs one head per rater: %d heads, %d raters", len(heads), len(raters))
	}
	out := make([]float64, len(raters))
	for r := range raters {
		out[r] = Dice(raters[r], heads[r])
	}
	return out, nil
}

// Threshold turns probabilities into a 0/1 mask (prob > t).
func Threshold(p []float32, t float64) []uint8 {
	out := make([]uint8, len(p))
	tf := float32(t)
	for i, x := range p {
		if x > tf {
			out[i] = 1
		}
	}
	return out
}

// ImageOutputs are one image's rater masks and the model's outputs for it, each map flattened
// [H*W]: Raters [R] 0/1 masks, SampleProbs [S] stage-I probabilities, RaterProbs [R] stage-II
// probabilities (nil when only stage I is evaluated).
type ImageOutputs struct {
	Raters      [][]uint8
	SampleProbs [][]float32
	RaterProbs  [][]float32
}

// MetricAccumulator collects per-image metrics and averages them, with the keys and definitions
// of training/metrics.py's MetricAccumulator so that both JSON reports compare key by key.
type MetricAccumulator struct {
	raters          int
	threshold       float64
	order           []string
	rows            map[string][]float64
	perRater        [][]float64
	perRaterMatched [][]float64
}

// NewMetricAccumulator expects R raters per image; masks are probabilities > threshold.
func NewMetricAccumulator(raters int, threshold float64) *MetricAccumulator {
	return &MetricAccumulator{raters: raters, threshold: threshold, rows: map[string][]float64{}}
}

func (a *MetricAccumulator) add(key string, v float64) {
	if _, ok := a.rows[key]; !ok {
		a.order = append(a.order, key)
	}
	a.rows[key] = append(a.rows[key], v)
}

// Add scores one image.
func (a *MetricAccumulator) Add(img ImageOutputs) error {
	if len(img.Raters) != a.raters {
		return fmt.Errorf("image has %d rater masks, expected %d", len(img.Raters), a.raters)
	}
	if len(img.SampleProbs) == 0 {
		return fmt.Errorf("image has no sample predictions")
	}
	preds := make([][]uint8, len(img.SampleProbs))
	for i, p := range img.SampleProbs {
		preds[i] = Threshold(p, a.threshold)
	}
	ged, ged0 := GED(img.Raters, preds)
	a.add("ged", ged)
	a.add("ged_empty0", ged0)
	a.add("dice_soft", DiceSoft(img.Raters, img.SampleProbs))
	a.add("dice_max", DiceMax(img.Raters, preds))
	if len(preds) >= len(img.Raters) {
		m, _, err := DiceMatch(img.Raters, preds)
		if err != nil {
			return err
		}
		a.add("dice_match", m)
	}
	if img.RaterProbs == nil {
		return nil
	}
	heads := make([][]uint8, len(img.RaterProbs))
	for i, p := range img.RaterProbs {
		heads[i] = Threshold(p, a.threshold)
	}
	hged, hged0 := GED(img.Raters, heads)
	a.add("heads_ged", hged)
	a.add("heads_ged_empty0", hged0)
	a.add("heads_dice_soft", DiceSoft(img.Raters, img.RaterProbs))
	a.add("heads_dice_max", DiceMax(img.Raters, heads))
	hm, assign, err := DiceMatch(img.Raters, heads)
	if err != nil {
		return err
	}
	a.add("heads_dice_match", hm)
	pd, err := PersonalDice(img.Raters, heads)
	if err != nil {
		return err
	}
	a.perRater = append(a.perRater, pd)
	matched := make([]float64, len(img.Raters))
	for r, h := range assign {
		matched[r] = Dice(img.Raters[r], heads[h])
	}
	a.perRaterMatched = append(a.perRaterMatched, matched)
	var mean float64
	for _, x := range pd {
		mean += x
	}
	a.add("personalised_dice", mean/float64(len(pd)))
	return nil
}

// Images is the number of images scored.
func (a *MetricAccumulator) Images() int {
	if len(a.order) == 0 {
		return 0
	}
	return len(a.rows[a.order[0]])
}

// Result returns the means: float64 per metric key, "images" (int), and the per-rater lists
// "personalised_dice_per_rater" and "matched_dice_per_rater" ([]float64) when heads were scored.
func (a *MetricAccumulator) Result() map[string]any {
	out := map[string]any{"images": a.Images()}
	for k, v := range a.rows {
		var s float64
		for _, x := range v {
			s += x
		}
		out[k] = s / float64(len(v))
	}
	if len(a.perRater) > 0 {
		out["personalised_dice_per_rater"] = columnMeans(a.perRater)
		out["matched_dice_per_rater"] = columnMeans(a.perRaterMatched)
	}
	return out
}

func columnMeans(rows [][]float64) []float64 {
	out := make([]float64, len(rows[0]))
	for _, r := range rows {
		for i, x := range r {
			out[i] += x
		}
	}
	for i := range out {
		out[i] /= float64(len(rows))
	}
	return out
}
