package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/flotilla-db/flotilla/group"
	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3/raftpb"
)

// Membership changes.
//
// Callers name nodes; raft sees replica IDs. The leader turns each change
// into raft's terms against the shard's descriptor as applied: a node that
// holds a replica keeps its replica ID (promotion, demotion, removal); a
// node added gets the descriptor's NextReplicaID, so that a node removed and
// added back never comes back under an ID raft has seen. The new replica IDs
// travel in the conf change's context, so that every replica, when it
// applies the entry, writes the same new descriptor (replicas, roles,
// NextReplicaID, ConfIndex) in the batch that applies it.
//
// A change raft would drop (another one pending, or a joint configuration
// not yet left) is refused up front with ErrConfChangeInProgress, and one
// that raft drops all the same completes with that error: no caller waits
// for a change that will never apply. A change is checked against the
// current configuration before it is proposed (typed errors, nothing
// proposed), and again when it applies: an entry that would remove the last
// voter or reuse a replica ID is applied as a no-op (raft's ApplyConfChange
// is not called) instead of wedging every replica that applies it.

// ChangeType is one kind of membership change.
type ChangeType int

// Membership changes.
const (
	AddVoter   ChangeType = iota // add a voter, or promote a learner
	AddLearner                   // add a learner, or demote a voter
	Remove                       // remove a voter or learner
)

// ReplicaChange changes the membership of one node.
type ReplicaChange struct {
	Type   ChangeType
	NodeID uint64
	// ReplicaID, if set, fences the change: the node's replica must have
	// this ID (a promotion, demotion or removal of that very replica, not of
	// one that replaced it since), else the change fails with
	// ErrReplicaNotFound. It must be 0 for a node that holds no replica yet.
	ReplicaID uint64
}

// ChangeRequest is a membership change of one shard. One change is simple;
// several go through joint consensus, left automatically unless Explicit.
type ChangeRequest struct {
	ShardID uint64
	Changes []ReplicaChange
	// Explicit: the change enters a joint configuration (even a single
	// change) that stays until a request with LeaveJoint leaves it, so that
	// the caller can, say, hand the leadership from an outgoing voter to an
	// incoming one while both configurations must agree. raft's
	// ConfChangeTransitionJointExplicit.
	Explicit bool
	// LeaveJoint, with no Changes, leaves the shard's joint configuration.
	// It succeeds at once, proposing nothing, when the shard is not joint.
	LeaveJoint bool
	// Force proposes a change that leaves fewer live voters (nodes not
	// suspected down) than a quorum of the new configuration: the shard
	// then cannot commit until enough of them are back.
	Force bool
}

// ChangeReplicas changes shardID's membership on its leader (this node);
// see ChangeReplicasWith.
func (e *Engine) ChangeReplicas(ctx context.Context, shardID uint64, changes ...ReplicaChange) error {
	return e.ChangeReplicasWith(ctx, ChangeRequest{ShardID: shardID, Changes: changes})
}

// ChangeReplicasWith proposes req on the shard's leader (this node) and
// returns once it applied here. New replicas are created on their nodes by
// the leader's messages and caught up by a snapshot. Errors, with nothing
// proposed: *NotLeaderError, ErrConfChangeInProgress, ErrReplicaExists,
// ErrReplicaNotFound, ErrLastVoter, *QuorumError, ErrBadRequest; after
// proposing: ErrConfChangeInProgress (raft dropped it), ErrConfChangeRejected
// (refused at apply), an *AmbiguousError, or ctx's error.
func (e *Engine) ChangeReplicasWith(ctx context.Context, req ChangeRequest) error {
	switch {
	case req.LeaveJoint && (len(req.Changes) > 0 || req.Explicit):
		return fmt.Errorf("%w: leaving a joint configuration takes no change", ErrBadRequest)
	case !req.LeaveJoint && len(req.Changes) == 0:
		return fmt.Errorf("%w: no change", ErrBadRequest)
	}
	seen := map[uint64]bool{}
	for _, c := range req.Changes {
		if c.NodeID == 0 || seen[c.NodeID] {
			return fmt.Errorf("%w: node %d (zero, or named twice)", ErrBadRequest, c.NodeID)
		}
		if c.Type < AddVoter || c.Type > Remove {
			return fmt.Errorf("%w: change type %d", ErrBadRequest, c.Type)
		}
		seen[c.NodeID] = true
	}
	if e.closed.Load() {
		return ErrClosed
	}
	p := &group.Proposal{ID: e.nextID(), Done: make(chan group.Result, 1)}
	w := e.workerFor(req.ShardID)
	if !w.enqueueProposal(proposalReq{shardID: req.ShardID, p: p, change: &req}) {
		return ErrClosed
	}
	_, err := e.wait(ctx, req.ShardID, p.Done)
	return err
}

