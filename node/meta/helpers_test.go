package meta

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: engines are
// closed by the tests' cleanups, reconcilers by the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newStore starts a one-node cluster whose node leads the meta shard, and
// returns a store on it.
func newStore(t testing.TB, cfg Config) (*Store, *engine.Engine) {
	t.Helper()
	e := newMetaCluster(t, 1).Engine(1)
	s, err := New(e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, e
}

// newMetaCluster starts a cluster of n nodes with the meta shard's voter
// on node 1, which leads it, and a learner on every other node (which can
// never lead). The clock runs.
func newMetaCluster(t testing.TB, n int) *testcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := testcluster.New(t, testcluster.Config{Nodes: n, Engine: func(cfg *engine.Config) {
		// The engine's default block cache, not the test cluster's 8 MiB:
		// 100,000 records and their raft log do not fit in that.
		cfg.StoreCacheBytes = engine.DefaultConfig(0, 0, "").StoreCacheBytes
	}})
	c.RunClock(2 * time.Millisecond)
	spec := engine.ShardSpec{Desc: storage.Descriptor{ShardID: ShardID, Start: 0, Last: ^uint64(0), Generation: 1}, Voters: []uint64{1}}
	for id := uint64(2); id <= uint64(n); id++ {
		spec.Learners = append(spec.Learners, id)
	}
	for _, id := range c.IDs() {
		if err := c.Engine(id).CreateShard(ctx, spec); err != nil && !errors.Is(err, engine.ErrShardExists) {
			t.Fatal(err)
		}
	}
	if err := c.WaitLeaders(ctx, []uint64{ShardID}); err != nil {
		t.Fatal(err)
	}
	return c
}

// record returns a well-formed record of shard id with replicas on nodes,
// numbered from 1.
func record(id, confIndex uint64, nodes ...uint64) ShardRecord {
	r := ShardRecord{ShardID: id, Start: id << 32, Last: id<<32 | 0xffff_ffff, Generation: 1, ConfIndex: confIndex,
		NextReplicaID: uint64(len(nodes)) + 1}
	for i, n := range nodes {
		r.Replicas = append(r.Replicas, Replica{NodeID: n, ReplicaID: uint64(i + 1), Role: RoleVoter})
	}
	return r
}

// waitFor checks cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %v", what, d)
		}
		<-tick.C
	}
}

// staleEngine is a replica that lags behind the leader's log: its local
// reads answer as if some keys were absent (the state before they were
// written) until a linearizable read makes it catch up.
type staleEngine struct {
	Engine
	absent map[string]bool
	caught atomic.Bool
}

func (e *staleEngine) ReadLocal(shardID uint64, query []byte) ([]byte, error) {
	if !e.caught.Load() && e.absent[string(query)] {
		return []byte{0}, nil
	}
	return e.Engine.ReadLocal(shardID, query)
}

func (e *staleEngine) Read(ctx context.Context, shardID uint64, query []byte) ([]byte, error) {
	e.caught.Store(true)
	return e.Engine.Read(ctx, shardID, query)
}

// concurrently runs fn(0), ..., fn(n-1) at once and fails on an error.
func concurrently(t testing.TB, n int, fn func(i uint64) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range uint64(n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- fn(i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
