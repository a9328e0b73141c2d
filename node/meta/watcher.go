package meta

import (
	"cmp"
	"context"
	"maps"
	"slices"

	"github.com/flotilla-db/flotilla/router"
)

// Watcher follows the records in this node's copy of the meta shard for a
// router, without rescanning them: a poll that finds the ring header's
// version unchanged costs one local read; otherwise it reads the change
// entries of the versions since its own and the records they name. Only a
// first poll, or one that fell more than Config.ChangeLogVersions behind,
// scans every record.
//
// A view is handed out only once it is the state at one ring version: after
// catching up, the header is read again, and if a write landed meanwhile
// the watcher catches up once more (up to a few times per poll). A ring is
// built only from such a view, with the header's generation, so that two
// rings of one generation never differ.
//
// A Watcher is owned by one goroutine.
type Watcher struct {
	s *Store
	// version is the ring version of the view; stable whether the view
	// was verified to be the state at that version.
	version uint64
	stable  bool
	synced  bool
	ranges  map[uint64]router.Range // every shard's range in the view
	ringGen uint64                  // generation of the last ring handed out
	// held keeps the records handed out while the ring lagged their
	// generation, to hand out again with the next ring: a router cannot
	// take the replicas of a shard its ring does not have yet.
	held map[uint64]ShardRecord

	nodesVersion uint64
	nodesSynced  bool
}

// NewWatcher returns a watcher of s's local copy.
func NewWatcher(s *Store) *Watcher {
	return &Watcher{s: s, ranges: map[uint64]router.Range{}, held: map[uint64]ShardRecord{}}
}

// RingUpdate is what changed in the ring since the previous poll.
type RingUpdate struct {
	// Version and Generation are the ring header's at the view.
	Version, Generation uint64
	// Full: Shards holds every record (a first poll, or the change
	// entries no longer reached back to the previous poll).
	Full bool
	// Shards holds the records written since the previous poll, sorted by
	// shard ID; Removed the shards whose records are gone. An update with
	// a Ring also holds again the records handed out since the previous
	// Ring, so that a router that takes the ring first and then the
	// records' replicas misses none.
	Shards  []ShardRecord
	Removed []uint64
	// Ring is the ring at Generation, when it differs from the last one
	// handed out. RingErr says why no ring could be built though the
	// generation changed: the records do not tile the hash space (halfway
	// through a split, say); the next poll that sees a change tries again.
	Ring    *router.Ring
	RingErr error
}

// maxPasses bounds the catch-up passes of one poll.
const maxPasses = 4

// Poll brings the view up to date with the local copy. It returns false
// (and no update) when nothing changed, and before the first shard record
// is written.
func (w *Watcher) Poll(ctx context.Context) (RingUpdate, bool, error) {
	h, err := w.s.Header(ctx, Local)
	if err != nil || h.Version == 0 || (w.synced && w.stable && h.Version == w.version) {
		return RingUpdate{}, false, err
	}
	changed := map[uint64]ShardRecord{}
	removed := map[uint64]bool{}
	var upd RingUpdate
	w.stable = false
	for pass := 1; pass <= maxPasses && !w.stable; pass++ {
		if !w.synced || h.LogStart > w.version+1 {
			if err := w.rescan(ctx, changed, removed); err != nil {
				return RingUpdate{}, false, err
			}
			upd.Full = true
		} else if ok, err := w.catchUp(ctx, h.Version, changed, removed); err != nil {
			return RingUpdate{}, false, err
		} else if !ok {
			w.synced = false // rescan
			continue
		}
		w.version, w.synced = h.Version, true
		after, err := w.s.Header(ctx, Local)
		if err != nil {
			return RingUpdate{}, false, err
		}
		w.stable = after.Version == h.Version
		h = after
	}
	upd.Version, upd.Generation = w.version, h.Generation
	upd.Removed = slices.Sorted(maps.Keys(removed))
	if w.stable && h.Generation != w.ringGen {
		ranges := slices.SortedFunc(maps.Values(w.ranges), func(a, b router.Range) int { return cmp.Compare(a.Start, b.Start) })
		if upd.Ring, upd.RingErr = router.NewRing(h.Generation, ranges); upd.RingErr == nil {
			w.ringGen = h.Generation
		}
	}
	for id := range removed {
		delete(w.held, id)
	}
	switch {
	case upd.Ring != nil:
		for id, r := range w.held {
			if _, ok := changed[id]; !ok {
				changed[id] = r
			}
		}
		clear(w.held)
	case h.Generation != w.ringGen:
		maps.Copy(w.held, changed)
	}
	upd.Shards = slices.SortedFunc(maps.Values(changed), func(a, b ShardRecord) int { return cmp.Compare(a.ShardID, b.ShardID) })
	return upd, true, nil
}

// rescan reads every record into the view.
func (w *Watcher) rescan(ctx context.Context, changed map[uint64]ShardRecord, removed map[uint64]bool) error {
	clear(changed)
	gone := w.ranges
	w.ranges = make(map[uint64]router.Range, len(gone))
	err := w.s.scanShards(ctx, func(r ShardRecord) {
		changed[r.ShardID] = r
		w.ranges[r.ShardID] = r.Range()
		delete(gone, r.ShardID)
		delete(removed, r.ShardID)
	})
	for id := range gone {
		removed[id] = true
	}
	return err
}

// catchUp reads the records named by the change entries after the view's
// version up to version. It reads nothing and returns false if an entry is
// gone, or if they name so many records that a rescan is cheaper (a
// scanned record costs about a fourth of a read).
func (w *Watcher) catchUp(ctx context.Context, version uint64, changed map[uint64]ShardRecord, removed map[uint64]bool) (bool, error) {
	ids := map[uint64]bool{}
	for v := w.version + 1; v <= version; v++ {
		c, _, found, err := getRecord[RingChange](ctx, w.s, ChangeKey(v), Local)
		if err != nil || !found {
			return false, err
		}
		for _, id := range c.ShardIDs {
			ids[id] = true
		}
		if len(ids) >= 64 && len(ids) >= len(w.ranges)/4 {
			return false, nil
		}
	}
	for id := range ids {
		r, _, found, err := getRecord[ShardRecord](ctx, w.s, ShardKey(id), Local)
		if err != nil {
			return false, err
		}
		if !found {
			delete(changed, id)
			delete(w.ranges, id)
			removed[id] = true
			continue
		}
		changed[id] = r
		w.ranges[id] = r.Range()
		delete(removed, id)
	}
	return true, nil
}

// PollNodes returns every node record when the node index changed since
// the previous call, false when it did not (one local read).
func (w *Watcher) PollNodes(ctx context.Context) ([]NodeRecord, bool, error) {
	x, err := w.s.NodeIndex(ctx, Local)
	if err != nil || (w.nodesSynced && x.Version == w.nodesVersion) {
		return nil, false, err
	}
	recs, x, err := w.s.Nodes(ctx, Local)
	if err != nil {
		return nil, false, err
	}
	w.nodesVersion, w.nodesSynced = x.Version, true
	return recs, true, nil
}
