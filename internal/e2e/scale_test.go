package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/placement"
)

// scaleShards is the number of user shards TestScaleStartRestart
// bootstraps (issue 13).
const scaleShards = 2000

// Bounds of the steps of TestScaleStartRestart, each from the step's start.
const (
	scaleReadyWithin = 60 * time.Second // every /readyz 200
	scaleBandWithin  = 60 * time.Second // every shard led, leaders in the band
	scaleStopWithin  = 30 * time.Second // SIGTERM to exit
	scaleKeys        = 100              // written before the restart, read after
)

// TestScaleStartRestart: three `flotilla start` processes bootstrap 2,000
// shards of 3 replicas on loopback. Every /readyz answers 200, every shard
// is led by exactly one node, and the leaders per node come within the
// balance band (±5% of the mean, at least ±2: placement.WithinBand) as the
// nodes hand leaderships to their designated nodes. Keys are written
// through the Go client; the three processes are stopped with SIGTERM and
// started again on their data directories with the same flags and
// addresses; the same checks hold again, and every key reads back.
func TestScaleStartRestart(t *testing.T) {
	ctx, began := realProcesses(t, 2*time.Minute)
	rctx, cancel := context.WithTimeout(ctx, scaleReadyWithin)
	ps, endpoints := startCluster(rctx, t, t.TempDir(), scaleShards)
	cancel()
	readyTook := time.Since(began)
	adms := make([]nodepb.AdminClient, len(ps))
	for i, p := range ps {
		adms[i] = adminClient(t, p.client)
	}
	leaders, ledAfter := waitLeadersInBand(ctx, t, adms, "start", began)
	t.Logf("start: every /readyz 200 after %v, every shard led and leaders in the band after %v: %s",
		readyTook.Round(time.Millisecond), ledAfter.Round(time.Millisecond), perNode(leaders))

	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.Shards()); n != scaleShards {
		t.Fatalf("the ring has %d shards, want %d", n, scaleShards)
	}
	writeKeys(ctx, t, c, 0, scaleKeys)
	c.Close()

	stopped := time.Now()
	stopAll(t, ps)
	stopTook := time.Since(stopped)

	restarted := time.Now()
	rctx, cancel = context.WithTimeout(ctx, scaleReadyWithin)
	for _, p := range ps {
		p.start()
	}
	for _, p := range ps {
		p.waitReady(rctx)
	}
	cancel()
	readyTook2 := time.Since(restarted)
	leaders, ledAfter2 := waitLeadersInBand(ctx, t, adms, "restart", restarted)
	t.Logf("restart: every /readyz 200 after %v, every shard led and leaders in the band after %v: %s",
		readyTook2.Round(time.Millisecond), ledAfter2.Round(time.Millisecond), perNode(leaders))

	c, err = client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkKeys(ctx, t, c, scaleKeys)
	logStartLines(t, ps)
	t.Logf("%d shards × 3: start ready %v, in band %v; SIGTERM to exit %v; restart ready %v, in band %v; final leaders %s; %d keys read back; %v in all",
		scaleShards, readyTook.Round(time.Millisecond), ledAfter.Round(time.Millisecond), stopTook.Round(time.Millisecond),
		readyTook2.Round(time.Millisecond), ledAfter2.Round(time.Millisecond), perNode(leaders), scaleKeys, time.Since(began).Round(time.Millisecond))
}

// stop sends the process SIGTERM: it hands its leaderships away (within
// its --drain-timeout), leaves the gossip cluster and exits. waitExit waits
// for the exit.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("%s: SIGTERM: %v", p.name, err)
	}
}

// stopAll stops every process of ps at once, as a whole cluster is shut
// down, and fails the test unless each exits 0 within scaleStopWithin.
func stopAll(t *testing.T, ps []*proc) {
	t.Helper()
	for _, p := range ps {
		p.stop()
	}
	for _, p := range ps {
		if err := p.waitExit(scaleStopWithin); err != nil {
			t.Fatalf("%s: exit after SIGTERM: %v\n%s", p.name, err, p.output())
		}
	}
}

