package router

import (
	"errors"
	"fmt"
)

// Errors returned by Router. Check them with errors.Is; the ones returned for
// a shard ID are wrapped with the ID.
var (
	// ErrEmptyKey is returned by Lookup for a zero-length key.
	ErrEmptyKey = errors.New("router: empty key")
	// ErrKeyTooLarge is returned by Lookup for a key longer than
	// Config.MaxKeySize.
	ErrKeyTooLarge = errors.New("router: key too large")
	// ErrNoRing is returned before the first SetRing.
	ErrNoRing = errors.New("router: no ring set")
	// ErrUnknownShard is returned for a shard ID that is not in the ring.
	ErrUnknownShard = errors.New("router: unknown shard")
	// ErrStaleRing is matched by a *StaleRingError.
	ErrStaleRing = errors.New("router: stale ring generation")
	// ErrRingConflict is returned by SetRing for a ring with the held
	// generation but different ranges: two rings must never share a
	// generation.
	ErrRingConflict = errors.New("router: different ring with the same generation")
	// ErrSubscriptionClosed is returned by Next after Close.
	ErrSubscriptionClosed = errors.New("router: subscription closed")
	// ErrBadReplicas is returned by SetReplicas for a zero or repeated node
	// ID.
	ErrBadReplicas = errors.New("router: bad replica set")
	// ErrBadConfig is matched by every error that Config.Validate returns.
	ErrBadConfig = errors.New("router: bad config")
)

// Ring validation errors, each wrapped in a *RingError by NewRing and
// EvenRing.
var (
	// ErrRingEmpty: no ranges (NewRing) or no shards (EvenRing).
	ErrRingEmpty = errors.New("router: ring has no ranges")
	// ErrRingGap: part of the hash space is not covered, between two ranges,
	// below the first or above the last.
	ErrRingGap = errors.New("router: gap in ring")
	// ErrRingOverlap: a range starts inside the previous one.
	ErrRingOverlap = errors.New("router: overlapping ring ranges")
	// ErrRingUnsorted: a range starts before the previous one.
	ErrRingUnsorted = errors.New("router: ring ranges not sorted by Start")
	// ErrRingBadRange: a range has Start > Last.
	ErrRingBadRange = errors.New("router: ring range with Start > Last")
	// ErrRingZeroShard: a range has a reserved shard ID: 0, or one of the
	// system shards' (1<<63 and up).
	ErrRingZeroShard = errors.New("router: ring range with a reserved shard ID")
	// ErrRingDuplicateShard: a shard ID owns more than one range.
	ErrRingDuplicateShard = errors.New("router: shard ID owns more than one ring range")
)

// RingError describes why a ring was refused. Err is one of the ErrRing*
// sentinels, which errors.Is finds through Unwrap.
type RingError struct {
	Err     error
	Index   int    // position of the offending range in the input, -1 if none
	ShardID uint64 // shard of the offending range, 0 if none
	Detail  string // the numbers involved
}

func (e *RingError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("%v: %s", e.Err, e.Detail)
	}
	return fmt.Sprintf("%v: range %d (shard %d): %s", e.Err, e.Index, e.ShardID, e.Detail)
}

func (e *RingError) Unwrap() error { return e.Err }

// StaleRingError is returned by SetRing for a ring older than the held one.
// It matches ErrStaleRing.
type StaleRingError struct {
	Held, Offered uint64 // ring generations
}

func (e *StaleRingError) Error() string {
	return fmt.Sprintf("router: stale ring generation %d, holding %d", e.Offered, e.Held)
}

// Is reports whether target is ErrStaleRing.
func (e *StaleRingError) Is(target error) bool { return target == ErrStaleRing }

func unknownShard(shardID uint64) error {
	return fmt.Errorf("%w: %d", ErrUnknownShard, shardID)
}
