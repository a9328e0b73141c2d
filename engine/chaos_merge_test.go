package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/storage"
)

// The merge half of the split nemesis: it merges adjacent shards whose
// replicas are on the same nodes, running the protocol of engine/merge.go
// as a coordinator would (freeze the right shard, wait until every one of
// its replicas has frozen durably, merge on the left shard's leader), and
// now and then crashes the left shard's leader just after it proposed the
// merge. A merge left half done (a frozen right shard whose left neighbour
// does not cover it) is finished or abandoned by resolve, at every step and
// once the nemesis stops, as the node's recovery loop would.

// maybeMerge merges a random adjacent pair of the ring, if there is one
// whose replicas are on the same nodes.
func (m *splitNemesis) maybeMerge(ctx context.Context, ring []storage.Descriptor) {
	if len(ring) < 2 {
		return
	}
	i := m.rng.IntN(len(ring) - 1)
	l, r := m.leaderDesc(ctx, ring[i].ShardID), m.leaderDesc(ctx, ring[i+1].ShardID)
	if l == nil || r == nil {
		m.count("merge: no leader")
		return
	}
	if l.Last+1 != r.Start || !sameNodeSet(*l, *r) || r.Frozen() || l.Frozen() {
		m.count("merge: not mergeable now")
		return
	}
	var frozen storage.Descriptor
	err := m.onLeader(ctx, r.ShardID, func(e *engine.Engine) (err error) {
		frozen, err = e.FreezeForMerge(ctx, engine.FreezeRequest{Right: r.ShardID, RightGeneration: r.Generation, Left: l.ShardID, LeftGeneration: l.Generation})
		return err
	})
	if err != nil {
		m.count("merge: freeze " + splitOutcome(err))
		return // a freeze of unknown outcome is resolved later
	}
	m.finishMerge(ctx, *l, frozen, true)
}

