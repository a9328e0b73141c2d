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
	// ErrProposalTooLarge: the command exceeds Config.MaxProposalBytes.
	ErrProposalTooLarge = errors.New("engine: proposal too large")
	// ErrProposalDropped: the command will never apply; safe to retry.
	ErrProposalDropped = group.ErrProposalDropped
	// ErrTombstoned: a replica of the shard was removed from this node.
	ErrTombstoned = storage.ErrTombstoned
	// ErrSessionNotFound: a session write (ProposeSession) of a session the
	// shard does not know (never registered, or expired). Not applied:
	// register and retry.
	ErrSessionNotFound = errors.New("engine: session not found")
	// ErrDuplicateRequest: a session write whose sequence number is below
	// the session's acknowledgement watermark: the client already has its
	// response. Not applied again.
	ErrDuplicateRequest = errors.New("engine: duplicate request")
)

// NotLeaderError is returned by a replica that does not lead its shard, with
// the leader it knows (0 if none) as a hint.
type NotLeaderError = group.NotLeaderError

// KeyNotInShardError is returned for a key whose hash lies outside the
// shard's range: the request was routed with a stale ring.
type KeyNotInShardError struct {
	ShardID    uint64
	Hash       uint64
	Generation uint64
}

func (e *KeyNotInShardError) Error() string {
	return fmt.Sprintf("engine: key hash %016x not in shard %d (generation %d)", e.Hash, e.ShardID, e.Generation)
}
