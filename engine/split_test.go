package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// Scenario tests of splits (split.go).

// hashOf is the ring position of key.
func hashOf(key []byte) uint64 { return engine.DefaultConfig(1, 1, "x").PartitionRule.Hash(key) }

// putKeys writes n keys into shard (whose range is desc's) and returns them.
func putKeys(t *testing.T, ctx context.Context, c *testcluster.Cluster, desc storage.Descriptor, n int, tag string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range keysOf(desc, n) {
		v := fmt.Sprintf("%s-%s", k, tag)
		if _, err := c.Propose(ctx, desc.ShardID, engine.PutCommand(k, []byte(v))); err != nil {
			t.Fatal(err)
		}
		out[string(k)] = v
	}
	return out
}

// splitOn splits shard on its leader, retrying while it has none.
func splitOn(t *testing.T, ctx context.Context, c *testcluster.Cluster, req engine.SplitRequest) engine.SplitResult {
	t.Helper()
	var res engine.SplitResult
	var err error
	if werr := c.WaitFor(ctx, "a split", func() bool {
		e := c.Engine(c.Leader(ctx, req.ShardID))
		if e == nil {
			return false
		}
		res, err = e.Split(ctx, req)
		var nl *engine.NotLeaderError
		return !errors.As(err, &nl)
	}); werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatalf("split %+v: %v", req, err)
	}
	return res
}

// checkKeys reads every key of want on the leader of the shard whose range
// (in descs) holds it, and on every replica of it locally once caught up.
func checkKeys(t *testing.T, ctx context.Context, c *testcluster.Cluster, descs []storage.Descriptor, want map[string]string) {
	t.Helper()
	for k, v := range want {
		var shard uint64
		for _, d := range descs {
			if d.Contains(hashOf([]byte(k))) {
				shard = d.ShardID
			}
		}
		res, err := readOnLeader(ctx, c, shard, engine.GetQuery([]byte(k)))
		if err != nil {
			t.Fatalf("read %q from shard %d: %v", k, shard, err)
		}
		got, found, _ := engine.DecodeGetResult(res)
		if !found || string(got) != v {
			t.Fatalf("key %q in shard %d: %q (found %t), want %q", k, shard, got, found, v)
		}
	}
}

