package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/storage"
)

// Merges: two adjacent shards with replicas on the same nodes become one,
// the left one (L) taking the right one's (R) range. No data moves: user
// data is ordered by hash, and every node that holds a replica of L holds
// one of R. The protocol, which the caller (the node, on behalf of an
// operator or the placement driver) runs:
//
//  1. Freeze R (FreezeForMerge, on R's leader): a command that every
//     replica of R applies at the same log position; from there on R
//     applies nothing (every later command fails with a
//     *ShardMergingError, without touching its state; conf changes and
//     splits are refused), serves no linearizable read, and its
//     descriptor says which L, at which generation, it is frozen for.
//  2. Wait until every replica of R has applied the freeze durably
//     (WaitFrozen, on each of R's nodes): from then on each node holds R's
//     final state, and keeps it across a crash.
//  3. Merge (Merge, on L's leader): a command on L that every replica of L
//     applies alike: it checks L's generation and that L's replicas are
//     on R's nodes (the command carries them), widens L's range over R's
//     (generation max(L, R) + 1), and folds R's client sessions into L's;
//     once that batch is visible, the node's replica of R is destroyed
//     without its data, which now is L's. A crash in between is finished
//     at the next start from a merge marker.
//  4. Abandoning a merge: bump L's generation (BumpGeneration), so that a
//     merge command planned against it fails wherever it applies, then
//     unfreeze R (Unfreeze). Never unfreeze R while a merge command may
//     still apply to L.
//
// A replica of L that applies the merge while its node's replica of R has
// not applied the freeze yet (a caller that skipped step 2, or a crash
// that lost the end of what R applied, which R then applies again from its
// log) holds its committed entries from the merge on (hold), and applies
// them once R's replica here is frozen: on every tick, it looks again.

// Engine commands of merges: cmdFreeze rightGen, leftID, leftGen;
// cmdUnfreeze gen; cmdMerge leftGen, rightID, rightGen, then R's replicas
// (node ID, role) as uvarints; cmdBump gen. Integers are u64 big-endian
// unless said otherwise.
const (
	cmdFreeze   = 0xF5
	cmdUnfreeze = 0xF6
	cmdMerge    = 0xF7
	cmdBump     = 0xF8
)

// ShardMergingError is returned by a shard frozen for a merge into its
// left neighbour Into: retry once the merge completed (the key is Into's)
// or was abandoned.
type ShardMergingError struct {
	ShardID, Into uint64
}

func (e *ShardMergingError) Error() string {
	return fmt.Sprintf("engine: shard %d is frozen for a merge into shard %d", e.ShardID, e.Into)
}

// Is makes errors.Is(err, ErrShardMerging) true.
func (e *ShardMergingError) Is(target error) bool { return target == ErrShardMerging }

// FreezeRequest asks a shard (Right) to freeze for a merge into its left
// neighbour (Left), both at the generations the merge was planned against.
type FreezeRequest struct {
	Right, RightGeneration uint64
	Left, LeftGeneration   uint64
}

// MergeRequest asks Left to take over Right's range; RightGeneration is
// Right's frozen generation (FreezeForMerge's result).
type MergeRequest struct {
	Left, LeftGeneration   uint64
	Right, RightGeneration uint64
}

// FreezeForMerge freezes req.Right on its leader (this node must lead it)
// and returns its frozen descriptor. Freezing a shard frozen already for
// the same merge returns its descriptor. Errors: ErrBadRequest (a joint
// configuration, a system shard, frozen for another merge), a
// *StaleGenerationError, and those of Propose.
func (e *Engine) FreezeForMerge(ctx context.Context, req FreezeRequest) (storage.Descriptor, error) {
	if req.Left == 0 || req.Left == req.Right || storage.IsSystemShard(req.Left) || storage.IsSystemShard(req.Right) {
		return storage.Descriptor{}, fmt.Errorf("%w: merge of shard %d into shard %d", ErrBadRequest, req.Right, req.Left)
	}
	cmd := binary.BigEndian.AppendUint64([]byte{cmdFreeze}, req.RightGeneration)
	cmd = binary.BigEndian.AppendUint64(cmd, req.Left)
	cmd = binary.BigEndian.AppendUint64(cmd, req.LeftGeneration)
	return e.proposeDesc(ctx, req.Right, cmd)
}

