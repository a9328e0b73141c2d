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

// TestVoterWithoutReplicaCanVote adds a voter on a node that no leader's
// message reaches, so that its replica is never created, then stops the
// leader: the two voters left need the new one's vote to elect (3 of 4),
// and its node must create the replica when their vote requests arrive, or
// the shard never has a leader again (only a leader's message created
// replicas, and no leader can be elected without it).
func TestVoterWithoutReplicaCanVote(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4})
	ctx := ctxT(t, 60*time.Second)
	desc := storage.Descriptor{ShardID: 1, Last: ^uint64(0)}
	if err := c.CreateShards(ctx, []storage.Descriptor{desc}, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	c.RunClock(2 * time.Millisecond)
	if err := c.WaitLeaders(ctx, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	c.Isolate(4)
	var leader uint64
	var err error
	if werr := c.WaitFor(ctx, "node 4 added as a voter", func() bool {
		// A new leader takes conf changes once it applied its first entry.
		if leader = c.Leader(ctx, 1); leader != 0 {
			err = c.Engine(leader).ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddVoter, NodeID: 4})
		}
		return leader != 0 && !errors.Is(err, engine.ErrConfChangeInProgress)
	}); werr != nil || err != nil {
		t.Fatal(werr, err)
	}
	if _, err := c.Engine(4).Status(ctx, 1); !errors.Is(err, engine.ErrShardNotFound) {
		t.Fatalf("node 4 has a replica while isolated: %v", err)
	}
	c.Stop(leader)
	c.Heal()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitFor(wctx, "a new leader", func() bool { return c.Leader(ctx, 1) != 0 }); err != nil {
		_, serr := c.Engine(4).Status(ctx, 1)
		t.Fatalf("%v (node 4's replica: %v)", err, serr)
	}
	key := keysOf(desc, 1)[0]
	if _, err := c.Propose(ctx, 1, engine.PutCommand(key, []byte("v"))); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, "node 4 caught up", func() bool {
		res, err := c.Engine(4).ReadLocal(1, engine.GetQuery(key))
		_, found, _ := engine.DecodeGetResult(res)
		return err == nil && found
	}); err != nil {
		t.Fatal(err)
	}
}

// TestOverwrittenProposalsEnd: a leader cut off appends two proposals that
// no other replica gets; the others elect a leader, which appends one entry
// (at the first proposal's index) and goes idle. Healed, the old leader's
// log is overwritten below both. The first proposal ends dropped once its
// index applies (another entry is there); the second's index is beyond the
// log now and may never be reached: it must end too, ambiguous (a replica
// that still held the entry could yet lead and commit it), rather than
// wait until its caller gives up.
func TestOverwrittenProposalsEnd(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	desc := storage.Descriptor{ShardID: 1, Last: ^uint64(0)}
	if err := c.CreateShards(ctx, []storage.Descriptor{desc}, c.IDs()); err != nil {
		t.Fatal(err)
	}
	keys := keysOf(desc, 3)
	if _, err := c.Propose(ctx, 1, engine.PutCommand(keys[0], []byte("v"))); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, ctx, c, []storage.Descriptor{desc})
	leader := c.Leader(ctx, 1)
	before := status(t, ctx, c, leader, 1)
	c.Isolate(leader)
	type result struct {
		key string
		err error
	}
	results := make(chan result, 2)
	for _, k := range keys[1:] {
		go func() {
			_, err := c.Engine(leader).Propose(ctx, 1, engine.PutCommand(k, []byte("v")))
			results <- result{string(k), err}
		}()
	}
	if err := c.WaitFor(ctx, "both proposals appended on the cut-off leader", func() bool {
		return status(t, ctx, c, leader, 1).LastIndex == before.LastIndex+2
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, "another leader", func() bool {
		l := c.Leader(ctx, 1)
		return l != 0 && l != leader
	}); err != nil {
		t.Fatal(err)
	}
	c.Heal()
	// The manual clock ticks only while WaitFor waits: the results must come
	// with the new leader's messages, without any proposal after them.
	got := map[string]error{}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitFor(wctx, "both proposals ended", func() bool {
		select {
		case r := <-results:
			got[r.key] = r.err
		default:
		}
		return len(got) == 2
	}); err != nil {
		t.Fatalf("%v: %v", err, got)
	}
	// The first entry's index holds the new leader's entry: dropped; the
	// second is beyond the log: ambiguous.
	var dropped, ambiguous int
	for _, err := range got {
		switch {
		case errors.Is(err, engine.ErrProposalDropped):
			dropped++
		case errors.Is(err, engine.ErrAmbiguous):
			ambiguous++
		}
	}
	if dropped != 1 || ambiguous != 1 {
		t.Fatalf("want one proposal dropped and one ambiguous, got %v", got)
	}
}
