package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/flotilla-db/flotilla/storage"
)

// Splits (see storage/split.go for what is written where).
//
// Split proposes a split command on the parent's leader. Every replica
// applies it at the same log position, against the descriptor it has
// applied there, so every replica decides alike: a split whose expected
// generation, point or configuration no longer holds fails at apply with
// the same error everywhere and changes nothing. A split that applies
// narrows the parent's descriptor (generation + 1), copies its client
// sessions to the child and records a split marker, all in the pass's
// batch. Once that batch is visible, the parent's claim on the child's
// range is given up and the child's worker creates the child's replica
// (createFromSplit): its data is in place, its raft state starts at the
// bootstrap index with the parent's configuration and replica IDs, and the
// parent's leader campaigns at once. Until the claim is given up, no
// snapshot of the child can be ingested here (its range overlaps the
// parent's): a snapshot must not land under writes of the parent that are
// still on their way into the store.
//
// The races of a split:
//   - the child's leader reaches a replica whose parent has not applied the
//     split: its messages create an uninitialized replica of the child
//     (which may vote), its snapshot is refused (the parent still claims
//     the range); when the parent applies the split, the uninitialized
//     replica is bootstrapped in place and keeps its term and vote;
//   - that replica was meanwhile removed from the child (a tombstone) or
//     added back under a newer replica ID: the split does not create it,
//     and the child's data on this node goes, unless a replica of the
//     child already holds it;
//   - a crash between the parent's batch and the child's creation leaves
//     the marker, which the engine finishes at its next start.

// cmdSplit is the split command: 0xF4 generation u64, at u64, childID u64.
const (
	cmdSplit     = 0xF4
	splitCmdSize = 1 + 3*8
)

// SplitRequest asks for a split of a shard's range.
type SplitRequest struct {
	ShardID uint64
	// Generation is the parent's generation the split was planned against:
	// if the parent's range changed since, the split fails with a
	// *StaleGenerationError.
	Generation uint64
	// At is the first hash of the child's range: the parent keeps [Start,
	// At-1], the child gets [At, Last]. Start < At <= Last.
	At uint64
	// ChildID is the new shard's ID: never used by any shard of the
	// cluster before (the meta shard hands them out), not a system shard's.
	ChildID uint64
}

// SplitResult is a split as it applied: the parent's and the child's new
// descriptors.
type SplitResult struct {
	Parent, Child storage.Descriptor
}

// StaleGenerationError is returned for a request planned against another
// generation of a shard's range than the one it has now: the range changed
// (a split or a merge), and the request must be planned again against
// Start, Last and Generation, the shard's range now.
type StaleGenerationError struct {
	ShardID              uint64
	Expected, Generation uint64
	Start, Last          uint64
}

func (e *StaleGenerationError) Error() string {
	return fmt.Sprintf("engine: shard %d is at generation %d [%016x, %016x], not %d", e.ShardID, e.Generation, e.Start, e.Last, e.Expected)
}

// Is makes errors.Is(err, ErrStaleGeneration) true.
func (e *StaleGenerationError) Is(target error) bool { return target == ErrStaleGeneration }

// Split splits req.ShardID's range in two on its leader (this node must
// lead it: otherwise a *NotLeaderError) and returns the two descriptors
// once the split has applied here; the child's replica on this node exists
// and campaigns by then. Errors: ErrBadRequest (a point outside the range,
// a system shard, a child ID in use here, a joint configuration), a
// *StaleGenerationError, ErrShardNotFound, and the errors of Propose (an
// ambiguous outcome: look at the shard's generation).
func (e *Engine) Split(ctx context.Context, req SplitRequest) (SplitResult, error) {
	desc, err := call(ctx, e, req.ShardID, func(w *worker) (storage.Descriptor, error) {
		r := w.shards[req.ShardID]
		if r == nil {
			return storage.Descriptor{}, fmt.Errorf("%w: shard %d", ErrShardNotFound, req.ShardID)
		}
		if !r.g.IsLeader() {
			return storage.Descriptor{}, &NotLeaderError{ShardID: req.ShardID, Leader: r.g.LeaderNode(), Term: r.term()}
		}
		d, _ := r.log.Descriptor()
		return d, checkSplit(d, req)
	})
	if err != nil {
		return SplitResult{}, err
	}
	if _, exists := e.claimed(req.ChildID); exists {
		return SplitResult{}, fmt.Errorf("%w: shard %d exists on this node: the child needs a new shard ID", ErrBadRequest, req.ChildID)
	}
	res, err := e.propose(ctx, desc.ShardID, encodeSplit(req))
	if err != nil {
		return SplitResult{}, err
	}
	out, err := decodeSplitResult(res)
	if err != nil {
		return SplitResult{}, err
	}
	// The child's replica here is created by its worker once the split's
	// batch is visible: wait for it, so that the caller can use it.
	_, err = call(ctx, e, req.ChildID, func(w *worker) (struct{}, error) { return struct{}{}, nil })
	return out, err
}