// Unfreeze thaws shardID, frozen at generation (its generation goes up by
// one), on its leader. Only once the merge it was frozen for can no longer
// apply (see the top of this file).
func (e *Engine) Unfreeze(ctx context.Context, shardID, generation uint64) (storage.Descriptor, error) {
	return e.proposeDesc(ctx, shardID, binary.BigEndian.AppendUint64([]byte{cmdUnfreeze}, generation))
}

// BumpGeneration raises shardID's generation by one, if it is generation,
// on its leader: a split or merge planned against the old one fails.
func (e *Engine) BumpGeneration(ctx context.Context, shardID, generation uint64) (storage.Descriptor, error) {
	return e.proposeDesc(ctx, shardID, binary.BigEndian.AppendUint64([]byte{cmdBump}, generation))
}

// Merge folds req.Right (frozen by FreezeForMerge and, on every one of its
// nodes, WaitFrozen) into req.Left, on Left's leader, and returns Left's
// new descriptor once the merge applied here. Errors: ErrBadRequest (not
// adjacent, replicas on other nodes, a joint or frozen Left), a
// *StaleGenerationError, and those of Propose.
func (e *Engine) Merge(ctx context.Context, req MergeRequest) (storage.Descriptor, error) {
	// The right shard's replica here as it applied it (the descriptor it
	// claims), not read from the store: the engine may be closing.
	rd, ok := e.claimed(req.Right)
	if !ok || !rd.Frozen() || rd.MergeInto != req.Left || rd.Generation != req.RightGeneration || rd.MergeIntoGeneration != req.LeftGeneration {
		return storage.Descriptor{}, fmt.Errorf("%w: shard %d is not frozen here for a merge into shard %d at generation %d (descriptor %v)",
			ErrNotFrozen, req.Right, req.Left, req.LeftGeneration, rd)
	}
	cmd := binary.BigEndian.AppendUint64([]byte{cmdMerge}, req.LeftGeneration)
	cmd = binary.BigEndian.AppendUint64(cmd, req.Right)
	cmd = binary.BigEndian.AppendUint64(cmd, req.RightGeneration)
	cmd = binary.BigEndian.AppendUint64(cmd, rd.Start)
	cmd = binary.BigEndian.AppendUint64(cmd, rd.Last)
	for _, r := range rd.Replicas {
		cmd = binary.AppendUvarint(cmd, r.NodeID)
		cmd = append(cmd, byte(r.Role))
	}
	return e.proposeDesc(ctx, req.Left, cmd)
}

// proposeDesc proposes one of the engine's range commands on shardID's
// leader and returns the descriptor it left.
func (e *Engine) proposeDesc(ctx context.Context, shardID uint64, cmd []byte) (storage.Descriptor, error) {
	if _, err := call(ctx, e, shardID, func(w *worker) (struct{}, error) {
		r := w.shards[shardID]
		if r == nil {
			return struct{}{}, fmt.Errorf("%w: shard %d", ErrShardNotFound, shardID)
		}
		if !r.g.IsLeader() {
			return struct{}{}, &NotLeaderError{ShardID: shardID, Leader: r.g.LeaderNode(), Term: r.term()}
		}
		return struct{}{}, nil
	}); err != nil {
		return storage.Descriptor{}, err
	}
	res, err := e.propose(ctx, shardID, cmd)
	if err != nil {
		return storage.Descriptor{}, err
	}
	return storage.UnmarshalDescriptor(res)
}

// WaitFrozen waits until this node's replica of shardID is frozen at
// generation, durably: applied, and synced to disk.
func (e *Engine) WaitFrozen(ctx context.Context, shardID, generation uint64) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		d, ok := e.claimed(shardID)
		switch {
		case ok && d.Frozen() && d.Generation == generation:
			// Applied; one synced write makes every earlier one durable.
			return e.Flush()
		case ok && d.Generation > generation:
			return &StaleGenerationError{ShardID: shardID, Expected: generation, Generation: d.Generation, Start: d.Start, Last: d.Last}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("engine: shard %d not frozen at generation %d here (%v): %w", shardID, generation, d, ctx.Err())
		case <-e.stop:
			return ErrClosed
		case <-t.C:
		}
	}
}

