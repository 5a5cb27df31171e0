package inference

import "math"

// MinCostAssignment solves the rectangular assignment problem for an n x m cost matrix with
// n <= m: every row gets a distinct column, minimising the summed cost. It returns, per row, the
// chosen column.
//
// The method is the shortest augmenting path form of the Hungarian method (Jonker-Volgenant as
// described by Crouse, 2016), one row at a time, with dual variables. Ties are broken as SciPy's
// linear_sum_assignment breaks them (candidate columns scanned from the last to the first, a
// free column preferred among equally short paths), because training/metrics.py uses SciPy: when
// several assignments are optimal (empty masks, equal Dice values), both pick the same one and
// per-rater matched scores agree, not only their mean.
func MinCostAssignment(cost [][]float64) []int {
	nr := len(cost)
	if nr == 0 {
		return nil
	}
	nc := len(cost[0])
	if nc < nr {
		panic("MinCostAssignment: more rows than columns")
	}
	u := make([]float64, nr)
	v := make([]float64, nc)
	shortest := make([]float64, nc)
	path := make([]int, nc)
	col4row := make([]int, nr)
	row4col := make([]int, nc)
	seenRow := make([]bool, nr)
	seenCol := make([]bool, nc)
	remaining := make([]int, nc)
	for i := range col4row {
		col4row[i] = -1
	}
	for j := range row4col {
		row4col[j] = -1
		path[j] = -1
	}
	for cur := 0; cur < nr; cur++ {
		// Shortest augmenting path from row cur to a free column.
		for k := range remaining {
			remaining[k] = nc - k - 1
		}
		clear(seenRow)
		clear(seenCol)
		for j := range shortest {
			shortest[j] = math.Inf(1)
		}
		minVal := 0.0
		free := len(remaining)
		i := cur
		sink := -1
		for sink == -1 {
			index := -1
			lowest := math.Inf(1)
			seenRow[i] = true
			for k := 0; k < free; k++ {
				j := remaining[k]
				r := minVal + cost[i][j] - u[i] - v[j]
				if r < shortest[j] {
					path[j] = i
					shortest[j] = r
				}
				if shortest[j] < lowest || (shortest[j] == lowest && row4col[j] == -1) {
					lowest = shortest[j]
					index = k
				}
			}
			minVal = lowest
			j := remaining[index]
			if row4col[j] == -1 {
				sink = j
			} else {
				i = row4col[j]
			}
			seenCol[j] = true
			free--
			remaining[index] = remaining[free]
		}
		// Update the duals.
		u[cur] += minVal
		for r := 0; r < nr; r++ {
			if seenRow[r] && r != cur {
				u[r] += minVal - shortest[col4row[r]]
			}
		}
		for j := 0; j < nc; j++ {
			if seenCol[j] {
				v[j] -= minVal - shortest[j]
			}
		}
		// Augment along the path.
		for j := sink; ; {
			r := path[j]
			row4col[j] = r
			col4row[r], j = j, col4row[r]
			if r == cur {
				break
			}
		}
	}
	return col4row
}
