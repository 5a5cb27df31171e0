package inference

import "math"

// MinCostAssignment solves the rectangular assignment problem for an n x m cost matrix with
// n <= m: every row gets a distinct column, minimising the summed cost. It returns, per row, the
// chosen column. This is the shortest-augmenting-path form of the Hungarian method with row and
// column potentials, O(n^2 m).
func MinCostAssignment(cost [][]float64) []int {
	n := len(cost)
	if n == 0 {
		return nil
	}
	m := len(cost[0])
	if m < n {
		panic("MinCostAssignment: more rows than columns")
	}
	// Index 0 is a virtual column/row used to start each augmentation; real rows and columns
	// are 1-based below.
	u := make([]float64, n+1)    // row potentials
	v := make([]float64, m+1)    // column potentials
	owner := make([]int, m+1)    // owner[j] = row assigned to column j (0 = none)
	way := make([]int, m+1)      // predecessor column on the augmenting path
	minv := make([]float64, m+1) // smallest reduced cost reaching column j
	used := make([]bool, m+1)
	for i := 1; i <= n; i++ {
		owner[0] = i
		j0 := 0
		for j := range minv {
			minv[j] = math.Inf(1)
			used[j] = false
		}
		for {
			used[j0] = true
			i0 := owner[j0]
			delta := math.Inf(1)
			j1 := 0
			for j := 1; j <= m; j++ {
				if used[j] {
					continue
				}
				reduced := cost[i0-1][j-1] - u[i0] - v[j]
				if reduced < minv[j] {
					minv[j] = reduced
					way[j] = j0
				}
				if minv[j] < delta {
					delta = minv[j]
					j1 = j
				}
			}
			for j := 0; j <= m; j++ {
				if used[j] {
					u[owner[j]] += delta
					v[j] -= delta
				} else {
					minv[j] -= delta
				}
			}
			j0 = j1
			if owner[j0] == 0 {
				break
			}
		}
		// Flip the augmenting path.
		for j0 != 0 {
			j1 := way[j0]
			owner[j0] = owner[j1]
			j0 = j1
		}
	}
	assign := make([]int, n)
	for j := 1; j <= m; j++ {
		if owner[j] != 0 {
			assign[owner[j]-1] = j - 1
		}
	}
	return assign
}