// applyRangeCommand applies a freeze, unfreeze, bump or merge command of
// r; held reports a merge that must wait for the node's replica of its
// right shard (nothing was applied).
func (w *worker) applyRangeCommand(r *replica, ctx *ApplyContext, cmd []byte) (res []byte, held bool, err error) {
	d, _ := r.log.Descriptor()
	u := func(i int) uint64 { return binary.BigEndian.Uint64(cmd[1+8*i:]) }
	if len(cmd) < 9 {
		return nil, false, fmt.Errorf("%w: range command of %d bytes", ErrBadRequest, len(cmd))
	}
	stale := func(gen uint64) error {
		return &StaleGenerationError{ShardID: d.ShardID, Expected: gen, Generation: d.Generation, Start: d.Start, Last: d.Last}
	}
	next := d.Clone()
	switch cmd[0] {
	case cmdFreeze:
		if len(cmd) != 1+3*8 {
			return nil, false, fmt.Errorf("%w: freeze command of %d bytes", ErrBadRequest, len(cmd))
		}
		gen, left, leftGen := u(0), u(1), u(2)
		switch {
		case d.Frozen() && d.MergeInto == left && d.MergeIntoGeneration == leftGen:
			return d.Marshal(), false, nil // frozen already, for this merge
		case d.Frozen():
			return nil, false, fmt.Errorf("%w: shard %d is frozen for a merge into shard %d already", ErrBadRequest, d.ShardID, d.MergeInto)
		case gen != d.Generation:
			return nil, false, stale(gen)
		case isJointDesc(d):
			return nil, false, fmt.Errorf("%w: shard %d's configuration is joint (%v)", ErrJointConfig, d.ShardID, d)
		}
		next.MergeInto, next.MergeIntoGeneration, next.Generation = left, leftGen, d.Generation+1
	case cmdUnfreeze, cmdBump:
		if len(cmd) != 9 {
			return nil, false, fmt.Errorf("%w: command of %d bytes", ErrBadRequest, len(cmd))
		}
		if gen := u(0); gen != d.Generation {
			return nil, false, stale(gen)
		}
		if cmd[0] == cmdUnfreeze && !d.Frozen() {
			return nil, false, fmt.Errorf("%w: shard %d is not frozen", ErrBadRequest, d.ShardID)
		}
		if cmd[0] == cmdBump && d.Frozen() {
			return nil, false, &ShardMergingError{ShardID: d.ShardID, Into: d.MergeInto}
		}
		next.MergeInto, next.MergeIntoGeneration, next.Generation = 0, 0, d.Generation+1
	case cmdMerge:
		return w.applyMerge(r, ctx, d, cmd)
	default:
		return nil, false, fmt.Errorf("%w: unknown engine command %#x", ErrBadRequest, cmd[0])
	}
	r.setDescriptor(w.batch, next)
	// The range is unchanged: the claim takes the frozen (or thawed)
	// descriptor at once, for Read and WaitFrozen.
	if err := w.e.claimRange(next); err != nil {
		// The range is unchanged: only a claim overlap left by another
		// replica here gets here, which the claims' invariant rules out
		// (see claimRange); logged, not a panic, should it break.
		w.e.cfg.Logger.Error("range command: claiming the shard's descriptor", "shard", d.ShardID, "err", err)
	}
	ctx.Desc = next
	w.descChanged(r)
	w.e.cfg.Logger.Info("shard range command applied", "shard", d.ShardID, "command", rangeCommandName(cmd[0]),
		"generation", next.Generation, "merge_into", next.MergeInto)
	return next.Marshal(), false, nil
}

func rangeCommandName(c byte) string {
	switch c {
	case cmdFreeze:
		return "freeze"
	case cmdUnfreeze:
		return "unfreeze"
	case cmdBump:
		return "bump generation"
	case cmdMerge:
		return "merge"
	}
	return fmt.Sprintf("%#x", c)
}