// errNothingToDo completes a membership request that needs no proposal
// (leaving a joint configuration the shard is not in) successfully.
var errNothingToDo = errors.New("engine: nothing to do")

// planConfChange turns changes (by node) into raft's conf change (by replica
// ID) against desc. It returns the replica IDs it adds (replica ID -> node)
// and the nodes of the voters of the resulting (incoming) configuration.
func planConfChange(desc storage.Descriptor, changes []ReplicaChange) (cc raftpb.ConfChangeV2, added map[uint64]uint64, voters []uint64, err error) {
	next := desc.NextReplicaID
	voterSet := map[uint64]bool{}
	for _, r := range desc.Replicas {
		if r.Role.IsVoter() {
			voterSet[r.NodeID] = true
		}
	}
	added = map[uint64]uint64{}
	for _, c := range changes {
		rep, exists := desc.ReplicaOfNode(c.NodeID)
		if c.ReplicaID != 0 && (!exists || rep.ReplicaID != c.ReplicaID) {
			return cc, nil, nil, fmt.Errorf("%w: node %d holds no replica %d of shard %d", ErrReplicaNotFound, c.NodeID, c.ReplicaID, desc.ShardID)
		}
		var single raftpb.ConfChangeSingle
		switch c.Type {
		case AddVoter:
			if exists && rep.Role.IsVoter() {
				return cc, nil, nil, fmt.Errorf("%w: node %d is a voter of shard %d (replica %d)", ErrReplicaExists, c.NodeID, desc.ShardID, rep.ReplicaID)
			}
			single.Type = raftpb.ConfChangeAddNode
			voterSet[c.NodeID] = true
		case AddLearner:
			if exists && rep.Role == storage.RoleLearner {
				return cc, nil, nil, fmt.Errorf("%w: node %d is a learner of shard %d (replica %d)", ErrReplicaExists, c.NodeID, desc.ShardID, rep.ReplicaID)
			}
			single.Type = raftpb.ConfChangeAddLearnerNode
			delete(voterSet, c.NodeID)
		case Remove:
			if !exists {
				return cc, nil, nil, fmt.Errorf("%w: node %d holds no replica of shard %d", ErrReplicaNotFound, c.NodeID, desc.ShardID)
			}
			single.Type = raftpb.ConfChangeRemoveNode
			delete(voterSet, c.NodeID)
		}
		if exists {
			single.NodeID = rep.ReplicaID
		} else {
			single.NodeID = next
			added[next] = c.NodeID
			next++
		}
		cc.Changes = append(cc.Changes, single)
	}
	if len(voterSet) == 0 {
		return cc, nil, nil, fmt.Errorf("%w: shard %d", ErrLastVoter, desc.ShardID)
	}
	for n := range voterSet {
		voters = append(voters, n)
	}
	return cc, added, voters, nil
}

// proposeConfChange validates req against r's configuration and proposes it.
func (w *worker) proposeConfChange(r *replica, p *group.Proposal, req *ChangeRequest) error {
	desc, ok := r.log.Descriptor()
	if !ok {
		return fmt.Errorf("%w: shard %d", ErrNotInitialized, r.shardID)
	}
	if desc.Frozen() {
		return &ShardMergingError{ShardID: r.shardID, Into: desc.MergeInto}
	}
	applied, _ := r.log.Applied()
	cs := r.log.ConfState()
	if req.LeaveJoint {
		if len(cs.VotersOutgoing) == 0 {
			return errNothingToDo
		}
		cc := raftpb.ConfChangeV2{Context: group.ConfChangeContext(p.ID, nil)}
		return r.g.ProposeConfChange(p, cc, applied, cs)
	}
	if !r.g.ConfChangeAllowed(applied, cs) {
		return fmt.Errorf("%w: shard %d", ErrConfChangeInProgress, r.shardID)
	}
	cc, added, voters, err := planConfChange(desc, req.Changes)
	if err != nil {
		return err
	}
	if !req.Force {
		var live []uint64
		for _, n := range voters {
			if n == w.e.cfg.NodeID || !w.e.live.isDown(n) {
				live = append(live, n)
			}
		}
		if len(live) < len(voters)/2+1 {
			return &QuorumError{ShardID: r.shardID, Voters: voters, Live: live}
		}
	}
	if req.Explicit {
		cc.Transition = raftpb.ConfChangeTransitionJointExplicit
	}
	cc.Context = group.ConfChangeContext(p.ID, encodeAdded(added))
	return r.g.ProposeConfChange(p, cc, applied, cs)
}

