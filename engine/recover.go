package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/flotilla-db/flotilla/storage"
)

// Online recovery from the loss of a majority (`flotillactl recover`,
// package node/recovery): a shard whose voters are mostly gone for good
// while the rest of the cluster runs has one replica here rewritten, on
// its worker and while the engine runs, into the only voter of its shard,
// with the same storage rewrite as the offline recovery
// (storage.Store.ForceSoleVoter).

var (
	// ErrLiveQuorum is matched by a *LiveQuorumError.
	ErrLiveQuorum = errors.New("engine: the shard has a live quorum or a leader")
	// ErrShardRecovered fails the waiters of a replica that ForceSoleVoter
	// replaced (proposals already appended: ambiguous).
	ErrShardRecovered = errors.New("engine: replica rewritten by a recovery from the loss of a majority")
)

// LiveQuorumError refuses ForceSoleVoter on a replica whose shard can
// still make progress: the replica leads, knows a leader this node does
// not suspect down, or the voters this node does not suspect down (Live,
// this node included) are a quorum of Voters.
type LiveQuorumError struct {
	ShardID uint64
	// Leader is the leader the replica knows (0: none).
	Leader uint64
	Voters []uint64
	Live   []uint64
}

func (e *LiveQuorumError) Error() string {
	if e.Leader != 0 {
		return fmt.Sprintf("engine: shard %d has a leader, node %d (voters %v, live %v): it is not recovered", e.ShardID, e.Leader, e.Voters, e.Live)
	}
	return fmt.Sprintf("engine: shard %d has a live quorum: voters %v of %v are not suspected down: it is not recovered", e.ShardID, e.Live, e.Voters)
}

// Is makes errors.Is(err, ErrLiveQuorum) true.
func (e *LiveQuorumError) Is(target error) bool { return target == ErrLiveQuorum }

// ForceSoleVoterRequest asks ForceSoleVoter to recover this node's
// replica of ShardID.
type ForceSoleVoterRequest struct {
	ShardID uint64
	// ReplicaID, if not 0, is the replica ID expected here: a replica
	// replaced since the caller looked is not touched (ErrBadRequest).
	ReplicaID uint64
	// MinReplicaID: the replica's new ID is at least this (above every
	// ID the shard's other surviving replicas know of).
	MinReplicaID uint64
}

// ForceSoleVoter makes this node's replica of req.ShardID, whose shard has
// lost the majority of its voters for good, the only voter of its shard,
// while the engine runs: on the shard's worker, the replica is closed (its
// waiters fail with ErrShardRecovered, ambiguous for proposals already
// appended), rewritten by storage.Store.ForceSoleVoter in one synced batch
// (fresh replica ID, a descriptor of itself alone, whole log committed),
// and reopened; it campaigns at once and, alone, elects itself. The other
// shards of the worker are not touched. A DescriptorEvent with the new
// descriptor is published.
//
// Refused, with nothing touched: *LiveQuorumError (ErrLiveQuorum) if the
// replica leads, knows a leader this node does not suspect down, or the
// voters this node does not suspect down are a quorum (a leader refused
// is woken if quiesced: without a quorum it steps down within an election
// timeout, raft's CheckQuorum, and a retry then proceeds); ErrShardNotFound;
// ErrBadRequest for a replica of another ID than req.ReplicaID, or one
// frozen for a merge or holding entries for one (ErrShardMerging);
// storage.ErrNotRecoverable for an uninitialized replica.
func (e *Engine) ForceSoleVoter(ctx context.Context, req ForceSoleVoterRequest) (storage.SoleVoter, error) {
	if req.ShardID == 0 {
		return storage.SoleVoter{}, fmt.Errorf("%w: shard ID 0", ErrBadRequest)
	}
	return call(ctx, e, req.ShardID, func(w *worker) (storage.SoleVoter, error) { return w.forceSoleVoter(req) })
}

