package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

func leaseMode(cfg *engine.Config) { cfg.ReadMode = engine.ReadModeLease }

// leaseCluster starts 3 nodes in lease mode (unless hook says otherwise)
// with one shard led by node 1, and a key written there; the clock is
// manual (every wait ticks it).
func leaseCluster(t *testing.T, hook func(*engine.Config)) (c *testcluster.Cluster, ctx context.Context, shard uint64, key []byte) {
	t.Helper()
	c = newCluster(t, testcluster.Config{Nodes: 3, Engine: hook})
	ctx = ctxT(t, 60*time.Second)
	descs := testcluster.EvenDescriptors(1, 1)
	shard = descs[0].ShardID
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{shard}); err != nil {
		t.Fatal(err)
	}
	if l := c.Leader(ctx, shard); l != 1 {
		if err := c.Engine(l).TransferLeader(ctx, shard, 1); err != nil {
			t.Fatal(err)
		}
	}
	key = keysOf(descs[0], 1)[0]
	if _, err := c.Engine(1).Propose(ctx, shard, engine.PutCommand(key, []byte("v1"))); err != nil {
		t.Fatal(err)
	}
	return c, ctx, shard, key
}

// leaseGet reads key on e by its lease (ReadLease), and returns the value
// and whether the lease served it (rather than a ReadIndex).
func leaseGet(t *testing.T, ctx context.Context, e *engine.Engine, shard uint64, key []byte) (string, bool) {
	t.Helper()
	before := e.Stats().LeaseReads
	res, err := e.ReadLease(ctx, shard, engine.GetQuery(key))
	if err != nil {
		t.Fatal(err)
	}
	v, _, _ := engine.DecodeGetResult(res)
	return string(v), e.Stats().LeaseReads > before
}

// TestLeaseRead: a leader's first lease read does a ReadIndex, which gives
// it a lease; the next reads are served from it, see the latest write, and
// the lease ends an election timeout less the drift after it started. A
// follower refuses lease reads; an engine not in lease mode too.
func TestLeaseRead(t *testing.T) {
	c, ctx, shard, key := leaseCluster(t, leaseMode)
	l := c.Engine(1)
	if v, leased := leaseGet(t, ctx, l, shard, key); v != "v1" || leased {
		t.Fatalf("first lease read: %q, from the lease %v; want v1 by a ReadIndex", v, leased)
	}
	if _, err := l.Propose(ctx, shard, engine.PutCommand(key, []byte("v2"))); err != nil {
		t.Fatal(err)
	}
	if v, leased := leaseGet(t, ctx, l, shard, key); v != "v2" || !leased {
		t.Fatalf("second lease read: %q, from the lease %v; want v2 from the lease", v, leased)
	}
	// ReadLeader follows the engine's mode: the lease here.
	before := l.Stats().LeaseReads
	if _, err := l.ReadLeader(ctx, shard, engine.GetQuery(key)); err != nil || l.Stats().LeaseReads != before+1 {
		t.Fatalf("ReadLeader in lease mode: %v, lease reads %d -> %d", err, before, l.Stats().LeaseReads)
	}
	// The lease started before the first read's round: 10 ticks of 100ms
	// less the default drift (a tenth) is 9 ticks.
	tickN(t, ctx, c, 9)
	if held, err := l.TestingLeaseHeld(ctx, shard); err != nil || held {
		t.Fatalf("9 ticks on, the lease is held: %v %v", held, err)
	}
	var nl *engine.NotLeaderError
	if _, err := c.Engine(2).ReadLease(ctx, shard, engine.GetQuery(key)); !errors.As(err, &nl) || nl.Leader != 1 {
		t.Fatalf("lease read on a follower: %v, want a NotLeaderError naming node 1", err)
	}

	plain, pctx, pshard, pkey := leaseCluster(t, nil)
	if _, err := plain.Engine(1).ReadLease(pctx, pshard, engine.GetQuery(pkey)); !errors.Is(err, engine.ErrLeaseReadsOff) {
		t.Fatalf("lease read in ReadIndex mode: %v, want ErrLeaseReadsOff", err)
	}
	if res, err := plain.Engine(1).ReadLeader(pctx, pshard, engine.GetQuery(pkey)); err != nil || string(res) != "\x01v1" || plain.Engine(1).Stats().LeaseReads != 0 {
		t.Fatalf("ReadLeader in ReadIndex mode: %q %v", res, err)
	}
}

// TestLeaseConfigRefused: lease mode without CheckQuorum, with a drift
// that leaves no lease, or with manual ticks and no clock, is refused by
// Validate and by New, which then creates nothing.
func TestLeaseConfigRefused(t *testing.T) {
	base := engine.DefaultConfig(1, 1, t.TempDir())
	base.ReadMode = engine.ReadModeLease
	for _, tc := range []struct {
		name string
		mod  func(*engine.Config)
		is   error
	}{
		{"no check quorum", func(c *engine.Config) { c.DisableCheckQuorum = true }, engine.ErrLeaseNeedsCheckQuorum},
		{"drift over the election timeout", func(c *engine.Config) { c.MaxClockDrift = time.Second }, nil},
		{"ticks without a clock", func(c *engine.Config) { c.Ticks = make(chan struct{}); c.Clock = nil }, nil},
		{"unknown mode", func(c *engine.Config) { c.ReadMode = 7 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.Dir = t.TempDir()
			tc.mod(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("Validate: %v, want %v", err, tc.is)
			}
			if _, err := engine.New(cfg, nil); err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("New: %v", err)
			}
		})
	}
	ok := base
	if err := ok.Validate(); err != nil {
		t.Fatalf("lease mode with the defaults: %v", err)
	}
	ok.DisableCheckQuorum, ok.ReadMode = true, engine.ReadModeIndex
	if err := ok.Validate(); err != nil {
		t.Fatalf("ReadIndex mode without CheckQuorum: %v", err)
	}
	if m, err := engine.ParseReadMode("lease"); err != nil || m != engine.ReadModeLease || m.String() != "lease" {
		t.Fatalf("ParseReadMode(lease) = %v, %v", m, err)
	}
	if _, err := engine.ParseReadMode("fast"); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("ParseReadMode(fast): %v", err)
	}
}

