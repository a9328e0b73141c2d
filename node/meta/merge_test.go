package meta

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
)

// mergeRecords merges two real shards, 1 [0, 2^63) and 2 [2^63, 2^64),
// and returns the records of their descriptors: before the merge, shard
// 2 frozen into 1, and shard 1 after the merge. With abandon, the merge
// is abandoned instead: merged is shard 1 bumped, and thawed shard 2
// unfrozen.
func mergeRecords(t *testing.T, abandon bool) (left, right, frozen, merged, thawed ShardRecord) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, e := newStore(t, Config{})
	var descs [2]storage.Descriptor
	for i := range descs {
		descs[i] = storage.Descriptor{ShardID: uint64(i + 1), Start: uint64(i) << 63, Last: uint64(i)<<63 | (1<<63 - 1), Generation: 1}
		if err := e.CreateShard(ctx, engine.ShardSpec{Desc: descs[i], Voters: []uint64{1}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "both shards' leader", func() bool {
		for _, d := range descs {
			if st, err := e.Status(ctx, d.ShardID); err != nil || st.Leader != 1 {
				return false
			}
		}
		return true
	})
	rd, err := e.Status(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := e.FreezeForMerge(ctx, engine.FreezeRequest{Right: 2, RightGeneration: 1, Left: 1, LeftGeneration: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.WaitFrozen(ctx, 2, fd.Generation); err != nil {
		t.Fatal(err)
	}
	ld, err := e.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	descs[0], descs[1] = ld.Desc, rd.Desc
	left, right, frozen = RecordOf(descs[0]), RecordOf(descs[1]), RecordOf(fd)
	if abandon {
		bumped, err := e.BumpGeneration(ctx, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		td, err := e.Unfreeze(ctx, 2, fd.Generation)
		if err != nil {
			t.Fatal(err)
		}
		return left, right, frozen, RecordOf(bumped), RecordOf(td)
	}
	md, err := e.Merge(ctx, engine.MergeRequest{Left: 1, LeftGeneration: 1, Right: 2, RightGeneration: fd.Generation})
	if err != nil {
		t.Fatal(err)
	}
	return left, right, frozen, RecordOf(md), ShardRecord{}
}

// TestMergeRecords: the records of a merge retire the merged shard in the
// batch that stores the widened left shard's record, whichever of the
// right shard's frozen record and the left shard's widened one lands
// first, or both at once; the ring generation rises, a watcher sees the
// right shard removed and a ring of one shard, and a record of the merged
// shard written later (a reconciler that lagged) is dropped.
func TestMergeRecords(t *testing.T) {
	left, right, frozen, merged, _ := mergeRecords(t, false)
	if !frozen.Frozen() || frozen.MergeInto != 1 || !frozen.Newer(right) || merged.Last != right.Last || !merged.Newer(left) {
		t.Fatalf("records: left %+v, right %+v, frozen %+v, merged %+v", left, right, frozen, merged)
	}
	for _, tc := range []struct {
		name    string
		writes  [][]ShardRecord
		halfway error // the watcher's RingErr after the first write, nil: a ring
	}{
		{"frozen first", [][]ShardRecord{{frozen}, {merged}}, nil},
		{"merged first", [][]ShardRecord{{merged}, {frozen}}, router.ErrRingOverlap},
		{"one batch", [][]ShardRecord{{frozen, merged}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, _ := newStore(t, Config{})
			if err := s.PutShards(ctx, []ShardRecord{left, right}); err != nil {
				t.Fatal(err)
			}
			w := NewWatcher(s)
			if u, _, err := w.Poll(ctx); err != nil || u.Ring == nil || u.Ring.Len() != 2 {
				t.Fatalf("first poll: %+v, %v", u, err)
			}
			for i, recs := range tc.writes {
				if err := s.PutShards(ctx, recs); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				u, changed, err := w.Poll(ctx)
				if err != nil || !changed {
					t.Fatalf("poll after write %d: %v, %v", i, changed, err)
				}
				if i < len(tc.writes)-1 {
					if tc.halfway != nil && (u.Ring != nil || !errors.Is(u.RingErr, tc.halfway)) {
						t.Fatalf("halfway: ring %v, error %v; want %v", u.Ring, u.RingErr, tc.halfway)
					}
					if h, _ := s.Header(ctx, Local); tc.halfway == nil && (len(h.Merging) != 1 || h.Merging[0].ShardID != 2 || h.Merging[0].Into != 1) {
						t.Fatalf("halfway: header %+v lists no merging shard 2", h)
					}
					continue
				}
				if u.Ring == nil || u.Ring.Len() != 1 || u.Ring.Lookup(right.Last) != 1 || !slices.Equal(u.Removed, []uint64{2}) {
					t.Fatalf("after the merge: ring %v (%v), removed %v", u.Ring, u.RingErr, u.Removed)
				}
			}
			if _, err := s.Shard(ctx, 2, Local); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the merged shard's record: %v", err)
			}
			tomb, err := s.Merged(ctx, 2, Local)
			if err != nil || tomb.Into != 1 || tomb.IntoGeneration != merged.Generation {
				t.Fatalf("tombstone %+v, %v", tomb, err)
			}
			h, err := s.Header(ctx, Local)
			if err != nil || h.Shards != 1 || len(h.Merging) != 0 {
				t.Fatalf("header after the merge: %+v, %v", h, err)
			}
			// Late records of the merged shard, from before the freeze too,
			// change nothing.
			if err := s.PutShards(ctx, []ShardRecord{right, frozen, left, merged}); err != nil {
				t.Fatal(err)
			}
			if again, _ := s.Header(ctx, Local); again.Version != h.Version {
				t.Fatalf("late records wrote: %+v -> %+v", h, again)
			}
			if shards, _, err := s.Shards(ctx, Local); err != nil || len(shards) != 1 || !shards[0].Equal(merged) {
				t.Fatalf("records: %+v, %v", shards, err)
			}
		})
	}
}

// TestAbandonedMergeRecords: an abandoned merge (the left shard's
// generation bumped, then the right shard thawed) retires nothing: both
// shards stay in the ring, and the header lists no merging shard once
// the thawed record is written.
func TestAbandonedMergeRecords(t *testing.T) {
	left, right, frozen, bumped, thawed := mergeRecords(t, true)
	if thawed.Frozen() || !thawed.Newer(frozen) || bumped.Last != left.Last || !bumped.Newer(left) {
		t.Fatalf("records: frozen %+v, bumped %+v, thawed %+v", frozen, bumped, thawed)
	}
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	w := NewWatcher(s)
	for _, recs := range [][]ShardRecord{{left, right}, {frozen}, {bumped}, {thawed}} {
		if err := s.PutShards(ctx, recs); err != nil {
			t.Fatal(err)
		}
		if u, _, err := w.Poll(ctx); err != nil || u.RingErr != nil {
			t.Fatalf("poll after %+v: %+v, %v", recs, u, err)
		}
	}
	h, err := s.Header(ctx, Local)
	if err != nil || h.Shards != 2 || len(h.Merging) != 0 {
		t.Fatalf("header: %+v, %v", h, err)
	}
	if _, err := s.Merged(ctx, 2, Local); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tombstone of an abandoned merge: %v", err)
	}
	if rec, err := s.Shard(ctx, 2, Local); err != nil || !rec.Equal(thawed) {
		t.Fatalf("the right shard's record: %+v, %v", rec, err)
	}
}
