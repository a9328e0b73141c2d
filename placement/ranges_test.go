package placement

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestSplitsAndMergesConverge: a shard four times the split size is split
// until every shard is at most the split size; once they are cold and
// small and past the cool-down, adjacent ones are merged (their replicas
// first moved onto the same nodes) back to one shard; and no plan undoes
// the last: no split of a merged shard, no merge of a split one within the
// cool-down.
func TestSplitsAndMergesConverge(t *testing.T) {
	cfg := Config{SplitSize: 64 << 20, MinTolerance: 100} // no balance moves: only the range duties
	h := newHarness(t, newFake(t, 5, 5, 1, 3), DriverConfig{Placement: cfg, MovesPerMinute: 1000, MaxConcurrentOps: 8})
	sh := h.f.shards[1]
	sh.Start, sh.Last, sh.Size = 0, ^uint64(0), 256<<20
	h.settle(100)
	if n := len(h.f.shards); n != 4 {
		t.Fatalf("%d shards after the splits, want 4: %v", n, h.f.shards)
	}
	for _, s := range h.f.shards {
		if s.Size > cfg.SplitSize {
			t.Fatalf("shard %d holds %d bytes after the splits", s.ID, s.Size)
		}
	}
	checkTiles(t, h.f)
	// Within the cool-down, cold shards are not merged back.
	for _, s := range h.f.shards {
		s.Size, s.WritesPerSecond = 1<<20, 1
	}
	if ops := h.plan(); slices.ContainsFunc(ops, func(o Op) bool { return o.Kind == Merge }) {
		t.Fatalf("a merge within the cool-down: %v", ops)
	}
	// Spread the replicas, so that merges need moves first.
	h.f.shards[2].Replicas[0].NodeID, h.f.shards[2].Replicas[1].NodeID = 4, 5
	// Each merged shard waits out the cool-down before it merges again.
	for range 4 {
		h.f.now = h.f.now.Add(time.Hour)
		h.settle(200)
	}
	if n := len(h.f.shards); n != 1 {
		t.Fatalf("%d shards after the merges, want 1: %v", n, h.f.shards)
	}
	checkTiles(t, h.f)
	if h.f.calls["Merge"] < 3 || h.d.Stats().Succeeded[Merge] < 3 {
		t.Fatalf("merges: %d calls, stats %+v", h.f.calls["Merge"], h.d.Stats())
	}
	// Merged: neither split (below the split size) nor anything else.
	if ops := h.plan(); len(ops) != 0 {
		t.Fatalf("after the merges: %v", ops)
	}
}

// TestSplitsOnWriteRate: a hot shard is split by its write rate, not by
// its size; the merge thresholds must stay below half the split ones.
func TestSplitsOnWriteRate(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(1, []uint64{1, 2, 3}, 3)}
	st.Shards[0].WritesPerSecond = 3000
	ops, err := Plan(st, Config{}, nil)
	if err != nil || len(ops) != 1 || ops[0].Kind != Split || ops[0].Generation != st.Shards[0].Generation {
		t.Fatalf("plan of a hot shard: %v, %v", ops, err)
	}
	if err := (Config{SplitWriteRate: 1000, MergeWriteRate: 600}).Validate(); err == nil {
		t.Fatal("a merge rate above half the split rate was accepted")
	}
	if _, err := Plan(st, Config{NoSplits: true}, nil); err != nil {
		t.Fatal(err)
	}
}

// checkTiles checks that the fake's shards cover the ring with no gap or
// overlap.
func checkTiles(t *testing.T, f *fakeCluster) {
	t.Helper()
	st, _ := f.State(context.Background())
	slices.SortFunc(st.Shards, func(a, b Shard) int {
		if a.Start < b.Start {
			return -1
		}
		return 1
	})
	next := uint64(0)
	for i, s := range st.Shards {
		if s.Start != next || (s.Last == ^uint64(0)) != (i == len(st.Shards)-1) {
			t.Fatalf("the shards do not tile the ring: %v", st.Shards)
		}
		next = s.Last + 1
	}
}

// plan returns what the planner would do now, with what is in flight.
func (h *harness) plan() []Op {
	h.t.Helper()
	st, _ := h.f.State(context.Background())
	var inflight []Op
	for _, m := range h.d.Moves() {
		if m.Outcome == Running {
			inflight = append(inflight, m.Op)
		}
	}
	ops, err := Plan(st, h.d.cfg.Placement, inflight)
	if err != nil {
		h.t.Fatal(err)
	}
	return ops
}
