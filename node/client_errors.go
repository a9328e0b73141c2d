package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrClientServiceClosed is returned by StartLeaderFeed after Close.
var ErrClientServiceClosed = errors.New("node: client service closed")

// StatusError returns the gRPC status error of e, with e as its detail.
func StatusError(e *nodepb.Error) error {
	st := status.New(codes.Code(e.GetCode()), e.GetMessage())
	if d, err := st.WithDetails(e); err == nil {
		st = d
	}
	return st.Err()
}

// newError builds an error detail; generation is the router's.
func (s *ClientService) newError(code codes.Code, reason nodepb.Reason, shardID uint64, format string, args ...any) *nodepb.Error {
	return &nodepb.Error{
		Reason:     reason,
		Code:       uint32(code),
		Message:    fmt.Sprintf(format, args...),
		ShardId:    shardID,
		Generation: s.generation(),
	}
}

func (s *ClientService) generation() uint64 {
	if ring := s.router.Ring(); ring != nil {
		return ring.Generation()
	}
	return 0
}

// badRequest is an InvalidArgument error about a malformed request.
func (s *ClientService) badRequest(format string, args ...any) *nodepb.Error {
	e := s.newError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, format, args...)
	e.NotApplied = true
	return e
}

// tooLarge is an InvalidArgument error about a key or value over its limit.
func (s *ClientService) tooLarge(reason nodepb.Reason, what string, size, limit int) *nodepb.Error {
	e := s.newError(codes.InvalidArgument, reason, 0, "node: %s of %d bytes exceeds the limit of %d", what, size, limit)
	e.Size, e.Limit, e.NotApplied = uint64(size), uint64(limit), true
	return e
}

// checkKey refuses an empty or too large key.
func (s *ClientService) checkKey(key []byte) *nodepb.Error {
	switch {
	case len(key) == 0:
		e := s.newError(codes.InvalidArgument, nodepb.Reason_REASON_EMPTY_KEY, 0, "node: empty key")
		e.NotApplied = true
		return e
	case len(key) > s.cfg.MaxKeyBytes:
		return s.tooLarge(nodepb.Reason_REASON_KEY_TOO_LARGE, "key", len(key), s.cfg.MaxKeyBytes)
	}
	return nil
}

// checkValue refuses a too large value.
func (s *ClientService) checkValue(what string, value []byte) *nodepb.Error {
	if len(value) > s.cfg.MaxValueBytes {
		return s.tooLarge(nodepb.Reason_REASON_VALUE_TOO_LARGE, what, len(value), s.cfg.MaxValueBytes)
	}
	return nil
}

// routerError maps an error of the router (Lookup, Route).
func (s *ClientService) routerError(err error, shardID uint64) *nodepb.Error {
	var e *nodepb.Error
	switch {
	case errors.Is(err, router.ErrEmptyKey):
		e = s.newError(codes.InvalidArgument, nodepb.Reason_REASON_EMPTY_KEY, 0, "node: %v", err)
	case errors.Is(err, router.ErrKeyTooLarge):
		e = s.newError(codes.InvalidArgument, nodepb.Reason_REASON_KEY_TOO_LARGE, 0, "node: %v", err)
	case errors.Is(err, router.ErrNoRing):
		e = s.newError(codes.Unavailable, nodepb.Reason_REASON_NO_RING, 0, "node: %v", err)
	case errors.Is(err, router.ErrUnknownShard):
		e = s.newError(codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND, shardID, "node: %v", err)
	default:
		e = s.newError(codes.Internal, nodepb.Reason_REASON_INTERNAL, shardID, "node: %v", err)
	}
	e.NotApplied = true
	return e
}

type refusal struct {
	err    error
	code   codes.Code
	reason nodepb.Reason
}

// confChangeRefusals are the engine's refusals of a membership change, with
// their status: nothing was proposed (or it was refused at apply).
var confChangeRefusals = []refusal{
	{engine.ErrConfChangeInProgress, codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST},
	{engine.ErrLastVoter, codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST},
	{engine.ErrQuorumAtRisk, codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST},
	{engine.ErrConfChangeRejected, codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST},
	{engine.ErrReplicaExists, codes.AlreadyExists, nodepb.Reason_REASON_BAD_REQUEST},
	{engine.ErrReplicaNotFound, codes.NotFound, nodepb.Reason_REASON_NODE_NOT_FOUND},
}

// confChangeRefusal returns the entry of confChangeRefusals err matches.
func confChangeRefusal(err error) *refusal {
	for i := range confChangeRefusals {
		if errors.Is(err, confChangeRefusals[i].err) {
			return &confChangeRefusals[i]
		}
	}
	return nil
}

