package engine_test

import (
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

// TestPriorityShardServedWhileBulkIsBusy: a shard in Config.PriorityShards
// has a worker of its own, so its writes and reads go on while every other
// worker of every node is held (as a start electing 100,000 shards holds
// them for seconds at a time); the other shards resume once released. With
// one worker per node and no priority shards, both shards share it and the
// write waits for as long as the worker is held.
func TestPriorityShardServedWhileBulkIsBusy(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3, Engine: func(cfg *engine.Config) {
		cfg.Workers = 1
		cfg.PriorityShards = []uint64{1}
	}})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	descs := testcluster.EvenDescriptors(1, 2)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{1, 2}); err != nil {
		t.Fatal(err)
	}
	var releases []func()
	for _, id := range c.IDs() {
		releases = append(releases, c.Engine(id).TestingBlockWorker(2))
	}
	released := false
	release := func() {
		if !released {
			for _, r := range releases {
				r()
			}
			released = true
		}
	}
	defer release()
	k := keysOf(descs[0], 1)[0]
	if _, err := c.Propose(ctx, 1, engine.PutCommand(k, []byte("v"))); err != nil {
		t.Fatalf("a write to the priority shard while the other workers are held: %v", err)
	}
	leader := c.Leader(ctx, 1)
	if got, err := c.Engine(leader).Read(ctx, 1, engine.GetQuery(k)); err != nil {
		t.Fatalf("a read of the priority shard while the other workers are held: %v", err)
	} else if v, found, _ := engine.DecodeGetResult(got); !found || string(v) != "v" {
		t.Fatalf("read %q (found %v), want v", v, found)
	}
	release()
	if _, err := c.Propose(ctx, 2, engine.PutCommand(keysOf(descs[1], 1)[0], []byte("w"))); err != nil {
		t.Fatalf("a write to the other shard once released: %v", err)
	}
}
