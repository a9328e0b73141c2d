package router

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestSubscriptionChanges(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 4))
	a, b := r.Subscribe(), r.Subscribe()
	defer a.Close()
	defer b.Close()
	ctx := context.Background()

	r.UpdateLeader(1, 5, 2)
	r.UpdateLeader(1, 6, 1) // stale: no change
	r.NotLeaderHint(1, 6, 3)
	if err := r.SetReplicas(2, []uint64{7, 8}); err != nil {
		t.Fatal(err)
	}
	if err := r.SetRing(mustEvenRing(t, 2, 5)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetRing(mustEvenRing(t, 2, 5)); err != nil { // no-op: no change
		t.Fatal(err)
	}
	want := []RouteChange{
		{Kind: LeaderChanged, ShardID: 1, OldLeader: 0, NewLeader: 5, Term: 2, Generation: 1},
		{Kind: LeaderChanged, ShardID: 1, OldLeader: 5, NewLeader: 6, Term: 3, Generation: 1, FromHint: true},
		{Kind: ReplicasChanged, ShardID: 2, Generation: 1, Replicas: []uint64{7, 8}},
		{Kind: RingChanged, Generation: 2},
	}
	for _, s := range []*Subscription{a, b} {
		got, err := s.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(got, want, changeEqual) {
			t.Fatalf("got  %+v\nwant %+v", got, want)
		}
	}

	// A change made while Next waits wakes it. The goroutine may or may not
	// be waiting yet when the change lands; either way Next returns it.
	got := make(chan []RouteChange)
	go func() {
		c, err := a.Next(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	r.UpdateLeader(3, 9, 4)
	if c := <-got; len(c) != 1 || c[0].ShardID != 3 || c[0].NewLeader != 9 {
		t.Fatalf("woken with %+v", c)
	}
}

func changeEqual(a, b RouteChange) bool {
	return a.Kind == b.Kind && a.ShardID == b.ShardID && a.OldLeader == b.OldLeader &&
		a.NewLeader == b.NewLeader && a.Term == b.Term && a.Generation == b.Generation &&
		slices.Equal(a.Replicas, b.Replicas) && a.FromHint == b.FromHint
}

func TestSubscriptionContext(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 4))
	s := r.Subscribe()
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if c, err := s.Next(ctx); !errors.Is(err, context.Canceled) || c != nil {
		t.Fatalf("Next(canceled) = %v, %v", c, err)
	}
	// Queued changes are returned even when ctx has ended.
	r.UpdateLeader(1, 1, 1)
	if c, err := s.Next(ctx); err != nil || len(c) != 1 {
		t.Fatalf("Next(canceled) with a queued change = %v, %v", c, err)
	}
}

// TestSubscriptionNeverBlocksUpdater: a subscriber that does not read does
// not slow the updater down; it finds everything queued, in order.
func TestSubscriptionNeverBlocksUpdater(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 4))
	s := r.Subscribe()
	defer s.Close()
	const n = 10_000
	for term := uint64(1); term <= n; term++ {
		if !r.UpdateLeader(1, 1+term%3, term) {
			t.Fatalf("term %d not applied", term)
		}
	}
	c, err := s.Next(context.Background())
	if err != nil || len(c) != n {
		t.Fatalf("Next = %d changes, %v", len(c), err)
	}
	for i, ch := range c {
		if ch.Term != uint64(i+1) {
			t.Fatalf("change %d has term %d", i, ch.Term)
		}
	}
}

func TestSubscriptionClose(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 4))
	s := r.Subscribe()

	// Close wakes a waiting Next, like the change test above whether or not
	// it is waiting yet.
	done := make(chan error)
	go func() {
		_, err := s.Next(context.Background())
		done <- err
	}()
	s.Close()
	if err := <-done; !errors.Is(err, ErrSubscriptionClosed) {
		t.Fatalf("Next during Close = %v", err)
	}
	s.Close() // idempotent
	r.UpdateLeader(1, 1, 1)
	if _, err := s.Next(context.Background()); !errors.Is(err, ErrSubscriptionClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	r.mu.Lock()
	n := len(r.mu.subs)
	r.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d subscriptions left after Close", n)
	}
}

func TestChangeKindString(t *testing.T) {
	for k, want := range map[ChangeKind]string{
		LeaderChanged: "LeaderChanged", ReplicasChanged: "ReplicasChanged",
		RingChanged: "RingChanged", 0: "ChangeKind(0)",
	} {
		if got := k.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", k, got, want)
		}
	}
}

// TestVersion: every change published raises Version, by one; an update
// that changes nothing (a stale leader, the same ring again) leaves it.
func TestVersion(t *testing.T) {
	r := newTestRouter(t, DefaultConfig(), mustEvenRing(t, 1, 4))
	v := r.Version()
	for i, step := range []struct {
		do     func() error
		change bool
	}{
		{func() error { r.UpdateLeader(1, 5, 2); return nil }, true},
		{func() error { r.UpdateLeader(1, 6, 1); return nil }, false}, // stale
		{func() error { r.NotLeaderHint(1, 6, 3); return nil }, true},
		{func() error { return r.SetReplicas(2, []uint64{7, 8}) }, true},
		{func() error { return r.SetRing(mustEvenRing(t, 2, 5)) }, true},
		{func() error { return r.SetRing(mustEvenRing(t, 2, 5)) }, false}, // the same ring
	} {
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		if step.change {
			v++
		}
		if got := r.Version(); got != v {
			t.Fatalf("step %d: Version %d, want %d", i, got, v)
		}
	}
}
