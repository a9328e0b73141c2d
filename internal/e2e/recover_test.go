package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node/nodepb"
)

// TestForceNewCluster is the recovery from the loss of a majority with real
// processes: three nodes take 5,000 writes (each acknowledged); node3 is
// killed with SIGKILL and `flotilla start --force-new-cluster` on it is
// refused while nodes 1 and 2 still form a quorum (nothing written); then
// nodes 1 and 2 are killed too and their data directories deleted, and
// node3 starts with --force-new-cluster: it serves every acknowledged key,
// and two fresh nodes that join bring every shard, the meta shard's
// included, back to 3 voters.
func TestForceNewCluster(t *testing.T) {
	ctx, began := realProcesses(t, 6*time.Minute)
	const shards, keys = 16, 5000
	flags := []string{"--down-after", "3s", "--placement-moves-per-minute", "600"}
	base := t.TempDir()
	ps, endpoints := startCluster(ctx, t, base, shards, flags...)
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	writeKeys(ctx, t, c, 0, keys) // fails the test unless every write is acknowledged
	c.Close()
	t.Logf("3 nodes ready and %d keys acknowledged in %v", keys, time.Since(began).Round(time.Millisecond))
	// Every replica has applied what its leader has: the survivor holds
	// every acknowledged write (one that it lacked would be lost, as the
	// recovery warns).
	adms := []nodepb.AdminClient{adminClient(t, ps[0].client), adminClient(t, ps[1].client), adminClient(t, ps[2].client)}
	poll(t, ctx, "every replica caught up", func() error {
		applied := map[uint64][]uint64{}
		for _, adm := range adms {
			resp, err := localShards(ctx, adm)
			if err != nil {
				return err
			}
			for _, s := range resp.GetShards() {
				applied[s.GetShardId()] = append(applied[s.GetShardId()], s.GetApplied())
			}
		}
		for id, a := range applied {
			if len(a) != 3 || slices.Min(a) != slices.Max(a) {
				return fmt.Errorf("shard %d: applied %v", id, a)
			}
		}
		return nil
	})

	// Bad input: node3's shards still have a quorum on nodes 1 and 2.
	survivor := ps[2]
	survivor.kill()
	args := survivorArgs(survivor.args)
	refused := newProc(t, "node3-refused", survivor.dir)
	refused.raft, refused.client, refused.gossip, refused.httpad = survivor.raft, survivor.client, survivor.gossip, survivor.httpad
	refused.args = append(slices.Clone(args), "--force-new-cluster")
	refused.start()
	if err := refused.waitExit(60 * time.Second); err == nil || !strings.Contains(refused.output(), "still has a live quorum") {
		t.Fatalf("--force-new-cluster with a live quorum elsewhere: exit %v, want a refusal; output:\n%s", err, refused.output())
	}
	t.Logf("refused: %s", lastLine(refused.output()))

	// The majority is lost for good.
	ps[0].kill()
	ps[1].kill()
	for _, p := range ps[:2] {
		if err := os.RemoveAll(p.dir); err != nil {
			t.Fatal(err)
		}
	}
	survivor.args = append(args, "--force-new-cluster")
	start := time.Now()
	survivor.start()
	survivor.waitReady(ctx)
	toServe := time.Since(start)
	c, err = client.New(ctx, client.Config{Endpoints: []string{survivor.client}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkKeys(ctx, t, c, keys)
	readBack := time.Since(start)
	var report []string
	for _, l := range strings.Split(survivor.output(), "\n") {
		if strings.HasPrefix(l, "force-new-cluster:") || strings.HasPrefix(l, "  shard") || strings.HasPrefix(l, "  meta shard") {
			report = append(report, l)
		}
	}
	if !strings.Contains(survivor.output(), "writes acknowledged after index") || len(report) < shards+3 {
		t.Fatalf("the survivor printed no per-shard report; output:\n%s", survivor.output())
	}
	t.Logf("survivor ready in %v, %d keys read back by %v; its report (first lines):\n%s", toServe.Round(time.Millisecond), keys,
		readBack.Round(time.Millisecond), strings.Join(report[:min(len(report), 4)], "\n"))

	// Two fresh nodes join: every shard back to 3 voters on the live nodes.
	live := []uint64{nodeIDOf(t, survivor.dir)}
	start = time.Now()
	for i := 4; i <= 5; i++ {
		p := newProc(t, fmt.Sprintf("node%d", i), filepath.Join(base, fmt.Sprintf("n%d", i)), append([]string{"--join", survivor.gossip}, flags...)...)
		p.start()
		p.waitReady(ctx)
		live = append(live, nodeIDOf(t, p.dir))
	}
	adm := adminClient(t, survivor.client)
	pollEvery(t, ctx, 500*time.Millisecond, "every shard back to 3 voters", func() error {
		return allOn(ctx, adm, live, shards+1)
	})
	toReplicated := time.Since(start)
	checkKeys(ctx, t, c, keys)
	t.Logf("every shard (%d and the meta shard) back to 3 voters on nodes %v %v after the joins began; %d keys read back again",
		shards, live, toReplicated.Round(time.Millisecond), keys)
}

// survivorArgs is a node's command line without --join and
// --bootstrap-expect: the survivor of a lost majority starts alone.
func survivorArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--join" || args[i] == "--bootstrap-expect" {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// allOn checks the cluster's view of its shards (Admin Shards on adm):
// n shards, each reported by its leader with exactly 3 voters, all on live
// nodes.
func allOn(ctx context.Context, adm nodepb.AdminClient, live []uint64, n int) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := adm.Shards(cctx, &nodepb.ShardsRequest{})
	if err != nil {
		return err
	}
	if len(resp.GetShards()) != n {
		return fmt.Errorf("%d shards listed, want %d", len(resp.GetShards()), n)
	}
	for _, s := range resp.GetShards() {
		if s.GetLeader() == 0 || s.GetReportedBy() != s.GetLeader() {
			return fmt.Errorf("shard %d: leader %d, reported by %d", s.GetShardId(), s.GetLeader(), s.GetReportedBy())
		}
		if len(s.GetReplicas()) != 3 {
			return fmt.Errorf("shard %d: %d replicas, want 3: %v", s.GetShardId(), len(s.GetReplicas()), s.GetReplicas())
		}
		for _, r := range s.GetReplicas() {
			if r.GetRole() != "voter" || !slices.Contains(live, r.GetNodeId()) {
				return fmt.Errorf("shard %d: replica on node %d is %q (live nodes %v)", s.GetShardId(), r.GetNodeId(), r.GetRole(), live)
			}
		}
	}
	return nil
}
