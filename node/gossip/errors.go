package gossip

import "errors"

// Errors returned by this package. They are wrapped with %w and carry
// details in their messages; test for them with errors.Is.
var (
	// ErrInvalidConfig is returned by New for a malformed Config (addresses,
	// durations, memberlist settings).
	ErrInvalidConfig = errors.New("gossip: invalid config")
	// ErrInvalidNodeID is returned by New for a zero node ID and by SetMeta
	// for a Meta whose NodeID differs from the node's.
	ErrInvalidNodeID = errors.New("gossip: invalid node ID")
	// ErrBadKey is returned by New for a SecretKey that is not 16, 24 or 32
	// bytes long (AES-128, AES-192, AES-256).
	ErrBadKey = errors.New("gossip: secret key must be 16, 24 or 32 bytes")
	// ErrMetaTooLarge is returned by New and SetMeta when the encoded Meta
	// exceeds MaxMetaSize.
	ErrMetaTooLarge = errors.New("gossip: encoded meta too large")
	// ErrMalformedMeta is returned when node metadata cannot be decoded.
	ErrMalformedMeta = errors.New("gossip: malformed meta")
	// ErrMalformedMessage is returned when a gossip message cannot be decoded.
	ErrMalformedMessage = errors.New("gossip: malformed message")
	// ErrStart is returned by New when memberlist cannot start (typically the
	// address is in use).
	ErrStart = errors.New("gossip: cannot start memberlist")
	// ErrJoinFailed is returned by Join when no seed answered before the
	// context ended; the context's error and the last join error are wrapped
	// too.
	ErrJoinFailed = errors.New("gossip: join failed")
	// ErrTimeout is returned by SetMeta and Leave when memberlist could not
	// broadcast the change within the timeout. The change is in effect
	// locally and keeps spreading.
	ErrTimeout = errors.New("gossip: broadcast timed out")
	// ErrClosed is returned by methods called after Close.
	ErrClosed = errors.New("gossip: closed")
)
