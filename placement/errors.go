package placement

import (
	"errors"
	"fmt"
)

// Errors of the package.
var (
	// ErrNoLiveNodes: the state has no live node (Liveness Live and not
	// Removed); nothing can be planned.
	ErrNoLiveNodes = errors.New("placement: no live nodes")
	// ErrBadState: the state contradicts itself; the *BadStateError says
	// how. Nothing is planned from it.
	ErrBadState = errors.New("placement: bad state")
	// ErrBadConfig: a Config field is out of range.
	ErrBadConfig = errors.New("placement: invalid config")
	// ErrUnknownNode: the node is not in the state.
	ErrUnknownNode = errors.New("placement: unknown node")
	// ErrNodeRemoved: the node was removed from the cluster.
	ErrNodeRemoved = errors.New("placement: node removed")
	// ErrLastNode: decommissioning the node would leave no live node that
	// is not draining, so its replicas would have nowhere to go.
	ErrLastNode = errors.New("placement: last live node")
)

// BadStateError says what is wrong with a State. NodeID or ShardID (or
// both) name where; zero means the state as a whole. It matches
// ErrBadState.
type BadStateError struct {
	NodeID  uint64
	ShardID uint64
	Reason  string
}

func (e *BadStateError) Error() string {
	switch {
	case e.ShardID != 0 && e.NodeID != 0:
		return fmt.Sprintf("placement: bad state: shard %d, node %d: %s", e.ShardID, e.NodeID, e.Reason)
	case e.ShardID != 0:
		return fmt.Sprintf("placement: bad state: shard %d: %s", e.ShardID, e.Reason)
	case e.NodeID != 0:
		return fmt.Sprintf("placement: bad state: node %d: %s", e.NodeID, e.Reason)
	}
	return "placement: bad state: " + e.Reason
}

// Unwrap returns ErrBadState.
func (e *BadStateError) Unwrap() error { return ErrBadState }