// checkSplit checks req against the parent's descriptor d; at apply, the
// same check on every replica decides alike.
func checkSplit(d storage.Descriptor, req SplitRequest) error {
	switch {
	case storage.IsSystemShard(d.ShardID):
		return fmt.Errorf("%w: shard %d is a system shard: it has no range to split", ErrBadRequest, d.ShardID)
	case req.ChildID == 0 || storage.IsSystemShard(req.ChildID) || req.ChildID == d.ShardID:
		return fmt.Errorf("%w: child shard ID %d: must be a new user shard ID", ErrBadRequest, req.ChildID)
	case d.Frozen():
		return &ShardMergingError{ShardID: d.ShardID, Into: d.MergeInto}
	case req.Generation != d.Generation:
		return &StaleGenerationError{ShardID: d.ShardID, Expected: req.Generation, Generation: d.Generation, Start: d.Start, Last: d.Last}
	case req.At <= d.Start || req.At > d.Last:
		return fmt.Errorf("%w: split point %016x is not inside shard %d's range (%016x, %016x]", ErrOutOfRange, req.At, d.ShardID, d.Start, d.Last)
	}
	for _, r := range d.Replicas {
		if r.Role != storage.RoleVoter && r.Role != storage.RoleLearner {
			return fmt.Errorf("%w: shard %d's configuration is joint (%v): leave it before splitting", ErrJointConfig, d.ShardID, d)
		}
	}
	return nil
}

func encodeSplit(req SplitRequest) []byte {
	b := make([]byte, 1, splitCmdSize)
	b[0] = cmdSplit
	b = binary.BigEndian.AppendUint64(b, req.Generation)
	b = binary.BigEndian.AppendUint64(b, req.At)
	return binary.BigEndian.AppendUint64(b, req.ChildID)
}

func decodeSplit(shardID uint64, cmd []byte) (SplitRequest, error) {
	if len(cmd) != splitCmdSize || cmd[0] != cmdSplit {
		return SplitRequest{}, fmt.Errorf("%w: split command of %d bytes", ErrBadRequest, len(cmd))
	}
	return SplitRequest{ShardID: shardID, Generation: binary.BigEndian.Uint64(cmd[1:]),
		At: binary.BigEndian.Uint64(cmd[9:]), ChildID: binary.BigEndian.Uint64(cmd[17:])}, nil
}

// splitDescs returns the parent's and the child's descriptors after a split
// of d by req (checked).
func splitDescs(d storage.Descriptor, req SplitRequest) (parent, child storage.Descriptor) {
	parent, child = d.Clone(), d.Clone()
	parent.Last, parent.Generation = req.At-1, d.Generation+1
	child.ShardID, child.Start, child.Generation = req.ChildID, req.At, d.Generation+1
	// The child's configuration starts at its bootstrap index.
	child.ConfIndex = 0
	return parent, child
}

func encodeSplitResult(res SplitResult) []byte {
	p, c := res.Parent.Marshal(), res.Child.Marshal()
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(p)+len(c)), uint32(len(p)))
	return append(append(b, p...), c...)
}

func decodeSplitResult(b []byte) (SplitResult, error) {
	if len(b) < 4 || uint64(len(b)-4) < uint64(binary.BigEndian.Uint32(b)) {
		return SplitResult{}, fmt.Errorf("engine: split result of %d bytes", len(b))
	}
	n := 4 + int(binary.BigEndian.Uint32(b))
	p, err := storage.UnmarshalDescriptor(b[4:n])
	if err != nil {
		return SplitResult{}, err
	}
	c, err := storage.UnmarshalDescriptor(b[n:])
	return SplitResult{Parent: p, Child: c}, err
}

// splitChildHook, when set (by tests only), runs before a child's creation;
// false skips it, as a crash would.
var splitChildHook atomic.Pointer[func(e *Engine, childID uint64) bool]

// pendingSplit is a split applied in this pass, whose child is created
// once the pass's batch is visible.
type pendingSplit struct {
	parent, child storage.Descriptor
	campaign      bool // this node leads the parent
}

// applySplit applies a split command of r at its log position.
func (w *worker) applySplit(r *replica, ctx *ApplyContext, cmd []byte) ([]byte, error) {
	req, err := decodeSplit(r.shardID, cmd)
	if err != nil {
		return nil, err
	}
	d, _ := r.log.Descriptor()
	if err := checkSplit(d, req); err != nil {
		return nil, err
	}
	parent, child := splitDescs(d, req)
	if _, err := storage.CopySessions(ctx.b, ctx.b, d.ShardID, child.ShardID); err != nil {
		panic(fmt.Sprintf("engine: node %d: copy the sessions of shard %d to its child %d: %v", w.e.cfg.NodeID, d.ShardID, child.ShardID, err))
	}
	r.setDescriptor(w.batch, parent)
	storage.SetSplitMarker(w.batch, child)
	ctx.Desc = parent
	w.descChanged(r)
	w.splits = append(w.splits, pendingSplit{parent: parent, child: child, campaign: r.g.IsLeader()})
	w.rangeOrder = append(w.rangeOrder, true)
	w.e.cfg.Logger.Info("shard split", "shard", d.ShardID, "child", child.ShardID, "at", fmt.Sprintf("%016x", req.At),
		"generation", parent.Generation, "leader", r.g.IsLeader())
	return encodeSplitResult(SplitResult{Parent: parent, Child: child}), nil
}

