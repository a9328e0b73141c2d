package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// The chaos test with splits and merges: while the fault nemesis and the
// membership nemesis do their work, the split nemesis splits shards in
// half on their leaders (up to maxChaosShards) and merges adjacent ones
// (chaos_merge_test.go), and now and then crashes the parent's (the left
// shard's) leader in the middle of a split (a merge): right after it has
// proposed it, before or after it applied it. The clients route by a ring they refresh
// when a shard refuses a key (a KeyNotInShardError); their session writes
// retried after a split go to the child, which holds the parent's sessions.

// TestLinearizabilitySplits runs the chaos test with the split nemesis: 2
// shards of 3 voters on 4 nodes, split up to 12 shards, with the
// membership nemesis (merges=false); split and merged without it, so that
// adjacent shards keep the same nodes and merges are many (merges=true);
// and split and merged with it (merges=true,membership), where merges are
// rarer but meet replicas removed while cut off: a replica of a shard
// merged away that nothing needs is collected as the nodes' stale-replica
// loops do by the meta shard's tombstones (collectMergedAway).
func TestLinearizabilitySplits(t *testing.T) {
	for _, v := range []struct {
		name               string
		merges, membership bool
	}{
		{"merges=false", false, true},
		{"merges=true", true, false},
		{"merges=true,membership", true, true},
	} {
		for _, seed := range chaosSeeds(t, []uint64{1, 2, 3, 4}) {
			t.Run(fmt.Sprintf("%s/seed=%d", v.name, seed), func(t *testing.T) {
				runLinearizability(t, chaosRun{voters: 3, nodes: 4, shards: 2, runFor: 2 * time.Second, splits: true, merges: v.merges, noMembership: !v.membership}, seed)
			})
		}
	}
}

// maxChaosShards bounds the shards the split nemesis makes.
const maxChaosShards = 12

// splitNemesis splits shards until stopped; it is owned by one goroutine.
type splitNemesis struct {
	t    *testing.T
	c    *testcluster.Cluster
	rng  *rand.Rand
	rt   *router
	down *downNodes
	next uint64 // the next child shard ID
	// crashed is the node this nemesis crashed, restarted at its next step.
	crashed uint64
	merges  bool // merge adjacent shards too (chaos_merge_test.go)
	mu      sync.Mutex
	done    map[string]int
	starts  map[uint64]uint64 // each shard's first hash, as seen
}

func newSplitNemesis(t *testing.T, c *testcluster.Cluster, seed uint64, rt *router, down *downNodes, merges bool) *splitNemesis {
	return &splitNemesis{t: t, c: c, rng: rand.New(rand.NewPCG(seed, 4)), rt: rt, down: down, next: 100, merges: merges, done: map[string]int{}, starts: map[uint64]uint64{}}
}

// settle resolves every merge left half done, once the nemesis stopped.
func (m *splitNemesis) settle(ctx context.Context) error {
	var frozen []storage.Descriptor
	err := m.c.WaitFor(ctx, "no shard frozen for a merge", func() bool {
		m.resolve(ctx)
		frozen = frozen[:0]
		for _, d := range m.rt.descs() {
			if d.Frozen() {
				frozen = append(frozen, d)
			}
		}
		return len(frozen) == 0
	})
	if err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, d := range frozen {
			m.t.Logf("still frozen: %v; its leader has %v; the left shard's leader has %v", d, m.leaderDesc(dctx, d.ShardID), m.leaderDesc(dctx, d.MergeInto))
		}
		logReplicas(m.t, m.c)
		m.t.Logf("%s", m.summary())
	}
	return err
}

const downBySplits = "splits"

func (m *splitNemesis) run(stop chan struct{}) {
	tick := time.NewTicker(30 * time.Millisecond)
	defer tick.Stop()
	defer m.restart()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		m.restart()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		m.step(ctx)
		cancel()
	}
}

