package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

// TestFailoverWithinElectionTimeout: when the node that leads shards dies,
// each shard is led again within one election timeout, counted in ticks of
// the manual clock (without the successor's early campaign, and the
// campaign of a follower that rejects a staler candidate, raft's
// randomized timeout alone takes one to two election timeouts after the
// leader is suspected down).
func TestFailoverWithinElectionTimeout(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	descs := testcluster.EvenDescriptors(1, 30)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, d := range descs {
		ids = append(ids, d.ShardID)
	}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	for i, d := range descs {
		key := keyIn(d.Start, i)
		if _, err := c.Propose(ctx, d.ShardID, engine.PutCommand(key, []byte("v"))); err != nil {
			t.Fatal(err)
		}
	}
	leaders := c.Leaders(ctx)
	count := map[uint64]int{}
	for _, l := range leaders {
		count[l]++
	}
	victim := c.IDs()[0]
	for id, n := range count {
		if n > count[victim] {
			victim = id
		}
	}
	lost := count[victim]
	c.Crash(victim)
	const electionTicks = 10 // engine.DefaultConfig
	for tick := 1; tick <= electionTicks; tick++ {
		c.Tick()
		// Let the tick's consequences (campaigns, votes) play out before
		// the next one; this bounds the settling, not the outcome.
		settle := time.NewTimer(100 * time.Millisecond)
		poll := time.NewTicker(5 * time.Millisecond)
		for settling := true; settling; {
			if leaderless(c, ctx, ids) == 0 {
				t.Logf("%d shards lost their leader (node %d); all led again after %d ticks", lost, victim, tick)
				return
			}
			select {
			case <-settle.C:
				settling = false
			case <-poll.C:
			}
		}
		poll.Stop()
	}
	t.Fatalf("%d of %d shards have no leader %d ticks (one election timeout) after node %d, which led %d, died",
		leaderless(c, ctx, ids), len(ids), electionTicks, victim, lost)
}

func leaderless(c *testcluster.Cluster, ctx context.Context, ids []uint64) int {
	leaders := c.Leaders(ctx)
	n := 0
	for _, id := range ids {
		if leaders[id] == 0 {
			n++
		}
	}
	return n
}

// keyIn returns a key of the i-th shard whose range starts at start (the
// keys are tried until one hashes into the range).
func keyIn(start uint64, i int) []byte {
	rule := engine.DefaultConfig(1, 1, "x").PartitionRule
	for n := 0; ; n++ {
		k := []byte(fmt.Sprintf("k%d-%d", i, n))
		if h := rule.Hash(k); h >= start && h-start < 1<<59 {
			return k
		}
	}
}