// encodeAdded encodes the replica IDs a conf change adds: a count, then
// (replica ID, node ID) pairs, uvarints.
func encodeAdded(added map[uint64]uint64) []byte {
	b := binary.AppendUvarint(nil, uint64(len(added)))
	for id, node := range added {
		b = binary.AppendUvarint(b, id)
		b = binary.AppendUvarint(b, node)
	}
	return b
}

func decodeAdded(b []byte) (map[uint64]uint64, error) {
	added := map[uint64]uint64{}
	if len(b) == 0 {
		return added, nil
	}
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)) {
		return nil, errors.New("bad count")
	}
	b = b[w:]
	for i := uint64(0); i < n; i++ {
		id, w1 := binary.Uvarint(b)
		if w1 <= 0 {
			return nil, errors.New("bad replica ID")
		}
		node, w2 := binary.Uvarint(b[w1:])
		if w2 <= 0 {
			return nil, errors.New("bad node ID")
		}
		added[id] = node
		b = b[w1+w2:]
	}
	return added, nil
}

// checkAtApply reports why a committed conf change must not be applied
// (empty: apply it). Only changes proposed through planConfChange reach the
// log, so a refusal here means a broken or replayed proposal; refusing it on
// every replica alike keeps them identical and never wedges the shard.
func checkAtApply(desc storage.Descriptor, cc raftpb.ConfChangeV2, added map[uint64]uint64) string {
	if desc.Frozen() {
		return fmt.Sprintf("the shard is frozen for a merge into shard %d", desc.MergeInto)
	}
	voters := map[uint64]bool{}
	for _, r := range desc.Replicas {
		if r.Role.IsVoter() {
			voters[r.ReplicaID] = true
		}
	}
	for _, c := range cc.Changes {
		_, known := desc.Replica(c.NodeID)
		if !known && c.Type != raftpb.ConfChangeRemoveNode {
			node, ok := added[c.NodeID]
			if !ok {
				return fmt.Sprintf("replica %d has no node", c.NodeID)
			}
			if c.NodeID < desc.NextReplicaID {
				return fmt.Sprintf("replica ID %d reused (next is %d)", c.NodeID, desc.NextReplicaID)
			}
			if rep, dup := desc.ReplicaOfNode(node); dup {
				return fmt.Sprintf("node %d already holds replica %d", node, rep.ReplicaID)
			}
		}
		switch c.Type {
		case raftpb.ConfChangeAddNode:
			voters[c.NodeID] = true
		case raftpb.ConfChangeAddLearnerNode, raftpb.ConfChangeRemoveNode:
			if c.Type == raftpb.ConfChangeRemoveNode && !known {
				return fmt.Sprintf("replica %d is not in the shard", c.NodeID)
			}
			delete(voters, c.NodeID)
		}
	}
	if len(cc.Changes) > 0 && len(voters) == 0 {
		return "it would remove the last voter"
	}
	return ""
}