// waitLeadersInBand waits, for at most scaleBandWithin, until every node
// of adms hosts every user shard, each shard is led by exactly one node
// (from the nodes' own replicas: Admin LocalShards), and the leaders per
// node are within the band (placement.WithinBand). It returns the leaders per node
// and the time from since. It logs the leaders per node each time they
// changed, also when it fails the test.
func waitLeadersInBand(ctx context.Context, t *testing.T, adms []nodepb.AdminClient, what string, since time.Time) (map[uint64]int, time.Duration) {
	t.Helper()
	var history []string // the leaders per node each time they changed
	last := ""
	defer func() { // also when pollEvery fails the test
		t.Logf("%s: leaders per node over time:\n%s", what, strings.Join(history, "\n"))
	}()
	var leaders map[uint64]int
	wctx, cancel := context.WithTimeout(ctx, scaleBandWithin)
	defer cancel()
	pollEvery(t, wctx, 200*time.Millisecond, what+": every shard led by one node, leaders per node within the band", func() error {
		var err error
		leaders, err = shardLeaders(ctx, adms)
		if s := perNode(leaders); err == nil && s != last {
			history = append(history, fmt.Sprintf("  %v: %s", time.Since(since).Round(time.Millisecond), s))
			last = s
		}
		if err != nil {
			return err
		}
		return placement.WithinBand(leaders, placement.Config{})
	})
	return leaders, time.Since(since)
}

// shardLeaders returns how many user shards each node of adms leads, from
// the nodes' own replicas, or an error unless every node hosts
// scaleShards user shards and each is led by exactly one node.
func shardLeaders(ctx context.Context, adms []nodepb.AdminClient) (map[uint64]int, error) {
	leaders := map[uint64]int{}
	ledBy := map[uint64]uint64{} // shard ID → the node that leads it
	for i, adm := range adms {
		resp, err := localShards(ctx, adm)
		if err != nil {
			return nil, fmt.Errorf("node%d: LocalShards: %w", i+1, err)
		}
		self, hosted := resp.GetNodeId(), 0
		leaders[self] = 0
		for _, s := range resp.GetShards() {
			if s.GetSystem() {
				continue
			}
			hosted++
			if s.GetLeader() != self {
				continue
			}
			if other, ok := ledBy[s.GetShardId()]; ok {
				return nil, fmt.Errorf("shard %d led by both node %d and node %d", s.GetShardId(), other, self)
			}
			ledBy[s.GetShardId()] = self
			leaders[self]++
		}
		if hosted != scaleShards {
			return nil, fmt.Errorf("node%d (node %d) hosts %d user shards, want %d", i+1, self, hosted, scaleShards)
		}
	}
	if len(ledBy) != scaleShards {
		return leaders, fmt.Errorf("%d of %d shards led (%s)", len(ledBy), scaleShards, perNode(leaders))
	}
	return leaders, nil
}

// perNode formats counts per node ID in ID order: "node 3: 667, node 9: 666".
func perNode(counts map[uint64]int) string {
	ids := make([]uint64, 0, len(counts))
	for id := range counts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("node %d: %d", id, counts[id])
	}
	return strings.Join(parts, ", ")
}

// logStartLines logs each process's lines about its starts and its stop:
// the shards led, the leaderships handed to their designated nodes, the
// drain.
func logStartLines(t *testing.T, ps []*proc) {
	t.Helper()
	for _, p := range ps {
		var lines []string
		for _, l := range strings.Split(p.output(), "\n") {
			if strings.Contains(l, `msg="start: `) || strings.Contains(l, "drain") || strings.Contains(l, "restarted ---") {
				lines = append(lines, l)
			}
		}
		t.Logf("%s:\n%s", p.name, strings.Join(lines, "\n"))
	}
}