func isJointDesc(d storage.Descriptor) bool {
	return slices.ContainsFunc(d.Replicas, func(r storage.Replica) bool {
		return r.Role != storage.RoleVoter && r.Role != storage.RoleLearner
	})
}

// mergePlan is a decoded merge command.
type mergePlan struct {
	leftGen, right, rightGen, start, last uint64
	nodes                                 []storage.Replica // R's (node, role); replica IDs unset
}

func decodeMerge(cmd []byte) (mergePlan, error) {
	const fixed = 1 + 5*8
	if len(cmd) < fixed {
		return mergePlan{}, fmt.Errorf("%w: merge command of %d bytes", ErrBadRequest, len(cmd))
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(cmd[1+8*i:]) }
	m := mergePlan{leftGen: u(0), right: u(1), rightGen: u(2), start: u(3), last: u(4)}
	for rest := cmd[fixed:]; len(rest) > 0; {
		node, n := binary.Uvarint(rest)
		if n <= 0 || len(rest) < n+1 {
			return mergePlan{}, fmt.Errorf("%w: merge command: replicas", ErrBadRequest)
		}
		m.nodes = append(m.nodes, storage.Replica{NodeID: node, Role: storage.ReplicaRole(rest[n])})
		rest = rest[n+1:]
	}
	return m, nil
}

// sameNodes reports whether d's replicas are on nodes, in the same roles.
func sameNodes(d storage.Descriptor, nodes []storage.Replica) bool {
	if len(d.Replicas) != len(nodes) {
		return false
	}
	for _, n := range nodes {
		if r, ok := d.ReplicaOfNode(n.NodeID); !ok || r.Role != n.Role {
			return false
		}
	}
	return true
}

// applyMerge applies a merge command of L (r, descriptor d): the checks
// every replica of L decides alike, then, once this node's replica of R is
// frozen for it, the merge.
func (w *worker) applyMerge(r *replica, ctx *ApplyContext, d storage.Descriptor, cmd []byte) ([]byte, bool, error) {
	m, err := decodeMerge(cmd)
	if err != nil {
		return nil, false, err
	}
	switch {
	case m.leftGen != d.Generation:
		return nil, false, &StaleGenerationError{ShardID: d.ShardID, Expected: m.leftGen, Generation: d.Generation, Start: d.Start, Last: d.Last}
	case d.Frozen():
		return nil, false, &ShardMergingError{ShardID: d.ShardID, Into: d.MergeInto}
	case isJointDesc(d):
		return nil, false, fmt.Errorf("%w: shard %d's configuration is joint (%v)", ErrJointConfig, d.ShardID, d)
	case d.Last == ^uint64(0) || m.start != d.Last+1 || m.last < m.start:
		return nil, false, fmt.Errorf("%w: shard %d [%016x, %016x] and shard %d [%016x, %016x] are not adjacent", ErrNotAdjacent, d.ShardID, d.Start, d.Last, m.right, m.start, m.last)
	case !sameNodes(d, m.nodes):
		return nil, false, fmt.Errorf("%w: shard %d's replicas %v are not on shard %d's nodes %v", ErrReplicasDiffer, d.ShardID, d.Replicas, m.right, m.nodes)
	}
	// This node's replica of R, as its store has it: frozen for this merge
	// once it applied the freeze (its state final from there on).
	rl, err := w.e.store.OpenLog(m.right)
	if err != nil {
		panic(fmt.Sprintf("engine: node %d: read shard %d for a merge: %v", w.e.cfg.NodeID, m.right, err))
	}
	rd, ok := rl.Descriptor()
	if !ok || rd.Generation < m.rightGen {
		return nil, true, nil // not frozen here yet: hold
	}
	if !rd.Frozen() || rd.Generation != m.rightGen || rd.MergeInto != d.ShardID || rd.MergeIntoGeneration != m.leftGen {
		// Only a caller that broke the protocol gets here (an R thawed
		// while the merge could still apply).
		w.e.cfg.Logger.Error("merge: the right shard is not frozen for this merge on this node", "shard", d.ShardID, "right", m.right, "right_desc", rd)
		return nil, false, fmt.Errorf("%w: shard %d is not frozen for this merge on node %d (%v)", ErrNotFrozen, m.right, w.e.cfg.NodeID, rd)
	}
	next := d.Clone()
	next.Last = rd.Last
	next.Generation = max(d.Generation, rd.Generation) + 1
	if err := foldSessions(ctx, rd.ShardID, d.ShardID); err != nil {
		panic(fmt.Sprintf("engine: node %d: fold the sessions of shard %d into %d: %v", w.e.cfg.NodeID, rd.ShardID, d.ShardID, err))
	}
	r.setDescriptor(w.batch, next)
	storage.SetMergeMarker(w.batch, rd.ShardID, rd.NextReplicaID)
	ctx.Desc = next
	w.descChanged(r)
	w.merges = append(w.merges, pendingMerge{left: next, right: rd})
	w.rangeOrder = append(w.rangeOrder, false)
	w.e.cfg.Logger.Info("shards merged", "shard", d.ShardID, "right", rd.ShardID, "generation", next.Generation, "leader", r.g.IsLeader())
	return next.Marshal(), false, nil
}

