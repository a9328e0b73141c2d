package memtransport

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// dropDupRun sends n messages from node 1 to node 2 under drop and dup faults
// and returns the sender's stats once everything settled.
func dropDupRun(t *testing.T, seed int64, n int) PeerStats {
	t.Helper()
	c := newCluster(t, Config{Seed: seed, QueueLen: 2 * n}, 1, 2)
	if err := c.net.SetFaults(Faults{DropProb: 0.2, DupProb: 0.1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 100 {
		if err := c.ep[1].Send(2, msgs(1, 2, uint64(i), 100)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "delivery", func() bool { return c.settled(1, 2) })
	s := c.stats(1, 2)
	got := c.h[2].messages(1)
	if uint64(len(got)) != s.Delivered || s.Delivered != uint64(n)-s.Dropped+s.Duplicated {
		t.Fatalf("handler got %d messages, stats %+v", len(got), s)
	}
	// Copies follow their original and share no memory with it.
	seen := map[uint64]int{}
	for i, m := range got {
		seen[m.Msg.Index]++
		if seen[m.Msg.Index] == 2 {
			orig := got[i-1]
			if orig.Msg.Index != m.Msg.Index {
				t.Fatalf("copy of %d does not follow its original", m.Msg.Index)
			}
			if &orig.Msg.Entries[0].Data[0] == &m.Msg.Entries[0].Data[0] {
				t.Fatalf("copy of %d shares its entry data with the original", m.Msg.Index)
			}
		}
		if seen[m.Msg.Index] > 2 {
			t.Fatalf("message %d delivered %d times", m.Msg.Index, seen[m.Msg.Index])
		}
	}
	if !slices.IsSorted(indexes(got)) {
		t.Fatal("messages out of order without reordering")
	}
	return s
}

func TestDropDupStatistics(t *testing.T) {
	const n = 10000
	s := dropDupRun(t, 42, n)
	t.Logf("seed 42: %+v", s)
	// Expected 2000 dropped (sd 40) and 800 copies (sd 27): bounds at ~5 sd.
	if s.Dropped < 1800 || s.Dropped > 2200 {
		t.Errorf("dropped %d of %d, want about 2000", s.Dropped, n)
	}
	if s.Duplicated < 680 || s.Duplicated > 920 {
		t.Errorf("duplicated %d, want about 800", s.Duplicated)
	}
	// One link, one sender: the same seed makes the same decisions.
	again := dropDupRun(t, 42, n)
	if again.Dropped != s.Dropped || again.Duplicated != s.Duplicated {
		t.Errorf("same seed, different faults: %+v then %+v", s, again)
	}
}

// sendOne sends one message and waits until the sender has handled it.
func sendOne(t *testing.T, c *cluster, from, to, idx uint64) {
	t.Helper()
	if err := c.ep[from].Send(to, msgs(from, to, idx, 1)); err != nil {
		t.Fatalf("send %d->%d: %v", from, to, err)
	}
	waitUntil(t, "sender done", func() bool { return c.settled(from, to) })
}

func TestPartitionIsolateHeal(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2, 3)
	c.net.Partition([]uint64{1}, []uint64{2, 3})
	if c.net.Reachable(1, 2) || c.net.Reachable(3, 1) || !c.net.Reachable(2, 3) {
		t.Fatal("Reachable disagrees with the partition")
	}
	for i := range uint64(5) {
		sendOne(t, c, 1, 2, i) // a cut link still accepts, then drops
		sendOne(t, c, 2, 1, i)
		sendOne(t, c, 2, 3, i)
	}
	if s := c.stats(1, 2); s.Dropped != 5 || s.Delivered != 0 {
		t.Fatalf("1->2 across the partition: %+v", s)
	}
	if s := c.stats(2, 3); s.Delivered != 5 {
		t.Fatalf("2->3 within a side: %+v", s)
	}
	if got := c.h[1].unreachable(2); got != 1 {
		t.Fatalf("PeerUnreachable(2) on node 1: %d calls, want 1 per episode", got)
	}
	if got := c.h[2].unreachable(1); got != 1 {
		t.Fatalf("PeerUnreachable(1) on node 2: %d calls, want 1", got)
	}

	c.net.Heal()
	sendOne(t, c, 1, 2, 10)
	if got := indexes(c.h[2].messages(1)); !slices.Equal(got, []uint64{10}) {
		t.Fatalf("after Heal node 2 got %v from 1", got)
	}
	c.net.Partition([]uint64{1}, []uint64{2})
	sendOne(t, c, 1, 2, 11)
	if got := c.h[1].unreachable(2); got != 2 {
		t.Fatalf("new episode: PeerUnreachable(2) %d calls, want 2", got)
	}

	c.net.Heal()
	c.net.Isolate(3)
	c.start(t, 4, &fakeHandler{}) // isolation applies to nodes that come later
	sendOne(t, c, 1, 3, 20)
	sendOne(t, c, 3, 1, 20)
	sendOne(t, c, 4, 3, 20)
	sendOne(t, c, 1, 2, 20)
	for _, l := range [][2]uint64{{1, 3}, {3, 1}, {4, 3}} {
		if s := c.stats(l[0], l[1]); s.Dropped != 1 || s.Delivered != 0 {
			t.Fatalf("%d->%d with 3 isolated: %+v", l[0], l[1], s)
		}
	}
	if s := c.stats(1, 2); s.Delivered != 2 {
		t.Fatalf("1->2 with 3 isolated: %+v", s)
	}
	c.net.Heal()
	sendOne(t, c, 3, 1, 21)
	if got := indexes(c.h[1].messages(3)); !slices.Equal(got, []uint64{21}) {
		t.Fatalf("after Heal node 1 got %v from 3", got)
	}
}

func TestOneWayCut(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2)
	c.net.Cut(1, 2)
	sendOne(t, c, 1, 2, 0)
	sendOne(t, c, 1, 2, 1)
	sendOne(t, c, 2, 1, 0)
	if s := c.stats(1, 2); s.Dropped != 2 || s.Delivered != 0 {
		t.Fatalf("1->2 cut: %+v", s)
	}
	if s := c.stats(2, 1); s.Delivered != 1 {
		t.Fatalf("2->1 open: %+v", s)
	}
	if a, b := c.h[1].unreachable(2), c.h[2].unreachable(1); a != 1 || b != 0 {
		t.Fatalf("PeerUnreachable: node 1 %d, node 2 %d; want 1, 0", a, b)
	}
	c.net.Uncut(1, 2)
	sendOne(t, c, 1, 2, 2)
	if got := indexes(c.h[2].messages(1)); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("after Uncut node 2 got %v", got)
	}

	// A cut also drops a batch already in flight.
	if err := c.net.SetFaults(Faults{DelayMin: 20 * time.Millisecond, DelayMax: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 3, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "batch in flight", func() bool { return c.stats(1, 2).Delayed == 1 })
	c.net.Cut(1, 2)
	waitUntil(t, "batch dropped", func() bool { return c.stats(1, 2).Dropped == 3 })
	if got := c.h[1].unreachable(2); got != 2 {
		t.Fatalf("PeerUnreachable(2) after a second cut: %d, want 2", got)
	}
}

// Delayed batches wait side by side (the sender is not blocked), arrive
// after their delay, and in order.
func TestDelay(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2)
	const delay = 100 * time.Millisecond
	if err := c.net.SetFaults(Faults{DelayMin: delay, DelayMax: delay}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	arrived := map[uint64]time.Time{}
	c.h[2].onBatch = func(b *engine.Batch) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range b.Messages {
			arrived[m.Msg.Index] = time.Now()
		}
	}
	const n = 10
	sent := make([]time.Time, n)
	for i := range n {
		sent[i] = time.Now()
		if err := c.ep[1].Send(2, msgs(1, 2, uint64(i), 1)); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "batch delayed", func() bool { return c.stats(1, 2).Delayed == uint64(i+1) || c.stats(1, 2).Delivered > 0 })
	}
	waitUntil(t, "delivery", func() bool { return c.settled(1, 2) })
	if got := indexes(c.h[2].messages(1)); len(got) != n || !slices.IsSorted(got) {
		t.Fatalf("delivered %v", got)
	}
	mu.Lock()
	for i := range n {
		if d := arrived[uint64(i)].Sub(sent[i]); d < delay {
			t.Errorf("message %d arrived after %v, want >= %v", i, d, delay)
		}
	}
	mu.Unlock()

	// Random delays keep a link in order.
	if err := c.net.SetFaults(Faults{DelayMin: 0, DelayMax: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	for i := n; i < n+200; i++ {
		if err := c.ep[1].Send(2, msgs(1, 2, uint64(i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "delivery", func() bool { return c.settled(1, 2) })
	if got := indexes(c.h[2].messages(1)); len(got) != n+200 || !slices.IsSorted(got) {
		t.Fatalf("random delays reordered a link: %v", got)
	}
}

func TestReorder(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2)
	if err := c.net.SetFaults(Faults{ReorderProb: 1, ReorderWindow: time.Hour}); err != nil {
		t.Fatal(err)
	}
	held := func(idx uint64) {
		if err := c.ep[1].Send(2, msgs(1, 2, idx, 1)); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "batch held", func() bool { return c.stats(1, 2).Delayed == 1 })
	}
	held(0)
	sendOne(t, c, 1, 2, 1) // releases 0 behind it
	held(2)
	sendOne(t, c, 1, 2, 3)
	if got := indexes(c.h[2].messages(1)); !slices.Equal(got, []uint64{1, 0, 3, 2}) {
		t.Fatalf("delivered %v, want [1 0 3 2]", got)
	}
	// With no next batch, a held batch goes after the window.
	if err := c.net.SetFaults(Faults{ReorderProb: 1, ReorderWindow: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	sendOne(t, c, 1, 2, 4)
	if got := indexes(c.h[2].messages(1)); !slices.Equal(got, []uint64{1, 0, 3, 2, 4}) {
		t.Fatalf("delivered %v", got)
	}
}

// Traffic between every pair while faults and cuts change under it; after
// Heal the counters balance and the handlers saw exactly what was delivered.
func TestFaultsChangeUnderTraffic(t *testing.T) {
	ids := []uint64{1, 2, 3, 4}
	c := newCluster(t, Config{Seed: 7, QueueLen: 64}, ids...)
	var wg sync.WaitGroup
	for _, from := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(from, 1))
			for i := range 500 {
				if i%25 == 0 { // each sender also plays chaos monkey
					chaos(c.net, rng, ids)
				}
				to := ids[rng.IntN(len(ids))]
				if to == from {
					continue
				}
				err := c.ep[from].Send(to, msgs(from, to, uint64(i), 1+rng.IntN(4)))
				if err != nil && !errors.Is(err, engine.ErrQueueFull) {
					t.Errorf("send: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	c.net.Heal()
	for _, from := range ids {
		for _, to := range ids {
			if from == to {
				continue
			}
			waitUntil(t, "settled", func() bool { return c.settled(from, to) })
			s := c.stats(from, to)
			if got := uint64(len(c.h[to].messages(from))); got != s.Delivered {
				t.Fatalf("%d->%d: handler got %d, stats %+v", from, to, got, s)
			}
		}
	}
}

// chaos makes one random change to the network's faults or cuts.
func chaos(net *Network, rng *rand.Rand, ids []uint64) {
	switch rng.IntN(5) {
	case 0:
		_ = net.SetFaults(Faults{DropProb: 0.1, DupProb: 0.1, DelayMax: time.Millisecond,
			ReorderProb: 0.2, ReorderWindow: time.Millisecond})
	case 1:
		net.Partition(ids[:2], ids[2:])
	case 2:
		net.Isolate(ids[rng.IntN(len(ids))])
	case 3:
		net.Cut(ids[rng.IntN(len(ids))], ids[rng.IntN(len(ids))])
	case 4:
		net.Heal()
	}
}