// applyConfChange applies a committed conf change entry of r: raft's
// configuration, the new descriptor and ConfState, in the pass's batch.
func (w *worker) applyConfChange(r *replica, e *raftpb.Entry) {
	var cc raftpb.ConfChangeV2
	if e.Type == raftpb.EntryConfChange {
		var v1 raftpb.ConfChange
		if err := v1.Unmarshal(e.Data); err != nil {
			panic(fmt.Sprintf("engine: shard %d: conf change at %d: %v", r.shardID, e.Index, err))
		}
		cc = v1.AsV2()
	} else if err := cc.Unmarshal(e.Data); err != nil {
		panic(fmt.Sprintf("engine: shard %d: conf change at %d: %v", r.shardID, e.Index, err))
	}
	id, extra := group.ConfChangeID(cc.Context)
	p := r.g.TakeProposal(id)
	complete := func(err error) {
		if p != nil {
			w.done = append(w.done, completion{p: p, res: group.Result{Err: err, Index: e.Index}})
		}
	}
	desc, ok := r.log.Descriptor()
	if !ok {
		panic(fmt.Sprintf("engine: node %d shard %d: conf change at %d applied by an uninitialized replica", w.e.cfg.NodeID, r.shardID, e.Index))
	}
	added, err := decodeAdded(extra)
	reason := ""
	if err != nil {
		reason = "malformed context: " + err.Error()
	} else {
		reason = checkAtApply(desc, cc, added)
	}
	if reason != "" {
		w.e.cfg.Logger.Warn("conf change refused at apply", "shard", r.shardID, "index", e.Index, "reason", reason)
		if desc.Frozen() {
			complete(fmt.Errorf("%w: %w", ErrConfChangeRejected, &ShardMergingError{ShardID: r.shardID, Into: desc.MergeInto}))
			return
		}
		complete(fmt.Errorf("%w: shard %d: %s", ErrConfChangeRejected, r.shardID, reason))
		return
	}
	cs := r.g.RN.ApplyConfChange(cc)
	r.g.DropLease() // confirmed by a quorum of the older configuration (lease.go)
	next, err := desc.WithConfState(*cs, added)
	if err != nil {
		panic(fmt.Sprintf("engine: node %d shard %d: conf change at %d: %v", w.e.cfg.NodeID, r.shardID, e.Index, err))
	}
	next.ConfIndex = e.Index
	r.setDescriptor(w.batch, next)
	r.log.SetConfState(w.batch, *cs)
	w.e.notePeers(r)
	if _, member := next.Replica(r.replicaID); !member {
		r.remove = true
	}
	w.descChanged(r)
	complete(nil)
}

// DestroyStaleReplica destroys this node's replica replicaID of shardID,
// which the shard no longer has: its authority (the meta shard's record of
// the shard, a copy of a descriptor the shard applied) lists replica IDs
// below nextReplicaID and not replicaID. A replica removed from a shard
// does not always hear of it (its leader stops sending to it once the
// removal applies); replica IDs are never reused, so a replica ID below
// the shard's NextReplicaID that its configuration lacks is gone for good.
// It refuses a replicaID at or above nextReplicaID (ErrBadRequest: the
// record predates the replica), and does nothing when this node's replica
// of the shard is gone or has another ID.
func (e *Engine) DestroyStaleReplica(ctx context.Context, shardID, replicaID, nextReplicaID uint64) error {
	if replicaID == 0 || replicaID >= nextReplicaID {
		return fmt.Errorf("%w: replica %d of shard %d is not below the record's next replica ID %d", ErrBadRequest, replicaID, shardID, nextReplicaID)
	}
	_, err := call(ctx, e, shardID, func(w *worker) (struct{}, error) {
		r := w.shards[shardID]
		if r == nil || r.replicaID != replicaID {
			return struct{}{}, nil
		}
		if desc, ok := r.log.Descriptor(); ok && desc.NextReplicaID > nextReplicaID {
			// This replica knows a newer configuration than the record.
			if _, member := desc.Replica(replicaID); member {
				return struct{}{}, fmt.Errorf("%w: replica %d of shard %d is a member of its newer configuration %v", ErrBadRequest, replicaID, shardID, desc)
			}
		}
		w.e.cfg.Logger.Info("replica removed from its shard while it could not hear of it: destroying it",
			"shard", shardID, "replica", replicaID, "next_replica_id", nextReplicaID)
		w.destroy(r)
		return struct{}{}, nil
	})
	return err
}

