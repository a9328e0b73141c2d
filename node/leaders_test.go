package node

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/storage"
)

// TestLeadersHandedBack starts three nodes with static peers one after the
// other (60 shards of 3 replicas): the elections are won by whichever
// replica times out first, yet once every shard is led each node leads
// exactly its designated shards (shard ID mod voters), 20 each. The same
// after every node is closed and started again on its data directory.
func TestLeadersHandedBack(t *testing.T) {
	const shards = 60
	ctx, dir, peers := threeStatic(t)
	nodes := make([]*Node, 3)
	defer closeNodes(nodes)
	start := func() {
		t.Helper()
		for i, p := range peers {
			n, err := Start(ctx, Config{NodeID: p.NodeID, ClusterID: 9, DataDir: filepath.Join(dir, fmt.Sprint(p.NodeID)),
				RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr, Peers: peers, InitialShards: shards,
				Logger: slog.New(slog.DiscardHandler), ProgressInterval: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			nodes[i] = n
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
					if want := designatedLeader(st.ShardID, st.Voters); want != st.Leader {
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
}
