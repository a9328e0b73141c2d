package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/merger"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc/codes"
)

// mergeFaults injects failures into the merges of every node of a test:
// fail, a failure between the freeze and the merge (the merge is
// abandoned); crash, one in the abandon too (the right shard stays frozen
// until the recovery settles it). Each is used by one merge.
type mergeFaults struct {
	fail, crash atomic.Bool
}

var errInjected = errors.New("test: injected failure")

func (f *mergeFaults) config(cfg *merger.Config) {
	cfg.FrozenTimeout = 2 * time.Second
	cfg.Fault = func(s merger.Step) error {
		switch {
		case s == merger.StepWaited && f.fail.Load():
			return errInjected
		case s == merger.StepAbandon && f.crash.Swap(false):
			return errInjected
		}
		return nil
	}
}

// TestMergeUnderLoad splits shards and merges them back through the Admin
// API while clients write: two splits, then two merges one after the
// other (the second shard folds into the first, then the first into the
// parent), a merge of the last shard's left neighbour; a merge abandoned
// between the freeze and the merge, and one whose node fails to abandon
// it, which the recovery thaws. Not one write fails, every acknowledged
// key reads back, the listing tiles the hash space with the shards
// expected, and every router reaches the meta shard's ring. Refusals
// change nothing and say why.
func TestMergeUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var faults mergeFaults
	nodes := startClusterNodes(t, ctx, t.TempDir(), 4, 3, func(_ int, cfg *ClusterConfig) {
		cfg.InitialShards = 4
		cfg.Merger = faults.config
	})
	cl, load := startLoad(t, ctx, nodes)

	split := func(via *Node, shard uint64) *nodepb.SplitResponse {
		t.Helper()
		resp, err := via.admin.Split(ctx, &nodepb.SplitRequest{ShardId: shard})
		if err != nil {
			t.Fatalf("split of shard %d via node %d: %v", shard, via.NodeID(), err)
		}
		load.waitWrites(t, ctx, 50)
		return resp
	}
	merge := func(via *Node, left uint64, want *nodepb.ShardRecord) *nodepb.MergeResponse {
		t.Helper()
		start := time.Now()
		resp, err := via.admin.Merge(ctx, &nodepb.MergeRequest{ShardId: left})
		if err != nil {
			t.Fatalf("merge of shard %d via node %d: %v", left, via.NodeID(), err)
		}
		s := resp.GetShard()
		if s.GetShardId() != left || s.GetLast() != want.GetLast() || s.GetGeneration() <= want.GetGeneration() {
			t.Fatalf("merge of shard %d: %v, want its range to reach %016x", left, resp, want.GetLast())
		}
		t.Logf("merge of shard %d into shard %d via node %d in %v: [%016x, %016x], generation %d", resp.GetMergedShardId(), left,
			via.NodeID(), time.Since(start).Round(time.Millisecond), s.GetStart(), s.GetLast(), s.GetGeneration())
		load.waitWrites(t, ctx, 50)
		return resp
	}
	first := split(nodes[0], 1)
	a := first.GetChild().GetShardId()
	second := split(nodes[1], a)
	b := second.GetChild().GetShardId()
	// Two merges one after the other: b into a, then a into 1; each asked
	// of a node that may not lead the shard (forwarded).
	if m := merge(nodes[2], a, second.GetChild()); m.GetMergedShardId() != b {
		t.Fatalf("shard %d merged into shard %d, want %d", m.GetMergedShardId(), a, b)
	}
	if m := merge(nodes[3], 1, first.GetChild()); m.GetMergedShardId() != a {
		t.Fatalf("shard %d merged into shard 1, want %d", m.GetMergedShardId(), a)
	}
	// The ring is 1-4 again. A merge abandoned between the freeze and the
	// merge: both shards serve on, then the merge goes through.
	st3 := shardInfoOf(t, ctx, nodes[0], 3)
	faults.fail.Store(true)
	_, err := nodes[0].admin.Merge(ctx, &nodepb.MergeRequest{ShardId: 3})
	faults.fail.Store(false)
	if e := adminErrorOf(err); e == nil || codes.Code(e.GetCode()) != codes.Aborted || e.GetReason() != nodepb.Reason_REASON_MERGE_ABANDONED || !e.GetNotApplied() {
		t.Fatalf("abandoned merge: %v", err)
	}
	load.waitWrites(t, ctx, 100)
	if got := shardInfoOf(t, ctx, nodes[0], 3); got.GetLast() != st3.GetLast() || got.GetGeneration() != st3.GetGeneration()+1 {
		t.Fatalf("shard 3 after the abandoned merge: %v (before %v)", got, st3)
	}
	// One whose node fails to abandon it: shard 4 stays frozen, writes to
	// it wait, until the recovery on its leader thaws it.
	faults.fail.Store(true)
	faults.crash.Store(true)
	_, err = nodes[1].admin.Merge(ctx, &nodepb.MergeRequest{ShardId: 3})
	faults.fail.Store(false)
	if e := adminErrorOf(err); e == nil || e.GetReason() != nodepb.Reason_REASON_MERGE_ABANDONED {
		t.Fatalf("merge left unsettled: %v", err)
	}
	waitFor(t, ctx, "the recovery to thaw shard 4", func() error {
		if d := shardDescOf(t, ctx, nodes, 4); d.Frozen() {
			return fmt.Errorf("shard 4 frozen: %v", d)
		}
		return nil
	})
	load.waitWrites(t, ctx, 100)
	last := merge(nodes[1], 3, shardInfoRecord(shardInfoOf(t, ctx, nodes[0], 4)))
	const shards = 3

	// Refusals, with the shard's range now where it matters.
	for _, tc := range []struct {
		name   string
		req    *nodepb.MergeRequest
		code   codes.Code
		reason nodepb.Reason
	}{
		{"the last shard", &nodepb.MergeRequest{ShardId: 3}, codes.FailedPrecondition, nodepb.Reason_REASON_NOT_ADJACENT},
		{"stale generation", &nodepb.MergeRequest{ShardId: 1, Generation: 1}, codes.FailedPrecondition, nodepb.Reason_REASON_STALE_GENERATION},
		{"stale right generation", &nodepb.MergeRequest{ShardId: 1, RightGeneration: 99}, codes.FailedPrecondition, nodepb.Reason_REASON_STALE_GENERATION},
		{"merged shard", &nodepb.MergeRequest{ShardId: a}, codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND},
		{"system shard", &nodepb.MergeRequest{ShardId: MetaShardID}, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
	} {
		_, err := nodes[2].admin.Merge(ctx, tc.req)
		e := adminErrorOf(err)
		if e == nil || codes.Code(e.GetCode()) != tc.code || e.GetReason() != tc.reason {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tc.reason == nodepb.Reason_REASON_NOT_ADJACENT && (e.GetLast() != ^uint64(0) || e.GetStart() != last.GetShard().GetStart()) {
			t.Errorf("%s: the shard's range now: %v", tc.name, e)
		}
		if tc.req.GetRightGeneration() != 0 && (e.GetShardId() != 2 || e.GetGeneration() == 99) {
			t.Errorf("%s: the right shard's range now: %v", tc.name, e)
		}
	}
	// Replicas on other nodes: shard 2's replica moves to node 4, which
	// holds none of shard 1's.
	moveReplica(t, ctx, nodes[0], 2, nodes[3].NodeID())
	_, err = nodes[0].admin.Merge(ctx, &nodepb.MergeRequest{ShardId: 1})
	if e := adminErrorOf(err); e == nil || e.GetReason() != nodepb.Reason_REASON_REPLICAS_DIFFER || codes.Code(e.GetCode()) != codes.FailedPrecondition {
		t.Errorf("replicas on other nodes: %v", err)
	}

	checkRing(t, ctx, nodes, shards)
	load.waitWrites(t, ctx, 100)
	checkLoad(t, ctx, load, cl, nodes, shards)
}

// shardInfoOf returns shardID as the Admin listing of via shows it.
func shardInfoOf(t *testing.T, ctx context.Context, via *Node, shardID uint64) *nodepb.ShardInfo {
	t.Helper()
	resp, err := via.admin.Shards(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, si := range resp.GetShards() {
		if si.GetShardId() == shardID {
			return si
		}
	}
	t.Fatalf("shard %d not listed", shardID)
	return nil
}

func shardInfoRecord(si *nodepb.ShardInfo) *nodepb.ShardRecord {
	return &nodepb.ShardRecord{ShardId: si.GetShardId(), Start: si.GetStart(), Last: si.GetLast(), Generation: si.GetGeneration()}
}

// shardDescOf returns shardID's descriptor on its leader.
func shardDescOf(t *testing.T, ctx context.Context, nodes []*Node, shardID uint64) storage.Descriptor {
	t.Helper()
	for _, n := range nodes {
		if st, err := n.Engine.Status(ctx, shardID); err == nil && st.Leader == n.NodeID() {
			return st.Desc
		}
	}
	return storage.Descriptor{}
}

// moveReplica moves a replica of shardID onto node to, through the Admin
// API of via: add one there, then remove one on a node other than the
// leader's.
func moveReplica(t *testing.T, ctx context.Context, via *Node, shardID, to uint64) {
	t.Helper()
	if _, err := via.admin.ChangeReplica(ctx, &nodepb.ChangeReplicaRequest{ShardId: shardID, NodeId: to, Op: nodepb.ReplicaOp_REPLICA_OP_ADD}); err != nil {
		t.Fatal(err)
	}
	si := shardInfoOf(t, ctx, via, shardID)
	for _, r := range si.GetReplicas() {
		if id := r.GetNodeId(); id != to && id != si.GetLeader() {
			if _, err := via.admin.ChangeReplica(ctx, &nodepb.ChangeReplicaRequest{ShardId: shardID, NodeId: id, Op: nodepb.ReplicaOp_REPLICA_OP_REMOVE}); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("shard %d: no replica to move off (%v)", shardID, si)
}

// TestMergeErrors: how the errors of a merge are told to the caller.
func TestMergeErrors(t *testing.T) {
	a := &adminService{}
	left := storage.Descriptor{ShardID: 5, Start: 10, Last: 20, Generation: 4}
	for _, tc := range []struct {
		err        error
		code       codes.Code
		reason     nodepb.Reason
		start, gen uint64
	}{
		{&merger.RefusalError{Err: merger.ErrNotAdjacent, Left: left}, codes.FailedPrecondition, nodepb.Reason_REASON_NOT_ADJACENT, 10, 4},
		{&merger.RefusalError{Err: merger.ErrReplicasDiffer, Left: left}, codes.FailedPrecondition, nodepb.Reason_REASON_REPLICAS_DIFFER, 10, 4},
		{&merger.RefusalError{Err: merger.ErrJointConfig, Left: left}, codes.FailedPrecondition, nodepb.Reason_REASON_JOINT_CONFIG, 10, 4},
		{&merger.RefusalError{Err: merger.ErrMerging, Left: left}, codes.Unavailable, nodepb.Reason_REASON_SHARD_MERGING, 10, 4},
		{&merger.RefusalError{Err: merger.ErrSystemShard, Left: left}, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 10, 4},
		{&merger.AbandonedError{Left: 5, Right: 6, Step: merger.StepWaited, Err: errInjected, Settled: true}, codes.Aborted, nodepb.Reason_REASON_MERGE_ABANDONED, 0, 0},
		{&merger.AbandonedError{Left: 5, Right: 6, Step: merger.StepRecord, Err: fmt.Errorf("%w: x", merger.ErrMetaUnavailable), Settled: true},
			codes.Unavailable, nodepb.Reason_REASON_META_UNAVAILABLE, 0, 0},
		{fmt.Errorf("wrapped: %w", &engine.StaleGenerationError{ShardID: 5, Expected: 2, Generation: 3, Start: 11, Last: 20}),
			codes.FailedPrecondition, nodepb.Reason_REASON_STALE_GENERATION, 11, 3},
		{&engine.ShardMergingError{ShardID: 5, Into: 4}, codes.Unavailable, nodepb.Reason_REASON_SHARD_MERGING, 0, 0},
		{fmt.Errorf("%w: shard 5", engine.ErrShardNotFound), codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND, 0, 0},
	} {
		e := adminErrorOf(a.mergeError(tc.err, 5))
		if e == nil || codes.Code(e.GetCode()) != tc.code || e.GetReason() != tc.reason || e.GetShardId() != 5 ||
			e.GetStart() != tc.start || e.GetGeneration() != tc.gen || !e.GetNotApplied() {
			t.Errorf("%v: %v", tc.err, e)
		}
	}
	// And back, for the merger, from a step's Admin error.
	for _, tc := range []struct {
		e    *nodepb.Error
		want func(error) bool
	}{
		{&nodepb.Error{Reason: nodepb.Reason_REASON_STALE_GENERATION, ShardId: 5, Generation: 3, Start: 11, Last: 20}, func(err error) bool {
			var stale *engine.StaleGenerationError
			return errors.As(err, &stale) && stale.Start == 11 && stale.Last == 20 && stale.Generation == 3
		}},
		{&nodepb.Error{Reason: nodepb.Reason_REASON_SHARD_MERGING}, func(err error) bool { return errors.Is(err, engine.ErrShardMerging) }},
		{&nodepb.Error{Reason: nodepb.Reason_REASON_NOT_LEADER, LeaderId: 2}, func(err error) bool {
			var nl *engine.NotLeaderError
			return errors.As(err, &nl) && nl.Leader == 2
		}},
		{&nodepb.Error{Reason: nodepb.Reason_REASON_BAD_REQUEST}, func(err error) bool { return errors.Is(err, engine.ErrBadRequest) }},
		{&nodepb.Error{Reason: nodepb.Reason_REASON_AMBIGUOUS}, func(err error) bool { return errors.Is(err, engine.ErrAmbiguous) }},
	} {
		tc.e.Code = uint32(codes.FailedPrecondition)
		if err := engineErrorOf(StatusError(tc.e)); !tc.want(err) {
			t.Errorf("%v: %v", tc.e.GetReason(), err)
		}
	}
}

// TestReplicaOfAMergedShardCollected: a node whose replica of the right
// shard was removed while the node was down comes back after the merge.
// That replica never froze, and no record of its shard exists any more,
// only the tombstone: the node's stale-replica loop destroys it, and the
// node then takes a replica of the merged shard, whose widened snapshot
// that replica's range claim would have kept out.
func TestReplicaOfAMergedShardCollected(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	nodes := startClusterNodes(t, ctx, t.TempDir(), 4, 3, func(_ int, cfg *ClusterConfig) { cfg.InitialShards = 2 })
	away := nodes[3] // holds no user shard yet
	id := away.NodeID()
	changeReplica(ctx, t, nodes[0], 2, id, nodepb.ReplicaOp_REPLICA_OP_ADD)
	waitFor(t, ctx, "node 4's replica of shard 2 caught up", func() error {
		st, err := away.Engine.Status(ctx, 2)
		if err != nil || !st.Initialized {
			return fmt.Errorf("%+v, %v", st.Desc, err)
		}
		return nil
	})
	cfg := away.cl.cfg
	cfg.RaftAddr, cfg.ClientAddr, cfg.GossipAddr = away.RaftAddr(), away.ClientAddr(), away.GossipAddr()
	if err := away.Close(); err != nil {
		t.Fatal(err)
	}
	nodes[3] = nil
	changeReplica(ctx, t, nodes[0], 2, id, nodepb.ReplicaOp_REPLICA_OP_REMOVE)
	// The merge plans from the shards' records: wait until every node's
	// copy of shard 2's record is the descriptor without node 4.
	waitFor(t, ctx, "shard 2's records without node 4", func() error {
		for _, n := range nodes[:3] {
			if err := recordIsDescriptor(ctx, nodes[:3], n, 2); err != nil {
				return err
			}
		}
		return nil
	})
	var resp *nodepb.MergeResponse
	waitFor(t, ctx, "the merge of shard 2 into 1", func() (err error) {
		resp, err = nodes[1].admin.Merge(ctx, &nodepb.MergeRequest{ShardId: 1})
		if e := adminErrorOf(err); err != nil && (e == nil || e.GetReason() != nodepb.Reason_REASON_NOT_LEADER) {
			t.Fatalf("merge of shard 2 into 1: %v", err)
		}
		return err // no leader known for a moment: again
	})
	t.Logf("merged: %v", resp.GetShard())
	back, err := StartCluster(ctx, cfg)
	if err != nil {
		t.Fatalf("restart of node %d: %v", id, err)
	}
	t.Cleanup(func() { back.Close() })
	nodes[3] = back
	if st, err := back.Engine.Status(ctx, 2); err != nil || st.Desc.Frozen() {
		t.Fatalf("node %d's replica of shard 2 after the restart: %v, %v; want one that never froze", id, st.Desc, err)
	}
	waitFor(t, ctx, "node 4's replica of shard 2, merged away, destroyed", func() error {
		if _, err := back.Engine.Status(ctx, 2); !errors.Is(err, engine.ErrShardNotFound) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	changeReplica(ctx, t, nodes[0], 1, id, nodepb.ReplicaOp_REPLICA_OP_ADD)
	waitFor(t, ctx, "node 4's replica of shard 1 with the merged range", func() error {
		st, err := back.Engine.Status(ctx, 1)
		if err != nil || st.Desc.Last != ^uint64(0) || st.Desc.Start != 0 {
			return fmt.Errorf("%v, %v", st.Desc, err)
		}
		return nil
	})
}
