package engine

import (
	"context"
	"fmt"
	"sync"
)

// LeaderEvent says that Leader (a node ID, 0 when none is known) leads
// ShardID at Term, as seen by this node's replica.
type LeaderEvent struct {
	ShardID uint64
	Leader  uint64
	Term    uint64
}

// LeaderWatch receives this node's leader-change events, in the order the
// replicas saw them. The engine never blocks on a watcher: events queue
// until Next takes them.
type LeaderWatch struct {
	e      *Engine
	signal chan struct{}
	mu     struct {
		sync.Mutex
		queue  []LeaderEvent // guarded
		closed bool
	}
}

// WatchLeaders subscribes to leader-change events.
func (e *Engine) WatchLeaders() *LeaderWatch {
	w := &LeaderWatch{e: e, signal: make(chan struct{}, 1)}
	e.watchers.Lock()
	e.watchers.set[w] = struct{}{}
	e.watchers.Unlock()
	return w
}

// Next returns every queued event, waiting for one if none is queued.
func (w *LeaderWatch) Next(ctx context.Context) ([]LeaderEvent, error) {
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
			return nil, fmt.Errorf("engine: watch leaders: %w", ctx.Err())
		}
	}
}

// Close ends the subscription.
func (w *LeaderWatch) Close() {
	w.e.watchers.Lock()
	delete(w.e.watchers.set, w)
	w.e.watchers.Unlock()
	w.close()
}

func (w *LeaderWatch) close() {
	w.mu.Lock()
	w.mu.closed = true
	w.mu.Unlock()
	w.notify()
}

func (w *LeaderWatch) notify() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// publishLeaders hands evs to every watcher.
func (e *Engine) publishLeaders(evs []LeaderEvent) {
	if len(evs) == 0 {
		return
	}
	e.watchers.Lock()
	defer e.watchers.Unlock()
	for w := range e.watchers.set {
		w.mu.Lock()
		w.mu.queue = append(w.mu.queue, evs...)
		w.mu.Unlock()
		w.notify()
	}
}
