package router

import (
	"context"
	"fmt"
	"sync"
)

// ChangeKind says what a RouteChange is about.
type ChangeKind uint8

const (
	// LeaderChanged: a shard's leader or term changed (UpdateLeader,
	// NotLeaderHint).
	LeaderChanged ChangeKind = iota + 1
	// ReplicasChanged: a shard's replica set changed (SetReplicas), and with
	// it possibly its leader.
	ReplicasChanged
	// RingChanged: a new ring generation was installed (SetRing). Per-shard
	// changes are not listed; read the new ring with Router.Ring.
	RingChanged
)

func (k ChangeKind) String() string {
	switch k {
	case LeaderChanged:
		return "LeaderChanged"
	case ReplicasChanged:
		return "ReplicasChanged"
	case RingChanged:
		return "RingChanged"
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// RouteChange is one change to the routing table, as delivered to a
// Subscription.
type RouteChange struct {
	Kind ChangeKind
	// ShardID is the shard that changed, 0 for RingChanged.
	ShardID uint64
	// OldLeader and NewLeader are the shard's leader before and after the
	// change (node IDs, 0 = unknown). They are equal when only the term or
	// the replicas changed.
	OldLeader, NewLeader uint64
	// Term is the shard's term after the change.
	Term uint64
	// Generation is the ring generation: the new one for RingChanged, the
	// route's for the others.
	Generation uint64
	// Replicas is the new replica set for ReplicasChanged, nil otherwise.
	// Shared: do not modify.
	Replicas []uint64
	// FromHint is set on a LeaderChanged applied by NotLeaderHint.
	FromHint bool
}

// Subscription receives the changes made to a Router after Subscribe
// returned, in the order they were applied. The updater never waits for the
// subscriber: changes go to an unbounded queue, so a subscriber that stops
// calling Next should Close. Next and Close may be called from any
// goroutine.
type Subscription struct {
	r *Router
	// signal holds a token when changes may be queued since the last Next
	// emptied the queue; it is closed by Close. Buffer 1, so a push never
	// blocks.
	signal chan struct{}
	mu     struct {
		// Mutex guards the queue and closed. It is held only to append,
		// swap or drop the queue, never while waiting. Lock order:
		// Router.mu before Subscription.mu.
		sync.Mutex
		queue  []RouteChange
		closed bool
	}
}

// Subscribe returns a new Subscription. To follow the table without missing
// a change, subscribe first and then read the current state (Ring, Routes).
func (r *Router) Subscribe() *Subscription {
	s := &Subscription{r: r, signal: make(chan struct{}, 1)}
	r.mu.Lock()
	r.mu.subs[s] = struct{}{}
	r.mu.Unlock()
	return s
}

// publishLocked queues c for every subscriber. r.mu must be held, so changes
// are queued in the order they were applied.
func (r *Router) publishLocked(c RouteChange) {
	r.version.Add(1)
	for s := range r.mu.subs {
		s.push(c)
	}
}

// push queues c and signals the subscriber without blocking.
func (s *Subscription) push(c RouteChange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return
	}
	s.mu.queue = append(s.mu.queue, c)
	// Sent under s.mu so that it cannot race with close(s.signal) in Close.
	select {
	case s.signal <- struct{}{}:
	default: // a token is already there
	}
}

// Next returns all the changes queued since the previous call, waiting for
// at least one. It returns ErrSubscriptionClosed after Close, and ctx.Err()
// wrapped if ctx ends first.
func (s *Subscription) Next(ctx context.Context) ([]RouteChange, error) {
	for {
		s.mu.Lock()
		q, closed := s.mu.queue, s.mu.closed
		s.mu.queue = nil
		s.mu.Unlock()
		switch {
		case closed:
			return nil, ErrSubscriptionClosed
		case len(q) > 0:
			return q, nil
		}
		select {
		case <-s.signal:
		case <-ctx.Done():
			return nil, fmt.Errorf("router: waiting for route changes: %w", ctx.Err())
		}
	}
}

// Close stops the subscription and drops its queue; a Next blocked on it
// returns ErrSubscriptionClosed. Close is idempotent.
func (s *Subscription) Close() {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return
	}
	s.mu.closed = true
	s.mu.queue = nil
	close(s.signal)
	s.mu.Unlock()

	s.r.mu.Lock()
	delete(s.r.mu.subs, s)
	s.r.mu.Unlock()
}
