package engine_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"golang.org/x/sync/errgroup"
)

// TestThousandShards: 3 nodes x 1,000 shards; every shard elects a leader
// and commits writes.
func TestThousandShards(t *testing.T) {
	const shards = 1000
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 120*time.Second)
	descs := testcluster.EvenDescriptors(1, shards)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	c.RunClock(20 * time.Millisecond)
	var g errgroup.Group
	g.SetLimit(64)
	rule := engine.DefaultConfig(1, 1, "x").PartitionRule
	for _, d := range descs {
		g.Go(func() error {
			// A key of this shard: probe until one hashes into its range.
			for i := 0; ; i++ {
				key := []byte(fmt.Sprintf("k%d-%d", d.ShardID, i))
				if !d.Contains(rule.Hash(key)) {
					continue
				}
				_, err := c.Propose(ctx, d.ShardID, engine.PutCommand(key, []byte("v")))
				return err
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, len(descs))
	for i, d := range descs {
		ids[i] = d.ShardID
	}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	leaders := map[uint64]int{}
	for _, l := range c.Leaders(ctx) {
		leaders[l]++
	}
	t.Logf("leaders per node: %v", leaders)
}
