package client

import (
	"errors"
	"fmt"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc/codes"
)

// Errors of the client. Those about a request are also matched (errors.Is)
// by the *Error the server returns for the same cause.
var (
	// ErrEmptyKey: a key of zero length.
	ErrEmptyKey = errors.New("client: empty key")
	// ErrKeyTooLarge: a key over the key size limit.
	ErrKeyTooLarge = errors.New("client: key too large")
	// ErrValueTooLarge: a value over the value size limit, or a command the
	// server's engine finds too large.
	ErrValueTooLarge = errors.New("client: value too large")
	// ErrBadRequest: a request the server refused as malformed (every
	// InvalidArgument error matches it).
	ErrBadRequest = errors.New("client: bad request")
	// ErrShardNotFound: a shard ID that is not in the ring.
	ErrShardNotFound = errors.New("client: shard not found")
	// ErrDuplicateRequest: a write refused because its session had already
	// acknowledged its sequence number (a misuse of a session: it cannot
	// happen to the writes of one Client).
	ErrDuplicateRequest = errors.New("client: duplicate request")
	// ErrAmbiguous is matched by an *AmbiguousError: a write that may or may
	// not have applied.
	ErrAmbiguous = errors.New("client: outcome unknown")
	// ErrClosed: the client is closed.
	ErrClosed = errors.New("client: closed")
	// ErrBadConfig is matched by the errors of Config.Validate.
	ErrBadConfig = errors.New("client: bad config")
)

// Error is an error returned by a node: its gRPC code and, for the node's
// own errors, the detail it sent (nil for errors of the connection).
type Error struct {
	Code    codes.Code
	Message string
	Detail  *nodepb.Error
}

func (e *Error) Error() string {
	if e.Detail != nil {
		return fmt.Sprintf("client: %s (%s): %s", e.Code, e.Detail.GetReason(), e.Message)
	}
	return fmt.Sprintf("client: %s: %s", e.Code, e.Message)
}

// Reason returns the node's reason, REASON_UNSPECIFIED for an error of the
// connection.
func (e *Error) Reason() nodepb.Reason { return e.Detail.GetReason() }

// Is matches the sentinels of this package.
func (e *Error) Is(target error) bool {
	r := e.Reason()
	switch target {
	case ErrEmptyKey:
		return r == nodepb.Reason_REASON_EMPTY_KEY
	case ErrKeyTooLarge:
		return r == nodepb.Reason_REASON_KEY_TOO_LARGE
	case ErrValueTooLarge:
		return r == nodepb.Reason_REASON_VALUE_TOO_LARGE || r == nodepb.Reason_REASON_TOO_LARGE
	case ErrBadRequest:
		return e.Code == codes.InvalidArgument
	case ErrShardNotFound:
		return r == nodepb.Reason_REASON_SHARD_NOT_FOUND
	case ErrDuplicateRequest:
		return r == nodepb.Reason_REASON_DUPLICATE_REQUEST
	}
	return false
}

// AmbiguousError reports a write that may or may not have applied: its
// last attempt (or an earlier one) ended without a known outcome. Err is
// the cause (a context error when the deadline passed).
type AmbiguousError struct {
	Op  string // "put", "delete", "compare-and-swap"
	Err error
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("client: %s: outcome unknown: %v", e.Op, e.Err)
}

func (e *AmbiguousError) Unwrap() error { return e.Err }

// Is reports whether target is ErrAmbiguous.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// badRequest is the error of a request refused on the client as malformed;
// it matches ErrBadRequest.
func badRequest(msg string) error {
	return &Error{Code: codes.InvalidArgument, Message: msg, Detail: &nodepb.Error{
		Reason: nodepb.Reason_REASON_BAD_REQUEST, Code: uint32(codes.InvalidArgument), Message: msg, NotApplied: true,
	}}
}
