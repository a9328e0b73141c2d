package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/internal/waitfor"
	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/placement"
)

// startNode starts node i of a cluster in dir: a single-replica cluster
// of 8 shards it bootstraps alone (join empty), or joins, with the
// placement driver on short timers.
func startNode(t *testing.T, ctx context.Context, dir string, i int, join ...string) *node.Node {
	t.Helper()
	cfg := node.ClusterConfig{
		DataDir: filepath.Join(dir, fmt.Sprint(i)), RaftAddr: "127.0.0.1:0", ClientAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		InitialShards: 8, Replication: 1, BootstrapStable: 100 * time.Millisecond, Join: join,
		Placement: func(dc *placement.DriverConfig) {
			dc.Interval = 100 * time.Millisecond
			dc.MovesPerMinute = 600
		},
		Logger: slog.New(slog.DiscardHandler), // the commands' output tells what went wrong
	}
	if len(join) == 0 {
		cfg.BootstrapExpect = 1
	}
	n, err := node.StartCluster(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPlacementOnACluster runs the placement commands against two real
// nodes: paused, the driver plans the balance of the node that joins but
// starts nothing; resumed, it moves replicas, which moves lists; the
// joiner, decommissioned, empties, as status shows.
func TestPlacementOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	n1 := startNode(t, ctx, dir, 0)
	// ctl runs flotillactl against node 1.
	ctl := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		return runCmd(t, append([]string{"--endpoints", n1.ClientAddr()}, args...)...)
	}
	// ctlOK runs it and fails the test if it fails.
	ctlOK := func(args ...string) string {
		t.Helper()
		stdout, stderr, code := ctl(args...)
		if code != exitOK {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		return stdout
	}
	// ctlJSON runs it with --output json into v, and returns an error if
	// it fails.
	ctlJSON := func(v any, args ...string) error {
		stdout, stderr, code := ctl(append([]string{"--output", "json"}, args...)...)
		if code != exitOK {
			return fmt.Errorf("%q: exit %d: %s", args, code, stderr)
		}
		return json.Unmarshal([]byte(stdout), v)
	}
	// The driver starts once the cluster record is readable.
	waitfor.Until(t, ctx, "placement paused", func() error {
		var v placementStatusView
		return ctlJSON(&v, "placement", "pause")
	})
	n2 := startNode(t, ctx, dir, 1, n1.GossipAddr())
	id2 := fmt.Sprint(n2.NodeID())

	var plan planView
	waitfor.Until(t, ctx, "a plan that balances replicas onto the new node", func() error {
		if err := ctlJSON(&plan, "plan"); err != nil {
			return err
		}
		for _, op := range plan.Ops {
			if op.Kind == "rebalance-replica" && len(op.Add) == 1 && op.Add[0] == n2.NodeID() {
				return nil
			}
		}
		return fmt.Errorf("plan %+v", plan.Ops)
	})
	if !plan.Paused {
		t.Errorf("plan: not paused")
	}
	t.Logf("flotillactl plan:\n%s", ctlOK("plan"))
	var moves movesView
	if err := ctlJSON(&moves, "moves"); err != nil || len(moves.Moves) != 0 {
		t.Fatalf("moves while paused: %+v (%v)", moves, err)
	}

	t.Logf("flotillactl placement resume:\n%s", ctlOK("placement", "resume"))
	moved := 0 // replicas moved onto node 2
	waitfor.Until(t, ctx, "replicas moved and nothing left to do", func() error {
		if err := ctlJSON(&moves, "moves"); err != nil {
			return err
		}
		moved = 0
		for _, m := range moves.Moves {
			if m.Outcome == "running" {
				return fmt.Errorf("in flight: %+v", m)
			}
			if m.Outcome == "succeeded" && m.Op.Kind == "rebalance-replica" {
				moved++
			}
		}
		if moved == 0 {
			return fmt.Errorf("no move succeeded: %+v", moves.Moves)
		}
		if err := ctlJSON(&plan, "plan"); err != nil || len(plan.Ops) != 0 {
			return fmt.Errorf("plan %+v (%v)", plan.Ops, err)
		}
		return nil
	})
	t.Logf("flotillactl moves:\n%s", ctlOK("moves"))
	status := ctlOK("placement", "status")
	t.Logf("flotillactl placement status:\n%s", status)
	if !strings.Contains(status, ": running\n") || !strings.Contains(status, "\nrebalance-replica  ") {
		t.Errorf("placement status:\n%s", status)
	}

	// Decommission: an unknown node, then the joiner, which empties.
	if _, stderr, code := ctl("decommission", "99"); code != exitFailure || !strings.Contains(stderr, "(NODE_NOT_FOUND)") {
		t.Errorf("decommission 99: exit %d, stderr %q", code, stderr)
	}
	t.Logf("flotillactl decommission %s:\n%s", id2, ctlOK("decommission", id2))
	if _, stderr, code := ctl("decommission", fmt.Sprint(n1.NodeID())); code != exitFailure || !strings.Contains(stderr, "(BAD_REQUEST)") {
		t.Errorf("decommission of the last node that does not drain: exit %d, stderr %q", code, stderr)
	}
	waitfor.Until(t, ctx, "the decommissioned node's replicas moved off", func() error {
		if err := ctlJSON(&moves, "moves"); err != nil {
			return err
		}
		drained := 0
		for _, m := range moves.Moves {
			if m.Outcome == "succeeded" && m.Op.Kind == "decommission" {
				drained++
			}
		}
		if drained < moved {
			return fmt.Errorf("%d of %d replicas moved off: %+v", drained, moved, moves.Moves)
		}
		return nil
	})
	t.Logf("flotillactl moves:\n%s", ctlOK("moves"))
	// Gossip carries the replica counts, sampled every second.
	waitfor.Until(t, ctx, "status to show the decommissioned node empty", func() error {
		var st statusView
		if err := ctlJSON(&st, "status"); err != nil {
			return err
		}
		for _, n := range st.Nodes {
			switch {
			case n.NodeID == n2.NodeID() && (!n.Draining || n.Replicas != 0):
				return fmt.Errorf("node %d: draining %v, %d replicas", n.NodeID, n.Draining, n.Replicas)
			case n.NodeID == n1.NodeID() && n.Replicas < 8:
				return fmt.Errorf("node %d: %d replicas", n.NodeID, n.Replicas)
			}
		}
		return nil
	})
	t.Logf("flotillactl status:\n%s", ctlOK("status"))
	t.Logf("flotillactl recommission %s:\n%s", id2, ctlOK("recommission", id2))
	var st statusView
	if err := ctlJSON(&st, "status"); err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Draining {
			t.Errorf("node %d still draining after recommission", n.NodeID)
		}
	}
}
