package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/placement"
)

// placementShards is the number of user shards TestPlacement bootstraps.
const placementShards = 120

// TestPlacement: the placement driver of `flotilla start`, with real
// processes, under a continuous write load through the Go client. Two nodes
// join a cluster of three and receive replicas and leaderships until every
// node is within the balance band; one of them is killed with SIGKILL for
// good and its replicas are replaced on the live nodes once --down-after
// passed; the other is decommissioned (Admin SetDraining), empties, stops
// and is removed (Admin RemoveNode). No write fails, and every acknowledged
// write reads back.
func TestPlacement(t *testing.T) {
	ctx, began := realProcesses(t, 8*time.Minute)
	const downAfter = 20 * time.Second
	flags := []string{"--down-after", downAfter.String(), "--placement-moves-per-minute", "600"}
	base := t.TempDir()
	ps, endpoints := startCluster(ctx, t, base, placementShards, flags...)
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := len(c.Shards()); n != placementShards {
		t.Fatalf("the ring has %d shards, want %d", n, placementShards)
	}
	t.Logf("3 nodes ready in %v", time.Since(began).Round(time.Millisecond))

	// A write that fails is a failure of the test: each Put gets 30s, the
	// client's own retries included.
	loadCtx, abortLoad := context.WithCancel(ctx)
	load := &writeLoad{c: c, timeout: 30 * time.Second}
	defer func() { abortLoad(); load.wg.Wait() }() // should a check fail
	load.start(loadCtx, t, 0, 8, 64)
	waitAcks(ctx, t, load, "first writes", 0)
	checkNoFailure := func(step string) {
		t.Helper()
		if n := load.failed.Load(); n != 0 {
			t.Fatalf("%s: %d writes failed (%d with an unknown outcome)", step, n, load.ambig.Load())
		}
	}

	// Two nodes join: replicas and leaderships spread over five.
	snapBytes := func() (sum float64) {
		for _, p := range ps {
			if p.cmd.ProcessState == nil { // running
				sum += metric(t, p.httpad, "flotilla_snapshot_bytes_sent_total")
			}
		}
		return sum
	}
	bytesBefore := snapBytes()
	for i := 4; i <= 5; i++ {
		p := newProc(t, fmt.Sprintf("node%d", i), filepath.Join(base, fmt.Sprintf("n%d", i)), append([]string{"--join", ps[0].gossip}, flags...)...)
		p.start()
		ps = append(ps, p)
	}
	start := time.Now()
	for _, p := range ps[3:] {
		p.waitReady(ctx)
	}
	ids := make([]uint64, len(ps))
	adms := make([]nodepb.AdminClient, len(ps))
	for i, p := range ps {
		ids[i], adms[i] = nodeIDOf(t, p.dir), adminClient(t, p.client)
	}
	// The spread over five nodes as the joiners came up (they hold nothing
	// yet, or the first moves).
	var spreadBefore [2]int
	if r, l, err := localCounts(ctx, adms); err == nil {
		spreadBefore = [2]int{spreadOf(r), spreadOf(l)}
	}
	adm := adms[0] // node1 stays up throughout
	defer func() {
		if t.Failed() {
			dumpPlacement(t, adm, ps)
		}
	}()
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Minute)
	pollEvery(t, bctx, 500*time.Millisecond, "replicas and leaders balanced over 5 nodes", func() error {
		if err := shardsOn(ctx, adm, ids); err != nil {
			return err
		}
		replicas, leaders, err := localCounts(ctx, adms)
		if err != nil {
			return err
		}
		if err := placement.WithinBand(replicas, placement.Config{}); err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
		if err := placement.WithinBand(leaders, placement.Config{}); err != nil {
			return fmt.Errorf("leaders: %w", err)
		}
		return nil
	})
	bcancel()
	balanceTook := time.Since(start)
	replicas, leaders, _ := localCounts(ctx, adms)
	t.Logf("balanced over 5 nodes in %v (replicas %v, spread %d; leaders %v, spread %d; spreads before the joins' moves %d and %d); %.0f snapshot bytes moved; %d writes acknowledged",
		balanceTook.Round(time.Millisecond), replicas, spreadOf(replicas), leaders, spreadOf(leaders), spreadBefore[0], spreadBefore[1],
		snapBytes()-bytesBefore, load.acks.Load())
	checkNoFailure("balance")

	// node5 dies for good: its replicas are replaced on the live nodes.
	dead := ps[4]
	t.Logf("kill -9 %s (node %d)", dead.name, ids[4])
	dead.kill()
	start = time.Now()
	acked := load.acks.Load()
	rctx, rcancel := context.WithTimeout(ctx, downAfter+60*time.Second)
	pollEvery(t, rctx, 500*time.Millisecond, "every shard back to 3 voters on live nodes", func() error {
		return shardsOn(ctx, adm, ids[:4])
	})
	rcancel()
	repairTook := time.Since(start)
	t.Logf("repaired in %v after the kill (--down-after %v); %d writes acknowledged", repairTook.Round(time.Millisecond), downAfter, load.acks.Load())
	waitAcks(ctx, t, load, "writes after the repair", acked)
	checkNoFailure("repair")

	// node4 is decommissioned: it empties, stops and is removed.
	drain, drainID := ps[3], ids[3]
	if _, err := adm.SetDraining(ctx, &nodepb.SetDrainingRequest{NodeId: drainID, Draining: true}); err != nil {
		t.Fatalf("SetDraining node %d: %v", drainID, err)
	}
	start = time.Now()
	dctx, dcancel := context.WithTimeout(ctx, 3*time.Minute)
	pollEvery(t, dctx, 500*time.Millisecond, fmt.Sprintf("node %d emptied", drainID), func() error {
		if err := shardsOn(ctx, adm, []uint64{ids[0], ids[1], ids[2]}); err != nil {
			return err
		}
		resp, err := localShards(ctx, adms[3])
		if err != nil {
			return err
		}
		for _, s := range resp.GetShards() {
			if !s.GetSystem() {
				return fmt.Errorf("node %d still holds a replica of shard %d", drainID, s.GetShardId())
			}
		}
		return nil
	})
	dcancel()
	drainTook := time.Since(start)
	t.Logf("node %d drained in %v; %d writes acknowledged", drainID, drainTook.Round(time.Millisecond), load.acks.Load())
	if err := drain.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := drain.waitExit(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: exit %v\n%s", err, drain.output())
	}
	mctx, mcancel := context.WithTimeout(ctx, time.Minute)
	poll(t, mctx, fmt.Sprintf("RemoveNode %d", drainID), func() error {
		cctx, cancel := context.WithTimeout(mctx, 5*time.Second)
		defer cancel()
		_, err := adm.RemoveNode(cctx, &nodepb.RemoveNodeRequest{NodeId: drainID})
		return err
	})
	mcancel()
	t.Logf("node %d removed", drainID)
	acked = load.acks.Load()
	waitAcks(ctx, t, load, "writes after the removal", acked)

	load.stop()
	load.wg.Wait()
	checkNoFailure("the end")
	keys := load.checkAcked(ctx, t)
	t.Logf("time to balance %v, to repair %v, to drain %v; writes acknowledged %d, failed %d; %d keys read back with their last acknowledged values; %v in all",
		balanceTook.Round(time.Millisecond), repairTook.Round(time.Millisecond), drainTook.Round(time.Millisecond),
		load.acks.Load(), load.failed.Load(), len(keys), time.Since(began).Round(time.Millisecond))
}

