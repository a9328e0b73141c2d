// Package node assembles one Flotilla node: engine, transport, router,
// placement and the client gRPC service (DESIGN.md section 2), so that a
// database can embed a whole node in its own process.
//
// # The client service (client_*.go)
//
// ClientService implements nodepb.KVServer, the service applications call
// (usually through package client). It owns no state of its own beyond its
// configuration: it routes every request with the node's router.Router to a
// shard, runs it on the node's engine (Propose for writes, Read for
// linearizable reads, ReadLocal for stale reads) and turns the engine's
// errors into gRPC statuses carrying a nodepb.Error detail:
//
//	engine / router error            code                reason
//	*engine.NotLeaderError           Unavailable         NOT_LEADER (leader hint: node, address, term)
//	shard not hosted here            Unavailable         NOT_LEADER (hint from the router)
//	*engine.KeyNotInShardError       FailedPrecondition  KEY_NOT_IN_SHARD (shard, its generation)
//	empty / too large key or value   InvalidArgument     EMPTY_KEY, KEY_TOO_LARGE, VALUE_TOO_LARGE
//	engine.ErrProposalTooLarge       InvalidArgument     TOO_LARGE
//	unknown shard (Scan by ID)       NotFound            SHARD_NOT_FOUND
//	engine.ErrProposalDropped        Unavailable         PROPOSAL_DROPPED (not applied: retry)
//	engine.ErrClosed                 Unavailable         CLOSED
//	engine.ErrSessionNotFound        FailedPrecondition  SESSION_NOT_FOUND (not applied: register, retry)
//	engine.ErrDuplicateRequest       AlreadyExists       DUPLICATE_REQUEST (applied before; never retried)
//	no ring yet                      Unavailable         NO_RING
//	ctx deadline / cancel            DeadlineExceeded / Canceled   DEADLINE (a write may have applied)
//
// Error.not_applied is set when a write certainly did not apply, so that a
// client may retry even a compare-and-swap.
//
// A write that carries a nodepb.Session (client_session.go) is proposed with
// engine.ProposeSession: it applies exactly once however often the client
// retries it with the same session and sequence number, and every retry
// returns the first application's result. A write without one is proposed
// as is (engine.Propose).
//
// The router is the caller's: it keeps the ring and replicas up to date (the
// meta shard, gossip). StartLeaderFeed adds the engine's leader-change
// events to it, so that NotLeader hints and Routes answers carry the
// leaders this node sees.
//
// # Concurrency model
//
// gRPC calls the handlers concurrently; they share only the engine and the
// router, both safe for concurrent use, and never block without a context:
// every handler runs under the caller's deadline, bounded by
// ClientServiceConfig.MaxRequestTimeout. A Batch runs its operations in
// goroutines of its own, at most BatchConcurrency engine calls at once,
// operations on the same key one after the other in request order; it
// returns when all have finished. StartLeaderFeed starts one goroutine per
// call, which ends with its context, with the engine, or with Close. The
// service never panics on malformed input: every field is checked, nil
// messages read as empty ones.
package node