// TestSplitMovesNoDataAndBothHalvesServe: a split narrows the parent and
// creates the child on the same replicas, with the data in place; the
// child is led at once; a key of the other half is refused by each with a
// KeyNotInShardError that names the shard's range now; the data a split
// writes does not depend on the data the shard holds.
func TestSplitMovesNoDataAndBothHalvesServe(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	desc, _ := oneShard(t, ctx, c, c.IDs())
	want := putKeys(t, ctx, c, desc, 200, "v1")
	mid := uint64(1) << 63
	res := splitOn(t, ctx, c, engine.SplitRequest{ShardID: 1, Generation: desc.Generation, At: mid, ChildID: 2})
	if p, ch := res.Parent, res.Child; p.Start != 0 || p.Last != mid-1 || ch.Start != mid || ch.Last != desc.Last ||
		p.Generation != desc.Generation+1 || ch.Generation != p.Generation || ch.ShardID != 2 || !equalReplicas(p, ch) {
		t.Fatalf("split of %v: parent %v, child %v", desc, p, ch)
	}
	if err := c.WaitLeaders(ctx, []uint64{1, 2}); err != nil {
		t.Fatal(err)
	}
	descs := []storage.Descriptor{res.Parent, res.Child}
	checkKeys(t, ctx, c, descs, want)
	// Every replica of both halves, at rest, holds the same data.
	waitSettled(t, ctx, c, []uint64{1, 2})
	checkAppliedAgree(t, ctx, c, descs)
	// A key of the child's half, sent to the parent, and the other way.
	for _, d := range descs {
		other := descs[0]
		if d.ShardID == other.ShardID {
			other = descs[1]
		}
		k := keysOf(other, 1)[0]
		_, err := c.Propose(ctx, d.ShardID, engine.PutCommand(k, []byte("x")))
		var kns *engine.KeyNotInShardError
		if !errors.As(err, &kns) || kns.ShardID != d.ShardID || kns.Start != d.Start || kns.Last != d.Last || kns.Generation != d.Generation {
			t.Fatalf("a key of shard %d written to shard %d: %v", other.ShardID, d.ShardID, err)
		}
	}
	// Both halves take writes; a second split of the child.
	for k, v := range putKeys(t, ctx, c, res.Child, 50, "v2") {
		want[k] = v
	}
	res2 := splitOn(t, ctx, c, engine.SplitRequest{ShardID: 2, Generation: res.Child.Generation, At: mid + mid/2, ChildID: 3})
	descs = []storage.Descriptor{res.Parent, res2.Parent, res2.Child}
	if err := c.WaitLeaders(ctx, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	checkKeys(t, ctx, c, descs, want)
}

func equalReplicas(a, b storage.Descriptor) bool {
	if len(a.Replicas) != len(b.Replicas) || a.NextReplicaID != b.NextReplicaID {
		return false
	}
	for i := range a.Replicas {
		if a.Replicas[i] != b.Replicas[i] {
			return false
		}
	}
	return true
}

// TestBadSplitsRefusedAndNothingChanges: a split point outside the range
// or at its start, a stale generation, a child ID in use, a system shard,
// and a joint configuration are refused with typed errors, and the
// descriptor stays as it was.
func TestBadSplitsRefusedAndNothingChanges(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	half := uint64(1) << 63
	if err := c.CreateShards(ctx, []storage.Descriptor{{ShardID: 1, Last: half - 1}, {ShardID: 5, Start: half, Last: ^uint64(0)}}, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{1, 5}); err != nil {
		t.Fatal(err)
	}
	leader := c.Leader(ctx, 1)
	e := c.Engine(leader)
	before := status(t, ctx, c, leader, 1).Desc
	var stale *engine.StaleGenerationError
	for _, tc := range []struct {
		name string
		req  engine.SplitRequest
		want error
	}{
		{"at the start", engine.SplitRequest{ShardID: 1, At: 0, ChildID: 9}, engine.ErrBadRequest},
		{"past the end", engine.SplitRequest{ShardID: 1, At: half, ChildID: 9}, engine.ErrBadRequest},
		{"stale generation", engine.SplitRequest{ShardID: 1, Generation: 7, At: 100, ChildID: 9}, engine.ErrStaleGeneration},
		{"child in use", engine.SplitRequest{ShardID: 1, At: 100, ChildID: 5}, engine.ErrBadRequest},
		{"child ID 0", engine.SplitRequest{ShardID: 1, At: 100}, engine.ErrBadRequest},
		{"child a system shard", engine.SplitRequest{ShardID: 1, At: 100, ChildID: storage.SystemShardBase}, engine.ErrBadRequest},
		{"no such shard", engine.SplitRequest{ShardID: 77, At: 100, ChildID: 9}, engine.ErrShardNotFound},
	} {
		_, err := e.Split(ctx, tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if tc.want == engine.ErrStaleGeneration && (!errors.As(err, &stale) || stale.Generation != before.Generation || stale.Last != before.Last) {
			t.Errorf("%s: %#v", tc.name, err)
		}
	}
	// Joint: a learner promoted and a voter removed in one explicit change.
	if err := e.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, c, 1, 4)
	victim := uint64(1)
	for victim == leader {
		victim++
	}
	if err := e.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: 1, Explicit: true, Changes: []engine.ReplicaChange{
		{Type: engine.AddVoter, NodeID: 4}, {Type: engine.Remove, NodeID: victim}}}); err != nil {
		t.Fatal(err)
	}
	joint := status(t, ctx, c, leader, 1).Desc
	if _, err := e.Split(ctx, engine.SplitRequest{ShardID: 1, Generation: joint.Generation, At: 100, ChildID: 9}); !errors.Is(err, engine.ErrBadRequest) {
		t.Errorf("split of a joint configuration: %v", err)
	}
	after := status(t, ctx, c, leader, 1).Desc
	if !after.Equal(joint) || after.Start != before.Start || after.Last != before.Last || after.Generation != before.Generation {
		t.Fatalf("descriptor changed by refused splits: %v -> %v", before, after)
	}
	if _, err := e.Status(ctx, 9); !errors.Is(err, engine.ErrShardNotFound) {
		t.Fatalf("a refused split left shard 9: %v", err)
	}
}

