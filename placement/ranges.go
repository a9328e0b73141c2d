package placement

import (
	"cmp"
	"fmt"
	"slices"
)

// The range duties: splits of shards that grew too large or too hot, and
// merges of adjacent shards that are small and cold. No data moves for
// either (a shard's data is a contiguous hash range, and a merge's shards
// have their replicas on the same nodes): a split is one command on the
// shard, a merge a freeze, a wait and one command. What keeps them from
// undoing each other: a merged shard must be far from the split thresholds
// (together below half of them, Config.Validate checks the merge
// thresholds below that too), and a shard whose range changed less than
// MergeCooldown ago is not merged.

// rangeOK reports whether sh can take a split or merge now.
func (p *planner) rangeOK(sh *pshard) bool {
	return sh != nil && !sh.Meta && !sh.busy && !sh.joint && !sh.Merging && p.hasQuorum(sh)
}

// splits plans a split of every shard above SplitSize or SplitWriteRate,
// the largest excess first.
func (p *planner) splits() {
	if p.cfg.NoSplits {
		return
	}
	type cand struct {
		sh     *pshard
		excess float64
		why    string
	}
	var cands []cand
	for _, sh := range p.shards {
		if !p.rangeOK(sh) || sh.Start == sh.Last {
			continue
		}
		size := float64(sh.Size) / float64(p.cfg.SplitSize)
		rate := sh.WritesPerSecond / p.cfg.SplitWriteRate
		switch {
		case size > 1 && size >= rate:
			cands = append(cands, cand{sh, size, fmt.Sprintf("shard %d holds %s, above the split size %s", sh.ID, bytesOf(sh.Size), bytesOf(p.cfg.SplitSize))})
		case rate > 1:
			cands = append(cands, cand{sh, rate, fmt.Sprintf("shard %d takes %.0f writes/s, above the split rate %.0f/s", sh.ID, sh.WritesPerSecond, p.cfg.SplitWriteRate)})
		}
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return cmp.Compare(b.excess, a.excess) })
	for _, c := range cands {
		if !p.add(Op{Kind: Split, ShardID: c.sh.ID, Generation: c.sh.Generation, Reason: c.why}) {
			return
		}
	}
}

// merges plans merges of adjacent user shards that are both small and
// cold, left to right; a pair whose replicas are not on the same nodes
// first gets a move of one of the right shard's replicas onto a node of
// the left one.
func (p *planner) merges() {
	if p.cfg.NoMerges {
		return
	}
	var ring []*pshard
	for _, sh := range p.shards {
		if !sh.Meta {
			ring = append(ring, sh)
		}
	}
	slices.SortFunc(ring, func(a, b *pshard) int { return cmp.Compare(a.Start, b.Start) })
	for i := 0; i+1 < len(ring); i++ {
		l, r := ring[i], ring[i+1]
		if l.Last == ^uint64(0) || l.Last+1 != r.Start || !p.rangeOK(l) || !p.rangeOK(r) || !p.cold(l, r) {
			continue
		}
		if move, ok := p.colocate(l, r); ok {
			if !p.add(move) {
				return
			}
			l.busy = true // the merge comes once the move is done
			continue
		} else if move.Kind != 0 {
			continue // no move can co-locate them now
		}
		if !p.add(Op{Kind: Merge, ShardID: l.ID, Generation: l.Generation, MergeRight: r.ID, RightGeneration: r.Generation,
			Reason: fmt.Sprintf("shards %d and %d hold %s and take %.0f writes/s together", l.ID, r.ID, bytesOf(l.Size+r.Size), l.WritesPerSecond+r.WritesPerSecond)}) {
			return
		}
		p.shard[r.ID].busy = true
		i++ // r is taken
	}
}

// cold reports whether l and r may merge: each below the merge thresholds,
// together at most half the split thresholds, and neither changed range
// within MergeCooldown (or at an unknown time).
func (p *planner) cold(l, r *pshard) bool {
	for _, sh := range []*pshard{l, r} {
		if sh.Size > p.cfg.MergeSize || sh.WritesPerSecond > p.cfg.MergeWriteRate ||
			sh.RangeChanged.IsZero() || p.now.Sub(sh.RangeChanged) < p.cfg.MergeCooldown {
			return false
		}
	}
	return l.Size+r.Size <= p.cfg.SplitSize/2 && l.WritesPerSecond+r.WritesPerSecond <= p.cfg.SplitWriteRate/2
}

// colocate returns a move of one of r's replicas onto a node of l's that r
// lacks (ok), or, with ok false, an Op of Kind Merge when r cannot be
// moved closer now, and the zero Op when l and r are on the same nodes in
// the same roles already.
func (p *planner) colocate(l, r *pshard) (Op, bool) {
	var from *Replica
	for i := range r.Replicas {
		rep := &r.Replicas[i]
		if lr, ok := l.on(rep.NodeID); !ok || lr.Role != rep.Role {
			from = rep
			break
		}
	}
	if from == nil && len(l.Replicas) == len(r.Replicas) {
		return Op{}, false // on the same nodes
	}
	blocked := Op{Kind: Merge}
	if from == nil || from.Role != Voter || len(l.Replicas) != len(r.Replicas) {
		return blocked, false // learners or counts that differ: left to the other duties
	}
	for _, lr := range l.Replicas {
		n := p.node[lr.NodeID]
		if _, has := r.on(lr.NodeID); has || lr.Role != Voter || n == nil || !p.canReceive(r, n) {
			continue
		}
		if !p.safe(r, []uint64{n.ID}, from.NodeID) {
			return blocked, false
		}
		return Op{Kind: Merge, ShardID: r.ID, Add: []uint64{n.ID}, Remove: *from, MergeRight: r.ID,
			Reason: fmt.Sprintf("shard %d moves its replica on node %d to node %d, where shard %d is, to merge with it", r.ID, from.NodeID, n.ID, l.ID)}, true
	}
	return blocked, false
}

// bytesOf renders a size for reasons.
func bytesOf(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}