// DestroyMergedAway destroys this node's replica replicaID of shardID, a
// shard that its authority (the meta shard's tombstone of it) says was
// merged away for good, when no replica here can need it any more. Left
// alone, such a replica claims its old range here for good: this node's
// replicas of the shards that hold that range now could never take their
// snapshots. Two cases:
//   - Not frozen: a merge applies only once every replica of the right
//     shard's last configuration has frozen durably, and a frozen shard
//     changes its configuration no more, so a replica that never froze was
//     removed before the freeze, while it could not hear of it.
//   - Frozen for a merge into a shard L: once this node's replica of L is
//     past the generation the merge was planned against, no merge command
//     of that plan can apply here any more (it applied, or it is stale), so
//     nothing here waits for this replica. A frozen replica whose L here is
//     not past it is refused with ErrBadRequest: the merge destroys it as
//     L's replica here applies it, or L's snapshot does (dropSubsumed).
//   - Frozen, and no replica of L here (removed from L while cut off, and
//     destroyed since): left is L's descriptor as its authority has it
//     now (the meta shard's record, or L's leader). If it is past the
//     merge's generation and has no replica on this node, no replica of L
//     here can ever apply the merge: L's leader sends its log only to the
//     replicas of its configuration, and a replica of L added here later
//     starts from a snapshot of a state past the merge (a lagging parent
//     here that creates L by a split makes a replica L's leader never
//     sends to). Otherwise (left unknown: its zero value; not past the
//     merge; or naming this node) it is refused with ErrBadRequest. Left
//     alone, such a replica was never collected: its
//     claim kept the snapshots of the shards holding its range off this
//     node for good.
//
// It does nothing when this node's replica of the shard is gone or has
// another ID.
func (e *Engine) DestroyMergedAway(ctx context.Context, shardID, replicaID uint64, left storage.Descriptor) error {
	var d storage.Descriptor // the replica's: none while uninitialized
	found, err := call(ctx, e, shardID, func(w *worker) (bool, error) {
		r := w.shards[shardID]
		if r == nil || r.replicaID != replicaID {
			return false, nil
		}
		d, _ = r.log.Descriptor()
		return true, nil
	})
	if err != nil || !found {
		return err
	}
	if d.Frozen() {
		// L's replica as it applied it (not its claim: a snapshot in
		// flight claims ahead of what raft may take); here: a replica of
		// L, initialized or not, is on this node.
		var here bool
		l, err := call(ctx, e, d.MergeInto, func(w *worker) (storage.Descriptor, error) {
			if r := w.shards[d.MergeInto]; r != nil {
				here = true
				l, _ := r.log.Descriptor()
				return l, nil
			}
			return storage.Descriptor{}, nil
		})
		if err != nil {
			return err
		}
		_, leftHere := left.ReplicaOfNode(e.cfg.NodeID)
		switch {
		case l.ShardID != 0 && l.Generation > d.MergeIntoGeneration:
			// This node's replica of L is past the merge.
		case !here && left.ShardID == d.MergeInto && left.Generation > d.MergeIntoGeneration && !leftHere:
			// No replica of L here, and none that could apply the merge
			// can come.
		default:
			return fmt.Errorf("%w: replica %d of shard %d is frozen for a merge into shard %d at generation %d, and shard %d's replica here is not past it: the merge destroys it",
				ErrBadRequest, replicaID, shardID, d.MergeInto, d.MergeIntoGeneration, d.MergeInto)
		}
	}
	_, err = call(ctx, e, shardID, func(w *worker) (struct{}, error) {
		r := w.shards[shardID]
		if r == nil || r.replicaID != replicaID {
			return struct{}{}, nil
		}
		w.e.cfg.Logger.Info("replica of a shard merged away, which nothing here needs: destroying it",
			"shard", shardID, "replica", replicaID, "frozen", d.Frozen())
		w.destroy(r)
		return struct{}{}, nil
	})
	return err
}

// CompactResult is what CompactLog did to a replica's log.
type CompactResult struct {
	// FirstBefore and FirstAfter are the log's first index before and
	// after; Applied the index it was truncated at.
	FirstBefore, FirstAfter, Applied uint64
}

// CompactLog truncates this node's replica of shardID's raft log up to its
// applied index now, as the engine does by itself once the log grows past
// Config.LogTruncateBytes or LogTruncateEntries: the applied state is in
// the store, so the log before it is needed only by replicas behind, and
// those then catch up by a snapshot. Errors: ErrShardNotFound,
// ErrBadRequest for a replica that has applied nothing yet.
func (e *Engine) CompactLog(ctx context.Context, shardID uint64) (CompactResult, error) {
	return call(ctx, e, shardID, func(w *worker) (CompactResult, error) {
		r := w.shards[shardID]
		if r == nil {
			return CompactResult{}, fmt.Errorf("%w: shard %d", ErrShardNotFound, shardID)
		}
		if !r.log.Initialized() {
			return CompactResult{}, fmt.Errorf("%w: shard %d's replica here has applied nothing yet", ErrBadRequest, shardID)
		}
		var res CompactResult
		res.FirstBefore, _ = r.log.FirstIndex()
		res.Applied, _ = r.log.Applied()
		// The pass's writes first: the truncation must follow them.
		w.commit()
		if err := r.log.Truncate(w.truncs, res.Applied); err != nil {
			return CompactResult{}, err
		}
		w.commitTruncations()
		res.FirstAfter, _ = r.log.FirstIndex()
		w.e.cfg.Logger.Info("raft log compacted", "shard", shardID, "first_before", res.FirstBefore, "first_after", res.FirstAfter, "applied", res.Applied)
		return res, nil
	})
}
