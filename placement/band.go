package placement

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// WithinBand checks that every node's count (replicas or leaderships) is
// within ±max(c.Tolerance × mean, c.MinTolerance) of the mean of counts:
// the balance the planner converges on when nodes are equal (no capacity
// weighting). Zero fields of c take their defaults. It names the first node
// outside the band, in ID order. For tests, benchmarks and tools that judge
// a placement from outside.
func WithinBand(counts map[uint64]int, c Config) error {
	c = c.withDefaults()
	if len(counts) == 0 {
		return nil
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	mean := float64(total) / float64(len(counts))
	band := math.Max(c.Tolerance*mean, float64(c.MinTolerance))
	ids := make([]uint64, 0, len(counts))
	for id := range counts {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, cmp.Compare[uint64])
	for _, id := range ids {
		// With the planner's epsilon: a count exactly on the edge (700 of
		// 2,000 over 3 nodes, mean + 5%) is in the band, as the planner
		// judges it, though float64 puts it a hair outside.
		if math.Abs(float64(counts[id])-mean) > band+epsilon {
			return fmt.Errorf("node %d has %d, mean %.1f ± %.1f (%v)", id, counts[id], mean, band, counts)
		}
	}
	return nil
}
