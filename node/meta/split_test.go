package meta

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
)

// splitRecords splits a real shard and returns the records of its
// descriptor before the split and of both halves after it. The shard had
// a replica added and removed first, so that the child's configuration is
// not an initial one (replica IDs not 1..n).
func splitRecords(t *testing.T) (before, parent, child ShardRecord) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, e := newStore(t, Config{})
	spec := engine.ShardSpec{Desc: storage.Descriptor{ShardID: 1, Start: 0, Last: ^uint64(0), Generation: 1}, Voters: []uint64{1}}
	if err := e.CreateShard(ctx, spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "shard 1's leader", func() bool {
		st, err := e.Status(ctx, 1)
		return err == nil && st.Leader == 1
	})
	for _, ch := range []engine.ReplicaChange{{Type: engine.AddLearner, NodeID: 2}, {Type: engine.Remove, NodeID: 2}} {
		if err := e.ChangeReplicas(ctx, 1, ch); err != nil {
			t.Fatal(err)
		}
	}
	st, err := e.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Split(ctx, engine.SplitRequest{ShardID: 1, Generation: st.Desc.Generation, At: 1 << 62, ChildID: 7})
	if err != nil {
		t.Fatal(err)
	}
	return RecordOf(st.Desc), RecordOf(res.Parent), RecordOf(res.Child)
}

// TestSplitRecords: the records of a split are accepted, whichever lands
// first or both in one batch; the ring generation rises with each, and a
// watcher hands out no ring while the records overlap or leave a gap, then
// the ring with both halves, and the child's record with it.
func TestSplitRecords(t *testing.T) {
	before, parent, child := splitRecords(t)
	if err := child.Validate(); err != nil {
		t.Fatalf("the child's record: %v", err)
	}
	if _, err := child.Spec(); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("the child's record is an initial configuration (%v): this test would not show that it is accepted anyway", err)
	}
	if !parent.Newer(before) || before.Newer(parent) || child.ConfIndex != 0 || child.Generation != parent.Generation {
		t.Fatalf("records: before %+v, parent %+v, child %+v", before, parent, child)
	}
	for _, tc := range []struct {
		name    string
		writes  [][]ShardRecord
		halfway error // the watcher's RingErr after the first write
	}{
		{"child first", [][]ShardRecord{{child}, {parent}}, router.ErrRingOverlap},
		{"parent first", [][]ShardRecord{{parent}, {child}}, router.ErrRingGap},
		{"one batch", [][]ShardRecord{{child, parent}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, _ := newStore(t, Config{})
			if err := s.PutShard(ctx, before); err != nil {
				t.Fatal(err)
			}
			w := NewWatcher(s)
			u, _, err := w.Poll(ctx)
			if err != nil || u.Ring == nil || u.Ring.Len() != 1 {
				t.Fatalf("first poll: %+v, %v", u, err)
			}
			gen := u.Generation
			for i, recs := range tc.writes {
				if err := s.PutShards(ctx, recs); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				h, err := s.Header(ctx, Local)
				if err != nil || h.Generation <= gen {
					t.Fatalf("write %d: header %+v after generation %d (%v)", i, h, gen, err)
				}
				gen = h.Generation
				u, changed, err := w.Poll(ctx)
				if err != nil || !changed {
					t.Fatalf("poll after write %d: %v, %v", i, changed, err)
				}
				if i < len(tc.writes)-1 {
					if u.Ring != nil || !errors.Is(u.RingErr, tc.halfway) {
						t.Fatalf("halfway: ring %v, error %v; want %v", u.Ring, u.RingErr, tc.halfway)
					}
					continue
				}
				if u.Ring == nil || u.Generation != gen || u.Ring.Len() != 2 {
					t.Fatalf("after the split: %+v", u)
				}
				if got := u.Ring.Lookup(child.Start); got != child.ShardID {
					t.Fatalf("the child's first hash goes to shard %d", got)
				}
				if got := u.Ring.Lookup(child.Start - 1); got != parent.ShardID {
					t.Fatalf("the parent's last hash goes to shard %d", got)
				}
				// Both records come with the ring, the one handed out
				// halfway included, so that a router sets the child's
				// replicas once it has the ring that names it.
				if len(u.Shards) != 2 || !u.Shards[0].Equal(parent) || !u.Shards[1].Equal(child) {
					t.Fatalf("records with the ring: %+v", u.Shards)
				}
			}
			// Reported again (a late reconciler), nothing changes.
			if err := s.PutShards(ctx, []ShardRecord{before, parent, child}); err != nil {
				t.Fatal(err)
			}
			if h, _ := s.Header(ctx, Local); h.Generation != gen || h.Shards != 2 {
				t.Fatalf("header after repeated writes: %+v, generation %d before", h, gen)
			}
		})
	}
}

// TestReconcilerSplitReports: the reports of a split's two halves, the
// parent's first as its leader applies it, are written; the child's is
// not refused for not being an initial configuration.
func TestReconcilerSplitReports(t *testing.T) {
	before, parent, child := splitRecords(t)
	s, _ := newStore(t, Config{})
	if err := s.PutShard(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	cfg := fastReconciler()
	cfg.Interval = time.Hour // reports only
	r, err := NewReconciler(cfg, s, nil, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, rec := range []ShardRecord{parent, child} {
		if err := r.Report(rec); err != nil {
			t.Fatalf("report of shard %d: %v", rec.ShardID, err)
		}
	}
	waitFor(t, 10*time.Second, "the parent's record", hasRecord(s, parent))
	waitFor(t, 10*time.Second, "the child's record", hasRecord(s, child))
}