// spreadOf returns the largest count minus the smallest.
func spreadOf(counts map[uint64]int) int {
	lo, hi, first := 0, 0, true
	for _, n := range counts {
		if first || n < lo {
			lo = n
		}
		if first || n > hi {
			hi = n
		}
		first = false
	}
	return hi - lo
}

// dumpPlacement logs, for a failed test, what the cluster and its placement
// driver report, and the placement lines of each node's log.
func dumpPlacement(t *testing.T, adm nodepb.AdminClient, ps []*proc) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err := adm.Status(ctx, &nodepb.StatusRequest{}); err != nil {
		t.Logf("Status: %v", err)
	} else {
		for _, n := range st.GetNodes() {
			t.Logf("Status: node %d %s, %d replicas, %d leaders", n.GetNode().GetNodeId(), n.GetState(), n.GetReplicas(), n.GetLeaders())
		}
	}
	for _, a := range []nodepb.PlacementAction{nodepb.PlacementAction_PLACEMENT_ACTION_STATUS, nodepb.PlacementAction_PLACEMENT_ACTION_PLAN, nodepb.PlacementAction_PLACEMENT_ACTION_MOVES} {
		resp, err := adm.Placement(ctx, &nodepb.PlacementRequest{Action: a})
		if err != nil {
			t.Logf("Placement %v: %v", a, err)
			continue
		}
		t.Logf("Placement %v from node %d: paused %v\nops %s\nmoves %s\nstats %s", a, resp.GetNodeId(), resp.GetPaused(), resp.GetOpsJson(), resp.GetMovesJson(), resp.GetStatsJson())
	}
	for _, p := range ps {
		var lines []string
		for _, l := range strings.Split(p.output(), "\n") {
			if strings.Contains(l, "placement") || strings.Contains(l, "ERROR") || strings.Contains(l, "WARN") {
				lines = append(lines, l)
			}
		}
		t.Logf("%s: %d placement/warning lines, the last 40:\n%s", p.name, len(lines), strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}

// waitAcks waits, for at most 30s, until more than n writes of load are
// acknowledged.
func waitAcks(ctx context.Context, t *testing.T, load *writeLoad, what string, n int64) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	poll(t, wctx, what, func() error {
		if got := load.acks.Load(); got <= n {
			return fmt.Errorf("%d writes acknowledged, none since the step", got)
		}
		return nil
	})
}

