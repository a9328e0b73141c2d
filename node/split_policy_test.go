package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/node/shardload"
	"github.com/flotilla-db/flotilla/placement"
)

// TestPlacementSplitsAndMergesByLoad: the placement driver, reading the
// shards' loads from the nodes that lead them, splits a hot shard until
// every shard is below the split rate, and, once the writes stop and the
// cool-down has passed, merges the cold shards back; not one write fails,
// every acknowledged key reads back, and the shards tile the hash space
// throughout. The thresholds are scaled down: a 1 s load window, a split
// above 40 writes/s, a 2 s cool-down.
func TestPlacementSplitsAndMergesByLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	nodes := startClusterNodes(t, ctx, t.TempDir(), 3, 3, func(_ int, cfg *ClusterConfig) {
		cfg.InitialShards, cfg.NoPlacement = 1, false
		cfg.ShardLoad = shardload.Config{Window: time.Second, Interval: 250 * time.Millisecond}
		cfg.Placement = func(c *placement.DriverConfig) {
			c.Interval, c.BusyInterval = 100*time.Millisecond, 20*time.Millisecond
			c.Placement.SplitWriteRate, c.Placement.MergeWriteRate = 40, 2
			c.Placement.MergeCooldown = 2 * time.Second
		}
	})
	userShards := func() (int, error) {
		resp, err := nodes[0].admin.Shards(ctx, &nodepb.ShardsRequest{})
		if err != nil {
			return 0, err
		}
		ring, err := userRanges(resp)
		if err != nil {
			return 0, err
		}
		return len(ring.Ranges()), nil
	}
	cl, load := startLoad(t, ctx, nodes)
	const want = 4
	start := time.Now()
	waitFor(t, ctx, fmt.Sprintf("the hot shard split into at least %d", want), func() error {
		n, err := userShards()
		if err == nil && n < want {
			err = fmt.Errorf("%d shards", n)
		}
		return err
	})
	t.Logf("split into %d shards under load in %v", want, time.Since(start).Round(time.Millisecond))
	acked, failed := load.finish()
	if len(failed) > 0 {
		t.Fatalf("%d of %d writes failed, the first: %v", len(failed), len(failed)+len(acked), failed[0])
	}
	start = time.Now()
	waitFor(t, ctx, "the cold shards merged back to one", func() error {
		n, err := userShards()
		if err == nil && n != 1 {
			err = fmt.Errorf("%d shards", n)
		}
		return err
	})
	t.Logf("merged back to one shard in %v once the writes stopped; %d writes acknowledged", time.Since(start).Round(time.Millisecond), len(acked))
	for _, k := range acked {
		v, found, err := cl.Get(ctx, []byte(k))
		if err != nil || !found || string(v) != k {
			t.Fatalf("key %s: %q (found %t), %v", k, v, found, err)
		}
	}
}
