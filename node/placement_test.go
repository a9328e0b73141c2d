package node

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/placement"
)

// placementConfig turns the placement driver on with short timers.
func placementConfig(_ int, cfg *ClusterConfig) {
	cfg.NoPlacement = false
	cfg.InitialShards = 24
	cfg.Placement = func(dc *placement.DriverConfig) {
		dc.Interval = 100 * time.Millisecond
		dc.Placement.DownAfter = 2 * time.Second
		dc.MovesPerMinute = 600
	}
}

// hosted counts, per node, the user shards it holds a voter of and those it
// leads, from the nodes' own replicas; it fails if a shard is joint, has a
// learner left, or does not have want voters.
func hosted(ctx context.Context, nodes []*Node, want int) (replicas, leaders map[uint64]int, err error) {
	replicas, leaders = map[uint64]int{}, map[uint64]int{}
	voters := map[uint64]int{}
	for _, n := range nodes {
		sts, err := n.Engine.Statuses(ctx)
		if err != nil {
			return nil, nil, err
		}
		replicas[n.NodeID()], leaders[n.NodeID()] = 0, 0
		for _, st := range sts {
			if st.ShardID == MetaShardID {
				continue
			}
			if len(st.Outgoing) > 0 {
				return nil, nil, fmt.Errorf("shard %d is joint on node %d", st.ShardID, n.NodeID())
			}
			if st.State == "StateLeader" {
				leaders[n.NodeID()]++
				if len(st.Voters) != want || len(st.Learners) != 0 {
					return nil, nil, fmt.Errorf("shard %d: voters %v, learners %v", st.ShardID, st.Voters, st.Learners)
				}
			}
			replicas[n.NodeID()]++
			voters[st.ShardID]++
		}
	}
	for id, v := range voters {
		if v != want {
			return nil, nil, fmt.Errorf("shard %d has %d replicas on live nodes, want %d", id, v, want)
		}
	}
	return replicas, leaders, nil
}

// TestPlacementBalancesRepairsAndDrains: nodes that join receive replicas
// and leaderships until every node is within the balance band; a node that
// leaves for good is repaired around once DownAfter passed; a decommissioned
// node is emptied and can then be removed.
func TestPlacementBalancesRepairsAndDrains(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	dir := t.TempDir()
	nodes := startClusterNodes(t, ctx, dir, 3, 3, placementConfig)
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := 3; i < 5; i++ {
		cfg := ClusterConfig{DataDir: filepath.Join(dir, fmt.Sprint(i)), RaftAddr: "127.0.0.1:0", ClientAddr: "127.0.0.1:0",
			GossipAddr: "127.0.0.1:0", Join: []string{nodes[0].GossipAddr()}}
		placementConfig(i, &cfg)
		n, err := StartCluster(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	start := time.Now()
	waitFor(t, ctx, "replicas and leaders balanced over 5 nodes", func() error {
		reps, leads, err := hosted(ctx, nodes, 3)
		if err != nil {
			return err
		}
		if err := placement.WithinBand(reps, placement.Config{}); err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
		if err := placement.WithinBand(leads, placement.Config{}); err != nil {
			return fmt.Errorf("leaders: %w", err)
		}
		return nil
	})
	t.Logf("balanced over 5 nodes in %v", time.Since(start).Round(time.Millisecond))

	// A node leaves for good: its replicas are replaced on the others.
	gone := nodes[4]
	gone.Close()
	live := nodes[:4]
	start = time.Now()
	waitFor(t, ctx, "every shard back to 3 replicas on live nodes", func() error {
		_, _, err := hosted(ctx, live, 3)
		return err
	})
	t.Logf("repaired in %v after the node left", time.Since(start).Round(time.Millisecond))

	// Decommission: refused for an unknown node, then node 4 drains.
	admin := nodes[0].admin
	if _, err := admin.SetDraining(ctx, &nodepb.SetDrainingRequest{NodeId: 99, Draining: true}); adminErrorOf(err).GetReason() != nodepb.Reason_REASON_NODE_NOT_FOUND {
		t.Fatalf("decommission of an unknown node: %v", err)
	}
	drain := nodes[3]
	if _, err := admin.SetDraining(ctx, &nodepb.SetDrainingRequest{NodeId: drain.NodeID(), Draining: true}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitFor(t, ctx, "the draining node emptied", func() error {
		reps, _, err := hosted(ctx, live, 3)
		if err != nil {
			return err
		}
		if reps[drain.NodeID()] != 0 {
			return fmt.Errorf("node %d still holds %d replicas", drain.NodeID(), reps[drain.NodeID()])
		}
		return nil
	})
	t.Logf("drained in %v", time.Since(start).Round(time.Millisecond))
	drain.Close()
	waitFor(t, ctx, "remove-node of the drained node", func() error {
		_, err := admin.RemoveNode(ctx, &nodepb.RemoveNodeRequest{NodeId: drain.NodeID()})
		return err
	})
	resp, err := admin.Placement(ctx, &nodepb.PlacementRequest{Action: nodepb.PlacementAction_PLACEMENT_ACTION_MOVES})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("moves (newest last of the in-flight, then history): %d bytes of JSON from node %d", len(resp.GetMovesJson()), resp.GetNodeId())
}
