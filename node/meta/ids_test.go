package meta

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestAllocateShardIDStartsAboveTheLayout: the first ID is above the
// initial layout's and every shard record's; IDs then rise by one.
func TestAllocateShardIDStartsAboveTheLayout(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	if err := s.Bootstrap(ctx, ClusterRecord{ClusterID: 1, Bootstrap: []uint64{1, 2, 3}, InitialShards: 8, Replication: 3}); err != nil {
		t.Fatal(err)
	}
	for want := uint64(9); want <= 11; want++ {
		if id, err := s.AllocateShardID(ctx); err != nil || id != want {
			t.Fatalf("allocation: %d, %v; want %d", id, err, want)
		}
	}

	// No cluster record, a shard record above any layout.
	s, _ = newStore(t, Config{})
	if err := s.PutShards(ctx, []ShardRecord{record(3, 0, 1), record(20, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	if id, err := s.AllocateShardID(ctx); err != nil || id != 21 {
		t.Fatalf("allocation above record 20: %d, %v", id, err)
	}
	// An empty meta shard starts at 1.
	s, _ = newStore(t, Config{})
	if id, err := s.AllocateShardID(ctx); err != nil || id != 1 {
		t.Fatalf("first allocation of an empty meta shard: %d, %v", id, err)
	}
}

// TestAllocateShardIDConcurrent: concurrent allocations never share an ID.
func TestAllocateShardIDConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, Config{})
	const writers, each = 8, 6
	var (
		mu  sync.Mutex
		got []uint64
	)
	concurrently(t, writers, func(uint64) error {
		for range each {
			id, err := s.AllocateShardID(ctx)
			if err != nil {
				return err
			}
			mu.Lock()
			got = append(got, id)
			mu.Unlock()
		}
		return nil
	})
	slices.Sort(got)
	if len(slices.Compact(slices.Clone(got))) != writers*each {
		t.Fatalf("an ID handed out twice: %v", got)
	}
	// Nothing was ambiguous here: no ID was skipped either.
	if got[0] != 1 || got[len(got)-1] != writers*each {
		t.Fatalf("IDs %v, want 1..%d", got, writers*each)
	}
}

// TestAllocateShardIDAcrossLeaders: a new leader of the meta shard hands
// out IDs above all those the old one did; the old one, deposed, hands out
// none.
func TestAllocateShardIDAcrossLeaders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := testcluster.New(t, testcluster.Config{Nodes: 3})
	c.RunClock(2 * time.Millisecond)
	spec := engine.ShardSpec{Desc: storage.Descriptor{ShardID: ShardID, Start: 0, Last: ^uint64(0), Generation: 1}, Voters: c.IDs()}
	for _, id := range c.IDs() {
		if err := c.Engine(id).CreateShard(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitLeaders(ctx, []uint64{ShardID}); err != nil {
		t.Fatal(err)
	}
	store := func(node uint64) *Store {
		s, err := New(c.Engine(node), Config{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var highest uint64
	for round := range 3 {
		leader := c.Leader(ctx, ShardID)
		for range 3 {
			id, err := store(leader).AllocateShardID(ctx)
			if err != nil {
				t.Fatalf("round %d on node %d: %v", round, leader, err)
			}
			if id <= highest {
				t.Fatalf("round %d on node %d: ID %d after %d", round, leader, id, highest)
			}
			highest = id
		}
		next := leader%3 + 1
		if err := c.Engine(leader).TransferLeader(ctx, ShardID, next); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitFor(ctx, "the new leader", func() bool { return c.Leader(ctx, ShardID) == next }); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: node %d handed out IDs up to %d, node %d leads now", round, leader, highest, next)
		var nl *engine.NotLeaderError
		if _, err := store(leader).AllocateShardID(ctx); !errors.As(err, &nl) {
			t.Fatalf("allocation on the deposed leader %d: %v", leader, err)
		}
	}
}

// TestAllocateShardIDRecord: the last user shard ID is handed out, then
// none; a record that does not decode is corrupt.
func TestAllocateShardIDRecord(t *testing.T) {
	ctx := context.Background()
	s, e := newStore(t, Config{})
	put := func(raw []byte) {
		t.Helper()
		if _, err := e.Propose(ctx, ShardID, engine.PutCommand([]byte(KeyShardIDs), raw)); err != nil {
			t.Fatal(err)
		}
	}
	last := storage.SystemShardBase - 1
	raw, _ := json.Marshal(ShardIDRecord{Next: last})
	put(raw)
	if id, err := s.AllocateShardID(ctx); err != nil || id != last {
		t.Fatalf("the last user shard ID: %d, %v", id, err)
	}
	if id, err := s.AllocateShardID(ctx); !errors.Is(err, ErrShardIDsExhausted) {
		t.Fatalf("past the last user shard ID: %d, %v", id, err)
	}
	for _, bad := range []string{"nonsense", `{"next":0}`} {
		put([]byte(bad))
		if id, err := s.AllocateShardID(ctx); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record %q: %d, %v", bad, id, err)
		}
	}
}