// restart brings back the node this nemesis crashed.
func (m *splitNemesis) restart() {
	if m.crashed == 0 {
		return
	}
	if err := m.c.Start(m.crashed); err != nil {
		m.t.Errorf("restart node %d: %v", m.crashed, err)
	}
	m.crashed = 0
	m.down.release(downBySplits)
}

func (m *splitNemesis) count(what string) {
	m.mu.Lock()
	m.done[what]++
	m.mu.Unlock()
}

// step splits one shard in half on its leader, or crashes that leader in
// the middle of it.
func (m *splitNemesis) step(ctx context.Context) {
	m.resolve(ctx)
	ring := m.rt.descs()
	if m.rng.IntN(3) != 0 {
		return
	}
	if len(ring) >= maxChaosShards || (m.merges && m.rng.IntN(2) == 0) {
		if m.merges {
			m.maybeMerge(ctx, ring)
		}
		return
	}
	d := ring[m.rng.IntN(len(ring))]
	leader := m.c.Leader(ctx, d.ShardID)
	e := m.c.Engine(leader)
	if e == nil {
		m.count("no leader")
		return
	}
	st, err := e.Status(ctx, d.ShardID)
	if err != nil || st.Desc.Last-st.Desc.Start < 2 {
		m.count("no leader")
		return
	}
	req := engine.SplitRequest{ShardID: d.ShardID, Generation: st.Desc.Generation, At: st.Desc.Start + (st.Desc.Last-st.Desc.Start)/2 + 1, ChildID: m.next}
	m.next++
	if m.rng.IntN(4) == 0 && m.down.take(downBySplits) {
		// The leader crashes while the split is on its way: proposed,
		// maybe applied, maybe not.
		done := make(chan error, 1)
		go func() { _, err := e.Split(ctx, req); done <- err }()
		if !sleepCtx(ctx, time.Duration(m.rng.IntN(3000))*time.Microsecond) {
			return
		}
		m.c.Crash(leader)
		m.crashed = leader
		err := <-done
		m.count("crash of the parent's leader mid-split: " + splitOutcome(err))
		return
	}
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = e.Split(sctx, req)
	cancel()
	m.count("split: " + splitOutcome(err))
}

// splitOutcome classifies a split's error; one chaos cannot explain fails
// the test later (see summary).
func splitOutcome(err error) string {
	var nl *engine.NotLeaderError
	switch {
	case err == nil:
		return "done"
	case errors.As(err, &nl):
		return "not leader"
	case errors.Is(err, engine.ErrStaleGeneration):
		return "stale generation"
	case errors.Is(err, engine.ErrJointConfig):
		return "refused: joint configuration" // the membership nemesis's
	case errors.Is(err, engine.ErrReplicasDiffer), errors.Is(err, engine.ErrNotFrozen):
		return "refused: replicas on other nodes" // the membership nemesis changed them
	case errors.Is(err, engine.ErrShardMerging):
		return "refused: frozen for a merge"
	case errors.Is(err, engine.ErrAmbiguous), errors.Is(err, context.DeadlineExceeded), errors.Is(err, engine.ErrClosed),
		errors.Is(err, engine.ErrProposalDropped), errors.Is(err, engine.ErrShardNotFound), errors.Is(err, engine.ErrShardRemoved):
		return "not known"
	}
	return "unexpected: " + err.Error()
}

func (m *splitNemesis) summary() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var parts []string
	for k, v := range m.done {
		if strings.HasPrefix(k, "split: unexpected") || strings.Contains(k, "mid-split: unexpected") {
			m.t.Errorf("split: %s", k)
		}
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return "splits: " + strings.Join(parts, ", ")
}

// ringCovers reports whether ring (sorted by Start) covers the hash space
// with no gap or overlap.
func ringCovers(ring []storage.Descriptor) bool {
	next := uint64(0)
	for i, d := range ring {
		if d.Start != next || (d.Last == ^uint64(0)) != (i == len(ring)-1) {
			return false
		}
		next = d.Last + 1
	}
	return len(ring) > 0
}
