package engine

import (
	"context"
	"fmt"
	"sync"

	"github.com/flotilla-db/flotilla/storage"
)

// LeaderEvent says that Leader (a node ID, 0 when none is known) leads
// ShardID at Term, as seen by this node's replica.
type LeaderEvent struct {
	ShardID uint64
	Leader  uint64
	Term    uint64
}

// DescriptorEvent reports a shard's descriptor as this node's replica
// applied it (a conf change, or a snapshot that installed one). Leader is
// whether this node's replica leads the shard.
type DescriptorEvent struct {
	Desc   storage.Descriptor
	Leader bool
}

// Watch receives events of one kind from this node's replicas, in the order
// the replicas produced them. The engine never blocks on a watcher: events
// queue until Next takes them.
type Watch[T any] struct {
	hub    *hub[T]
	signal chan struct{}
	mu     struct {
		sync.Mutex
		queue  []T // guarded
		closed bool
	}
}

// LeaderWatch receives leader-change events.
type LeaderWatch = Watch[LeaderEvent]

// DescriptorWatch receives descriptor events.
type DescriptorWatch = Watch[DescriptorEvent]

// hub is the set of watchers of one kind of event.
type hub[T any] struct {
	sync.Mutex
	set map[*Watch[T]]struct{} // guarded
}

func (h *hub[T]) subscribe() *Watch[T] {
	w := &Watch[T]{hub: h, signal: make(chan struct{}, 1)}
	h.Lock()
	if h.set == nil {
		h.set = map[*Watch[T]]struct{}{}
	}
	h.set[w] = struct{}{}
	h.Unlock()
	return w
}

// publish hands evs to every watcher.
func (h *hub[T]) publish(evs []T) {
	if len(evs) == 0 {
		return
	}
	h.Lock()
	defer h.Unlock()
	for w := range h.set {
		w.mu.Lock()
		w.mu.queue = append(w.mu.queue, evs...)
		w.mu.Unlock()
		w.notify()
	}
}

// closeAll ends every subscription (the engine is closing).
func (h *hub[T]) closeAll() {
	h.Lock()
	for w := range h.set {
		w.close()
	}
	h.set = nil
	h.Unlock()
}

// WatchLeaders subscribes to leader-change events.
func (e *Engine) WatchLeaders() *LeaderWatch { return e.leaderHub.subscribe() }

// WatchDescriptors subscribes to descriptor events: each conf change this
// node's replicas apply and each descriptor a snapshot installs.
func (e *Engine) WatchDescriptors() *DescriptorWatch { return e.descHub.subscribe() }

// Next returns every queued event, waiting for one if none is queued.
func (w *Watch[T]) Next(ctx context.Context) ([]T, error) {
	for {
		w.mu.Lock()
		q, closed := w.mu.queue, w.mu.closed
		w.mu.queue = nil
		w.mu.Unlock()
		if len(q) > 0 {
			return q, nil
		}
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-w.signal:
		case <-ctx.Done():
			return nil, fmt.Errorf("engine: watch: %w", ctx.Err())
		}
	}
}

// Close ends the subscription.
func (w *Watch[T]) Close() {
	w.hub.Lock()
	delete(w.hub.set, w)
	w.hub.Unlock()
	w.close()
}

func (w *Watch[T]) close() {
	w.mu.Lock()
	w.mu.closed = true
	w.mu.Unlock()
	w.notify()
}

func (w *Watch[T]) notify() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// publishLeaders hands evs to every leader watcher.
func (e *Engine) publishLeaders(evs []LeaderEvent) { e.leaderHub.publish(evs) }

// descChanged queues r's descriptor for the descriptor watchers (published
// after the pass's batch is committed).
func (w *worker) descChanged(r *replica) {
	if d, ok := r.log.Descriptor(); ok {
		w.descEvs = append(w.descEvs, DescriptorEvent{Desc: d.Clone(), Leader: r.g.IsLeader()})
	}
}