// TestLeaseEndsBeforeANewLeader: node 1 leads with a fresh lease and is cut
// off; the other voters are told at once that it is down (gossip: they
// forget it as their leader) or one of them restarts (it forgets it too).
// Tick by tick, no other node leads while node 1's lease holds: the vote
// gate keeps them from electing until an election timeout after they
// last heard from it. Without the gate they elect within a few ticks,
// inside the lease, which the test must see in one of a few runs.
func TestLeaseEndsBeforeANewLeader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool
		gate    bool
	}{
		{"peer down", false, true},
		{"restart", true, true},
		{"peer down, no gate", false, false},
		{"restart, no gate", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer engine.SetLeaseGuards(tc.gate, true)()
			if tc.gate {
				if overlap := leaseOverlap(t, tc.restart); overlap != "" {
					t.Fatal(overlap)
				}
				return
			}
			// Without the gate the election races the lease: one of a
			// few runs must show the overlap.
			for try := 0; try < 5; try++ {
				if overlap := leaseOverlap(t, tc.restart); overlap != "" {
					t.Logf("without the gate: %s", overlap)
					return
				}
			}
			t.Fatal("without the vote gate, no new leader was elected while the old lease held in 5 runs: the test proves nothing")
		})
	}
}

// leaseOverlap runs TestLeaseEndsBeforeANewLeader's scenario and returns
// how another node came to lead while node 1's lease held ("" if none
// did before it ended).
func leaseOverlap(t *testing.T, restart bool) string {
	c, ctx, shard, key := leaseCluster(t, leaseMode)
	l := c.Engine(1)
	leaseGet(t, ctx, l, shard, key) // a ReadIndex: the lease starts
	if _, leased := leaseGet(t, ctx, l, shard, key); !leased {
		t.Fatal("no lease after a ReadIndex")
	}
	st, err := l.Status(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node 1 leads at term %d", st.Term)
	c.Isolate(1)
	if restart {
		c.Stop(2)
		if err := c.Start(2); err != nil {
			t.Fatal(err)
		}
	} else {
		c.Engine(2).PeerDown(1)
		c.Engine(3).PeerDown(1)
	}
	// WaitFor ticks between two looks (the clock does not move during
	// one).
	tick, overlap := -1, ""
	err = c.WaitFor(ctx, "a new leader", func() bool {
		tick++
		held, err := l.TestingLeaseHeld(ctx, shard)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []uint64{2, 3} {
			s, err := c.Engine(id).Status(ctx, shard)
			if err == nil && s.State == "StateLeader" && s.Term > st.Term {
				if held {
					overlap = fmt.Sprintf("node %d leads at term %d, %d ticks after node 1 was cut off with its lease", id, s.Term, tick)
				} else {
					t.Logf("node %d leads at term %d, %d ticks after node 1 was cut off, its lease over", id, s.Term, tick)
				}
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	return overlap
}

// tickN ticks the cluster n times, a few milliseconds apart (WaitFor's
// pace), so that the nodes take each tick.
func tickN(t *testing.T, ctx context.Context, c *testcluster.Cluster, n int) {
	t.Helper()
	i := 0
	if err := c.WaitFor(ctx, fmt.Sprintf("%d ticks", n), func() bool { i++; return i > n }); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseEndsAtTransfer: a leader that starts a leadership transfer
// keeps no lease for the rest of its term, even once the transfer is
// abandoned (its MsgTimeoutNow may still arrive, and the transferee's
// campaign ignores the followers' leases): its lease reads do ReadIndex.
// With the guard off it would be served from a renewed lease again.
func TestLeaseEndsAtTransfer(t *testing.T) {
	for _, guard := range []bool{true, false} {
		t.Run(fmt.Sprintf("guard=%v", guard), func(t *testing.T) {
			defer engine.SetLeaseGuards(true, guard)()
			c, ctx, shard, key := leaseCluster(t, leaseMode)
			l := c.Engine(1)
			leaseGet(t, ctx, l, shard, key)
			if _, leased := leaseGet(t, ctx, l, shard, key); !leased {
				t.Fatal("no lease after a ReadIndex")
			}
			st, err := l.Status(ctx, shard)
			if err != nil {
				t.Fatal(err)
			}
			// Node 3 never gets the MsgTimeoutNow: raft abandons the
			// transfer after an election timeout, node 1 still leading.
			c.Isolate(3)
			tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			if err := l.TransferLeader(tctx, shard, 3); err == nil {
				t.Fatal("the transfer to a node cut off completed")
			}
			cancel()
			tickN(t, ctx, c, 12)
			leased := false
			for i := 0; i < 3; i++ {
				_, lz := leaseGet(t, ctx, l, shard, key)
				leased = leased || lz
			}
			if now, err := l.Status(ctx, shard); err != nil || now.Term != st.Term || now.State != "StateLeader" {
				t.Fatalf("node 1 no longer leads at term %d: %+v %v", st.Term, now, err)
			}
			if guard && leased {
				t.Fatal("a lease read was served from a lease after a transfer started in the term")
			}
			if !guard && !leased {
				t.Fatal("without the guard, no lease read was served from the lease: the test proves nothing")
			}
		})
	}
}
