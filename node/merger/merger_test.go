package merger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeCluster runs the steps on the test cluster's engines, the shards'
// leaders' for those that need one, and keeps the records written.
type fakeCluster struct {
	c *testcluster.Cluster
	// ring, if set, answers ShardAt (a ring that lags).
	ring func(hash uint64) (uint64, bool)
	mu   sync.Mutex
	// bumpErr, if set, fails every bump (a left shard without a leader).
	bumpErr error
	written [][]nodemeta.ShardRecord
	// merged holds the tombstones MergedAway reads: a shard merged away →
	// the shard it was merged into; mergedErr, if set, fails every read.
	merged    map[uint64]uint64
	mergedErr error
	// bumps and mergedReads count the calls of BumpGeneration and
	// MergedAway, by shard.
	bumps, mergedReads map[uint64]int
}

func (f *fakeCluster) ShardAt(hash uint64) (uint64, bool) {
	if f.ring != nil {
		return f.ring(hash)
	}
	var best storage.Descriptor
	ctx := context.Background()
	f.c.EachStatus(ctx, func(_ uint64, st engine.ShardStatus) {
		if d := st.Desc; !storage.IsSystemShard(d.ShardID) && d.Start <= hash && hash <= d.Last && d.Generation >= best.Generation {
			best = d
		}
	})
	return best.ShardID, best.ShardID != 0
}

// onLeader runs fn on shardID's leader.
func (f *fakeCluster) onLeader(ctx context.Context, shardID uint64, fn func(e *engine.Engine) (storage.Descriptor, error)) (storage.Descriptor, error) {
	e := f.c.Engine(f.c.Leader(ctx, shardID))
	if e == nil {
		return storage.Descriptor{}, &engine.NotLeaderError{ShardID: shardID}
	}
	return fn(e)
}

func (f *fakeCluster) Freeze(ctx context.Context, req engine.FreezeRequest) (storage.Descriptor, error) {
	return f.onLeader(ctx, req.Right, func(e *engine.Engine) (storage.Descriptor, error) { return e.FreezeForMerge(ctx, req) })
}

func (f *fakeCluster) WaitFrozen(ctx context.Context, nodeID, shardID, generation uint64) error {
	return f.c.Engine(nodeID).WaitFrozen(ctx, shardID, generation)
}

func (f *fakeCluster) Unfreeze(ctx context.Context, shardID, generation uint64) (storage.Descriptor, error) {
	return f.onLeader(ctx, shardID, func(e *engine.Engine) (storage.Descriptor, error) { return e.Unfreeze(ctx, shardID, generation) })
}

func (f *fakeCluster) BumpGeneration(ctx context.Context, shardID, generation uint64) (storage.Descriptor, error) {
	f.mu.Lock()
	err := f.bumpErr
	f.bumps = count(f.bumps, shardID)
	f.mu.Unlock()
	if err != nil {
		return storage.Descriptor{}, err
	}
	return f.onLeader(ctx, shardID, func(e *engine.Engine) (storage.Descriptor, error) { return e.BumpGeneration(ctx, shardID, generation) })
}

func (f *fakeCluster) PutShards(_ context.Context, recs []nodemeta.ShardRecord) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written = append(f.written, slices.Clone(recs))
	return nil
}

func (f *fakeCluster) MergedAway(_ context.Context, shardID uint64) (uint64, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mergedReads = count(f.mergedReads, shardID)
	if f.mergedErr != nil {
		return 0, false, f.mergedErr
	}
	into, ok := f.merged[shardID]
	return into, ok, nil
}

func count(m map[uint64]int, shardID uint64) map[uint64]int {
	if m == nil {
		m = map[uint64]int{}
	}
	m[shardID]++
	return m
}

func (f *fakeCluster) setBumpErr(err error) {
	f.mu.Lock()
	f.bumpErr = err
	f.mu.Unlock()
}

// tombstone writes shardID's tombstone: merged into into.
func (f *fakeCluster) tombstone(shardID, into uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.merged == nil {
		f.merged = map[uint64]uint64{}
	}
	f.merged[shardID] = into
}

