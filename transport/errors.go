package transport

import (
	"errors"
	"fmt"
)

// Errors specific to this transport. The engine's errors (engine.ErrQueueFull,
// engine.ErrUnknownPeer, engine.ErrTransportClosed) are returned as they are.
var (
	// ErrNotStarted is returned by Send and SendSnapshot before Start.
	ErrNotStarted = errors.New("transport: not started")
	// ErrPeerUnreachable is returned by Send while the peer's sender waits
	// out its backoff after a failed connection: nothing is queued (raft
	// retries), and the first Send after the backoff triggers a new attempt.
	ErrPeerUnreachable = errors.New("transport: peer unreachable, reconnecting")
	// ErrTooLarge is wrapped by every *SizeError.
	ErrTooLarge = errors.New("transport: too large")

	// Reasons a frame or a snapshot header is refused by its receiver. The
	// first three refuse the sender's identity: the receiver ends the
	// stream. The last refuses the content of one frame: the receiver drops
	// the frame and keeps the stream.
	ErrClusterMismatch = errors.New("transport: cluster ID mismatch")
	ErrWrongNode       = errors.New("transport: addressed to another node")
	ErrRemovedNode     = errors.New("transport: sender is a removed node")
	ErrBadMessage      = errors.New("transport: malformed message")
)

// SizeError reports a message, frame or snapshot chunk over its limit. It
// wraps ErrTooLarge.
type SizeError struct {
	What        string // "raft message", "frame", "snapshot chunk", ...
	Size, Limit int    // in bytes
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("transport: %s of %d bytes exceeds the limit of %d", e.What, e.Size, e.Limit)
}

// Unwrap returns ErrTooLarge.
func (e *SizeError) Unwrap() error { return ErrTooLarge }

// RemoteError is a snapshot receiver's refusal or failure, as reported to the
// sender: the receiver's error text.
type RemoteError struct {
	Node uint64 // the receiver
	Msg  string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("remote node %d: %s", e.Node, e.Msg)
}
