package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3/raftpb"
)

// keysOf returns n keys whose hashes fall in d.
func keysOf(d storage.Descriptor, n int) [][]byte {
	rule := engine.DefaultConfig(1, 1, "x").PartitionRule
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		k := []byte(fmt.Sprintf("key-%d-%d", d.ShardID, i))
		if d.Contains(rule.Hash(k)) {
			out = append(out, k)
		}
	}
	return out
}

func status(t *testing.T, ctx context.Context, c *testcluster.Cluster, node, shard uint64) engine.ShardStatus {
	t.Helper()
	st, err := c.Engine(node).Status(ctx, shard)
	if err != nil {
		t.Fatalf("status of shard %d on node %d: %v", shard, node, err)
	}
	return st
}

// TestMembershipSnapshotTransfer adds a learner on a fourth node after the
// log was truncated (so it catches up by snapshot), promotes it and removes
// another voter in one joint change, transfers leadership to it, and checks
// that the removed replica is gone for good.
func TestMembershipSnapshotTransfer(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4, Engine: func(cfg *engine.Config) {
		cfg.LogTruncateEntries = 50
	}})
	ctx := ctxT(t, 60*time.Second)
	desc := storage.Descriptor{ShardID: 1, Last: ^uint64(0)}
	if err := c.CreateShards(ctx, []storage.Descriptor{desc}, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	c.RunClock(2 * time.Millisecond)
	keys := keysOf(desc, 300)
	for i, k := range keys {
		if _, err := c.Propose(ctx, 1, engine.PutCommand(k, []byte(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.Leader(ctx, 1)
	if st := status(t, ctx, c, leader, 1); st.FirstIndex < 100 {
		t.Fatalf("log not truncated: first index %d", st.FirstIndex)
	}
	le := c.Engine(leader)
	if err := le.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	target := status(t, ctx, c, leader, 1).Applied
	if err := c.WaitFor(ctx, "learner catch-up", func() bool {
		st, err := c.Engine(4).Status(ctx, 1)
		return err == nil && st.Applied >= target
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, "snapshot counted", func() bool { return c.Engine(4).Stats().SnapshotsRecv > 0 }); err != nil {
		t.Fatalf("learner caught up without a snapshot: %+v: %v", c.Engine(4).Stats(), err)
	}
	for i, k := range keys {
		res, err := c.Engine(4).ReadLocal(1, engine.GetQuery(k))
		v, found, _ := engine.DecodeGetResult(res)
		if err != nil || !found || string(v) != fmt.Sprint(i) {
			t.Fatalf("learner key %q: %q %v %v", k, v, found, err)
		}
	}
	// Promote 4 and remove a follower in one joint change.
	var victim uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != leader {
			victim = id
			break
		}
	}
	if err := le.ChangeReplicas(ctx, 1,
		engine.ReplicaChange{Type: engine.AddVoter, NodeID: 4},
		engine.ReplicaChange{Type: engine.Remove, NodeID: victim}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, "joint config left", func() bool {
		st := status(t, ctx, c, leader, 1)
		return len(st.Outgoing) == 0 && len(st.Voters) == 3 && contains(st.Voters, 4) && !contains(st.Voters, victim)
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, "victim removed", func() bool {
		_, err := c.Engine(victim).Status(ctx, 1)
		return errors.Is(err, engine.ErrShardNotFound)
	}); err != nil {
		t.Fatal(err)
	}
	// A stale message for the removed replica is dropped, not a new replica.
	c.Engine(victim).HandleBatch(&engine.Batch{ClusterID: 7, From: leader, To: victim, Messages: []engine.Message{{
		ShardID: 1, Msg: raftpb.Message{Type: raftpb.MsgHeartbeat, From: leader, To: victim, Term: 100},
	}}})
	c.Engine(victim).HandleBatch(&engine.Batch{ClusterID: 7, From: leader, To: victim, Messages: []engine.Message{{
		ShardID: 1, Msg: raftpb.Message{Type: raftpb.MsgApp, From: leader, To: victim, Term: 100},
	}}})
	for i := 0; i < 5; i++ {
		if _, err := c.Engine(victim).Status(ctx, 1); !errors.Is(err, engine.ErrShardNotFound) {
			t.Fatalf("removed replica came back: %v", err)
		}
		c.Tick()
	}
	if _, ts, _ := c.Engine(victim).Store().Tombstone(1); !ts {
		t.Fatal("no tombstone")
	}
	// Leader transfer to the new voter.
	if err := le.TransferLeader(ctx, 1, 4); err != nil {
		t.Fatal(err)
	}
	if l := c.Leader(ctx, 1); l != 4 {
		t.Fatalf("leader %d after transfer to 4", l)
	}
	if _, err := c.Engine(4).Propose(ctx, 1, engine.PutCommand(keys[0], []byte("after"))); err != nil {
		t.Fatal(err)
	}
}

func contains(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
