package memtransport

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flotilla-db/flotilla/engine"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig(), true},
		{"zero", Config{}, true},
		{"negative queue", Config{QueueLen: -1}, false},
		{"negative buffer", Config{SnapshotBuffer: -1}, false},
		{"negative rate", Config{SnapshotRate: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.cfg
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if tc.cfg != before {
				t.Fatalf("Validate mutated the config")
			}
		})
	}
	if got := NewNetwork(Config{}).Config(); got != DefaultConfig() {
		t.Fatalf("zero config filled to %+v, want %+v", got, DefaultConfig())
	}
}

func TestFaultsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Faults
		ok   bool
	}{
		{"zero", Faults{}, true},
		{"all", Faults{DropProb: 0.1, DupProb: 1, DelayMin: 1, DelayMax: 2, ReorderProb: 0.5, ReorderWindow: 3}, true},
		{"drop > 1", Faults{DropProb: 1.5}, false},
		{"dup < 0", Faults{DupProb: -0.1}, false},
		{"reorder NaN", Faults{ReorderProb: nan()}, false},
		{"delay range", Faults{DelayMin: 2, DelayMax: 1}, false},
		{"negative window", Faults{ReorderWindow: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.f.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			net := NewNetwork(DefaultConfig())
			defer net.Close()
			if err := net.SetFaults(tc.f); (err == nil) != tc.ok {
				t.Fatalf("SetFaults() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func nan() float64 { var z float64; return z / z }

// While the receiver is busy with one batch, everything sent meanwhile is
// coalesced into the next one, in order.
func TestBatchingInOrder(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2)
	g := newGate()
	var calls atomic.Int32
	c.h[2].onBatch = func(*engine.Batch) {
		if calls.Add(1) == 1 {
			g.wait()
		}
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 0, 1)); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the sender is inside the first delivery
	const n = 1000
	for i := 1; i < n; i++ {
		if err := c.ep[1].Send(2, msgs(1, 2, uint64(i), 1)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	g.open()
	waitUntil(t, "all messages", func() bool { return len(c.h[2].messages(1)) == n })

	batches := c.h[2].batches()
	if len(batches) != 2 {
		t.Fatalf("got %d batches, want 2 (the first, then everything queued meanwhile)", len(batches))
	}
	for _, b := range batches {
		if b.ClusterID != DefaultClusterID || b.From != 1 || b.To != 2 {
			t.Fatalf("batch header = %d/%d/%d", b.ClusterID, b.From, b.To)
		}
	}
	got := indexes(c.h[2].messages(1))
	for i, idx := range got {
		if idx != uint64(i) {
			t.Fatalf("message %d has index %d: out of order", i, idx)
		}
	}
	s := c.stats(1, 2)
	if s.Sent != n || s.Delivered != n || s.Batches != 2 || s.Dropped != 0 ||
		s.SentBytes == 0 || s.SentBytes != s.DeliveredBytes {
		t.Fatalf("stats = %+v", s)
	}
}

// Many concurrent senders to one node: fewer batches than Sends, per-sender
// order kept.
func TestBatchingConcurrentSenders(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2, 3, 4)
	const n = 2000
	done := make(chan struct{})
	for _, from := range []uint64{1, 2, 3} {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range n {
				for {
					err := c.ep[from].Send(4, msgs(from, 4, uint64(i), 1))
					if err == nil {
						break
					}
					if !errors.Is(err, engine.ErrQueueFull) {
						t.Errorf("send: %v", err)
						return
					}
				}
			}
		}()
	}
	for range 3 {
		<-done
	}
	for _, from := range []uint64{1, 2, 3} {
		waitUntil(t, "delivery", func() bool { return c.settled(from, 4) })
		got := indexes(c.h[4].messages(from))
		if len(got) != n || !slices.IsSorted(got) {
			t.Fatalf("from %d: %d messages, sorted=%v", from, len(got), slices.IsSorted(got))
		}
		if s := c.stats(from, 4); s.Batches > n || s.Delivered != n {
			t.Fatalf("from %d: stats %+v", from, s)
		}
	}
}

func TestQueueFull(t *testing.T) {
	cfg := DefaultConfig()
	cfg.QueueLen = 10
	c := newCluster(t, cfg, 1, 2)
	g := newGate()
	var calls atomic.Int32
	c.h[2].onBatch = func(*engine.Batch) {
		if calls.Add(1) == 1 {
			g.wait()
		}
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 0, 1)); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	if err := c.ep[1].Send(2, msgs(1, 2, 1, 9)); err != nil {
		t.Fatal(err)
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 100, 2)); !errors.Is(err, engine.ErrQueueFull) {
		t.Fatalf("send over the limit: %v, want ErrQueueFull", err)
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 10, 1)); err != nil {
		t.Fatalf("send that fits exactly: %v", err)
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 200, 1)); !errors.Is(err, engine.ErrQueueFull) {
		t.Fatalf("send to a full queue: %v, want ErrQueueFull", err)
	}
	g.open()
	waitUntil(t, "delivery", func() bool { return c.settled(1, 2) })
	want := []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if got := indexes(c.h[2].messages(1)); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v (nothing of a refused Send)", got, want)
	}
	if s := c.stats(1, 2); s.Rejected != 3 || s.Sent != 11 {
		t.Fatalf("stats = %+v", s)
	}
	// The queue is free again.
	if err := c.ep[1].Send(2, msgs(1, 2, 11, 10)); err != nil {
		t.Fatal(err)
	}
}

