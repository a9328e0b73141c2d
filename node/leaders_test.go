package node

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/storage"
)

// TestLeadersHandedBack starts three nodes with static peers one after the
// other (60 shards of 3 replicas): the elections are won by whichever
// replica times out first, yet once every shard is led each node leads
// exactly its designated shards (shard ID mod voters), 20 each. The same
// after every node is closed and started again on its data directory, and
// after one node alone is (the others led its shards meanwhile: it asks
// for them back).
func TestLeadersHandedBack(t *testing.T) {
	const shards = 60
	ctx, dir, peers := threeStatic(t)
	nodes := make([]*Node, 3)
	defer closeNodes(nodes)
	startOne := func(i int) {
		t.Helper()
		p := peers[i]
		n, err := startNode(ctx, Config{NodeID: p.NodeID, ClusterID: 9, DataDir: filepath.Join(dir, fmt.Sprint(p.NodeID)),
			RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr, Peers: peers, InitialShards: shards,
			Logger: slog.New(slog.DiscardHandler), ProgressInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
	}
	start := func() {
		t.Helper()
		for i := range peers {
			startOne(i)
		}
	}
	// waitDesignated waits until every node leads its designated shards
	// and no other.
	waitDesignated := func(what string) {
		t.Helper()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var wrong []string
		for {
			wrong = wrong[:0]
			for _, n := range nodes {
				sts, err := n.Engine.Statuses(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, st := range sts {
					if storage.IsSystemShard(st.ShardID) || st.Leader != n.NodeID() {
						continue
					}
					if want := engine.DesignatedVoter(st.ShardID, st.Voters); want != st.Leader {
						wrong = append(wrong, fmt.Sprintf("shard %d led by %d, designated %d", st.ShardID, st.Leader, want))
					}
				}
			}
			led := 0
			for _, n := range nodes {
				led += int(n.Engine.Stats().ShardsLeading)
			}
			if len(wrong) == 0 && led == shards {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: leaders not handed to their designated nodes: %d led, %v", what, led, wrong)
			case <-tick.C:
			}
		}
	}
	start()
	waitDesignated("start")
	for i, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		nodes[i] = nil
	}
	start()
	waitDesignated("restart")
	// A node restarted alone: the others lead its shards meanwhile, and
	// hand them back when it asks.
	if err := nodes[1].Close(); err != nil {
		t.Fatal(err)
	}
	nodes[1] = nil
	ledElsewhere := func(n *Node) bool {
		sts, err := n.Engine.Statuses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sts {
			if st.Leader == 0 || st.Leader == peers[1].NodeID {
				return false
			}
		}
		return true
	}
	for _, n := range []*Node{nodes[0], nodes[2]} {
		for !ledElsewhere(n) {
			select {
			case <-ctx.Done():
				t.Fatalf("node %d: its shards not all led by the others with node %d down", n.NodeID(), peers[1].NodeID)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	startOne(1)
	waitDesignated("a node restarted alone")
}
