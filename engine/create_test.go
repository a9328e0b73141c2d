package engine_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestCreateShardsBatched creates 600 shards on 3 nodes with one
// CreateShards call per node: a handful of file syncs per node, not one per
// shard (CreateShard one at a time syncs 600 times); the specs that cannot
// be created (one twice in the call, one malformed; then, in a second
// call, one that exists and one overlapping another) fail alone with their
// errors; and every shard created elects a leader.
func TestCreateShardsBatched(t *testing.T) {
	const shards = 600
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	descs := testcluster.EvenDescriptors(1, shards)
	specs := make([]engine.ShardSpec, 0, shards+3)
	for _, d := range descs {
		specs = append(specs, engine.ShardSpec{Desc: d, Voters: c.IDs()})
	}
	specs = append(specs,
		engine.ShardSpec{Desc: descs[7], Voters: c.IDs()},                                          // twice in one call
		engine.ShardSpec{Desc: storage.Descriptor{ShardID: 0, Start: 1, Last: 2}, Voters: c.IDs()}, // malformed
	)
	overlap := storage.Descriptor{ShardID: 9999, Start: descs[3].Start, Last: descs[3].Last}
	again := []engine.ShardSpec{specs[0], {Desc: overlap, Voters: c.IDs()}}
	// Each node is cut off while it creates its shards: the syncs counted
	// are its creation's, not those of the log appends the leaders elected
	// by the nodes before it would send it meanwhile.
	for _, id := range c.IDs() {
		c.Isolate(id)
	}
	for _, id := range c.IDs() {
		e := c.Engine(id)
		before := e.Stats().FileSyncs
		errs, err := e.CreateShards(ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		syncs := e.Stats().FileSyncs - before
		t.Logf("node %d: %d shards created with %d file syncs", id, shards, syncs)
		if syncs > shards/20 {
			t.Errorf("node %d: %d file syncs to create %d shards, want a few (one per worker)", id, syncs, shards)
		}
		for i, err := range errs[:shards] {
			if err != nil {
				t.Fatalf("node %d shard %d: %v", id, specs[i].Desc.ShardID, err)
			}
		}
		for i, want := range []error{engine.ErrShardExists, engine.ErrBadRequest} {
			if err := errs[shards+i]; !errors.Is(err, want) {
				t.Errorf("node %d spec %d: %v, want %v", id, shards+i, err, want)
			}
		}
		if errs, err := e.CreateShards(ctx, again); err != nil || !errors.Is(errs[0], engine.ErrShardExists) || !errors.Is(errs[1], engine.ErrRangeOverlap) {
			t.Errorf("node %d: created again and overlapping: %v %v, want ErrShardExists, ErrRangeOverlap", id, errs, err)
		}
	}
	c.Heal()
	c.RunClock(20 * time.Millisecond)
	ids := make([]uint64, len(descs))
	for i, d := range descs {
		ids[i] = d.ShardID
	}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
}
