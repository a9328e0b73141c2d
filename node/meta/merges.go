package meta

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"

	"github.com/flotilla-db/flotilla/engine"
)

// Merges in the records (see the package doc, # Merges).
//
// A shard R frozen for a merge into its left neighbour L has a record
// that says so (MergeInto, MergeIntoGeneration), and the ring header lists
// it among the merging shards. A record of L that shows L's range over
// R's first hash at a generation above the one R was frozen against
// proves the merge applied: R's range is L's, and R is gone. The write
// that stores such a record of L retires R in the same batch: R's record
// is deleted, its tombstone written, and the change entry names R, so
// that the records tile the hash space again at once and a watcher sees R
// removed. Whoever writes L's widened record (the node that ran the
// merge, or L's reconciler if that node failed) retires R, provided R's
// frozen record was stored first, which the node that runs a merge
// ensures before it proposes the merge. The other order is covered too:
// a frozen record of R written when L's stored record has taken R's range
// already retires R at once.
//
// Why that proof holds: a shard's first hash never changes while it
// exists (a split keeps the parent's, a merge the left shard's), and R
// existed when L was at generation MergeIntoGeneration (the merge was
// planned against both). A later state of L (a higher generation) that
// holds R's first hash can only come after R's range went to another
// shard, which happens only when R is merged away. A record of L at that
// generation or below, from before the merge, proves nothing.
//
// A tombstone is kept for good (shard IDs are never reused): a record of
// the merged shard that comes later, from a reconciler that lagged or a
// deposed leader of R that reports a descriptor from before the freeze, is
// dropped, and the merged shard never comes back into the ring.

// retireMerged updates next.Merging for the records of a batch (a frozen
// record adds or replaces its shard's entry, any other removes it) and
// returns the ops that retire each merging shard the batch's records show
// merged, and those shards, naming them in change. next.Version is the
// batch's version.
func retireMerged(batch []put, next *RingHeader, change *RingChange) ([][]byte, map[uint64]bool, error) {
	merging := slices.Clone(next.Merging)
	inBatch := make(map[uint64]int, len(batch))
	for i, p := range batch {
		inBatch[p.rec.ShardID] = i
		merging = slices.DeleteFunc(merging, func(m MergingShard) bool { return m.ShardID == p.rec.ShardID })
		if r := p.rec; r.Frozen() {
			merging = append(merging, MergingShard{ShardID: r.ShardID, Start: r.Start, Into: r.MergeInto, IntoGeneration: r.MergeIntoGeneration})
		}
	}
	var ops [][]byte
	retired := map[uint64]bool{}
	kept := merging[:0]
	for _, m := range merging {
		// What shows L's range now: L's record in this batch, else, for
		// an R whose frozen record is in this batch, L's stored one.
		var left ShardRecord
		found := false
		if i, ok := inBatch[m.Into]; ok {
			left, found = batch[i].rec, true
		} else if i, ok := inBatch[m.ShardID]; ok && batch[i].intoFound {
			left, found = batch[i].into, true
		}
		if !found || !tookOver(left, m) {
			kept = append(kept, m)
			continue
		}
		tomb, err := json.Marshal(MergedRecord{ShardID: m.ShardID, Into: m.Into, IntoGeneration: left.Generation, Version: next.Version})
		if err != nil {
			return nil, nil, err
		}
		retired[m.ShardID] = true
		ops = append(ops, engine.DeleteCommand(ShardKey(m.ShardID)), engine.PutCommand(MergedKey(m.ShardID), tomb))
		if !slices.Contains(change.ShardIDs, m.ShardID) {
			change.ShardIDs = append(change.ShardIDs, m.ShardID)
		}
		next.Shards--
	}
	slices.SortFunc(kept, func(a, b MergingShard) int { return cmp.Compare(a.ShardID, b.ShardID) })
	next.Merging = kept
	if len(next.Merging) == 0 {
		next.Merging = nil
	}
	return ops, retired, nil
}

// tookOver reports whether left, a record of the shard m is to be merged
// into, shows the merge applied: a later generation than the one m was
// frozen against, whose range holds m's first hash.
func tookOver(left ShardRecord, m MergingShard) bool {
	return left.ShardID == m.Into && left.Generation > m.IntoGeneration && left.Start <= m.Start && m.Start <= left.Last
}

// Merged returns the tombstone of shard shardID, merged into its left
// neighbour, or an error matching ErrNotFound if it has none.
func (s *Store) Merged(ctx context.Context, shardID uint64, c Consistency) (MergedRecord, error) {
	return getExisting[MergedRecord](ctx, s, MergedKey(shardID), c)
}