// lateFollower starts 3 nodes with shard 1 over the whole ring, 40 keys
// written, and picks a follower (late) caught up: the tests split while it
// is cut off, or while the parent's messages to it are held (holdParent).
// truncate: the logs are truncated after 8 entries.
func lateFollower(t *testing.T, truncate bool) (c *testcluster.Cluster, ctx context.Context, desc storage.Descriptor,
	want map[string]string, late *atomic.Uint64, holdParent *atomic.Bool) {
	late, holdParent = new(atomic.Uint64), new(atomic.Bool)
	c = newCluster(t, testcluster.Config{Nodes: 3, Engine: func(cfg *engine.Config) {
		if truncate {
			cfg.LogTruncateEntries = 8
		}
	}, Drop: func(_, to uint64, m *engine.Message) bool {
		return holdParent.Load() && to == late.Load() && m.ShardID == 1
	}})
	ctx = ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	desc, leader := oneShard(t, ctx, c, c.IDs())
	want = putKeys(t, ctx, c, desc, 40, "v1")
	late.Store(leader%3 + 1)
	waitCaughtUp(t, ctx, c, 1, late.Load())
	return c, ctx, desc, want, late, holdParent
}

// TestSplitAppliedLateByAFollower: a follower cut off during a split,
// while the child takes writes, catches up, and its replicas end up with
// the leaders' data:
//   - "applies": its parent applies the split when it hears of it;
//   - "child first": the child's leader reaches it before its parent has
//     the split: its messages make an uninitialized replica of the child,
//     its snapshot is refused (the parent still claims the range), and
//     when the parent applies the split, that replica is bootstrapped in
//     place under the same replica ID;
//   - "snapshot": its parent's log was truncated past the split: it gets a
//     snapshot of the narrowed parent, never applies the split, and gets
//     the child from the child's leader.
func TestSplitAppliedLateByAFollower(t *testing.T) {
	for _, mode := range []string{"applies", "child first", "snapshot"} {
		t.Run(mode, func(t *testing.T) {
			c, ctx, desc, want, late, holdParent := lateFollower(t, mode == "snapshot")
			if mode == "child first" {
				holdParent.Store(true)
			} else {
				c.Isolate(late.Load())
			}
			snapsBefore := c.Engine(late.Load()).Stats().SnapshotsRecv
			res := splitOn(t, ctx, c, engine.SplitRequest{ShardID: 1, Generation: desc.Generation, At: 1 << 63, ChildID: 2})
			for _, d := range []storage.Descriptor{res.Parent, res.Child} {
				for k, v := range putKeys(t, ctx, c, d, 40, "v2") {
					want[k] = v
				}
			}
			if mode == "child first" {
				childReplica, _ := res.Child.ReplicaOfNode(late.Load())
				if err := c.WaitFor(ctx, "an uninitialized child replica on the late node", func() bool {
					st, err := c.Engine(late.Load()).Status(ctx, 2)
					return err == nil && !st.Initialized && st.ReplicaID == childReplica.ReplicaID
				}); err != nil {
					t.Fatal(err)
				}
				if p := status(t, ctx, c, late.Load(), 1).Desc; p.Last != desc.Last {
					t.Fatalf("the late node's parent applied the split too early: %v", p)
				}
				holdParent.Store(false)
			}
			c.Heal()
			descs := []storage.Descriptor{res.Parent, res.Child}
			waitSettled(t, ctx, c, []uint64{1, 2})
			checkAppliedAgree(t, ctx, c, descs)
			checkKeys(t, ctx, c, descs, want)
			for _, d := range descs {
				if st := status(t, ctx, c, late.Load(), d.ShardID); st.Desc.Start != d.Start || st.Desc.Last != d.Last {
					t.Fatalf("node %d's replica of shard %d: %v, want the range of %v", late.Load(), d.ShardID, st.Desc, d)
				}
			}
			// Its parent's log truncated, the late node needed a snapshot of
			// the parent and one of the child. (Otherwise the child's
			// leader may still send one: its first append to the
			// uninitialized replica was refused.)
			if snaps := c.Engine(late.Load()).Stats().SnapshotsRecv - snapsBefore; mode == "snapshot" && snaps < 2 {
				t.Fatalf("the late node received %d snapshots, want 2", snaps)
			}
		})
	}
}

// crashBefore returns a hook for SetSplitChildHook or SetMergeRightHook
// that, on node victim, makes every write so far durable and skips what
// follows (as a crash there would: the test then crashes the node), and
// whether it has.
func crashBefore(t *testing.T, victim uint64) (*atomic.Bool, func(e *engine.Engine, shard uint64) bool) {
	skipped := new(atomic.Bool)
	return skipped, func(e *engine.Engine, shard uint64) bool {
		if e.NodeID() != victim {
			return true
		}
		if err := e.TestingSyncWAL(); err != nil {
			t.Error(err)
		}
		skipped.Store(true)
		return false
	}
}