func localShards(ctx context.Context, adm nodepb.AdminClient) (*nodepb.LocalShardsResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return adm.LocalShards(cctx, &nodepb.LocalShardsRequest{})
}

// shardsOn checks the cluster's view of its shards (Admin Shards on adm):
// every user shard reported by its leader, with exactly 3 voters, all on
// the nodes live, and no other replica.
func shardsOn(ctx context.Context, adm nodepb.AdminClient, live []uint64) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := adm.Shards(cctx, &nodepb.ShardsRequest{})
	if err != nil {
		return err
	}
	n := 0
	for _, s := range resp.GetShards() {
		if s.GetSystem() {
			continue
		}
		n++
		if s.GetLeader() == 0 || s.GetReportedBy() != s.GetLeader() {
			return fmt.Errorf("shard %d: leader %d, reported by %d", s.GetShardId(), s.GetLeader(), s.GetReportedBy())
		}
		for _, r := range s.GetReplicas() {
			if r.GetRole() != "voter" || !slices.Contains(live, r.GetNodeId()) {
				return fmt.Errorf("shard %d: replica on node %d is %q (live nodes %v): %v", s.GetShardId(), r.GetNodeId(), r.GetRole(), live, s.GetReplicas())
			}
		}
		if len(s.GetReplicas()) != 3 {
			return fmt.Errorf("shard %d: %d replicas, want 3: %v", s.GetShardId(), len(s.GetReplicas()), s.GetReplicas())
		}
	}
	if n != placementShards {
		return fmt.Errorf("%d user shards listed, want %d", n, placementShards)
	}
	return nil
}

// localCounts counts, per node of ps, the user shards it holds a replica of
// and those it leads, from each node's own replicas (Admin LocalShards on
// each of adms).
func localCounts(ctx context.Context, adms []nodepb.AdminClient) (replicas, leaders map[uint64]int, err error) {
	replicas, leaders = map[uint64]int{}, map[uint64]int{}
	for i, adm := range adms {
		resp, err := localShards(ctx, adm)
		if err != nil {
			return nil, nil, fmt.Errorf("node%d: %w", i+1, err)
		}
		id := resp.GetNodeId()
		replicas[id], leaders[id] = 0, 0
		for _, s := range resp.GetShards() {
			if s.GetSystem() {
				continue
			}
			replicas[id]++
			if s.GetLeader() == id {
				leaders[id]++
			}
		}
	}
	return replicas, leaders, nil
}