// foldSessions merges R's client sessions into L's, in the apply batch: a
// session L does not have is copied; one both have gets the higher
// watermark, the later last use, and the results of both at or above the
// watermark.
func foldSessions(ctx *ApplyContext, right, left uint64) error {
	return storage.FoldSessions(ctx.b, ctx.b, right, left)
}

// mergeRightHook, when set (by tests only), runs before a merged shard's
// replica is destroyed; false skips it, as a crash would.
var mergeRightHook atomic.Pointer[func(e *Engine, shardID uint64) bool]

// pendingMerge is a merge applied in this pass whose right shard's replica
// here is destroyed once the pass's batch is visible.
type pendingMerge struct {
	left, right storage.Descriptor
}

// dispatchMerge hands L's widened range over and has R's replica here
// destroyed; the pass's batch is visible. False: the engine is closing
// (the marker finishes it at the next start).
func (w *worker) dispatchMerge(m pendingMerge) bool {
	if err := w.e.claimMerged(m.left, m.right.ShardID); err != nil {
		// Another replica here claims part of the merged range, which
		// the claims' invariant rules out (see claimRange): the left
		// shard keeps its claim until a snapshot or the next change.
		w.e.cfg.Logger.Error("merge: widening the left shard's claim", "shard", m.left.ShardID, "err", err)
	}
	rw := w.e.workerFor(m.right.ShardID)
	right := m.right
	return rw.enqueueFn(func() {
		if hook := mergeRightHook.Load(); hook != nil && !(*hook)(rw.e, right.ShardID) {
			return // a test crashes the node here
		}
		rw.destroyMerged(right.ShardID, right.MergeInto, right.NextReplicaID)
	})
}

// dispatchRangeChanges dispatches this pass's splits and merges in the
// order they applied: a shard that merged and then split in one pass
// claims its widened range, then its narrowed one, and the split's child
// finds its range free.
func (w *worker) dispatchRangeChanges() {
	si, mi := 0, 0
	for _, split := range w.rangeOrder {
		ok := true
		if split {
			ok = w.dispatchSplit(w.splits[si])
			si++
		} else {
			ok = w.dispatchMerge(w.merges[mi])
			mi++
		}
		if !ok {
			break // closing
		}
	}
	clear(w.splits)
	w.splits = w.splits[:0]
	clear(w.merges)
	w.merges = w.merges[:0]
	w.rangeOrder = w.rangeOrder[:0]
}

