package shardload

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/storage"
)

type fakeEngine struct {
	sts   []engine.ShardStatus
	sizes map[uint64]uint64
}

// Leading reports the initialized leaders of f.sts, as the engine does.
func (f *fakeEngine) Leading(context.Context) ([]engine.LedShard, error) {
	var out []engine.LedShard
	for _, st := range f.sts {
		if st.State == "StateLeader" && st.Initialized {
			out = append(out, engine.LedShard{ShardID: st.ShardID, Applied: st.Applied, Desc: st.Desc})
		}
	}
	return out, nil
}

func (f *fakeEngine) SizeOf(d storage.Descriptor) (uint64, error) { return f.sizes[d.ShardID], nil }

func status(shard, gen, applied uint64, state string) engine.ShardStatus {
	return engine.ShardStatus{ShardID: shard, State: state, Applied: applied, Initialized: true,
		Desc: storage.Descriptor{ShardID: shard, Generation: gen}}
}

// TestLoads: the write rate is the applied index's advance over the samples
// within the window; a shard no longer led is forgotten; a split or merge
// (a new generation) starts the count afresh; followers, uninitialized
// replicas and system shards are not counted.
func TestLoads(t *testing.T) {
	now := time.Unix(1000, 0)
	f := &fakeEngine{sizes: map[uint64]uint64{1: 100 << 20, 2: 5}}
	tr, err := New(Config{Window: 30 * time.Second, Interval: 10 * time.Second, Now: func() time.Time { return now }}, f)
	if err != nil {
		t.Fatal(err)
	}
	step := func(applied1, applied2 uint64, gen2 uint64) []Load {
		t.Helper()
		f.sts = []engine.ShardStatus{status(1, 0, applied1, "StateLeader"), status(2, gen2, applied2, "StateLeader"),
			status(3, 0, 500, "StateFollower"), status(storage.SystemShardBase, 0, 9, "StateLeader")}
		if err := tr.Sample(context.Background()); err != nil {
			t.Fatal(err)
		}
		now = now.Add(10 * time.Second)
		ls := tr.Loads()
		slices.SortFunc(ls, func(a, b Load) int { return int(a.ShardID) - int(b.ShardID) })
		return ls
	}
	if ls := step(0, 0, 0); len(ls) != 2 || ls[0].WritesPerSecond != 0 || ls[0].Size != 100<<20 {
		t.Fatalf("one sample: %+v", ls)
	}
	step(1000, 10, 0)
	step(2000, 20, 0)
	ls := step(3000, 30, 0) // 4 samples over 30 s
	if math.Abs(ls[0].WritesPerSecond-100) > 1e-9 || math.Abs(ls[1].WritesPerSecond-1) > 1e-9 {
		t.Fatalf("rates: %+v", ls)
	}
	ls = step(9000, 30, 1) // shard 1: the first sample drops out of the window; shard 2 split
	if math.Abs(ls[0].WritesPerSecond-(9000-1000)/30.0) > 1e-9 || ls[1].WritesPerSecond != 0 || ls[1].Generation != 1 {
		t.Fatalf("after the window slid and shard 2's split: %+v", ls)
	}
	f.sts = f.sts[:1]
	if err := tr.Sample(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ls := tr.Loads(); len(ls) != 1 || ls[0].ShardID != 1 {
		t.Fatalf("shard 2 no longer led: %+v", ls)
	}
	if err := (Config{Window: time.Second, Interval: time.Minute}).Validate(); err == nil {
		t.Fatal("an interval above the window was accepted")
	}
}

// TestSizeMeasured: a led shard's size is measured at its first sample,
// again at a sample that finds it written to (its applied index moved),
// and otherwise once every SizeRefresh (a compaction shrinks it without a
// write); a split (a new generation) measures it afresh.
func TestSizeMeasured(t *testing.T) {
	now := time.Unix(1000, 0)
	f := &fakeEngine{sizes: map[uint64]uint64{1: 100}}
	tr, err := New(Config{Window: 30 * time.Second, Interval: 10 * time.Second, SizeRefresh: 30 * time.Second, Now: func() time.Time { return now }}, f)
	if err != nil {
		t.Fatal(err)
	}
	sample := func(applied, gen uint64) uint64 {
		t.Helper()
		f.sts = []engine.ShardStatus{status(1, gen, applied, "StateLeader")}
		if err := tr.Sample(context.Background()); err != nil {
			t.Fatal(err)
		}
		now = now.Add(10 * time.Second)
		ls := tr.Loads()
		if len(ls) != 1 {
			t.Fatalf("loads %+v", ls)
		}
		return ls[0].Size
	}
	for i, step := range []struct {
		applied, gen, size, want uint64
	}{
		{10, 0, 100, 100}, // first sample: measured
		{10, 0, 200, 100}, // idle: the last size
		{11, 0, 300, 300}, // written to: measured
		{11, 0, 400, 300}, // idle (10 s after)
		{11, 0, 500, 300}, // idle (20 s after)
		{11, 0, 600, 600}, // idle for SizeRefresh: measured
		{11, 1, 700, 700}, // split: measured afresh
	} {
		f.sizes[1] = step.size
		if got := sample(step.applied, step.gen); got != step.want {
			t.Fatalf("sample %d: size %d, want %d", i, got, step.want)
		}
	}
}

// TestIdleSizesSpread: idle shards are measured again once every
// SizeRefresh, a share of them at each sample (not all in one), while a
// shard written to is measured at once whatever the share.
func TestIdleSizesSpread(t *testing.T) {
	now := time.Unix(1000, 0)
	const shards = 120
	f := &fakeEngine{sizes: map[uint64]uint64{}}
	for id := uint64(1); id <= shards; id++ {
		f.sts = append(f.sts, status(id, 0, 10, "StateLeader"))
	}
	measured := 0
	counting := &countingEngine{fakeEngine: f, n: &measured}
	tr, err := New(Config{Window: 10 * time.Second, Interval: 10 * time.Second, SizeRefresh: 60 * time.Second, Now: func() time.Time { return now }}, counting)
	if err != nil {
		t.Fatal(err)
	}
	sample := func() int {
		t.Helper()
		measured = 0
		if err := tr.Sample(context.Background()); err != nil {
			t.Fatal(err)
		}
		now = now.Add(10 * time.Second)
		return measured
	}
	if n := sample(); n != shards {
		t.Fatalf("first sample measured %d shards, want all %d", n, shards)
	}
	for i := 1; i < 6; i++ { // none is due before SizeRefresh
		if n := sample(); n != 0 {
			t.Fatalf("sample %d measured %d idle shards before SizeRefresh", i, n)
		}
	}
	// All are due now; each sample takes its share (120*10s/60s + 1 = 21),
	// and one written to besides.
	f.sts[0].Applied++
	total := 0
	for i := 0; total < shards; i++ {
		if i == 8 {
			t.Fatalf("after %d samples only %d of %d idle shards measured again", i, total, shards)
		}
		n := sample()
		if n > 22 {
			t.Fatalf("one sample measured %d shards, want at most 21 idle ones and the one written", n)
		}
		total += n
	}
}

type countingEngine struct {
	*fakeEngine
	n *int
}

func (c *countingEngine) SizeOf(d storage.Descriptor) (uint64, error) {
	*c.n++
	return c.fakeEngine.SizeOf(d)
}
