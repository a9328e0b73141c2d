package router

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
)

func newTestRouter(t testing.TB, cfg Config, ring *Ring) *Router {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ring != nil {
		if err := r.SetRing(ring); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func mustLookup(t *testing.T, r *Router, key string) Route {
	t.Helper()
	rt, err := r.Lookup([]byte(key))
	if err != nil {
		t.Fatalf("Lookup(%q): %v", key, err)
	}
	return rt
}

func mustRoute(t *testing.T, r *Router, shardID uint64) Route {
	t.Helper()
	rt, err := r.Route(shardID)
	if err != nil {
		t.Fatalf("Route(%d): %v", shardID, err)
	}
	return rt
}

func routeEqual(a, b Route) bool {
	return a.ShardID == b.ShardID && slices.Equal(a.Replicas, b.Replicas) && a.Leader == b.Leader &&
		a.Term == b.Term && a.Generation == b.Generation
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"default", func(*Config) {}, true},
		{"small keys", func(c *Config) { c.MaxKeySize = 1 }, true},
		{"zero MaxKeySize", func(c *Config) { c.MaxKeySize = 0 }, false},
		{"negative MaxKeySize", func(c *Config) { c.MaxKeySize = -5 }, false},
		{"negative PrefixLen", func(c *Config) { c.Rule.PrefixLen = -1 }, false},
		{"separator and prefix", func(c *Config) { c.Rule = PartitionRule{UseSeparator: true, PrefixLen: 2} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			before := cfg
			err := cfg.Validate()
			if cfg != before {
				t.Fatalf("Validate mutated the config: %+v -> %+v", before, cfg)
			}
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if _, err := New(cfg); (err == nil) != tc.ok {
				t.Fatalf("New() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestBadInput: every kind of bad input gets its typed error.
func TestBadInput(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxKeySize = 8
	r := newTestRouter(t, cfg, nil)

	// Before any ring.
	if _, err := r.Lookup([]byte("k")); !errors.Is(err, ErrNoRing) {
		t.Errorf("Lookup before ring: %v", err)
	}
	if _, err := r.LookupHash(1); !errors.Is(err, ErrNoRing) {
		t.Errorf("LookupHash before ring: %v", err)
	}
	if _, err := r.Route(1); !errors.Is(err, ErrNoRing) {
		t.Errorf("Route before ring: %v", err)
	}
	if err := r.SetReplicas(1, []uint64{1}); !errors.Is(err, ErrNoRing) {
		t.Errorf("SetReplicas before ring: %v", err)
	}
	if r.UpdateLeader(1, 1, 1) || r.NotLeaderHint(1, 1, 1) {
		t.Error("leader update applied before ring")
	}
	if r.Ring() != nil || r.Routes() != nil {
		t.Error("ring or routes before SetRing")
	}
	if err := r.SetRing(nil); !errors.Is(err, ErrNoRing) {
		t.Errorf("SetRing(nil): %v", err)
	}

	if err := r.SetRing(mustEvenRing(t, 1, 4)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  []byte
		want error
	}{
		{nil, ErrEmptyKey},
		{[]byte{}, ErrEmptyKey},
		{[]byte("123456789"), ErrKeyTooLarge},
		{[]byte("12345678"), nil},
		{[]byte{0}, nil},
	} {
		if _, err := r.Lookup(tc.key); !errors.Is(err, tc.want) {
			t.Errorf("Lookup(%q) = %v, want %v", tc.key, err, tc.want)
		}
	}
	if _, err := r.Route(99); !errors.Is(err, ErrUnknownShard) {
		t.Errorf("Route(99): %v", err)
	}
	if err := r.SetReplicas(99, []uint64{1}); !errors.Is(err, ErrUnknownShard) {
		t.Errorf("SetReplicas(99): %v", err)
	}
	if r.UpdateLeader(99, 1, 1) || r.NotLeaderHint(99, 1, 1) {
		t.Error("leader update applied to an unknown shard")
	}
	for _, bad := range [][]uint64{{0}, {1, 2, 1}, {3, 0}} {
		if err := r.SetReplicas(1, bad); !errors.Is(err, ErrBadReplicas) {
			t.Errorf("SetReplicas(1, %v) = %v", bad, err)
		}
	}
}

// TestPartitionColocation: keys sharing a partition prefix share a shard,
// under the separator rule and the fixed-length rule, while distinct
// partitions still spread over the shards.
func TestPartitionColocation(t *testing.T) {
	rnd := newRand(t)
	ring := mustEvenRing(t, 1, 1000)
	for _, tc := range []struct {
		name string
		rule PartitionRule
		key  func(partition, i int) string
	}{
		{"separator", PartitionRule{UseSeparator: true, Separator: '/'}, func(p, i int) string {
			if i == 0 {
				return fmt.Sprintf("tenant%d", p) // the bare partition, no separator
			}
			return fmt.Sprintf("tenant%d/%x/%d", p, rnd.Uint64(), i)
		}},
		{"fixed length", PartitionRule{PrefixLen: 8}, func(p, i int) string {
			return fmt.Sprintf("%08d%x", p, rnd.Uint64()>>(i%64))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Rule = tc.rule
			r := newTestRouter(t, cfg, ring)
			used := map[uint64]bool{}
			for p := range 200 {
				want := mustLookup(t, r, tc.key(p, 0)).ShardID
				used[want] = true
				for i := 1; i < 50; i++ {
					k := tc.key(p, i)
					if got := mustLookup(t, r, k).ShardID; got != want {
						t.Fatalf("key %q in shard %d, its partition in shard %d", k, got, want)
					}
				}
			}
			if len(used) < 150 { // 200 partitions over 1000 shards: ~181 distinct expected
				t.Fatalf("200 partitions landed on only %d shards", len(used))
			}
		})
	}
}

// TestLeaderRule walks one shard through a sequence of notifications.
func TestLeaderRule(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 2))
	steps := []struct {
		hint         bool
		leader, term uint64
		applied      bool
		wantL, wantT uint64
	}{
		{false, 1, 5, true, 1, 5},  // first leader
		{false, 1, 5, false, 1, 5}, // repeat
		{false, 2, 5, false, 1, 5}, // same term, leader known: held one stands
		{true, 2, 5, false, 1, 5},  // same, from a hint
		{false, 0, 5, false, 1, 5}, // same term, unknown: ignored
		{false, 3, 4, false, 1, 5}, // lower term: stale
		{true, 3, 4, false, 1, 5},  // lower term hint: stale
		{false, 1, 6, true, 1, 6},  // same leader re-elected
		{false, 0, 7, true, 0, 7},  // election under way
		{true, 2, 7, true, 2, 7},   // same term, held unknown: hint applies
		{false, 3, 7, false, 2, 7}, // and then stands
		{true, 3, 9, true, 3, 9},   // newer hint
		{false, 2, 8, false, 3, 9}, // late event from an older term
	}
	for i, s := range steps {
		var got bool
		if s.hint {
			got = r.NotLeaderHint(1, s.leader, s.term)
		} else {
			got = r.UpdateLeader(1, s.leader, s.term)
		}
		rt := mustRoute(t, r, 1)
		if got != s.applied || rt.Leader != s.wantL || rt.Term != s.wantT {
			t.Fatalf("step %d %+v: applied %v, route leader %d term %d", i, s, got, rt.Leader, rt.Term)
		}
	}
	if rt := mustRoute(t, r, 2); rt.Leader != 0 || rt.Term != 0 {
		t.Fatalf("shard 2 touched: %+v", rt)
	}
}

// TestLeaderChangeReroutes: Lookup follows leader changes and ignores stale
// ones.
func TestLeaderChangeReroutes(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 8))
	const key = "orders/1234"
	shardID := mustLookup(t, r, key).ShardID
	if err := r.SetReplicas(shardID, []uint64{10, 20, 30}); err != nil {
		t.Fatal(err)
	}
	if rt := mustLookup(t, r, key); rt.Leader != 0 || !slices.Equal(rt.Replicas, []uint64{10, 20, 30}) {
		t.Fatalf("before any leader: %+v", rt)
	}
	r.UpdateLeader(shardID, 10, 3)
	if rt := mustLookup(t, r, key); rt.Leader != 10 || rt.Term != 3 {
		t.Fatalf("after leader 10: %+v", rt)
	}
	r.UpdateLeader(shardID, 20, 4)
	if rt := mustLookup(t, r, key); rt.Leader != 20 || rt.Term != 4 {
		t.Fatalf("after leader 20: %+v", rt)
	}
	if r.UpdateLeader(shardID, 10, 3) {
		t.Fatal("stale event applied")
	}
	if rt := mustLookup(t, r, key); rt.Leader != 20 {
		t.Fatalf("stale event rerouted to %d", rt.Leader)
	}
	r.NotLeaderHint(shardID, 30, 5)
	if rt := mustLookup(t, r, key); rt.Leader != 30 || rt.Term != 5 {
		t.Fatalf("after hint 30: %+v", rt)
	}
}

func TestSetReplicas(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 2))
	in := []uint64{1, 2, 3}
	if err := r.SetReplicas(1, in); err != nil {
		t.Fatal(err)
	}
	in[0] = 99 // SetReplicas copied it
	r.UpdateLeader(1, 2, 4)
	if rt := mustRoute(t, r, 1); !slices.Equal(rt.Replicas, []uint64{1, 2, 3}) || rt.Leader != 2 {
		t.Fatalf("%+v", rt)
	}
	// The leader stays while it is a replica, and becomes unknown otherwise.
	if err := r.SetReplicas(1, []uint64{2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if rt := mustRoute(t, r, 1); rt.Leader != 2 {
		t.Fatalf("leader dropped: %+v", rt)
	}
	if err := r.SetReplicas(1, []uint64{3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	if rt := mustRoute(t, r, 1); rt.Leader != 0 || rt.Term != 4 {
		t.Fatalf("leader kept after removal: %+v", rt)
	}
}

// TestSetRing: generations only move forward, and a split or merge keeps the
// routes of the shards that stay.
func TestSetRing(t *testing.T) {
	const half = uint64(1) << 63
	const max = math.MaxUint64
	ring := func(gen uint64, ranges ...Range) *Ring {
		t.Helper()
		rg, err := NewRing(gen, ranges)
		if err != nil {
			t.Fatal(err)
		}
		return rg
	}
	r := newTestRouter(t, DefaultConfig(), ring(5, Range{1, 0, half - 1}, Range{2, half, max}))
	if err := r.SetReplicas(1, []uint64{7, 8, 9}); err != nil {
		t.Fatal(err)
	}
	r.UpdateLeader(1, 8, 3)
	r.UpdateLeader(2, 9, 2)

	// Older and conflicting rings are refused; the same one is a no-op.
	var stale *StaleRingError
	if err := r.SetRing(ring(4, Range{1, 0, max})); !errors.As(err, &stale) || !errors.Is(err, ErrStaleRing) ||
		stale.Held != 5 || stale.Offered != 4 {
		t.Fatalf("older ring: %v", err)
	}
	if err := r.SetRing(ring(5, Range{1, 0, max})); !errors.Is(err, ErrRingConflict) {
		t.Fatalf("conflicting ring: %v", err)
	}
	if err := r.SetRing(ring(5, Range{1, 0, half - 1}, Range{2, half, max})); err != nil {
		t.Fatalf("same ring: %v", err)
	}
	if r.Ring().Generation() != 5 {
		t.Fatal("ring replaced")
	}

	// Split shard 1: [0, 2^62) stays with 1, [2^62, 2^63) goes to new shard 3.
	q := half / 2
	if err := r.SetRing(ring(6, Range{1, 0, q - 1}, Range{3, q, half - 1}, Range{2, half, max})); err != nil {
		t.Fatal(err)
	}
	if rt := mustRoute(t, r, 1); rt.Leader != 8 || rt.Term != 3 || rt.Generation != 6 || !slices.Equal(rt.Replicas, []uint64{7, 8, 9}) {
		t.Fatalf("shard 1 after split: %+v", rt)
	}
	if rt := mustRoute(t, r, 3); !routeEqual(rt, Route{ShardID: 3, Generation: 6}) {
		t.Fatalf("new shard 3: %+v", rt)
	}
	for h, want := range map[uint64]uint64{0: 1, q - 1: 1, q: 3, half - 1: 3, half: 2, max: 2} {
		if rt, err := r.LookupHash(h); err != nil || rt.ShardID != want || rt.Generation != 6 {
			t.Fatalf("LookupHash(%#x) = %+v, %v; want shard %d", h, rt, err, want)
		}
	}

	// Merge shard 2 into 3: shard 2's route is dropped.
	if err := r.SetRing(ring(7, Range{1, 0, q - 1}, Range{3, q, max})); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Route(2); !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("dropped shard 2: %v", err)
	}
	if r.UpdateLeader(2, 1, 10) {
		t.Fatal("leader update applied to a dropped shard")
	}
	if got := r.Routes(); len(got) != 2 || got[0].ShardID != 1 || got[1].ShardID != 3 {
		t.Fatalf("Routes = %+v", got)
	}
	// A shard that comes back starts afresh.
	if err := r.SetRing(ring(8, Range{1, 0, q - 1}, Range{3, q, half - 1}, Range{2, half, max})); err != nil {
		t.Fatal(err)
	}
	if rt := mustRoute(t, r, 2); !routeEqual(rt, Route{ShardID: 2, Generation: 8}) {
		t.Fatalf("shard 2 back: %+v", rt)
	}
}

// TestConcurrentLookupAndUpdates runs lookups while another goroutine applies
// leader changes, replica changes and new rings, and a subscriber drains
// the changes; run it with -race. Each reader checks what a single reader
// may rely on: the route's shard owns the key's hash in the ring of the
// route's generation, generations never go back, and a shard's term never
// goes back.
func TestConcurrentLookupAndUpdates(t *testing.T) {
	const (
		readers      = 3
		lookups      = 20_000
		updates      = 3_000
		ringEvery    = 100
		firstShards  = 64
		shardsPerGen = 2
	)
	rnd := newRand(t)
	// All rings are built up front, read-only afterwards: ring g has
	// firstShards + shardsPerGen*(g-1) shards, so shards split and move.
	rings := map[uint64]*Ring{}
	lastGen := uint64(1 + (updates-1)/ringEvery)
	for g := uint64(1); g <= lastGen; g++ {
		rings[g] = mustEvenRing(t, g, firstShards+shardsPerGen*int(g-1))
	}
	r := newTestRouter(t, DefaultConfig(), rings[1])
	sub := r.Subscribe()
	defer sub.Close()

	keys := make([][]byte, 512)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%d-%x", i, rnd.Uint64())
	}
	errc := make(chan error, readers+2)
	// writerDone stops the subscriber once it has drained everything.
	subCtx, writerDone := context.WithCancel(context.Background())
	defer writerDone()
	var subGen uint64 // the last ring generation the subscriber saw
	var wg sync.WaitGroup
	for rd := range readers {
		wg.Go(func() {
			var gen uint64
			terms := map[uint64]uint64{}
			for i := range lookups {
				key := keys[(i*7+rd)%len(keys)]
				rt, err := r.Lookup(key)
				if err != nil {
					errc <- err
					return
				}
				ring := rings[rt.Generation]
				switch {
				case ring == nil || rt.Generation < gen:
					errc <- fmt.Errorf("generation %d after %d", rt.Generation, gen)
					return
				case ring.Lookup(r.Hash(key)) != rt.ShardID:
					errc <- fmt.Errorf("key %q routed to shard %d, ring %d says %d", key, rt.ShardID, rt.Generation, ring.Lookup(r.Hash(key)))
					return
				case rt.Term < terms[rt.ShardID]:
					errc <- fmt.Errorf("shard %d term %d after %d", rt.ShardID, rt.Term, terms[rt.ShardID])
					return
				case rt.Leader > 3 || (rt.Replicas != nil && !slices.Equal(rt.Replicas, []uint64{1, 2, 3})):
					errc <- fmt.Errorf("shard %d: leader %d, replicas %v", rt.ShardID, rt.Leader, rt.Replicas)
					return
				}
				gen, terms[rt.ShardID] = rt.Generation, rt.Term
			}
		})
	}
	wg.Go(func() { // the writer
		defer writerDone()
		gen := uint64(1)
		term := uint64(0)
		for i := range updates {
			if i > 0 && i%ringEvery == 0 {
				gen++
				if err := r.SetRing(rings[gen]); err != nil {
					errc <- err
					return
				}
			}
			shards := rings[gen].Shards()
			shardID := shards[rnd.IntN(len(shards))]
			term++
			switch i % 3 {
			case 0:
				if err := r.SetReplicas(shardID, []uint64{1, 2, 3}); err != nil {
					errc <- err
					return
				}
			case 1:
				r.UpdateLeader(shardID, 1+uint64(i)%3, term)
			case 2:
				r.NotLeaderHint(shardID, 1+uint64(i)%3, term)
			}
		}
	})
	wg.Go(func() { // the subscriber, until the writer is done and it has drained
		terms := map[uint64]uint64{}
		for {
			changes, err := sub.Next(subCtx)
			if errors.Is(err, context.Canceled) {
				// The writer is done. A Next that starts now sees every
				// change still queued before it reports ctx's end.
				if changes, err = sub.Next(subCtx); errors.Is(err, context.Canceled) {
					return
				}
			}
			if err != nil {
				errc <- err
				return
			}
			for _, c := range changes {
				switch c.Kind {
				case RingChanged:
					if c.Generation <= subGen {
						errc <- fmt.Errorf("ring generation %d after %d", c.Generation, subGen)
						return
					}
					subGen = c.Generation
				case LeaderChanged:
					if c.Term <= terms[c.ShardID] && terms[c.ShardID] != 0 {
						errc <- fmt.Errorf("shard %d: leader change at term %d after %d", c.ShardID, c.Term, terms[c.ShardID])
						return
					}
					terms[c.ShardID] = c.Term
				}
			}
		}
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if subGen != lastGen {
		t.Errorf("subscriber saw ring generation %d, want %d", subGen, lastGen)
	}
}

// TestLookupDoesNotAllocate backs the benchmark's 0 allocs/op with a test.
func TestLookupDoesNotAllocate(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 1000))
	if err := r.SetReplicas(5, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	key := []byte("user:1234:orders")
	if n := testing.AllocsPerRun(100, func() {
		if _, err := r.Lookup(key); err != nil {
			t.Fatal(err)
		}
		if _, err := r.LookupHash(42); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Lookup allocates %v times", n)
	}
}