// destroyMerged destroys this node's replica of a shard merged into its
// left neighbour: its raft state and sessions, not its data (L's now), and
// leaves a tombstone; the merge marker goes in the same batch.
func (w *worker) destroyMerged(shardID, into, nextReplicaID uint64) {
	if r := w.shards[shardID]; r != nil {
		r.destroyed = true
		w.wake(r)
		delete(w.shards, shardID)
		delete(w.ticking, shardID)
		w.uncountLeader(r)
		// Nothing pending here applied: this replica applied the freeze, and
		// every entry after it fails.
		r.g.FailAll(&ShardMergingError{ShardID: shardID, Into: into})
		w.abortStaged(r)
		nextReplicaID = max(nextReplicaID, r.replicaID+1)
		w.commit()
	}
	// Its claim went to the left shard as the merge applied; one that a
	// snapshot of this shard made since goes with the replica.
	w.e.releaseRange(shardID)
	if err := w.e.store.DestroyMerged(shardID, nextReplicaID); err != nil && !errors.Is(err, ErrClosed) {
		panic(fmt.Sprintf("engine: node %d: destroy merged shard %d: %v", w.e.cfg.NodeID, shardID, err))
	}
	w.tombstones[shardID] = nextReplicaID
	w.leaderEvs = append(w.leaderEvs[:0], LeaderEvent{ShardID: shardID})
	w.e.publishLeaders(w.leaderEvs)
	w.leaderEvs = w.leaderEvs[:0]
}

// dropSubsumed destroys the replicas here of shards that desc, a snapshot's
// descriptor of a left shard, has merged (frozen into it, at a generation
// below the snapshot's): this node's replica of the left shard missed the
// merge, and the snapshot replaces it.
func (e *Engine) dropSubsumed(ctx context.Context, desc storage.Descriptor) error {
	e.ranges.Lock()
	var subsumed []storage.Descriptor
	for _, d := range e.ranges.byShard {
		if d.ShardID != desc.ShardID && d.Overlaps(desc) && d.Frozen() && d.MergeInto == desc.ShardID && d.MergeIntoGeneration < desc.Generation {
			subsumed = append(subsumed, d)
		}
	}
	e.ranges.Unlock()
	for _, d := range subsumed {
		e.cfg.Logger.Info("merge: a snapshot of the left shard replaces this node's replica of a merged shard", "shard", desc.ShardID, "merged", d.ShardID)
		e.releaseRange(d.ShardID)
		if _, err := call(ctx, e, d.ShardID, func(w *worker) (struct{}, error) {
			w.destroyMerged(d.ShardID, d.MergeInto, d.NextReplicaID)
			return struct{}{}, nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// hold: a replica of L whose merge waits for this node's replica of R
// holds its committed entries from the merge on; they are in its log (not
// truncated: they are not applied), and are applied from there, in order,
// once the merge can apply (tryHeld, every tick).

// heldWarnEvery is how often a replica holding entries for a merge says
// so.
const heldWarnEvery = time.Minute

// holdFrom records that r's committed entries from index on are held.
func (w *worker) holdFrom(r *replica, index, last uint64) {
	if r.heldFrom == 0 {
		r.heldFrom, r.heldWarned = index, time.Now()
		w.holding[r.shardID] = r
		w.e.cfg.Logger.Info("merge: waiting for this node's replica of the right shard to freeze", "shard", r.shardID, "index", index)
	}
	r.heldTo = max(r.heldTo, last)
}

// tryHeld applies r's held entries if the merge they wait for can apply
// now, and commits them.
func (w *worker) tryHeld(r *replica) {
	if r.destroyed {
		delete(w.holding, r.shardID)
		return
	}
	ents, err := r.log.Entries(r.heldFrom, r.heldTo+1, ^uint64(0))
	if err != nil {
		panic(fmt.Sprintf("engine: node %d shard %d: held entries %d..%d: %v", w.e.cfg.NodeID, r.shardID, r.heldFrom, r.heldTo, err))
	}
	from := r.heldFrom
	r.heldFrom, r.heldTo = 0, 0
	w.apply(r, ents)
	if r.heldFrom == from {
		// Still waiting. Only a caller that skipped WaitFrozen on this node
		// gets a long wait (the right replica here absent or cut off): say
		// so now and then, as nothing else will.
		if now := time.Now(); now.Sub(r.heldWarned) >= heldWarnEvery {
			r.heldWarned = now
			w.e.cfg.Logger.Warn("merge: still waiting for this node's replica of the right shard to freeze; the left shard applies nothing meanwhile",
				"shard", r.shardID, "index", from)
		}
		return
	}
	if r.heldFrom == 0 {
		delete(w.holding, r.shardID)
	}
	w.commit()
	w.dispatchRangeChanges()
	w.completeAll()
	applied, _ := r.log.Applied()
	r.g.Applied(applied)
	w.markDirty(r)
}
