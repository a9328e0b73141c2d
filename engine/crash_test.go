package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// rangeHash hashes every key and value of a shard's range on one node.
func rangeHash(t *testing.T, e *engine.Engine, d storage.Descriptor) uint64 {
	t.Helper()
	start, end := storage.DataSpan(d.Start, d.Last)
	it, err := e.Store().DB().NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	h := xxhash.New()
	for it.First(); it.Valid(); it.Next() {
		h.Write(it.Key())
		h.Write([]byte{0})
		h.Write(it.Value())
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// waitConverged waits until every replica of every shard reports the same
// applied index as the others and as its leader's commit, with a leader.
func waitConverged(t *testing.T, ctx context.Context, c *testcluster.Cluster, descs []storage.Descriptor) {
	t.Helper()
	// Converged: every replica applied its shard's leader's whole log. Equal
	// applied and commit indexes are not enough right after a restart: the
	// commit index a node restarts with may lag (a commit index alone is not
	// written; it goes with the next applied index), and a new leader
	// commits the entries of earlier terms only with an entry of its own,
	// which is last in its log.
	if err := c.WaitFor(ctx, "replicas converged", func() bool {
		applied := map[uint64]map[uint64]bool{}
		leaders := c.Leaders(ctx)
		leaderLast := map[uint64]uint64{}
		for _, id := range c.IDs() {
			e := c.Engine(id)
			if e == nil {
				return false
			}
			sts, err := e.Statuses(ctx)
			if err != nil {
				return false
			}
			for _, st := range sts {
				if applied[st.ShardID] == nil {
					applied[st.ShardID] = map[uint64]bool{}
				}
				applied[st.ShardID][st.Applied] = true
				if st.Applied != st.Commit {
					return false
				}
				if leaders[st.ShardID] == id && st.State == "StateLeader" {
					leaderLast[st.ShardID] = st.LastIndex
				}
			}
		}
		for _, d := range descs {
			if len(applied[d.ShardID]) != 1 || leaders[d.ShardID] == 0 || !applied[d.ShardID][leaderLast[d.ShardID]] {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
}

// checkReplicasIdentical compares the hash of each shard's range across its
// replicas (which have converged to one applied index).
func checkReplicasIdentical(t *testing.T, c *testcluster.Cluster, descs []storage.Descriptor) {
	t.Helper()
	for _, d := range descs {
		var first uint64
		for i, id := range c.IDs() {
			h := rangeHash(t, c.Engine(id), d)
			if i == 0 {
				first = h
			} else if h != first {
				t.Errorf("shard %d: node %d's range hash %x differs from node %d's %x", d.ShardID, id, h, c.IDs()[0], first)
			}
		}
	}
}

// TestCrashSafety crashes nodes at random points while writers run, restarts
// them, and checks that every acknowledged write is present and that the
// replicas of each shard hold identical data.
func TestCrashSafety(t *testing.T) {
	for _, seed := range chaosSeeds(t, []uint64{11, 12, 13}) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runCrashSafety(t, seed) })
	}
}

func runCrashSafety(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	c := newCluster(t, testcluster.Config{Nodes: 3, Seed: int64(seed), Engine: func(cfg *engine.Config) {
		cfg.LogTruncateEntries = 200 // crashes also hit truncation and snapshots
	}})
	ctx := ctxT(t, 120*time.Second)
	descs := testcluster.EvenDescriptors(1, 4)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	c.RunClock(time.Millisecond)
	rt := newRouter(c, descs)
	var (
		mu    sync.Mutex
		acked = map[string]string{}
		wg    sync.WaitGroup
	)
	// The load runs for 1.5 s, and on until 200 writes were acknowledged
	// (over gRPC under the race detector on a loaded machine, the crashes
	// leave little time to write: every restart reconnects), at most 30 s.
	start := time.Now()
	ackedN := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	running := func() bool {
		d := time.Since(start)
		return d < 1500*time.Millisecond || (d < 30*time.Second && ackedN() < 200)
	}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		wrng := rand.New(rand.NewPCG(seed, uint64(100+w)))
		go func() {
			defer wg.Done()
			for n := 0; n < 50000 && running(); n++ {
				key := fmt.Sprintf("w%d-k%d", w, n)
				shard := rt.shardOf([]byte(key))
				e := rt.target(wrng, shard)
				if e == nil {
					continue
				}
				octx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				_, err := e.Propose(octx, shard, engine.PutCommand([]byte(key), []byte(key+"-v")))
				cancel()
				rt.learn(ctx, shard, err)
				if err == nil {
					rt.success(shard, e.NodeID())
					mu.Lock()
					acked[key] = key + "-v"
					mu.Unlock()
				}
			}
		}()
	}
	// Crash a random node (a leader half of the time) every few ms; restart
	// it at the next step.
	crashes := 0
	ticker := time.NewTicker(20 * time.Millisecond)
	var down uint64
	for running() {
		<-ticker.C
		if down != 0 {
			if err := c.Start(down); err != nil {
				t.Fatal(err)
			}
			down = 0
			continue
		}
		down = c.IDs()[rng.IntN(3)]
		if rng.IntN(2) == 0 {
			if l := c.Leader(ctx, uint64(1+rng.IntN(len(descs)))); l != 0 {
				down = l
			}
		}
		c.Crash(down)
		crashes++
	}
	ticker.Stop()
	wg.Wait()
	if down != 0 {
		if err := c.Start(down); err != nil {
			t.Fatal(err)
		}
	}
	// Crash everything once more at the end: what was acked must survive.
	for _, id := range c.IDs() {
		c.Crash(id)
	}
	for _, id := range c.IDs() {
		if err := c.Start(id); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, ctx, c, descs)
	t.Logf("seed %d: %d crashes, %d acknowledged writes", seed, crashes+3, len(acked))
	if len(acked) < 100 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}
	for key, want := range acked {
		shard := rt.shardOf([]byte(key))
		var where []string // what each node holds, said when one misses the key
		missing := false
		for _, id := range c.IDs() {
			res, err := c.Engine(id).ReadLocal(shard, engine.GetQuery([]byte(key)))
			v, found, _ := engine.DecodeGetResult(res)
			st, serr := c.Engine(id).Status(ctx, shard)
			where = append(where, fmt.Sprintf("node %d: %q found %v err %v; shard %d applied %d, log %d..%d, term %d, %s (status err %v)",
				id, v, found, err, shard, st.Applied, st.FirstIndex, st.LastIndex, st.Term, st.State, serr))
			if err != nil || !found || string(v) != want {
				missing = true
			}
		}
		if missing {
			t.Fatalf("seed %d: acknowledged %q missing:\n%s", seed, key, strings.Join(where, "\n"))
		}
	}
	checkReplicasIdentical(t, c, descs)
}

// TestRestartReappliesNothing counts the state machine's applies across a
// restart: after everything applied was made durable, restarted nodes apply
// nothing again, and each later command exactly once.
func TestRestartReappliesNothing(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	descs := testcluster.EvenDescriptors(1, 4)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	c.RunClock(time.Millisecond)
	rt := newRouter(c, descs)
	const writes = 200
	for i := 0; i < writes; i++ {
		key := []byte(fmt.Sprintf("k%d", i))
		if _, err := c.Propose(ctx, rt.shardOf(key), engine.PutCommand(key, []byte("v"))); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, ctx, c, descs)
	for _, id := range c.IDs() {
		if got := c.Engine(id).Stats().Applied; got != writes {
			t.Fatalf("node %d applied %d commands, want %d", id, got, writes)
		}
		if err := c.Engine(id).Flush(); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range c.IDs() {
		c.Crash(id)
	}
	for _, id := range c.IDs() {
		if err := c.Start(id); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, ctx, c, descs)
	for _, id := range c.IDs() {
		if got := c.Engine(id).Stats().Applied; got != 0 {
			t.Fatalf("node %d re-applied %d commands after restart", id, got)
		}
	}
	key := []byte("after")
	if _, err := c.Propose(ctx, rt.shardOf(key), engine.PutCommand(key, []byte("v"))); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, ctx, c, descs)
	for _, id := range c.IDs() {
		if got := c.Engine(id).Stats().Applied; got != 1 {
			t.Fatalf("node %d applied %d commands after restart, want 1", id, got)
		}
	}
	checkReplicasIdentical(t, c, descs)
}
