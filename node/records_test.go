package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
)

// shardLeader returns the node among nodes that leads shardID, and its
// replica's status.
func shardLeader(ctx context.Context, nodes []*Node, shardID uint64) (*Node, engine.ShardStatus, error) {
	for _, n := range nodes {
		if n == nil {
			continue
		}
		if st, err := n.Engine.Status(ctx, shardID); err == nil && st.Leader == n.NodeID() {
			return n, st, nil
		}
	}
	return nil, engine.ShardStatus{}, fmt.Errorf("shard %d: no leader among the nodes", shardID)
}

// recordIsDescriptor checks that n's copy of shardID's record is the
// leader's descriptor: conf index, generation, replicas with their IDs.
func recordIsDescriptor(ctx context.Context, nodes []*Node, n *Node, shardID uint64) error {
	_, st, err := shardLeader(ctx, nodes, shardID)
	if err != nil {
		return err
	}
	rec, err := n.cl.store.Shard(ctx, shardID, nodemeta.Local)
	if err != nil {
		return err
	}
	if want := nodemeta.RecordOf(st.Desc); !rec.Equal(want) {
		return fmt.Errorf("shard %d: record %+v, the leader's descriptor %+v", shardID, rec, want)
	}
	return nil
}

func changeReplica(ctx context.Context, t *testing.T, via *Node, shardID, nodeID uint64, op nodepb.ReplicaOp) {
	t.Helper()
	req := &nodepb.ChangeReplicaRequest{ShardId: shardID, NodeId: nodeID, Op: op}
	if _, err := via.admin.ChangeReplica(ctx, req); err != nil {
		t.Fatalf("%v node %d on shard %d: %v", op, nodeID, shardID, err)
	}
}