func TestSendErrors(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2)
	unstarted := c.net.Endpoint(3)
	if err := unstarted.Send(1, msgs(3, 1, 0, 1)); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("send before Start: %v", err)
	}
	for _, to := range []uint64{3, 9} { // not started, unknown
		if err := c.ep[1].Send(to, msgs(1, to, 0, 1)); !errors.Is(err, engine.ErrUnknownPeer) {
			t.Fatalf("send to %d: %v, want ErrUnknownPeer", to, err)
		}
	}
	if err := c.ep[1].Start(&fakeHandler{}); err == nil {
		t.Fatal("second Start succeeded")
	}
	if err := c.ep[2].Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.ep[2].Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 0, 1)); !errors.Is(err, engine.ErrUnknownPeer) {
		t.Fatalf("send to a closed node: %v, want ErrUnknownPeer", err)
	}
	if err := c.ep[2].Send(1, msgs(2, 1, 0, 1)); !errors.Is(err, engine.ErrTransportClosed) {
		t.Fatalf("send from a closed node: %v, want ErrTransportClosed", err)
	}
	if err := c.ep[2].Start(&fakeHandler{}); !errors.Is(err, engine.ErrTransportClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

// A node that crashes and restarts gets a new endpoint; what was in flight
// to the old one is dropped, and the sender is told.
func TestRestart(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2)
	if err := c.ep[1].Send(2, msgs(1, 2, 0, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "first delivery", func() bool { return c.settled(1, 2) })

	// A batch delayed in flight while node 2 crashes and restarts.
	if err := c.net.SetFaults(Faults{DelayMin: 50 * time.Millisecond, DelayMax: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 1, 1)); err != nil {
		t.Fatal(err)
	}
	old, oldH := c.ep[2], c.h[2]
	waitUntil(t, "batch in flight", func() bool { return c.stats(1, 2).Delayed == 1 })
	c.net.Stop(2)
	if err := c.ep[1].Send(2, msgs(1, 2, 2, 1)); !errors.Is(err, engine.ErrUnknownPeer) {
		t.Fatalf("send to a stopped node: %v", err)
	}
	if e := c.net.Endpoint(2); e == old {
		t.Fatal("Endpoint returned the closed endpoint")
	} else if err := e.Send(1, msgs(2, 1, 0, 1)); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("send from the restarted node before Start: %v", err)
	}
	c.start(t, 2, &fakeHandler{})
	if c.net.Endpoint(2) != c.ep[2] {
		t.Fatal("Endpoint did not return the open endpoint")
	}
	waitUntil(t, "in-flight batch dropped", func() bool { return c.stats(1, 2).Dropped == 1 })
	// The sender counts the drop, then tells its handler.
	waitUntil(t, "the sender told", func() bool { return c.h[1].unreachable(2) > 0 })
	if got := c.h[1].unreachable(2); got != 1 {
		t.Fatalf("PeerUnreachable(2) called %d times, want 1", got)
	}

	c.net.Heal()
	if err := c.ep[1].Send(2, msgs(1, 2, 3, 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.ep[2].Send(1, msgs(2, 1, 0, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "delivery to the new incarnation", func() bool { return len(c.h[2].messages(1)) == 1 })
	waitUntil(t, "delivery from the new incarnation", func() bool { return len(c.h[1].messages(2)) == 1 })
	if got := indexes(c.h[2].messages(1)); got[0] != 3 {
		t.Fatalf("new incarnation got %v, want [3]", got)
	}
	if got := indexes(oldH.messages(1)); !slices.Equal(got, []uint64{0}) {
		t.Fatalf("old incarnation got %v, want [0]", got)
	}
}

// After Close of the destination returns, its handler is never called again,
// and Close waits for a delivery in progress.
func TestCloseWaitsForDelivery(t *testing.T) {
	c := newCluster(t, DefaultConfig(), 1, 2)
	g := newGate()
	var after atomic.Bool
	c.h[2].onBatch = func(*engine.Batch) {
		if after.Load() {
			t.Error("HandleBatch after Close returned")
		}
		g.wait()
	}
	if err := c.ep[1].Send(2, msgs(1, 2, 0, 1)); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	closed := make(chan struct{})
	go func() {
		_ = c.ep[2].Close()
		after.Store(true)
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned during a delivery")
	case <-time.After(20 * time.Millisecond):
	}
	g.open()
	<-closed
}

func TestNetworkCloseLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t)
	net := NewNetwork(Config{Seed: 3})
	var eps []*Endpoint
	for id := uint64(1); id <= 4; id++ {
		e := net.Endpoint(id)
		if err := e.Start(&fakeHandler{}); err != nil {
			t.Fatal(err)
		}
		eps = append(eps, e)
	}
	if err := net.SetFaults(Faults{DelayMin: time.Second, DelayMax: 2 * time.Second, ReorderProb: 0.5}); err != nil {
		t.Fatal(err)
	}
	for i, e := range eps {
		for j := range eps {
			if i != j {
				_ = e.Send(uint64(j+1), msgs(uint64(i+1), uint64(j+1), 0, 5))
			}
		}
	}
	net.Close()
	if err := eps[0].Send(2, msgs(1, 2, 0, 1)); !errors.Is(err, engine.ErrTransportClosed) {
		t.Fatalf("send after network Close: %v", err)
	}
	if e := net.Endpoint(9); !errors.Is(e.Start(&fakeHandler{}), engine.ErrTransportClosed) {
		t.Fatal("Endpoint after network Close is usable")
	}
	if len(net.Nodes()) != 0 {
		t.Fatalf("nodes after Close: %v", net.Nodes())
	}
}