// dispatchSplit hands the child of a split of this pass to its worker;
// the pass's batch is visible (applied, maybe not yet synced: the child's
// own synced write comes after it in the log, so it syncs both). False:
// the engine is closing (the marker finishes the split at the next start).
func (w *worker) dispatchSplit(s pendingSplit) bool {
	if err := w.e.claimRange(s.parent); err != nil {
		// Narrowing cannot overlap what did not overlap before: another
		// replica here claims part of the parent's range already, which
		// the claims' invariant rules out (see claimRange). The claim
		// stays as it was; the child is still created if its range is
		// free.
		w.e.cfg.Logger.Error("split: narrowing the parent's claim", "shard", s.parent.ShardID, "err", err)
	}
	cw := w.e.workerFor(s.child.ShardID)
	return cw.enqueueFn(func() { cw.createFromSplit(s.child, s.campaign) })
}

// createFromSplit creates this node's replica of child, which a split of
// its parent applied here left to create (see the top of this file), and
// campaigns for it if campaign.
func (w *worker) createFromSplit(child storage.Descriptor, campaign bool) {
	if hook := splitChildHook.Load(); hook != nil && !(*hook)(w.e, child.ShardID) {
		return // a test crashes the node here
	}
	id := child.ShardID
	log := w.e.cfg.Logger.With("shard", id, "parent_generation", child.Generation-1)
	self, ok := child.ReplicaOfNode(w.e.cfg.NodeID)
	old := w.shards[id]
	next, tombstoned := w.tombstones[id]
	var why string
	switch {
	case !ok:
		why = "this node is not in the child's configuration"
	case old != nil && old.log.Initialized():
		// A snapshot of the child came first: it holds the data.
		log.Info("split: the child's replica exists already", "replica", old.replicaID)
		w.dropSplitMarker(child, false)
		return
	case tombstoned && self.ReplicaID < next:
		why = fmt.Sprintf("replica %d was removed from the child since (tombstone: IDs below %d)", self.ReplicaID, next)
	case old != nil && old.replicaID != self.ReplicaID:
		why = fmt.Sprintf("the child's replica here is replica %d now, not %d", old.replicaID, self.ReplicaID)
	}
	if why != "" {
		log.Info("split: the child's replica here is not created; its data goes", "why", why)
		w.dropSplitMarker(child, true)
		return
	}
	if err := w.e.claimRange(child); err != nil {
		// Another replica here still claims part of the range (one that
		// should not: a bug). The child is not created from the split; its
		// leader creates it here by its messages and a snapshot instead.
		log.Error("split: the child's range is claimed here", "err", err)
		w.dropSplitMarker(child, false)
		return
	}
	l, err := w.e.store.CreateSplitChild(child, self.ReplicaID)
	if err != nil {
		panic(fmt.Sprintf("engine: node %d: create split child %d: %v", w.e.cfg.NodeID, id, err))
	}
	if old != nil {
		// The uninitialized replica made by the child's leader's messages:
		// bootstrapped in place (its term and vote kept), reopened.
		old.g.FailAll(ErrShardRemoved)
		w.abortStaged(old)
	}
	r, err := w.open(l)
	if err != nil {
		panic(fmt.Sprintf("engine: node %d: open split child %d: %v", w.e.cfg.NodeID, id, err))
	}
	if old == nil {
		r.heardAt = never // the child's first replica here: no leader acknowledged
	} else {
		r.heardAt = max(r.heardAt, old.heardAt)
	}
	if campaign && !w.voteHeld(r) {
		_ = r.g.RN.Campaign()
	}
	w.descChanged(r)
	w.markDirty(r)
}

// dropSplitMarker deletes child's split marker (and its data, if
// clearData and no replica of the child here owns it).
func (w *worker) dropSplitMarker(child storage.Descriptor, clearData bool) {
	if err := w.e.store.DropSplitMarker(child, clearData); err != nil && !errors.Is(err, ErrClosed) {
		panic(fmt.Sprintf("engine: node %d: drop split marker of shard %d: %v", w.e.cfg.NodeID, child.ShardID, err))
	}
}

// finishSplits creates the children that splits applied before a crash
// left pending (before the workers run).
func (e *Engine) finishSplits() error {
	children, err := e.store.SplitMarkers()
	if err != nil {
		return err
	}
	for _, c := range children {
		e.cfg.Logger.Info("split: finishing the creation of a child after a restart", "shard", c.ShardID)
		e.workerFor(c.ShardID).createFromSplit(c, false)
	}
	return nil
}
