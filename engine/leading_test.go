package engine_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/internal/waitfor"
)

// TestLeading: Leading reports, on each node, exactly the initialized
// shards whose replica there leads, with the applied index and the
// descriptor that Statuses reports for them, also after a leadership
// moved.
func TestLeading(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 30*time.Second)
	descs := testcluster.EvenDescriptors(1, 8)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	c.RunClock(2 * time.Millisecond)
	ids := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	key := []byte("k")
	h := engine.DefaultConfig(1, 1, "x").PartitionRule.Hash(key)
	for _, d := range descs {
		if d.Contains(h) {
			if _, err := c.Propose(ctx, d.ShardID, engine.PutCommand(key, []byte("v"))); err != nil {
				t.Fatal(err)
			}
		}
	}
	agree := func() error {
		total := 0
		for _, id := range c.IDs() {
			e := c.Engine(id)
			sts, err := e.Statuses(ctx)
			if err != nil {
				return err
			}
			want := map[uint64]engine.ShardStatus{}
			for _, st := range sts {
				if st.Leader == id && st.Initialized {
					want[st.ShardID] = st
				}
			}
			led, err := e.Leading(ctx)
			if err != nil {
				return err
			}
			got := map[uint64]engine.LedShard{}
			for _, l := range led {
				got[l.ShardID] = l
			}
			if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
				return fmt.Errorf("node %d: Leading %v, Statuses' leaders %v", id, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
			}
			for sid, l := range got {
				st := want[sid]
				if l.Applied != st.Applied || l.Desc.Generation != st.Desc.Generation || l.Desc.Start != st.Desc.Start ||
					l.Desc.Last != st.Desc.Last || !slices.Equal(l.Desc.Replicas, st.Desc.Replicas) {
					return fmt.Errorf("node %d shard %d: Leading %+v, Statuses applied %d desc %+v", id, sid, l, st.Applied, st.Desc)
				}
			}
			total += len(got)
		}
		if total != len(ids) {
			return fmt.Errorf("%d shards led in all, want %d", total, len(ids))
		}
		return nil
	}
	waitfor.Until(t, ctx, "Leading to agree with Statuses on every node", agree)

	// A leadership moves: the old leader's Leading drops the shard, the
	// new one's takes it.
	from := c.Leader(ctx, 1)
	to := c.IDs()[0]
	if to == from {
		to = c.IDs()[1]
	}
	if err := c.Engine(from).TransferLeader(ctx, 1, to); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, ctx, "shard 1 led by the transfer's target, and Leading to agree with Statuses", func() error {
		if l := c.Leader(ctx, 1); l != to {
			return fmt.Errorf("shard 1 led by %d, want %d", l, to)
		}
		return agree()
	})
}
