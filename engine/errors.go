package engine

import (
	"errors"
	"fmt"

	"github.com/flotilla-db/flotilla/group"
	"github.com/flotilla-db/flotilla/storage"
)

// Errors of the engine. Retryable ones say so.
var (
	ErrClosed         = errors.New("engine: closed")
	ErrShardNotFound  = errors.New("engine: shard not found")
	ErrShardExists    = errors.New("engine: shard already exists on this node")
	ErrShardRemoved   = errors.New("engine: replica removed from this node")
	ErrRangeOverlap   = errors.New("engine: shard range overlaps a shard on this node")
	ErrNotInitialized = errors.New("engine: replica not initialized (waiting for a snapshot)")
	ErrBadRequest     = errors.New("engine: bad request")
	// ErrStaleGeneration: a request planned against an older generation of
	// the shard's range (see *StaleGenerationError); plan it again.
	ErrStaleGeneration = errors.New("engine: stale range generation")
	// Refusals of splits and merges, each an ErrBadRequest too.
	ErrJointConfig    = fmt.Errorf("%w: joint configuration", ErrBadRequest)
	ErrOutOfRange     = fmt.Errorf("%w: split point outside the range", ErrBadRequest)
	ErrNotAdjacent    = fmt.Errorf("%w: shards not adjacent", ErrBadRequest)
	ErrReplicasDiffer = fmt.Errorf("%w: replicas on other nodes", ErrBadRequest)
	ErrNotFrozen      = fmt.Errorf("%w: not frozen for this merge", ErrBadRequest)
	// ErrShardMerging: the shard is frozen for a merge (see
	// *ShardMergingError); retry once the merge completed or was
	// abandoned.
	ErrShardMerging = errors.New("engine: shard frozen for a merge")
	// ErrProposalTooLarge: the command exceeds Config.MaxProposalBytes.
	ErrProposalTooLarge = errors.New("engine: proposal too large")
	// ErrProposalDropped: the command will never apply; safe to retry.
	ErrProposalDropped = group.ErrProposalDropped
	// ErrTombstoned: a replica of the shard was removed from this node.
	ErrTombstoned = storage.ErrTombstoned
	// ErrConfChangeInProgress: another conf change of the shard is pending
	// or its configuration is joint; nothing was proposed (or raft dropped
	// the proposal). Retry once the pending change has applied.
	ErrConfChangeInProgress = group.ErrConfChangeInProgress
	// ErrReplicaExists: the node already holds a replica in the asked role.
	ErrReplicaExists = errors.New("engine: node already holds that replica")
	// ErrReplicaNotFound: the node holds no replica of the shard.
	ErrReplicaNotFound = errors.New("engine: node holds no replica of the shard")
	// ErrLastVoter: the change would leave the shard without a voter.
	ErrLastVoter = errors.New("engine: the change would remove or demote the last voter")
	// ErrQuorumAtRisk is matched by a *QuorumError.
	ErrQuorumAtRisk = errors.New("engine: too few live voters for a quorum of the new configuration")
	// ErrConfChangeRejected: a committed conf change was refused when it
	// applied (see confchange.go); the configuration did not change.
	ErrConfChangeRejected = errors.New("engine: conf change refused at apply")
	// ErrAmbiguous: the outcome of a command is unknown; it may have
	// applied (see *AmbiguousError).
	ErrAmbiguous = group.ErrAmbiguous
	// ErrSessionNotFound: a session write (ProposeSession) of a session the
	// shard does not know (never registered, or expired). Not applied:
	// register and retry.
	ErrSessionNotFound = errors.New("engine: session not found")
	// ErrDuplicateRequest: a session write whose sequence number is below
	// the session's acknowledgement watermark: the client already has its
	// response. Not applied again.
	ErrDuplicateRequest = errors.New("engine: duplicate request")
)

// AmbiguousError reports a command whose outcome is unknown.
type AmbiguousError = group.AmbiguousError

// QuorumError refuses a membership change after which fewer voters than a
// quorum of the new configuration are live (ChangeRequest.Force overrides).
type QuorumError struct {
	ShardID uint64
	Voters  []uint64 // the new configuration's voters (nodes)
	Live    []uint64 // those not suspected down
}

func (e *QuorumError) Error() string {
	return fmt.Sprintf("engine: shard %d: only %d of the new configuration's %d voters %v are live (%v), a quorum needs %d; force it to proceed anyway",
		e.ShardID, len(e.Live), len(e.Voters), e.Voters, e.Live, len(e.Voters)/2+1)
}

// Is makes errors.Is(err, ErrQuorumAtRisk) true.
func (e *QuorumError) Is(target error) bool { return target == ErrQuorumAtRisk }

// NotLeaderError is returned by a replica that does not lead its shard, with
// the leader it knows (0 if none) as a hint.
type NotLeaderError = group.NotLeaderError

// KeyNotInShardError is returned for a key whose hash lies outside the
// shard's range: the request was routed with a stale ring. Start, Last and
// Generation are the shard's range now (a split narrowed it: the rest is
// another shard's).
type KeyNotInShardError struct {
	ShardID     uint64
	Hash        uint64
	Generation  uint64
	Start, Last uint64
}

func (e *KeyNotInShardError) Error() string {
	return fmt.Sprintf("engine: key hash %016x not in shard %d [%016x, %016x] (generation %d)", e.Hash, e.ShardID, e.Start, e.Last, e.Generation)
}
