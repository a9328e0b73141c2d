package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

func quiescedEverywhere(c *testcluster.Cluster, shards uint64) func() bool {
	return func() bool {
		for _, id := range c.IDs() {
			e := c.Engine(id)
			if e == nil || e.Stats().ShardsQuiesced != shards {
				return false
			}
		}
		return true
	}
}

func sentMessages(c *testcluster.Cluster) uint64 {
	var n uint64
	for _, id := range c.IDs() {
		if e := c.Engine(id); e != nil {
			n += e.Stats().MessagesSent
		}
	}
	return n
}

// TestQuiescence: idle shards stop ticking and heartbeating; the nodes then
// exchange one coalesced message per pair per tick; a write wakes a shard
// without an election; a follower that is behind keeps its shard awake; the
// quiesced shards of a dead leader wake and elect.
func TestQuiescence(t *testing.T) {
	const shards = 50
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	descs := testcluster.EvenDescriptors(1, shards)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	for _, d := range descs {
		if _, err := c.Propose(ctx, d.ShardID, engine.PutCommand(keysOf(d, 1)[0], []byte("v"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitFor(ctx, "all shards quiesced", quiescedEverywhere(c, shards)); err != nil {
		t.Fatal(err)
	}
	// Idle: 10 ticks move one message per ordered node pair per tick.
	before := sentMessages(c)
	for i := 0; i < 10; i++ {
		c.Tick()
		if err := c.WaitFor(ctx, "tick taken", func() bool { return true }); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitFor(ctx, "ticks flushed", func() bool { return sentMessages(c)-before >= 6*10 }); err != nil {
		t.Fatal(err)
	}
	if sent := sentMessages(c) - before; sent > 6*10+6*2 {
		t.Fatalf("idle cluster sent %d messages in 10 ticks, want about %d", sent, 6*10)
	}
	// A write wakes its shard; no election happens.
	d := descs[0]
	leader := c.Leader(ctx, d.ShardID)
	term := status(t, ctx, c, leader, d.ShardID).Term
	if _, err := c.Engine(leader).Propose(ctx, d.ShardID, engine.PutCommand(keysOf(d, 1)[0], []byte("w"))); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(ctx, "requiesced", quiescedEverywhere(c, shards)); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		if st := status(t, ctx, c, id, d.ShardID); st.Term != term {
			t.Fatalf("node %d: term %d after waking, was %d", id, st.Term, term)
		}
	}
	// A follower that is behind keeps the shard awake.
	var behind uint64
	for _, id := range c.IDs() {
		if id != leader {
			behind = id
		}
	}
	c.Isolate(behind)
	if _, err := c.Engine(leader).Propose(ctx, d.ShardID, engine.PutCommand(keysOf(d, 1)[0], []byte("x"))); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ { // less than an election timeout: the node is not suspected down yet
		c.Tick()
	}
	if err := c.WaitFor(ctx, "leader idle", func() bool {
		return status(t, ctx, c, leader, d.ShardID).Applied == status(t, ctx, c, leader, d.ShardID).Commit
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		c.Tick()
	}
	if st := status(t, ctx, c, leader, d.ShardID); st.Quiesced {
		t.Fatalf("leader quiesced shard %d with a live follower behind: %+v", d.ShardID, st)
	}
	// Past an election timeout the isolated node is suspected down and no
	// longer holds the shard awake; when it comes back, the shard wakes and
	// catches it up.
	for i := 0; i < 15; i++ {
		c.Tick()
	}
	c.Heal()
	if err := c.WaitFor(ctx, "caught up and quiesced", func() bool {
		res, err := c.Engine(behind).ReadLocal(d.ShardID, engine.GetQuery(keysOf(d, 1)[0]))
		v, _, _ := engine.DecodeGetResult(res)
		return err == nil && string(v) == "x" && quiescedEverywhere(c, shards)()
	}); err != nil {
		t.Fatal(err)
	}
	// The node leading the most shards dies: its quiesced shards wake on the
	// other nodes and elect new leaders.
	counts := map[uint64]int{}
	for _, l := range c.Leaders(ctx) {
		counts[l]++
	}
	var dead uint64
	for id, n := range counts {
		if dead == 0 || n > counts[dead] {
			dead = id
		}
	}
	c.Crash(dead)
	ids := make([]uint64, len(descs))
	for i, d := range descs {
		ids[i] = d.ShardID
	}
	if err := c.WaitFor(ctx, "new leaders", func() bool {
		leaders := c.Leaders(ctx)
		for _, id := range ids {
			if l := leaders[id]; l == 0 || l == dead {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range descs[:5] {
		if _, err := c.Propose(ctx, d.ShardID, engine.PutCommand(keysOf(d, 1)[0], []byte("after"))); err != nil {
			t.Fatal(err)
		}
	}
	_ = storage.Descriptor{}
	_ = context.Background
}

// TestLeaderQuiescesWhenResponsesShareItsTicksCycles: a leader whose worker
// steps its followers' heartbeat responses in the same cycle as each tick
// (a worker whose cycles last longer than a heartbeat round trip, as with
// tens of thousands of awake shards) still quiesces once raft has nothing
// to do. It used to count the responses as work, and stayed awake for good.
// The cluster runs no clock: each round holds the leader's worker, ticks
// every node until a tick and responses wait in that worker's inbox (a few
// ticks at most, far from an election timeout: the followers keep their
// leader), and lets the worker take them in one cycle.
func TestLeaderQuiescesWhenResponsesShareItsTicksCycles(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	_, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	le := c.Engine(leader)
	if _, err := c.Propose(ctx, 1, engine.PutCommand([]byte("k"), []byte("v"))); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 50; round++ {
		if le.Stats().ShardsQuiesced == 1 {
			if l := c.Leader(ctx, 1); l != leader {
				t.Fatalf("the leader changed to node %d: the rounds ticked too much", l)
			}
			t.Logf("the leader quiesced after %d rounds of responses and a tick in one cycle", round)
			return
		}
		release := le.TestingBlockWorker(1)
		for tick := 0; tick < 3; tick++ {
			c.Tick()
			if waitInbox(ctx, le) {
				break
			}
		}
		release()
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
	}
	t.Fatal("the leader did not quiesce in 50 rounds, each a cycle with its followers' heartbeat responses and a tick")
}

// waitInbox waits, for 200 ms at most, until a tick and a heartbeat
// response for shard 1 wait in the inbox of its worker on e.
func waitInbox(ctx context.Context, e *engine.Engine) bool {
	deadline := time.NewTimer(200 * time.Millisecond)
	defer deadline.Stop()
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for {
		if resps, ticks := e.TestingInbox(1); resps > 0 && ticks > 0 {
			return true
		}
		select {
		case <-poll.C:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