func (f *fakeCluster) setMergedErr(err error) {
	f.mu.Lock()
	f.mergedErr = err
	f.mu.Unlock()
}

// calls returns how many times BumpGeneration and MergedAway were called
// for shardID.
func (f *fakeCluster) calls(shardID uint64) (bumps, mergedReads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bumps[shardID], f.mergedReads[shardID]
}

// threeShards starts nodes (at least 3) with shards 1-3 evenly over the
// hash space, on nodes 1-3, shard 1 led by node 1 (so is shard 2, for the
// merges of shard 1, whose leader must hold its neighbour's replica).
func threeShards(t *testing.T, ctx context.Context, nodes int) (*testcluster.Cluster, *fakeCluster, []storage.Descriptor) {
	t.Helper()
	c := testcluster.New(t, testcluster.Config{Nodes: nodes})
	c.RunClock(2 * time.Millisecond)
	descs := testcluster.EvenDescriptors(1, 3)
	if err := c.CreateShards(ctx, descs, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	ids := []uint64{1, 2, 3}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := c.WaitFor(ctx, "node 1 to lead", func() bool {
			if l := c.Leader(ctx, id); l != 1 && l != 0 {
				_ = c.Engine(l).TransferLeader(ctx, id, 1)
			}
			return c.Leader(ctx, id) == 1
		}); err != nil {
			t.Fatal(err)
		}
	}
	return c, &fakeCluster{c: c}, descs
}

