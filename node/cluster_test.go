package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/internal/waitfor"
	"github.com/flotilla-db/flotilla/node/gossip"
	"github.com/flotilla-db/flotilla/node/nodepb"
)

// startClusterNodes starts size gossip-discovered nodes in one process, the
// first `expect` of them bootstrapping the cluster together, the rest
// joining it.
// The placement driver is off unless adjust turns it on: these tests place
// replicas by hand.
func startClusterNodes(t *testing.T, ctx context.Context, dir string, size, expect int, adjust ...func(i int, cfg *ClusterConfig)) []*Node {
	t.Helper()
	nodes := make([]*Node, size)
	errs := make([]error, size)
	seed := freeAddr(t)
	var wg sync.WaitGroup
	for i := range size {
		cfg := ClusterConfig{
			DataDir: filepath.Join(dir, fmt.Sprint(i)), RaftAddr: "127.0.0.1:0", ClientAddr: "127.0.0.1:0",
			GossipAddr: "127.0.0.1:0", InitialShards: 8, Replication: 3, BootstrapStable: 200 * time.Millisecond,
			// Leaders stay where the tests put them: no driver moves them,
			// and no node hands them back after its start (a transfer
			// drops proposals and moves the shard's reconciler).
			Join: []string{seed}, NoPlacement: true, NoLeaderHandBack: true,
		}
		for _, f := range adjust {
			f(i, &cfg)
		}
		if i == 0 {
			cfg.GossipAddr, cfg.Join = seed, nil
		}
		if i < expect {
			cfg.BootstrapExpect = expect
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = StartCluster(ctx, cfg)
		}()
		if i == expect-1 {
			wg.Wait() // the joiners come after the cluster exists
		}
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	return nodes
}

// TestLeaderChangesReachEveryRouter: a leader change of a shard reaches,
// by gossip, the router of a node that hosts no replica of it, and the
// updates travel packed, many to a message.
func TestLeaderChangesReachEveryRouter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes := startClusterNodes(t, ctx, t.TempDir(), 4, 3)
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	joiner := nodes[3]
	if st, _ := joiner.Engine.Statuses(ctx); len(st) != 1 {
		t.Fatalf("the joiner hosts %d replicas, want only the meta shard's learner", len(st))
	}
	// Every shard's leader reaches the joiner's router.
	waitFor(t, ctx, "the joiner's router knows every leader", func() error {
		for _, rt := range joiner.Router.Routes() {
			if rt.Leader == 0 {
				return fmt.Errorf("shard %d: no leader known", rt.ShardID)
			}
		}
		if len(joiner.Router.Routes()) != 8 {
			return fmt.Errorf("%d routes", len(joiner.Router.Routes()))
		}
		return nil
	})
	// Move every leadership of a bootstrap node that leads user shards
	// away; the joiner sees each move.
	moved := map[uint64]uint64{}
	for _, from := range nodes[:3] {
		sts, err := from.Engine.Statuses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sts {
			if st.Leader != from.NodeID() || st.ShardID == MetaShardID {
				continue
			}
			target := st.Voters[0]
			if target == from.NodeID() {
				target = st.Voters[1]
			}
			if err := from.Engine.TransferLeader(ctx, st.ShardID, target); err != nil {
				t.Fatal(err)
			}
			moved[st.ShardID] = target
		}
		if len(moved) > 0 {
			break
		}
	}
	if len(moved) == 0 {
		t.Fatal("no bootstrap node leads a user shard")
	}
	waitFor(t, ctx, "the joiner's router follows the transfers", func() error {
		for shard, leader := range moved {
			rt, err := joiner.Router.Route(shard)
			if err != nil {
				return err
			}
			if rt.Leader != leader {
				return fmt.Errorf("shard %d: leader %d, want %d", shard, rt.Leader, leader)
			}
		}
		return nil
	})
	var sent, msgs uint64
	for _, n := range nodes {
		s := n.Gossip().Stats()
		sent, msgs = sent+s.LeaderUpdatesSent, msgs+s.LeaderMessagesSent
	}
	t.Logf("%d leader updates gossiped in %d messages", sent, msgs)
	if msgs == 0 || msgs >= sent {
		t.Fatalf("%d leader updates in %d messages: not batched", sent, msgs)
	}
	// Status sees four live nodes; the joiner is registered.
	resp, err := joiner.admin.Status(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var live []uint64
	for _, ns := range resp.Nodes {
		if ns.State == gossip.Alive.String() {
			live = append(live, ns.Node.NodeId)
		}
	}
	if len(live) != 4 || !slices.Contains(live, joiner.NodeID()) {
		t.Fatalf("live nodes %v", live)
	}

	// A node removed from the cluster keeps its record, marked removed; its
	// ID is refused for good.
	if _, err := nodes[0].admin.RemoveNode(ctx, &nodepb.RemoveNodeRequest{NodeId: joiner.NodeID()}); err == nil {
		t.Fatal("a live node was removed")
	}
	jdir, jid := joiner.cl.cfg.DataDir, joiner.NodeID()
	joiner.Close()
	nodes[3] = nil
	waitFor(t, ctx, "the joiner gone and removed", func() error {
		_, err := nodes[1].admin.RemoveNode(ctx, &nodepb.RemoveNodeRequest{NodeId: jid})
		return err
	})
	_, err = StartCluster(ctx, ClusterConfig{DataDir: jdir, Join: []string{nodes[0].GossipAddr()}, GossipAddr: "127.0.0.1:0"})
	if !errors.Is(err, ErrNodeRemoved) {
		t.Fatalf("restart of a removed node: %v", err)
	}
	t.Logf("restart of a removed node: %v", err)
	resp, err = nodes[2].admin.Status(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range resp.Nodes {
		if ns.Node.NodeId == jid && ns.State != "removed" {
			t.Fatalf("removed node's state %q", ns.State)
		}
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, fn func() error) {
	t.Helper()
	waitfor.Until(t, ctx, what, fn)
}

// TestRestartOnNewAddresses: a node restarted on its data directory but on
// other addresses (raft, client, gossip) serves again: the other nodes
// reach it at its new raft address (its shards catch up and it can lead),
// clients reach it at its new client address, and the cluster's view of it
// (Status, from the meta shard's record and gossip) shows the new ones.
func TestRestartOnNewAddresses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startClusterNodes(t, ctx, t.TempDir(), 3, 3)
	moved := nodes[1]
	id := moved.NodeID()
	cfg := moved.cl.cfg
	cfg.RaftAddr, cfg.ClientAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Join = []string{nodes[0].GossipAddr()}
	oldRaft := moved.RaftAddr()
	if err := moved.Close(); err != nil {
		t.Fatal(err)
	}
	nodes[1] = nil
	back, err := StartCluster(ctx, cfg)
	if err != nil {
		t.Fatalf("restart on new addresses: %v", err)
	}
	t.Cleanup(func() { back.Close() })
	nodes[1] = back
	if back.RaftAddr() == oldRaft {
		t.Fatalf("the raft address did not change: %s", oldRaft)
	}
	if err := back.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// It can lead: a shard's leadership moved to it takes writes.
	waitFor(t, ctx, "node 2 leads shard 1", func() error {
		l, _, err := shardLeader(ctx, nodes, 1)
		if err != nil {
			return err
		}
		if l != back {
			return l.Engine.TransferLeader(ctx, 1, id)
		}
		return nil
	})
	cl, err := client.New(ctx, client.Config{Endpoints: []string{nodes[0].ClientAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 50 {
		if err := cl.Put(ctx, []byte(fmt.Sprint("k", i)), []byte("v")); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	waitFor(t, ctx, "node 2's new addresses in the cluster's status", func() error {
		resp, err := nodes[0].admin.Status(ctx, nil)
		if err != nil {
			return err
		}
		for _, ns := range resp.GetNodes() {
			if n := ns.GetNode(); n.GetNodeId() == id {
				if n.GetRaftAddr() != back.RaftAddr() || n.GetClientAddr() != back.ClientAddr() {
					return fmt.Errorf("node %d: raft %s client %s, want %s and %s", id, n.GetRaftAddr(), n.GetClientAddr(), back.RaftAddr(), back.ClientAddr())
				}
				return nil
			}
		}
		return fmt.Errorf("node %d not listed", id)
	})
	// The meta shard's record of it follows too (what a node that has not
	// heard of it by gossip yet dials).
	waitFor(t, ctx, "node 2's record with its new addresses", func() error {
		rec, ok := nodes[0].cl.nodeRecord(ctx, id)
		if !ok || rec.RaftAddr != back.RaftAddr() || rec.ClientAddr != back.ClientAddr() {
			return fmt.Errorf("record %+v (found %t)", rec, ok)
		}
		return nil
	})
}
