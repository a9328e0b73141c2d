package engine

import (
	"context"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/flotilla-db/flotilla/group"
	"go.etcd.io/raft/v3/raftpb"
)

// Hooks into the engine's internals for the scenario tests of package
// engine_test (this file is compiled into the tests only).

// SetReadLocalHook sets a function ReadLocal runs between finding a
// shard's range and querying the store (nil: none).
func SetReadLocalHook(f func(shardID uint64)) { readLocalHook = f }

// SetSplitChildHook sets a function that runs on a split child's worker
// before the child's replica is created; false skips the creation, as a
// crash there would (nil: none).
func SetSplitChildHook(f func(e *Engine, childID uint64) bool) {
	if f == nil {
		splitChildHook.Store(nil)
		return
	}
	splitChildHook.Store(&f)
}

// SetMergeRightHook sets a function that runs on a merged shard's worker
// before its replica is destroyed; false skips the destruction, as a crash
// there would (nil: none).
func SetMergeRightHook(f func(e *Engine, shardID uint64) bool) {
	if f == nil {
		mergeRightHook.Store(nil)
		return
	}
	mergeRightHook.Store(&f)
}

// TestingSyncWAL makes every write so far durable, as a later synced
// batch would.
func (e *Engine) TestingSyncWAL() error { return e.store.DB().LogData(nil, pebble.Sync) }

// TestingRejectedCampaign makes shardID's replica act as if it had just
// rejected a stale candidate's pre-vote.
func (e *Engine) TestingRejectedCampaign(ctx context.Context, shardID uint64) error {
	_, err := call(ctx, e, shardID, func(w *worker) (struct{}, error) {
		r := w.shards[shardID]
		if r == nil {
			return struct{}{}, ErrShardNotFound
		}
		w.rejectedCampaign(r)
		return struct{}{}, nil
	})
	return err
}

// TestingForgetLeader makes shardID's replica forget its leader, as a
// replica does whose leader was suspected down.
func (e *Engine) TestingForgetLeader(ctx context.Context, shardID uint64) error {
	_, err := call(ctx, e, shardID, func(w *worker) (struct{}, error) {
		r := w.shards[shardID]
		if r == nil {
			return struct{}{}, ErrShardNotFound
		}
		w.wake(r)
		err := r.g.RN.ForgetLeader()
		w.markDirty(r)
		return struct{}{}, err
	})
	return err
}

// TestingPeers returns the nodes this engine tracks for liveness.
func (e *Engine) TestingPeers() []uint64 {
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	var out []uint64
	for id := range e.live.heard {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// TestingProposeRawConfChange proposes cc on shardID's leader as is,
// without the engine's checks, and waits for its outcome: what a replayed
// or hand-made conf change does when it applies.
func (e *Engine) TestingProposeRawConfChange(ctx context.Context, shardID uint64, cc raftpb.ConfChangeV2) error {
	p := &group.Proposal{ID: e.nextID(), Done: make(chan group.Result, 1)}
	cc.Context = group.ConfChangeContext(p.ID, encodeAdded(nil))
	if _, err := call(ctx, e, shardID, func(w *worker) (struct{}, error) {
		r := w.shards[shardID]
		if r == nil {
			return struct{}{}, ErrShardNotFound
		}
		w.wake(r)
		applied, _ := r.log.Applied()
		if err := r.g.ProposeConfChange(p, cc, applied, r.log.ConfState()); err != nil {
			return struct{}{}, err
		}
		w.markDirty(r)
		return struct{}{}, nil
	}); err != nil {
		return err
	}
	_, err := e.wait(ctx, shardID, p.Done)
	return err
}

// TestingIsDown reports whether this engine suspects node down.
func (e *Engine) TestingIsDown(node uint64) bool { return e.PeerSuspected(node) }

// ProposeSessionExpiry proposes the expiry of shardID's client sessions last
// used before cutoff, as a leader's sweep does (session.go), and waits for
// it to apply.
func (e *Engine) ProposeSessionExpiry(ctx context.Context, shardID uint64, cutoff time.Time) error {
	_, err := e.propose(ctx, shardID, expireCommand(cutoff.UnixNano()))
	return err
}

// TestingHeard reports whether this engine has heard from every node of
// peers within the last tick (the per-tick coalesced message arrived).
func (e *Engine) TestingHeard(peers []uint64) bool {
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	for _, p := range peers {
		if p == e.cfg.NodeID {
			continue
		}
		// A peer suspected down (its frames dropped for a while) counts as
		// heard: waiting for it would wait for ticks that never come.
		if _, down := e.live.down[p]; down {
			continue
		}
		if at, ok := e.live.heard[p]; !ok || at+1 < e.live.now {
			return false
		}
	}
	return true
}

// TestingNow returns the ticks this engine's liveness clock has taken.
func (e *Engine) TestingNow() uint64 {
	e.live.mu.Lock()
	defer e.live.mu.Unlock()
	return e.live.now
}

// SetLeaseGuards turns the lease's guards on or off (lease.go): the vote
// gate and the end of the lease at a transfer. It returns a function that
// restores them.
func SetLeaseGuards(votes, transfer bool) (restore func()) {
	var g int32
	if votes {
		g |= guardVotes
	}
	if transfer {
		g |= guardTransfer
	}
	old := leaseGuards.Swap(g)
	return func() { leaseGuards.Store(old) }
}

// TestingLeaseHeld reports whether shardID's replica here holds a lease
// now (lease clock).
func (e *Engine) TestingLeaseHeld(ctx context.Context, shardID uint64) (bool, error) {
	return call(ctx, e, shardID, func(w *worker) (bool, error) {
		r := w.shards[shardID]
		if r == nil {
			return false, ErrShardNotFound
		}
		expiry, ok := r.g.LeaseExpiry(e.leaseNanos())
		return ok && e.leaseNow() < expiry, nil
	})
}

// TestingBlockWorker blocks the worker of shardID until release is called
// (it waits for the worker to be blocked before it returns).
func (e *Engine) TestingBlockWorker(shardID uint64) (release func()) {
	blocked, done := make(chan struct{}), make(chan struct{})
	e.workerFor(shardID).enqueueFn(func() {
		close(blocked)
		<-done
	})
	<-blocked
	return func() { close(done) }
}

// TestingInbox reports what waits in the inbox of shardID's worker: the
// heartbeat responses (coalesced beats) for shardID, and the ticks.
func (e *Engine) TestingInbox(shardID uint64) (resps, ticks int) {
	w := e.workerFor(shardID)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.mu.in.beats {
		if b.beat.ShardID == shardID && b.beat.Resp {
			resps++
		}
	}
	return resps, w.mu.in.ticks
}