func newMerger(t *testing.T, c *testcluster.Cluster, node uint64, f *fakeCluster, adjust func(*Config)) *Merger {
	t.Helper()
	cfg := Config{NodeID: node, WaitTimeout: 5 * time.Second, SettleTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	if adjust != nil {
		adjust(&cfg)
	}
	m, err := New(cfg, c.Engine(node), f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// descOf returns shardID's descriptor on its leader.
func descOf(t *testing.T, ctx context.Context, c *testcluster.Cluster, shardID uint64) storage.Descriptor {
	t.Helper()
	st, err := c.Engine(c.Leader(ctx, shardID)).Status(ctx, shardID)
	if err != nil {
		t.Fatal(err)
	}
	return st.Desc
}

// TestMerge: shard 1 takes shard 2's range, which goes from every node;
// the records are the right shard's frozen one, then the widened left
// one; a key of the right shard reads back from the left one.
func TestMerge(t *testing.T) {
	ctx := ctxT(t)
	c, f, descs := threeShards(t, ctx, 3)
	key := keyOf(t, descs[1])
	if _, err := c.Engine(1).Propose(ctx, 2, engine.PutCommand(key, []byte("v"))); err != nil {
		t.Fatal(err)
	}
	m := newMerger(t, c, 1, f, nil)
	res, err := m.Merge(ctx, Request{Left: 1, Generation: descs[0].Generation})
	if err != nil {
		t.Fatal(err)
	}
	l, r := res.Left, res.Right
	if l.ShardID != 1 || l.Start != descs[0].Start || l.Last != descs[1].Last || l.Generation != r.Generation+1 ||
		r.ShardID != 2 || !r.Frozen() || r.MergeInto != 1 {
		t.Fatalf("merged: left %v, right %v", l, r)
	}
	if len(f.written) != 2 || !f.written[0][0].Frozen() || f.written[0][0].ShardID != 2 || !f.written[1][0].Equal(nodemeta.RecordOf(l)) {
		t.Fatalf("records written: %+v", f.written)
	}
	waitGone(t, ctx, c, 2)
	res2, err := c.Engine(1).Read(ctx, 1, engine.GetQuery(key))
	if v, found, derr := engine.DecodeGetResult(res2); err != nil || derr != nil || !found || string(v) != "v" {
		t.Fatalf("key of the merged shard: %q %v %v %v", v, found, err, derr)
	}
	// And once more: shard 1 with shard 3, the last one.
	if res, err = m.Merge(ctx, Request{Left: 1}); err != nil || res.Left.Start != 0 || res.Left.Last != ^uint64(0) {
		t.Fatalf("second merge: %+v, %v", res, err)
	}
}

// waitGone waits until shardID has no replica left on any node.
func waitGone(t *testing.T, ctx context.Context, c *testcluster.Cluster, shardID uint64) {
	t.Helper()
	if err := c.WaitFor(ctx, fmt.Sprintf("shard %d gone from every node", shardID), func() bool {
		for _, id := range c.IDs() {
			if _, err := c.Engine(id).Status(ctx, shardID); !errors.Is(err, engine.ErrShardNotFound) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
}

// TestMergeRingLags: the ring of the left shard's leader lags a split of
// the left shard (it has the left shard's range before the split): the
// merger finds the neighbour, the split's child, among the shards here,
// and merges it back.
func TestMergeRingLags(t *testing.T) {
	ctx := ctxT(t)
	c, f, descs := threeShards(t, ctx, 3)
	d1 := descOf(t, ctx, c, 1)
	at := d1.Start + (d1.Last-d1.Start)/2
	if _, err := c.Engine(1).Split(ctx, engine.SplitRequest{ShardID: 1, Generation: d1.Generation, At: at, ChildID: 10}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{10}); err != nil {
		t.Fatal(err)
	}
	f.ring = func(hash uint64) (uint64, bool) {
		if hash <= descs[0].Last {
			return 1, true
		}
		return 0, false
	}
	res, err := newMerger(t, c, 1, f, nil).Merge(ctx, Request{Left: 1})
	if err != nil || res.Right.ShardID != 10 || res.Left.Last != descs[0].Last {
		t.Fatalf("merge with a lagging ring: %+v, %v", res, err)
	}
}

// keyOf returns a key whose hash is in d's range.
func keyOf(t *testing.T, d storage.Descriptor) []byte {
	t.Helper()
	for i := range 10000 {
		k := []byte{byte('a' + i%26), byte(i / 26), byte(i / 26 / 256)}
		if h := (router.PartitionRule{}).Hash(k); d.Start <= h && h <= d.Last {
			return k
		}
	}
	t.Fatalf("no key in %v", d)
	return nil
}

// TestMergeRefusals: refused before anything changes, each with its
// typed error: shards keep their generations, nothing is written.
func TestMergeRefusals(t *testing.T) {
	ctx := ctxT(t)
	c, f, descs := threeShards(t, ctx, 4)
	m := newMerger(t, c, 1, f, nil)
	var (
		refusal *RefusalError
		stale   *engine.StaleGenerationError
		nl      *engine.NotLeaderError
	)
	refused := func(want error) func(error) bool {
		return func(err error) bool { return errors.As(err, &refusal) && errors.Is(err, want) }
	}
	for _, tc := range []struct {
		name string
		m    *Merger
		req  Request
		ok   func(error) bool
	}{
		{"unknown shard", m, Request{Left: 77}, func(err error) bool { return errors.Is(err, engine.ErrShardNotFound) }},
		{"system shard", m, Request{Left: storage.SystemShardBase}, refused(ErrSystemShard)},
		{"last shard", m, Request{Left: 3}, refused(ErrNotAdjacent)},
		{"stale generation", m, Request{Left: 1, Generation: descs[0].Generation + 5}, func(err error) bool {
			return errors.As(err, &stale) && stale.Generation == descs[0].Generation && stale.Last == descs[0].Last
		}},
		{"stale right generation", m, Request{Left: 1, RightGeneration: descs[1].Generation + 5}, func(err error) bool {
			return errors.As(err, &stale) && stale.ShardID == 2 && stale.Generation == descs[1].Generation && stale.Start == descs[1].Start
		}},
		{"not the leader", newMerger(t, c, 2, f, nil), Request{Left: 1}, func(err error) bool { return errors.As(err, &nl) && nl.Leader == 1 }},
	} {
		if _, err := tc.m.Merge(ctx, tc.req); !tc.ok(err) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// Shard 2's replica on node 3 moves to node 4: its replicas differ
	// from shard 1's.
	for _, ch := range []engine.ReplicaChange{{Type: engine.AddLearner, NodeID: 4}, {Type: engine.AddVoter, NodeID: 4}, {Type: engine.Remove, NodeID: 3}} {
		var err error
		if werr := c.WaitFor(ctx, "a conf change accepted", func() bool {
			err = c.Engine(1).ChangeReplicas(ctx, 2, ch)
			return !errors.Is(err, engine.ErrConfChangeInProgress)
		}); werr != nil || err != nil {
			t.Fatal(werr, err)
		}
	}
	if _, err := m.Merge(ctx, Request{Left: 1}); !refused(ErrReplicasDiffer)(err) {
		t.Errorf("replicas on other nodes: %v", err)
	}
	// Shard 3 frozen for a merge into shard 2.
	d2, d3 := descOf(t, ctx, c, 2), descOf(t, ctx, c, 3)
	if _, err := c.Engine(1).FreezeForMerge(ctx, engine.FreezeRequest{Right: 3, RightGeneration: d3.Generation, Left: 2, LeftGeneration: d2.Generation}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Merge(ctx, Request{Left: 2}); !refused(ErrMerging)(err) {
		t.Errorf("frozen neighbour: %v", err)
	}
	if d := descOf(t, ctx, c, 1); d.Generation != descs[0].Generation || d.Last != descs[0].Last {
		t.Errorf("shard 1 after the refusals: %v", d)
	}
	if len(f.written) != 0 {
		t.Errorf("records written by refused merges: %+v", f.written)
	}
}

// TestMergeAbandoned: a failure between the freeze and the merge abandons
// it: the left shard's generation is bumped, the right shard thawed, both
// serve writes; then the merge succeeds.
func TestMergeAbandoned(t *testing.T) {
	ctx := ctxT(t)
	c, f, descs := threeShards(t, ctx, 3)
	injected := errors.New("injected: a node did not answer")
	for _, step := range []Step{StepRecord, StepWaited, StepMerge} {
		m := newMerger(t, c, 1, f, func(cfg *Config) {
			cfg.Fault = func(s Step) error {
				if s == step {
					return injected
				}
				return nil
			}
		})
		before1, before2 := descOf(t, ctx, c, 1), descOf(t, ctx, c, 2)
		_, err := m.Merge(ctx, Request{Left: 1})
		var ae *AbandonedError
		if !errors.As(err, &ae) || !ae.Settled || ae.Step != step || !errors.Is(err, injected) || !errors.Is(err, ErrAbandoned) {
			t.Fatalf("fault at %s: %v", step, err)
		}
		d1, d2 := descOf(t, ctx, c, 1), descOf(t, ctx, c, 2)
		if d1.Generation != before1.Generation+1 || d1.Last != descs[0].Last || d2.Frozen() || d2.Generation != before2.Generation+2 {
			t.Fatalf("fault at %s: shard 1 %v, shard 2 %v", step, d1, d2)
		}
		for _, d := range []storage.Descriptor{d1, d2} {
			if _, err := c.Engine(1).Propose(ctx, d.ShardID, engine.PutCommand(keyOf(t, d), []byte("after"))); err != nil {
				t.Fatalf("fault at %s: write to shard %d: %v", step, d.ShardID, err)
			}
		}
	}
	if _, err := newMerger(t, c, 1, f, nil).Merge(ctx, Request{Left: 1}); err != nil {
		t.Fatalf("merge after the abandoned ones: %v", err)
	}
}

// TestRecovery: a merge that fails and cannot be abandoned (no bump of
// the left shard gets through) leaves the right shard frozen; the
// recovery on the right shard's leader settles it once it has been frozen
// for FrozenTimeout, not before.
func TestRecovery(t *testing.T) {
	ctx := ctxT(t)
	c, f, _ := threeShards(t, ctx, 3)
	m := newMerger(t, c, 1, f, func(cfg *Config) {
		cfg.SettleTimeout = 100 * time.Millisecond
		cfg.FrozenTimeout = time.Minute
		cfg.Fault = func(s Step) error {
			if s == StepWaited {
				return errors.New("injected")
			}
			return nil
		}
	})
	unreachable := errors.New("no leader for shard 1")
	f.setBumpErr(unreachable)
	_, err := m.Merge(ctx, Request{Left: 1})
	var ae *AbandonedError
	if !errors.As(err, &ae) || ae.Settled || !errors.Is(ae.SettleErr, unreachable) {
		t.Fatalf("unsettled merge: %v", err)
	}
	if d := descOf(t, ctx, c, 2); !d.Frozen() {
		t.Fatalf("shard 2 after an unsettled merge: %v", d)
	}
	f.setBumpErr(nil)
	rec := m.Recovery()
	now := time.Now()
	for _, at := range []time.Time{now, now.Add(30 * time.Second)} {
		if settled, err := rec.Pass(ctx, at); err != nil || len(settled) != 0 {
			t.Fatalf("pass at +%v: %+v, %v", at.Sub(now), settled, err)
		}
	}
	settled, err := rec.Pass(ctx, now.Add(time.Minute))
	if err != nil || len(settled) != 1 || settled[0].Merged || settled[0].Frozen.ShardID != 2 {
		t.Fatalf("pass after the timeout: %+v, %v", settled, err)
	}
	if d := descOf(t, ctx, c, 2); d.Frozen() {
		t.Fatalf("shard 2 after the recovery: %v", d)
	}
	if settled, err := rec.Pass(ctx, now.Add(2*time.Minute)); err != nil || len(settled) != 0 {
		t.Fatalf("pass after: %+v, %v", settled, err)
	}
}

// TestSettleFindsMerged: settling a merge that applied (its outcome
// unknown to the node that ran it) reports it merged and thaws nothing.
func TestSettleFindsMerged(t *testing.T) {
	ctx := ctxT(t)
	c, f, _ := threeShards(t, ctx, 3)
	m := newMerger(t, c, 1, f, nil)
	res, err := m.Merge(ctx, Request{Left: 1})
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.settle(ctx, res.Right)
	if out != outcomeMerged || err != nil {
		t.Fatalf("settle of a merge that applied: %v, %v", out, err)
	}
	if d := descOf(t, ctx, c, 1); d.Generation != res.Left.Generation {
		t.Fatalf("shard 1 after: %v", d)
	}
}

// recoveryTest is shards 1-3 (threeShards) with shard 3 frozen for a
// merge into shard 2, and a merger on node 1, their leader, with
// FrozenTimeout 1 minute, whose Recovery has seen shard 3 frozen at start.
type recoveryTest struct {
	c      *testcluster.Cluster
	f      *fakeCluster
	m      *Merger
	rec    *Recovery
	frozen storage.Descriptor // shard 3's frozen descriptor
	start  time.Time
}

func newRecoveryTest(t *testing.T, ctx context.Context, settleTimeout time.Duration) *recoveryTest {
	t.Helper()
	c, f, _ := threeShards(t, ctx, 3)
	rt := &recoveryTest{c: c, f: f, m: newMerger(t, c, 1, f, func(cfg *Config) {
		cfg.SettleTimeout = settleTimeout
		cfg.FrozenTimeout = time.Minute
	})}
	d2, d3 := descOf(t, ctx, c, 2), descOf(t, ctx, c, 3)
	var err error
	rt.frozen, err = c.Engine(1).FreezeForMerge(ctx, engine.FreezeRequest{Right: 3, RightGeneration: d3.Generation, Left: 2, LeftGeneration: d2.Generation})
	if err != nil {
		t.Fatal(err)
	}
	rt.rec, rt.start = rt.m.Recovery(), time.Now()
	if settled, err := rt.rec.Pass(ctx, rt.start); err != nil || len(settled) != 0 {
		t.Fatalf("first pass: %+v, %v", settled, err)
	}
	return rt
}

// TestRecoveryLeftMergedAway: shard 3 frozen for a merge into shard 2,
// and shard 2 merged into shard 1 meanwhile (its replicas destroyed
// everywhere, its tombstone written): no bump of shard 2 can get through,
// and none is needed, since the merge of shard 3 into it can never apply.
// The recovery thaws shard 3 after one failed bump and says why.
func TestRecoveryLeftMergedAway(t *testing.T) {
	ctx := ctxT(t)
	rt := newRecoveryTest(t, ctx, 2*time.Second)
	c, f := rt.c, rt.f
	if res, err := rt.m.Merge(ctx, Request{Left: 1}); err != nil || res.Right.ShardID != 2 {
		t.Fatalf("merge of shard 2 into shard 1: %+v, %v", res, err)
	}
	waitGone(t, ctx, c, 2)
	f.tombstone(2, 1)
	settled, err := rt.rec.Pass(ctx, rt.start.Add(time.Minute))
	if err != nil || len(settled) != 1 || settled[0].Frozen.ShardID != 3 || settled[0].Merged || !settled[0].LeftGone {
		t.Fatalf("pass after the timeout: %+v, %v", settled, err)
	}
	if bumps, _ := f.calls(2); bumps > 1 {
		t.Errorf("%d bumps of shard 2, which is gone", bumps)
	}
	d3 := descOf(t, ctx, c, 3)
	if d3.Frozen() || d3.Generation != rt.frozen.Generation+1 {
		t.Fatalf("shard 3 after the recovery: %v", d3)
	}
	if _, err := c.Engine(1).Propose(ctx, 3, engine.PutCommand(keyOf(t, d3), []byte("after"))); err != nil {
		t.Fatalf("write to shard 3: %v", err)
	}
}

// TestRecoveryLeftNotGone: a left shard that no bump reaches (no leader,
// not found where asked) is not taken for gone without its tombstone,
// nor when its tombstone cannot be read, nor for another shard's: the
// right shard stays frozen, and the recovery abandons the merge with a
// bump once one gets through.
func TestRecoveryLeftNotGone(t *testing.T) {
	ctx := ctxT(t)
	rt := newRecoveryTest(t, ctx, 200*time.Millisecond)
	c, f := rt.c, rt.f
	d2 := descOf(t, ctx, c, 2)
	f.tombstone(9, 1)
	for i, tc := range []struct {
		name              string
		bumpErr, mergeErr error
	}{
		{"no leader", &engine.NotLeaderError{ShardID: 2}, nil},
		{"not found", fmt.Errorf("%w: shard 2", engine.ErrShardNotFound), nil},
		{"tombstone unreadable", fmt.Errorf("%w: shard 2", engine.ErrShardNotFound), errors.New("meta shard unavailable")},
	} {
		f.setBumpErr(tc.bumpErr)
		f.setMergedErr(tc.mergeErr)
		_, readsBefore := f.calls(2)
		settled, err := rt.rec.Pass(ctx, rt.start.Add(time.Minute+time.Duration(i)*time.Second))
		if err == nil || len(settled) != 0 {
			t.Fatalf("%s: pass after the timeout: %+v, %v", tc.name, settled, err)
		}
		if _, reads := f.calls(2); reads == readsBefore {
			t.Errorf("%s: shard 2's tombstone not looked for", tc.name)
		}
		if d := descOf(t, ctx, c, 3); !d.Frozen() || d.Generation != rt.frozen.Generation {
			t.Fatalf("%s: shard 3 after the pass: %v", tc.name, d)
		}
	}
	f.setBumpErr(nil)
	f.setMergedErr(nil)
	settled, err := rt.rec.Pass(ctx, rt.start.Add(2*time.Minute))
	if err != nil || len(settled) != 1 || settled[0].Frozen.ShardID != 3 || settled[0].Merged || settled[0].LeftGone {
		t.Fatalf("pass once a bump gets through: %+v, %v", settled, err)
	}
	if d := descOf(t, ctx, c, 2); d.Generation != d2.Generation+1 {
		t.Fatalf("shard 2 after the recovery: %v", d)
	}
	if d := descOf(t, ctx, c, 3); d.Frozen() {
		t.Fatalf("shard 3 after the recovery: %v", d)
	}
}
