package node

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestDrainSkipsADownVoter: a node drained while another voter of its
// shards is down hands every leadership to the live one. Before, the
// target was the most caught-up voter, down or not: with both equally
// caught up, about half the transfers went to the dead node and waited out
// the drain's deadline.
func TestDrainSkipsADownVoter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes := startClusterNodes(t, ctx, t.TempDir(), 3, 3)
	a, b, down := nodes[0], nodes[1], nodes[2]
	shards := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	for _, s := range shards {
		waitFor(t, ctx, fmt.Sprintf("node %d leads shard %d", a.NodeID(), s), func() error {
			l, _, err := shardLeader(ctx, nodes, s)
			if err != nil {
				return err
			}
			if l != a {
				return l.Engine.TransferLeader(ctx, s, a.NodeID())
			}
			return nil
		})
	}
	downID := down.NodeID()
	if err := down.Close(); err != nil {
		t.Fatal(err)
	}
	nodes[2] = nil
	waitFor(t, ctx, fmt.Sprintf("node %d suspected down", downID), func() error {
		if !a.Engine.PeerSuspected(downID) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	if err := a.Drain(dctx); err != nil {
		t.Fatalf("drain with node %d down: %v", downID, err)
	}
	for _, s := range shards {
		st, err := a.Engine.Status(ctx, s)
		if err != nil || st.Leader != b.NodeID() {
			t.Errorf("shard %d: leader %d (%v), want node %d", s, st.Leader, err, b.NodeID())
		}
	}
}
