package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3/raftpb"
)

// Scenario tests of merges (merge.go).

// onLeaderOf runs fn on shard's leader until it answers anything but
// NotLeader (a leader change) or ctx ends.
func onLeaderOf(t *testing.T, ctx context.Context, c *testcluster.Cluster, shard uint64, fn func(e *engine.Engine) error) error {
	t.Helper()
	var err error
	if werr := c.WaitFor(ctx, fmt.Sprintf("the leader of shard %d", shard), func() bool {
		e := c.Engine(c.Leader(ctx, shard))
		if e == nil {
			return false
		}
		err = fn(e)
		var nl *engine.NotLeaderError
		return !errors.As(err, &nl)
	}); werr != nil {
		t.Fatal(werr)
	}
	return err
}

// freeze freezes right for a merge into left (as their leaders have them
// now) and returns both descriptors; wait: on every node of right, until
// its replica is frozen durably.
func freeze(t *testing.T, ctx context.Context, c *testcluster.Cluster, left, right uint64, wait bool) (l, r storage.Descriptor) {
	t.Helper()
	l = status(t, ctx, c, c.Leader(ctx, left), left).Desc
	rd := status(t, ctx, c, c.Leader(ctx, right), right).Desc
	if err := onLeaderOf(t, ctx, c, right, func(e *engine.Engine) (err error) {
		r, err = e.FreezeForMerge(ctx, engine.FreezeRequest{Right: right, RightGeneration: rd.Generation, Left: left, LeftGeneration: l.Generation})
		return err
	}); err != nil {
		t.Fatalf("freeze shard %d: %v", right, err)
	}
	if wait {
		for _, rep := range r.Replicas {
			if err := c.Engine(rep.NodeID).WaitFrozen(ctx, right, r.Generation); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l, r
}

// merge merges right (frozen) into left on left's leader.
func merge(t *testing.T, ctx context.Context, c *testcluster.Cluster, l, r storage.Descriptor) (storage.Descriptor, error) {
	t.Helper()
	var out storage.Descriptor
	err := onLeaderOf(t, ctx, c, l.ShardID, func(e *engine.Engine) (err error) {
		out, err = e.Merge(ctx, engine.MergeRequest{Left: l.ShardID, LeftGeneration: l.Generation, Right: r.ShardID, RightGeneration: r.Generation})
		return err
	})
	return out, err
}

// twoShards makes shards 1 [0, 2^63) and 2 [2^63, 2^64) on nodes 1-3, with
// keys written into both.
func twoShards(t *testing.T, cfg testcluster.Config) (*testcluster.Cluster, context.Context, []storage.Descriptor, map[string]string) {
	t.Helper()
	cfg.Nodes = max(cfg.Nodes, 3)
	c := newCluster(t, cfg)
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	descs := testcluster.EvenDescriptors(1, 2)
	if err := c.CreateShards(ctx, descs, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{1, 2}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, d := range descs {
		for k, v := range putKeys(t, ctx, c, d, 40, "v1") {
			want[k] = v
		}
	}
	return c, ctx, descs, want
}

// checkMerged checks that left covers the whole ring and shard 2 is gone
// from every node, and that every key of want reads back.
func checkMerged(t *testing.T, ctx context.Context, c *testcluster.Cluster, left storage.Descriptor, want map[string]string) {
	t.Helper()
	if left.Start != 0 || left.Last != ^uint64(0) {
		t.Fatalf("merged: %v", left)
	}
	waitSettled(t, ctx, c, []uint64{1})
	for _, id := range c.IDs() {
		if _, err := c.Engine(id).Status(ctx, 2); !errors.Is(err, engine.ErrShardNotFound) {
			t.Fatalf("node %d still has shard 2: %v", id, err)
		}
	}
	checkAppliedAgree(t, ctx, c, []storage.Descriptor{left})
	checkKeys(t, ctx, c, []storage.Descriptor{left}, want)
}

// TestMergeFoldsTheRightShardInPlace: the right shard, frozen, is folded
// into the left one on every replica with its data in place; the left one
// serves the whole range; the right one is gone everywhere, its ID
// tombstoned; a frozen shard serves nothing meanwhile.
func TestMergeFoldsTheRightShardInPlace(t *testing.T) {
	c, ctx, descs, want := twoShards(t, testcluster.Config{})
	l, r := freeze(t, ctx, c, 1, 2, true)
	if !r.Frozen() || r.MergeInto != 1 || r.Generation != descs[1].Generation+1 {
		t.Fatalf("frozen: %v", r)
	}
	// Frozen: no writes, no linearizable reads, no conf change, no split.
	k := keysOf(descs[1], 1)[0]
	re := c.Engine(c.Leader(ctx, 2))
	var sm *engine.ShardMergingError
	if _, err := re.Propose(ctx, 2, engine.PutCommand(k, []byte("x"))); !errors.As(err, &sm) || sm.Into != 1 {
		t.Fatalf("a write to a frozen shard: %v", err)
	}
	if _, err := re.Read(ctx, 2, engine.GetQuery(k)); !errors.Is(err, engine.ErrShardMerging) {
		t.Fatalf("a read of a frozen shard: %v", err)
	}
	if err := re.ChangeReplicas(ctx, 2, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4}); !errors.Is(err, engine.ErrShardMerging) {
		t.Fatalf("a conf change of a frozen shard: %v", err)
	}
	if _, err := re.Split(ctx, engine.SplitRequest{ShardID: 2, Generation: r.Generation, At: r.Start + 10, ChildID: 9}); !errors.Is(err, engine.ErrShardMerging) {
		t.Fatalf("a split of a frozen shard: %v", err)
	}
	merged, err := merge(t, ctx, c, l, r)
	if err != nil {
		t.Fatal(err)
	}
	if merged.Generation != max(l.Generation, r.Generation)+1 {
		t.Fatalf("merged generation %d from %d and %d", merged.Generation, l.Generation, r.Generation)
	}
	for k, v := range putKeys(t, ctx, c, merged, 40, "v2") {
		want[k] = v
	}
	checkMerged(t, ctx, c, merged, want)
	// The right shard's ID stays gone: its messages cannot recreate it.
	if err := c.Engine(1).CreateShard(ctx, engine.ShardSpec{Desc: descs[1], Voters: []uint64{1, 2, 3}}); !errors.Is(err, engine.ErrTombstoned) && !errors.Is(err, engine.ErrRangeOverlap) {
		t.Fatalf("shard 2 created again after its merge: %v", err)
	}
}

// TestBadMergesRefusedAndAbandoned: merges of shards that are not
// adjacent, not on the same nodes, or planned on a stale generation are
// refused with typed errors; a merge abandoned (the left shard's
// generation bumped, the right one thawed) cannot apply any more, and the
// right shard serves again.
func TestBadMergesRefusedAndAbandoned(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	descs := testcluster.EvenDescriptors(1, 4)
	for i, d := range descs {
		nodes := []uint64{1, 2, 3}
		if i == 3 {
			nodes = []uint64{2, 3, 4} // shard 4 is elsewhere
		}
		if err := c.CreateShards(ctx, []storage.Descriptor{d}, nodes); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitLeaders(ctx, []uint64{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	// Not adjacent: 3 into 1.
	l, r := freeze(t, ctx, c, 1, 3, true)
	if _, err := merge(t, ctx, c, l, r); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("a merge of shards that are not adjacent: %v", err)
	}
	// Abandon it: bump 1, thaw 3; the merge planned before fails.
	if err := onLeaderOf(t, ctx, c, 1, func(e *engine.Engine) error { _, err := e.BumpGeneration(ctx, 1, l.Generation); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := merge(t, ctx, c, l, r); !errors.Is(err, engine.ErrStaleGeneration) && !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("a merge planned before its left shard's generation was bumped: %v", err)
	}
	if err := onLeaderOf(t, ctx, c, 3, func(e *engine.Engine) error { _, err := e.Unfreeze(ctx, 3, r.Generation); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Propose(ctx, 3, engine.PutCommand(keysOf(descs[2], 1)[0], []byte("thawed"))); err != nil {
		t.Fatalf("a write to a thawed shard: %v", err)
	}
	// Not on the same nodes: 4 into 3.
	l, r = freeze(t, ctx, c, 3, 4, true)
	if _, err := merge(t, ctx, c, l, r); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("a merge of shards on other nodes: %v", err)
	}
	// A stale generation: freeze 2 for 1 at 1's old generation.
	d1 := status(t, ctx, c, c.Leader(ctx, 1), 1).Desc
	d2 := status(t, ctx, c, c.Leader(ctx, 2), 2).Desc
	err := onLeaderOf(t, ctx, c, 2, func(e *engine.Engine) error {
		_, err := e.FreezeForMerge(ctx, engine.FreezeRequest{Right: 2, RightGeneration: d2.Generation + 5, Left: 1, LeftGeneration: d1.Generation})
		return err
	})
	if !errors.Is(err, engine.ErrStaleGeneration) {
		t.Fatalf("a freeze at a stale generation: %v", err)
	}
	l, r = freeze(t, ctx, c, 1, 2, true)
	l.Generation--
	if _, err := merge(t, ctx, c, l, r); !errors.Is(err, engine.ErrBadRequest) && !errors.Is(err, engine.ErrStaleGeneration) {
		t.Fatalf("a merge at a stale generation: %v", err)
	}
	if got := status(t, ctx, c, c.Leader(ctx, 1), 1).Desc; got.Last != d1.Last {
		t.Fatalf("refused merges changed shard 1: %v", got)
	}
}

// TestMergeHeldUntilTheRightShardFreezes: a replica of the left shard that
// applies the merge before its node's replica of the right shard has
// applied the freeze (the caller skipped WaitFrozen on that node) holds its
// entries, and applies them once it has: no data is lost. Node 1 leads the
// left shard, node 2 the right one; node 3 hears the right shard's freeze
// late, node 2 the left shard's merge: the merge commits on nodes 1 and 3.
func TestMergeHeldUntilTheRightShardFreezes(t *testing.T) {
	var holdRight, holdLeft atomic.Bool
	c, ctx, _, want := twoShards(t, testcluster.Config{Drop: func(_, to uint64, m *engine.Message) bool {
		return holdRight.Load() && to == 3 && m.ShardID == 2 || holdLeft.Load() && to == 2 && m.ShardID == 1
	}})
	for shard, leader := range map[uint64]uint64{1: 1, 2: 2} {
		if err := onLeaderOf(t, ctx, c, shard, func(e *engine.Engine) error { return e.TransferLeader(ctx, shard, leader) }); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range putKeys(t, ctx, c, status(t, ctx, c, 2, 2).Desc, 20, "v2") {
		want[k] = v // the last writes of shard 2, which node 3 lacks when it freezes late
	}
	holdRight.Store(true)
	l, r := freeze(t, ctx, c, 1, 2, false)
	for _, id := range []uint64{1, 2} { // not node 3
		if err := c.Engine(id).WaitFrozen(ctx, 2, r.Generation); err != nil {
			t.Fatal(err)
		}
	}
	holdLeft.Store(true)
	merged, err := merge(t, ctx, c, l, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, "node 3's left replica holding the merge", func() bool {
		st, err := c.Engine(3).Status(ctx, 1)
		return err == nil && st.Desc.Last != ^uint64(0) && st.Commit > st.Applied
	}); err != nil {
		t.Fatal(err)
	}
	holdRight.Store(false)
	if err := c.WaitFor(ctx, "node 3's left replica merged", func() bool {
		st, err := c.Engine(3).Status(ctx, 1)
		return err == nil && st.Desc.Last == ^uint64(0)
	}); err != nil {
		t.Fatal(err)
	}
	holdLeft.Store(false)
	checkMerged(t, ctx, c, merged, want)
}

// TestMergeFinishedAfterACrash: a node that crashes after the batch that
// applied a merge became durable, but before the right shard's replica was
// destroyed, destroys it when it restarts (before it reopens its shards:
// the left one's range covers it now).
func TestMergeFinishedAfterACrash(t *testing.T) {
	c, ctx, _, want := twoShards(t, testcluster.Config{})
	victim := c.Leader(ctx, 1)%3 + 1
	skipped, hook := crashBefore(t, victim)
	engine.SetMergeRightHook(hook)
	t.Cleanup(func() { engine.SetMergeRightHook(nil) })
	l, r := freeze(t, ctx, c, 1, 2, true)
	merged, err := merge(t, ctx, c, l, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, "the victim skipped destroying shard 2", skipped.Load); err != nil {
		t.Fatal(err)
	}
	engine.SetMergeRightHook(nil)
	c.Crash(victim)
	if err := c.Start(victim); err != nil {
		t.Fatal(err)
	}
	checkMerged(t, ctx, c, merged, want)
}

// TestMergeMissedByAFollowerReplacedBySnapshot: a follower cut off after
// the right shard froze on it, whose left replica then needs a snapshot
// (the log truncated past the merge), drops its replica of the merged shard
// when the left shard's widened snapshot comes.
func TestMergeMissedByAFollowerReplacedBySnapshot(t *testing.T) {
	c, ctx, _, want := twoShards(t, testcluster.Config{Engine: func(cfg *engine.Config) { cfg.LogTruncateEntries = 8 }})
	l, r := freeze(t, ctx, c, 1, 2, true)
	late := isolateFollower(t, ctx, c, 3, []uint64{1, 2})
	merged, err := merge(t, ctx, c, l, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range putKeys(t, ctx, c, merged, 40, "v2") {
		want[k] = v
	}
	before := c.Engine(late).Stats().SnapshotsRecv
	c.Heal()
	checkMerged(t, ctx, c, merged, want)
	if got := c.Engine(late).Stats().SnapshotsRecv - before; got == 0 {
		t.Fatalf("the late node caught up without a snapshot: the test did not test the snapshot path")
	}
}

// emptyBody is a snapshot stream of no chunks.
type emptyBody struct{}

func (emptyBody) Next() ([]byte, error) { return nil, io.EOF }

// TestSnapshotNotTakenGivesItsClaimBack: a snapshot claims its range as it
// arrives; one that raft then does not take (here: at an index the replica
// has committed already) gives the replica its own claim back. Before, the
// claim kept the snapshot's range: a narrower one left the replica
// refusing keys of its own range (stale reads answered KeyNotInShard), and
// a stale claim left by such snapshots overlapped the ranges of later
// splits and merges (seen in the chaos test with merges).
func TestSnapshotNotTakenGivesItsClaimBack(t *testing.T) {
	c, ctx, descs, _ := twoShards(t, testcluster.Config{})
	d := descs[0]
	leader := c.Leader(ctx, d.ShardID)
	var f uint64 // a follower
	for _, id := range []uint64{1, 2, 3} {
		if id != leader {
			f = id
			break
		}
	}
	upper := d.Clone()
	upper.Start = d.Start + (d.Last-d.Start)/2 + 1
	k := keysOf(upper, 1)[0]
	if _, err := c.Engine(f).ReadLocal(d.ShardID, engine.GetQuery(k)); err != nil {
		t.Fatalf("a stale read of shard %d on node %d: %v", d.ShardID, f, err)
	}
	st := status(t, ctx, c, f, d.ShardID)
	lst := status(t, ctx, c, leader, d.ShardID)
	narrower := st.Desc.Clone()
	narrower.Last = upper.Start - 1
	m := raftpb.Message{Type: raftpb.MsgSnap, To: st.ReplicaID, From: lst.ReplicaID, Term: st.Term,
		Snapshot: &raftpb.Snapshot{Data: narrower.Marshal(), Metadata: raftpb.SnapshotMetadata{Index: st.Commit, Term: st.Term}}}
	h := engine.SnapshotHeader{ClusterID: 7, From: leader, To: f, ShardID: d.ShardID, Msg: m}
	if err := c.Engine(f).HandleSnapshot(ctx, h, emptyBody{}); err != nil {
		t.Fatalf("a snapshot at committed index %d: %v", st.Commit, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitFor(wctx, "node's own claim back", func() bool {
		_, err := c.Engine(f).ReadLocal(d.ShardID, engine.GetQuery(k))
		return err == nil
	}); err != nil {
		_, rerr := c.Engine(f).ReadLocal(d.ShardID, engine.GetQuery(k))
		t.Fatalf("%v: a stale read of a key of shard %d's own range: %v", err, d.ShardID, rerr)
	}
	if now := status(t, ctx, c, f, d.ShardID); !now.Desc.Equal(st.Desc) {
		t.Fatalf("the snapshot was taken: descriptor %v, was %v", now.Desc, st.Desc)
	}
}

// TestMergeOnAClosedEngine: a merge asked of an engine that is closing (a
// node crashing as its coordinator calls) fails; it used to read the
// right shard's descriptor from the closed store and panic.
func TestMergeOnAClosedEngine(t *testing.T) {
	c, ctx, _, _ := twoShards(t, testcluster.Config{})
	l, r := freeze(t, ctx, c, 1, 2, true)
	e := c.Engine(1)
	c.Crash(1)
	if _, err := e.Merge(ctx, engine.MergeRequest{Left: l.ShardID, LeftGeneration: l.Generation, Right: r.ShardID, RightGeneration: r.Generation}); err == nil {
		t.Fatal("a merge on a closed engine succeeded")
	}
}

// TestMergeThenSplitInOnePass: a follower that was cut off catches up with
// a merge and a split of the merged shard at the same place, and applies
// both in one pass. The range changes take effect in the order they
// applied: the widened claim, then the narrowed one, so that the split's
// child finds its range free. Before, the merge's widened claim was taken
// after the split's narrowed one: the child's range was claimed by its
// parent on that node, the child was not created from the split, and its
// snapshot was refused for as long as the stale claim stayed.
func TestMergeThenSplitInOnePass(t *testing.T) {
	c, ctx, _, want := twoShards(t, testcluster.Config{})
	l, r := freeze(t, ctx, c, 1, 2, true)
	isolateFollower(t, ctx, c, 3, []uint64{1, 2})
	merged, err := merge(t, ctx, c, l, r)
	if err != nil {
		t.Fatal(err)
	}
	res := splitOn(t, ctx, c, engine.SplitRequest{ShardID: 1, Generation: merged.Generation, At: r.Start, ChildID: 9})
	c.Heal()
	waitSettled(t, ctx, c, []uint64{1, 9})
	checkAppliedAgree(t, ctx, c, []storage.Descriptor{res.Parent, res.Child})
	checkKeys(t, ctx, c, []storage.Descriptor{res.Parent, res.Child}, want)
}

// isolateFollower cuts node late off, after handing the leaderships of
// shards it holds to node 1; it returns late.
func isolateFollower(t *testing.T, ctx context.Context, c *testcluster.Cluster, late uint64, shards []uint64) uint64 {
	t.Helper()
	for _, shard := range shards {
		if c.Leader(ctx, shard) == late {
			if err := c.Engine(late).TransferLeader(ctx, shard, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.Isolate(late)
	return late
}

// TestReplicaOfAShardMergedAwayCollected: a follower cut off after the
// right shard froze on it misses the merge and the split of the merged
// shard at the same place; its replica of the left shard then takes a
// snapshot of the narrowed left shard, which does not cover the right
// shard's range, so nothing drops its frozen replica of the right shard:
// that replica's claim keeps the split child's snapshot off the node. While
// its left shard's replica is not past the merge, DestroyMergedAway
// refuses it (the merge needs it); once it is, the replica goes and the
// child catches up.
func TestReplicaOfAShardMergedAwayCollected(t *testing.T) {
	c, ctx, _, want := twoShards(t, testcluster.Config{Engine: func(cfg *engine.Config) { cfg.LogTruncateEntries = 8 }})
	l, r := freeze(t, ctx, c, 1, 2, true)
	late := isolateFollower(t, ctx, c, 3, []uint64{1, 2})
	rst := status(t, ctx, c, late, 2)
	if err := c.Engine(late).DestroyMergedAway(ctx, 2, rst.ReplicaID, storage.Descriptor{}); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("a frozen replica whose merge is still to apply here: %v", err)
	}
	merged, err := merge(t, ctx, c, l, r)
	if err != nil {
		t.Fatal(err)
	}
	res := splitOn(t, ctx, c, engine.SplitRequest{ShardID: 1, Generation: merged.Generation, At: r.Start, ChildID: 9})
	for k, v := range putKeys(t, ctx, c, res.Parent, 40, "v2") {
		want[k] = v // the left shard's log truncated past the merge
	}
	c.Heal()
	if err := c.WaitFor(ctx, "node 3's replica of shard 1 past the merge", func() bool {
		st, err := c.Engine(late).Status(ctx, 1)
		return err == nil && st.Desc.Generation > r.MergeIntoGeneration
	}); err != nil {
		t.Fatal(err)
	}
	if st := status(t, ctx, c, late, 2); !st.Desc.Frozen() {
		t.Fatalf("node 3's replica of shard 2: %v, want it left frozen", st.Desc)
	}
	if err := c.Engine(late).DestroyMergedAway(ctx, 2, rst.ReplicaID, storage.Descriptor{}); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, ctx, c, []uint64{1, 9})
	if _, err := c.Engine(late).Status(ctx, 2); !errors.Is(err, engine.ErrShardNotFound) {
		t.Fatalf("node 3 still has shard 2: %v", err)
	}
	checkAppliedAgree(t, ctx, c, []storage.Descriptor{res.Parent, res.Child})
	checkKeys(t, ctx, c, []storage.Descriptor{res.Parent, res.Child}, want)
}

// TestFrozenReplicaWhoseLeftShardLeftItsNodeCollected: a follower cut off
// after the right shard froze on it misses the merge, and its replica of
// the left shard is then removed (and destroyed here on the word of the
// leader's descriptor, as the stale-replica loop does): no replica of the
// left shard is left on the node to apply the merge or to be past it. Its
// frozen replica of the right shard is then collected on the word of the
// left shard's authority (past the merge, no replica on this node); without
// it, it is refused as before. Once it is gone, the node takes a replica of
// the merged shard again, whose snapshot covers the right shard's range
// (its claim would have kept that snapshot off the node).
func TestFrozenReplicaWhoseLeftShardLeftItsNodeCollected(t *testing.T) {
	c, ctx, _, want := twoShards(t, testcluster.Config{})
	l, r := freeze(t, ctx, c, 1, 2, true)
	late := isolateFollower(t, ctx, c, 3, []uint64{1, 2})
	merged, err := merge(t, ctx, c, l, r)
	if err != nil {
		t.Fatal(err)
	}
	lrid := status(t, ctx, c, late, 1).ReplicaID
	if err := onLeaderOf(t, ctx, c, 1, func(e *engine.Engine) error {
		return e.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.Remove, NodeID: late, ReplicaID: lrid})
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx, late); err != nil {
		t.Fatal(err)
	}
	c.Heal()
	left := status(t, ctx, c, c.Leader(ctx, 1), 1).Desc
	if _, onLate := left.ReplicaOfNode(late); left.Generation <= r.MergeIntoGeneration || onLate {
		t.Fatalf("shard 1 after the merge (%v) and the removal: %v", merged, left)
	}
	waitRemoved(t, ctx, c, late, 1)
	rst := status(t, ctx, c, late, 2)
	if !rst.Desc.Frozen() {
		t.Fatalf("node 3's replica of shard 2: %v, want it left frozen", rst.Desc)
	}
	if err := c.Engine(late).DestroyMergedAway(ctx, 2, rst.ReplicaID, storage.Descriptor{}); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("without the left shard's authority: %v, want ErrBadRequest", err)
	}
	if err := c.Engine(late).DestroyMergedAway(ctx, 2, rst.ReplicaID, left); err != nil {
		t.Fatalf("with the left shard's authority (%v): %v", left, err)
	}
	if _, err := c.Engine(late).Status(ctx, 2); !errors.Is(err, engine.ErrShardNotFound) {
		t.Fatalf("node 3 still has shard 2: %v", err)
	}
	if err := onLeaderOf(t, ctx, c, 1, func(e *engine.Engine) error {
		return e.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: late})
	}); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, c, 1, late)
	if st := status(t, ctx, c, late, 1); st.Desc.Start != 0 || st.Desc.Last != ^uint64(0) {
		t.Fatalf("node 3's new replica of shard 1: %v, want the whole ring", st.Desc)
	}
	final := status(t, ctx, c, c.Leader(ctx, 1), 1).Desc
	checkKeys(t, ctx, c, []storage.Descriptor{final}, want)
}