func (w *worker) forceSoleVoter(req ForceSoleVoterRequest) (storage.SoleVoter, error) {
	id := req.ShardID
	r := w.shards[id]
	if r == nil {
		return storage.SoleVoter{}, fmt.Errorf("%w: shard %d", ErrShardNotFound, id)
	}
	if req.ReplicaID != 0 && r.replicaID != req.ReplicaID {
		return storage.SoleVoter{}, fmt.Errorf("%w: shard %d: the replica here is %d, not %d", ErrBadRequest, id, r.replicaID, req.ReplicaID)
	}
	desc, ok := r.log.Descriptor()
	if !ok {
		return storage.SoleVoter{}, fmt.Errorf("%w: shard %d: replica %d is uninitialized (it holds no data)", storage.ErrNotRecoverable, id, r.replicaID)
	}
	if desc.Frozen() || r.heldFrom != 0 {
		return storage.SoleVoter{}, fmt.Errorf("%w: shard %d takes part in a merge (frozen into %d, or holding entries for one): %w", ErrBadRequest, id, desc.MergeInto, ErrShardMerging)
	}
	if err := w.liveQuorum(r, desc); err != nil {
		return storage.SoleVoter{}, err
	}
	// What the pass left in the worker's batch first: the rewrite reads
	// the replica's state from the store.
	w.commit()
	b := w.e.store.NewBatch()
	defer b.Close()
	sv, err := w.e.store.ForceSoleVoter(b, id, w.e.cfg.NodeID, req.MinReplicaID)
	if err != nil {
		return storage.SoleVoter{}, err
	}
	// The old replica goes: raft's state in memory is the old
	// configuration's. Its appends still syncing are skipped when their
	// batch is durable (they are in the store already: the rewrite keeps
	// them, and this synced batch makes them durable).
	r.destroyed = true
	w.wake(r)
	delete(w.shards, id)
	delete(w.ticking, id)
	delete(w.holding, id)
	w.uncountLeader(r)
	r.g.FailAll(ErrShardRecovered)
	w.abortStaged(r)
	if err := b.Commit(true); err != nil {
		panic(fmt.Sprintf("engine: node %d: recover shard %d: storage failed: %v", w.e.cfg.NodeID, id, err))
	}
	w.tombstones[id] = sv.NewReplicaID
	log, err := w.e.store.OpenLog(id)
	if err != nil {
		panic(fmt.Sprintf("engine: node %d: reopen shard %d after its recovery: %v", w.e.cfg.NodeID, id, err))
	}
	if err := w.e.claimRange(sv.After); err != nil {
		panic(fmt.Sprintf("engine: node %d: shard %d: its own range after its recovery: %v", w.e.cfg.NodeID, id, err))
	}
	nr, err := w.open(log)
	if err != nil {
		panic(fmt.Sprintf("engine: node %d: reopen shard %d after its recovery: %v", w.e.cfg.NodeID, id, err))
	}
	w.e.cfg.Logger.Warn("shard recovered from the loss of a majority: this replica is its only voter",
		"shard", id, "replica", sv.NewReplicaID, "was", sv.OldReplicaID, "replicas_were", sv.Before.Replicas,
		"last_index", sv.LastIndex, "last_term", sv.LastTerm, "neutralized", len(sv.Neutralized))
	_ = nr.g.RN.Campaign()
	w.markDirty(nr)
	w.leaderEvs = append(w.leaderEvs, LeaderEvent{ShardID: id})
	w.descChanged(nr)
	return sv, nil
}

// liveQuorum refuses (*LiveQuorumError) the recovery of r if its shard
// can still make progress as this node sees it.
func (w *worker) liveQuorum(r *replica, desc storage.Descriptor) error {
	self := w.e.cfg.NodeID
	live := func(node uint64) bool { return node == self || !w.e.live.isDown(node) }
	in, out := desc.Voters()
	voters := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(in), out...))))
	var up []uint64
	for _, n := range voters {
		if live(n) {
			up = append(up, n)
		}
	}
	leader := r.g.LeaderNode()
	if r.g.IsLeader() {
		leader = self
		if !desc.HasQuorum(live) {
			// A leader without a quorum steps down within an election
			// timeout (CheckQuorum), if it ticks: one of a quiesced shard
			// does not, and one woken would quiesce again (its followers
			// are suspected down). An empty entry, which cannot commit,
			// keeps it awake until it steps down; a retry then proceeds
			// (the entry is kept and committed by the rewrite: it applies
			// as nothing, like a new leader's).
			w.wake(r)
			_ = r.g.RN.Propose(nil)
			w.markDirty(r)
		}
	}
	if (leader != 0 && live(leader)) || desc.HasQuorum(live) {
		return &LiveQuorumError{ShardID: r.shardID, Leader: leader, Voters: voters, Live: up}
	}
	return nil
}

// ReplicaInfo returns what a recovery needs to know of this node's replica
// of shardID (its log's last index and term, applied index, descriptor),
// read on the shard's worker. Errors: ErrShardNotFound.
func (e *Engine) ReplicaInfo(ctx context.Context, shardID uint64) (storage.ReplicaInfo, error) {
	return call(ctx, e, shardID, func(w *worker) (storage.ReplicaInfo, error) {
		if w.shards[shardID] == nil {
			return storage.ReplicaInfo{}, fmt.Errorf("%w: shard %d", ErrShardNotFound, shardID)
		}
		return w.e.store.ReplicaInfo(shardID)
	})
}
