package meta

import (
	"errors"
	"fmt"
)

// Errors of the package.
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("meta: record not found")
	// ErrBadRecord: a record is malformed; the *RecordError says how.
	// Nothing was written.
	ErrBadRecord = errors.New("meta: bad record")
	// ErrConflict: a write lost to concurrent changes of the same records
	// too many times in a row. Nothing of that batch was written.
	ErrConflict = errors.New("meta: records changed concurrently")
	// ErrCorrupt: a stored record does not decode, or contradicts another.
	ErrCorrupt = errors.New("meta: corrupt record")
	// ErrTooLarge: one record does not fit in a proposal.
	ErrTooLarge = errors.New("meta: record too large for one proposal")
	// ErrNodeRemoved: the node's record is marked Removed, and the change
	// asked of it applies only to a node of the cluster.
	ErrNodeRemoved = errors.New("meta: node removed")
	// ErrShardIDsExhausted: the allocator handed out every user shard ID
	// (below storage.SystemShardBase).
	ErrShardIDsExhausted = errors.New("meta: shard IDs exhausted")
	// ErrClosed: the Reconciler is closed.
	ErrClosed = errors.New("meta: closed")
)

// RecordError says why a shard record was refused. It matches ErrBadRecord.
type RecordError struct {
	ShardID uint64
	Reason  string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("meta: bad record of shard %d: %s", e.ShardID, e.Reason)
}

// Unwrap returns ErrBadRecord.
func (e *RecordError) Unwrap() error { return ErrBadRecord }