// finishMerge runs the rest of a merge of frozen into l: every replica of
// frozen waits until it has frozen; then the merge on l's leader (crashing
// it just after the proposal now and then if mayCrash). A merge that
// cannot go on is abandoned.
func (m *splitNemesis) finishMerge(ctx context.Context, l, frozen storage.Descriptor, mayCrash bool) {
	for _, rep := range frozen.Replicas {
		e := m.c.Engine(rep.NodeID)
		if e == nil {
			m.count("merge: a node of the right shard is down (resolved later)")
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err := e.WaitFrozen(wctx, frozen.ShardID, frozen.Generation)
		cancel()
		if err != nil {
			m.count("merge: wait frozen " + splitOutcome(err) + " (resolved later)")
			return
		}
	}
	req := engine.MergeRequest{Left: l.ShardID, LeftGeneration: l.Generation, Right: frozen.ShardID, RightGeneration: frozen.Generation}
	leader := m.c.Leader(ctx, l.ShardID)
	e := m.c.Engine(leader)
	if e == nil {
		m.count("merge: no left leader (resolved later)")
		return
	}
	if mayCrash && m.rng.IntN(4) == 0 && m.down.take(downBySplits) {
		done := make(chan error, 1)
		go func() { _, err := e.Merge(ctx, req); done <- err }()
		if !sleepCtx(ctx, time.Duration(m.rng.IntN(3000))*time.Microsecond) {
			return
		}
		m.c.Crash(leader)
		m.crashed = leader
		m.count("crash of the left leader mid-merge: " + splitOutcome(<-done))
		return
	}
	mctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := e.Merge(mctx, req)
	cancel()
	m.count("merge: " + splitOutcome(err))
	if err != nil && (errors.Is(err, engine.ErrBadRequest) || errors.Is(err, engine.ErrStaleGeneration)) {
		m.abandon(ctx, l, frozen)
	}
}

// resolve finishes or abandons every merge left half done: a frozen right
// shard whose left neighbour (as its leader has it) does not cover it; one
// whose left neighbour is gone (merged away itself) is thawed. Then it
// collects the replicas of shards merged away that nothing needs, and
// those removed from their shards while cut off.
func (m *splitNemesis) resolve(ctx context.Context) {
	m.rt.refresh(ctx)
	held := m.held(ctx)
	for _, d := range m.rt.descs() {
		if !d.Frozen() {
			continue
		}
		r := m.leaderDesc(ctx, d.ShardID)
		l := m.leaderDesc(ctx, d.MergeInto)
		switch {
		case r != nil && m.leftGone(held, *r):
			// The left shard merged into its own left neighbour before this
			// merge applied: it never will.
			m.count("resolve: the left shard is gone")
			m.unfreeze(ctx, *r)
		case r == nil || l == nil:
			m.count("resolve: no leader")
		case l.Last >= r.Last:
			// Merged: the right shard's replicas go as the left one applies.
		case l.Generation != r.MergeIntoGeneration:
			// The left shard moved on: the merge can never apply.
			m.unfreeze(ctx, *r)
		default:
			if m.rng.IntN(2) == 0 {
				m.count("resolve: finish")
				m.finishMerge(ctx, *l, *r, false)
			} else {
				m.abandon(ctx, *l, *r)
			}
		}
	}
	m.collectMergedAway(ctx, held)
	m.collectRemoved(ctx, held)
}

// collectRemoved destroys the replicas that their shards removed while
// they could not hear of it (Engine.DestroyStaleReplica on the word of the
// leader's descriptor), as the nodes' stale-replica loops do by the meta
// shard's records: one that also missed a split of its shard claims the
// child's range on its node and would keep the child's snapshot out.
func (m *splitNemesis) collectRemoved(ctx context.Context, held []heldReplica) {
	leaders := map[uint64]*storage.Descriptor{}
	for _, h := range held {
		id := h.desc.ShardID
		l, ok := leaders[id]
		if !ok {
			l = m.leaderDesc(ctx, id)
			leaders[id] = l
		}
		if l == nil || h.replica >= l.NextReplicaID {
			continue
		}
		if _, member := l.Replica(h.replica); member {
			continue
		}
		e := m.c.Engine(h.node)
		if e == nil {
			continue
		}
		if err := e.DestroyStaleReplica(ctx, id, h.replica, l.NextReplicaID); err == nil {
			m.count("collect a replica removed while cut off: done")
		} else {
			m.count("collect a replica removed while cut off: " + splitOutcome(err))
		}
	}
}

// heldReplica is a node's initialized replica of a user shard.
type heldReplica struct {
	node, replica uint64
	desc          storage.Descriptor
}

// held returns every initialized replica of a user shard on the running
// nodes, and notes each shard's first hash (it never changes).
func (m *splitNemesis) held(ctx context.Context) []heldReplica {
	var out []heldReplica
	m.c.EachStatus(ctx, func(node uint64, st engine.ShardStatus) {
		if st.Initialized && !storage.IsSystemShard(st.ShardID) {
			out = append(out, heldReplica{node: node, replica: st.ReplicaID, desc: st.Desc})
		}
	})
	m.mu.Lock()
	for _, h := range out {
		m.starts[h.desc.ShardID] = h.desc.Start
	}
	m.mu.Unlock()
	return out
}

// gone reports whether shard, whose first hash is start, was merged away,
// as the meta shard's tombstones tell the nodes: another shard's replica
// covers start at a generation above gen, one that shard had. A shard's
// first hash is its own for its whole life, and the generation of the
// shard covering a hash only grows (a split or a merge makes it one above
// the shards it came from): a later shard that covers it means this one
// is no more.
func gone(held []heldReplica, shard, start, gen uint64) bool {
	return slices.ContainsFunc(held, func(h heldReplica) bool {
		return h.desc.ShardID != shard && h.desc.Contains(start) && h.desc.Generation > gen
	})
}

// leftGone reports whether the left shard that frozen was frozen into is
// gone.
func (m *splitNemesis) leftGone(held []heldReplica, frozen storage.Descriptor) bool {
	m.mu.Lock()
	start, ok := m.starts[frozen.MergeInto]
	m.mu.Unlock()
	return ok && gone(held, frozen.MergeInto, start, frozen.MergeIntoGeneration)
}

// collectMergedAway destroys the replicas of shards merged away that no
// replica here needs (Engine.DestroyMergedAway), as the nodes' stale
// replica loops do by the meta shard's tombstones: one left behind by a
// node whose replica of the left shard skipped the merge by a snapshot
// that did not cover it (the left shard split again since) would keep the
// snapshots of the shards holding its range now off that node.
func (m *splitNemesis) collectMergedAway(ctx context.Context, held []heldReplica) {
	for _, h := range held {
		e := m.c.Engine(h.node)
		if e == nil || !gone(held, h.desc.ShardID, h.desc.Start, h.desc.Generation) {
			continue
		}
		// The left shard as its leader has it: the authority for a frozen
		// replica whose left shard has no replica on its node.
		var left storage.Descriptor
		if h.desc.Frozen() {
			if l := m.leaderDesc(ctx, h.desc.MergeInto); l != nil {
				left = *l
			}
		}
		err := e.DestroyMergedAway(ctx, h.desc.ShardID, h.replica, left)
		switch {
		case err == nil:
			m.count("collect a replica of a shard merged away: done")
		case errors.Is(err, engine.ErrBadRequest):
			m.count("collect a replica of a shard merged away: still needed")
		default:
			m.count("collect a replica of a shard merged away: " + splitOutcome(err))
		}
	}
}

// abandon gives up the merge of frozen into l: l's generation first, so
// that a merge command still in flight fails, then frozen thaws.
func (m *splitNemesis) abandon(ctx context.Context, l, frozen storage.Descriptor) {
	err := m.onLeader(ctx, l.ShardID, func(e *engine.Engine) error {
		_, err := e.BumpGeneration(ctx, l.ShardID, l.Generation)
		return err
	})
	if err != nil {
		m.count("abandon: bump " + splitOutcome(err))
		return
	}
	m.count("abandon")
	m.unfreeze(ctx, frozen)
}

func (m *splitNemesis) unfreeze(ctx context.Context, frozen storage.Descriptor) {
	err := m.onLeader(ctx, frozen.ShardID, func(e *engine.Engine) error {
		_, err := e.Unfreeze(ctx, frozen.ShardID, frozen.Generation)
		return err
	})
	m.count("unfreeze: " + splitOutcome(err))
}

// leaderDesc returns shard's descriptor as its leader has it (nil if it
// has none now).
func (m *splitNemesis) leaderDesc(ctx context.Context, shard uint64) *storage.Descriptor {
	e := m.c.Engine(m.c.Leader(ctx, shard))
	if e == nil {
		return nil
	}
	st, err := e.Status(ctx, shard)
	if err != nil || st.State != "StateLeader" {
		return nil
	}
	return &st.Desc
}

// onLeader runs fn on shard's leader, bounded by a second.
func (m *splitNemesis) onLeader(ctx context.Context, shard uint64, fn func(e *engine.Engine) error) error {
	e := m.c.Engine(m.c.Leader(ctx, shard))
	if e == nil {
		return fmt.Errorf("%w: shard %d has no leader", engine.ErrShardNotFound, shard)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return fn(e)
}

// sameNodeSet reports whether a's and b's replicas are on the same nodes,
// in the same roles.
func sameNodeSet(a, b storage.Descriptor) bool {
	if len(a.Replicas) != len(b.Replicas) {
		return false
	}
	for _, r := range a.Replicas {
		if o, ok := b.ReplicaOfNode(r.NodeID); !ok || o.Role != r.Role {
			return false
		}
	}
	return true
}