// TestShardRecordsFollowDescriptors: the shard records are the shards' own
// descriptors. At bootstrap, each record is the engine's first descriptor;
// after each conf change the leader's reconciler writes the new one, fresh
// replica IDs included. With every reconciler stopped, a change leaves its
// record stale; RemoveNode then still refuses to remove a node whose
// replica the shard's leader reports, though no record names it; a fresh
// reconciler's periodic pass repairs the record, and the node, holding
// nothing any more, is removed.
func TestShardRecordsFollowDescriptors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startClusterNodes(t, ctx, t.TempDir(), 4, 3)
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	joiner, via := nodes[3], nodes[0]
	id4 := joiner.NodeID()
	for shard := uint64(1); shard <= 8; shard++ {
		waitFor(t, ctx, fmt.Sprintf("shard %d's bootstrap record is its descriptor", shard), func() error {
			return recordIsDescriptor(ctx, nodes, via, shard)
		})
	}
	const shard = 1
	boot, err := via.cl.store.Shard(ctx, shard, nodemeta.Local)
	if err != nil {
		t.Fatal(err)
	}
	if boot.ConfIndex != 0 || boot.NextReplicaID != 4 {
		t.Fatalf("bootstrap record %+v", boot)
	}

	// Add, then remove, a replica on the joiner: the record follows.
	changeReplica(ctx, t, via, shard, id4, nodepb.ReplicaOp_REPLICA_OP_ADD)
	waitFor(t, ctx, "the record after the add", func() error { return recordIsDescriptor(ctx, nodes, via, shard) })
	added, _ := via.cl.store.Shard(ctx, shard, nodemeta.Local)
	if r, ok := replicaOn(added, id4); !ok || r.ReplicaID != 4 || r.Role != nodemeta.RoleVoter || added.ConfIndex == 0 {
		t.Fatalf("record after the add: %+v", added)
	}
	changeReplica(ctx, t, via, shard, id4, nodepb.ReplicaOp_REPLICA_OP_REMOVE)
	waitFor(t, ctx, "the record after the remove", func() error { return recordIsDescriptor(ctx, nodes, via, shard) })
	removed, _ := via.cl.store.Shard(ctx, shard, nodemeta.Local)
	if _, ok := replicaOn(removed, id4); ok || !removed.Newer(added) || removed.NextReplicaID != 5 {
		t.Fatalf("record after the remove: %+v (after the add: %+v)", removed, added)
	}

	// Through any node, an older record changes nothing and a malformed
	// one is refused as such.
	w := recordWriter{nodes[3].admin}
	if err := w.PutShards(ctx, []nodemeta.ShardRecord{boot}); err != nil {
		t.Fatalf("an old record: %v", err)
	}
	if err := w.PutShards(ctx, []nodemeta.ShardRecord{{ShardID: shard}}); !errors.Is(err, nodemeta.ErrBadRecord) {
		t.Fatalf("a malformed record: %v", err)
	}
	if err := recordIsDescriptor(ctx, nodes, via, shard); err != nil {
		t.Fatal(err)
	}

	// No reconciler writes any more: a change leaves the record stale.
	for _, n := range nodes {
		if err := n.cl.rec.Close(); err != nil {
			t.Fatal(err)
		}
	}
	changeReplica(ctx, t, via, shard, id4, nodepb.ReplicaOp_REPLICA_OP_ADD)
	_, st, err := shardLeader(ctx, nodes, shard)
	if err != nil {
		t.Fatal(err)
	}
	if rep, ok := st.Desc.ReplicaOfNode(id4); !ok || rep.ReplicaID != 5 {
		t.Fatalf("the joiner's replica in the descriptor: %+v, %v", rep, ok)
	}
	metaLeader, _, err := shardLeader(ctx, nodes, MetaShardID)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := metaLeader.cl.store.Shard(ctx, shard, nodemeta.Linearizable); err != nil || !rec.Equal(removed) {
		t.Fatalf("with every reconciler closed, the record is %+v (%v), want still %+v", rec, err, removed)
	}

	// The joiner stops; its replica is in no record, yet RemoveNode sees it.
	jdir := joiner.cl.cfg.DataDir
	joiner.Close()
	nodes[3] = nil
	live := nodes[:3]
	waitFor(t, ctx, "RemoveNode refused for the replica the leader reports", func() error {
		_, err := via.admin.RemoveNode(ctx, &nodepb.RemoveNodeRequest{NodeId: id4})
		if err == nil {
			t.Fatal("a node that holds a replica was removed")
		}
		if e := adminErrorOf(err); e == nil || !strings.Contains(e.GetMessage(), fmt.Sprintf("still holds replicas of shards [%d]", shard)) {
			return err // not stopped yet, by gossip
		}
		return nil
	})

	changeReplica(ctx, t, via, shard, id4, nodepb.ReplicaOp_REPLICA_OP_REMOVE)
	// A fresh reconciler (as on a node that just started) on the shard's
	// leader repairs the record in its first pass.
	leader, _, err := shardLeader(ctx, live, shard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := nodemeta.DefaultReconcilerConfig()
	cfg.Interval = 200 * time.Millisecond
	r, err := nodemeta.NewReconciler(cfg, leader.cl.store, recordWriter{leader.admin}, ledSource{leader.Engine})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitFor(t, ctx, "the stale record repaired", func() error { return recordIsDescriptor(ctx, live, via, shard) })
	repaired, _ := via.cl.store.Shard(ctx, shard, nodemeta.Local)
	if _, ok := replicaOn(repaired, id4); ok || repaired.NextReplicaID != 6 {
		t.Fatalf("repaired record %+v", repaired)
	}
	if _, err := via.admin.RemoveNode(ctx, &nodepb.RemoveNodeRequest{NodeId: id4}); err != nil {
		t.Fatalf("remove a node that holds nothing: %v", err)
	}
	_, err = StartCluster(ctx, ClusterConfig{DataDir: jdir, Join: []string{via.GossipAddr()}, GossipAddr: "127.0.0.1:0"})
	if !errors.Is(err, ErrNodeRemoved) {
		t.Fatalf("restart of the removed node: %v", err)
	}
}

func replicaOn(rec nodemeta.ShardRecord, nodeID uint64) (nodemeta.Replica, bool) {
	for _, r := range rec.Replicas {
		if r.NodeID == nodeID {
			return r, true
		}
	}
	return nodemeta.Replica{}, false
}