// engineError maps an error of the engine for a request on shardID. write
// says whether the request was a command, for NotApplied.
func (s *ClientService) engineError(err error, shardID uint64, write bool) *nodepb.Error {
	var (
		nl    *engine.NotLeaderError
		kns   *engine.KeyNotInShardError
		stale *engine.StaleGenerationError
		sm    *engine.ShardMergingError
		e     *nodepb.Error
	)
	switch {
	case errors.Is(err, engine.ErrAmbiguous):
		// Checked first: it wraps its cause (ErrShardRemoved, ErrClosed),
		// which alone would say the write did not apply.
		e = s.newError(codes.Unavailable, nodepb.Reason_REASON_AMBIGUOUS, shardID, "node: %v", err)
		return e
	case errors.As(err, &nl):
		return s.notLeader(shardID, nl.Leader, nl.Term, write, err)
	case errors.As(err, &sm):
		// Frozen for a merge (or destroyed by one while the request
		// waited): nothing applied; the key is the left shard's once the
		// merge completes, the shard's again if it is abandoned.
		e = s.newError(codes.Unavailable, nodepb.Reason_REASON_SHARD_MERGING, shardID, "node: %v", err)
		e.NotApplied = write
	case confChangeRefusal(err) != nil:
		r := confChangeRefusal(err)
		e = s.newError(r.code, r.reason, shardID, "node: %v", err)
		e.NotApplied = true
	case errors.Is(err, engine.ErrShardNotFound), errors.Is(err, engine.ErrNotInitialized),
		errors.Is(err, engine.ErrShardRemoved), errors.Is(err, engine.ErrTombstoned):
		// The ring names the shard but this node serves no replica of it
		// (yet, or any more): send the caller to the leader the router knows.
		return s.notLeader(shardID, 0, 0, write, err)
	case errors.As(err, &kns):
		e = s.newError(codes.FailedPrecondition, nodepb.Reason_REASON_KEY_NOT_IN_SHARD, kns.ShardID, "node: %v", err)
		e.Generation, e.Start, e.Last = kns.Generation, kns.Start, kns.Last
		e.NotApplied = write
	case errors.As(err, &stale):
		e = s.newError(codes.FailedPrecondition, nodepb.Reason_REASON_STALE_GENERATION, stale.ShardID, "node: %v", err)
		e.Generation, e.Start, e.Last = stale.Generation, stale.Start, stale.Last
		e.NotApplied = write
	case errors.Is(err, context.DeadlineExceeded):
		e = s.newError(codes.DeadlineExceeded, nodepb.Reason_REASON_DEADLINE, shardID, "node: %v", err)
	case errors.Is(err, context.Canceled):
		e = s.newError(codes.Canceled, nodepb.Reason_REASON_DEADLINE, shardID, "node: %v", err)
	case errors.Is(err, engine.ErrProposalDropped):
		e = s.newError(codes.Unavailable, nodepb.Reason_REASON_PROPOSAL_DROPPED, shardID, "node: %v", err)
		e.NotApplied = write
	case errors.Is(err, engine.ErrProposalTooLarge):
		e = s.newError(codes.InvalidArgument, nodepb.Reason_REASON_TOO_LARGE, shardID, "node: %v", err)
		e.NotApplied = write
	case errors.Is(err, engine.ErrSessionNotFound):
		e = s.newError(codes.FailedPrecondition, nodepb.Reason_REASON_SESSION_NOT_FOUND, shardID, "node: %v", err)
		e.NotApplied = write
	case errors.Is(err, engine.ErrDuplicateRequest):
		// Applied before, under the same session and sequence number.
		e = s.newError(codes.AlreadyExists, nodepb.Reason_REASON_DUPLICATE_REQUEST, shardID, "node: %v", err)
	case errors.Is(err, engine.ErrEmptyKey):
		e = s.newError(codes.InvalidArgument, nodepb.Reason_REASON_EMPTY_KEY, shardID, "node: %v", err)
		e.NotApplied = write
	case errors.Is(err, engine.ErrBadRequest):
		e = s.newError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shardID, "node: %v", err)
		e.NotApplied = write
	case errors.Is(err, engine.ErrClosed):
		// A proposal may have been appended before the engine stopped: the
		// outcome of a write is unknown.
		e = s.newError(codes.Unavailable, nodepb.Reason_REASON_CLOSED, shardID, "node: %v", err)
	default:
		e = s.newError(codes.Internal, nodepb.Reason_REASON_INTERNAL, shardID, "node: %v", err)
	}
	return e
}

// notLeader builds a NOT_LEADER error for shardID with the leader hint of the
// engine (leader, term) or, when it names none, the router's.
func (s *ClientService) notLeader(shardID, leader, term uint64, write bool, cause error) *nodepb.Error {
	if leader == 0 || leader == s.nodeID {
		leader = 0
		if rt, err := s.router.Route(shardID); err == nil && rt.Leader != s.nodeID && rt.Term >= term {
			leader, term = rt.Leader, rt.Term
		}
	}
	e := s.newError(codes.Unavailable, nodepb.Reason_REASON_NOT_LEADER, shardID, "node %d: %v", s.nodeID, cause)
	e.LeaderId, e.Term, e.NotApplied = leader, term, write
	if leader != 0 {
		e.LeaderAddr = s.addr(leader)
	}
	return e
}

// ctxError is the error of an operation that never reached the engine
// because ctx ended first.
func (s *ClientService) ctxError(ctx context.Context, shardID uint64) *nodepb.Error {
	e := s.engineError(ctx.Err(), shardID, true)
	e.NotApplied = true
	return e
}