// TestSplitFinishedAfterACrash: a node that crashes after the batch that
// applied a split became durable, but before the child's replica was
// created, creates it when it restarts (from the split marker), and the
// child is led and catches up; on the leader and on a follower.
func TestSplitFinishedAfterACrash(t *testing.T) {
	for _, onLeader := range []bool{false, true} {
		t.Run(fmt.Sprintf("leader=%t", onLeader), func(t *testing.T) {
			c := newCluster(t, testcluster.Config{Nodes: 3})
			ctx := ctxT(t, 60*time.Second)
			c.RunClock(2 * time.Millisecond)
			desc, leader := oneShard(t, ctx, c, c.IDs())
			want := putKeys(t, ctx, c, desc, 60, "v1")
			victim := leader
			if !onLeader {
				victim = leader%3 + 1
				waitCaughtUp(t, ctx, c, 1, victim)
			}
			skipped, hook := crashBefore(t, victim)
			engine.SetSplitChildHook(hook)
			t.Cleanup(func() { engine.SetSplitChildHook(nil) })
			res := splitOn(t, ctx, c, engine.SplitRequest{ShardID: 1, Generation: desc.Generation, At: 1 << 63, ChildID: 2})
			if err := c.WaitFor(ctx, "the victim skipped the child", skipped.Load); err != nil {
				t.Fatal(err)
			}
			engine.SetSplitChildHook(nil)
			c.Crash(victim)
			if err := c.Start(victim); err != nil {
				t.Fatal(err)
			}
			descs := []storage.Descriptor{res.Parent, res.Child}
			if err := c.WaitLeaders(ctx, []uint64{1, 2}); err != nil {
				t.Fatal(err)
			}
			for k, v := range putKeys(t, ctx, c, res.Child, 20, "v2") {
				want[k] = v
			}
			waitSettled(t, ctx, c, []uint64{1, 2})
			checkAppliedAgree(t, ctx, c, descs)
			checkKeys(t, ctx, c, descs, want)
			if st := status(t, ctx, c, victim, 2); st.Desc.Start != res.Child.Start || st.ReplicaID == 0 {
				t.Fatalf("node %d's child replica after the restart: %+v", victim, st)
			}
		})
	}
}

// TestSplitSkipsAChildReplicaReplacedMeanwhile: a node whose replica of the
// child was removed and added back under a newer replica ID before its
// parent applied the split does not create the child's old replica: it
// drops the child's data, and the newer replica gets it by snapshot.
func TestSplitSkipsAChildReplicaReplacedMeanwhile(t *testing.T) {
	c, ctx, desc, want, late, holdParent := lateFollower(t, false)
	holdParent.Store(true)
	res := splitOn(t, ctx, c, engine.SplitRequest{ShardID: 1, Generation: desc.Generation, At: 1 << 63, ChildID: 2})
	old, _ := res.Child.ReplicaOfNode(late.Load())
	// The child drops the late node's replica and adds it back.
	for _, ch := range []engine.ReplicaChange{{Type: engine.Remove, NodeID: late.Load(), ReplicaID: old.ReplicaID}, {Type: engine.AddLearner, NodeID: late.Load()}} {
		if err := c.WaitFor(ctx, "a change of the child", func() bool {
			e := c.Engine(c.Leader(ctx, 2))
			return e != nil && e.ChangeReplicas(ctx, 2, ch) == nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	fresh, _ := status(t, ctx, c, c.Leader(ctx, 2), 2).Desc.ReplicaOfNode(late.Load())
	if fresh.ReplicaID <= old.ReplicaID {
		t.Fatalf("re-added as replica %d, was %d", fresh.ReplicaID, old.ReplicaID)
	}
	for k, v := range putKeys(t, ctx, c, res.Child, 40, "v2") {
		want[k] = v
	}
	if err := c.WaitFor(ctx, "the newer child replica, uninitialized, on the late node", func() bool {
		st, err := c.Engine(late.Load()).Status(ctx, 2)
		return err == nil && !st.Initialized && st.ReplicaID == fresh.ReplicaID
	}); err != nil {
		t.Fatal(err)
	}
	holdParent.Store(false)
	descs := []storage.Descriptor{res.Parent, status(t, ctx, c, c.Leader(ctx, 2), 2).Desc}
	waitSettled(t, ctx, c, []uint64{1, 2})
	checkAppliedAgree(t, ctx, c, descs)
	checkKeys(t, ctx, c, descs, want)
	if st := status(t, ctx, c, late.Load(), 2); st.ReplicaID != fresh.ReplicaID || !st.Initialized {
		t.Fatalf("the late node's child replica: %+v, want replica %d", st, fresh.ReplicaID)
	}
}
