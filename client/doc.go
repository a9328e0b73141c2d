// Package client is the Go client of a Flotilla cluster for applications:
// Put, Get, Delete, CompareAndSwap, Scan and Batch over the nodes' client
// gRPC service (node/nodepb, served by package node).
//
// # What it owns
//
//   - A cache of the cluster's routes: the ring (shard ranges, generation,
//     partition rule) in a router.Router, each shard's replicas and leader
//     hint, and the client address of each node. New fills it from the
//     Routes call of any endpoint; NotLeader hints and route refreshes keep
//     it current.
//   - One gRPC connection per node address, opened on first use and closed
//     by Close.
//   - The retry policy. A request goes to the leader of its key's shard. A
//     NotLeader error with a leader hint updates the cache and the request
//     is retried at once on the hinted leader (up to Config.MaxRedirects
//     times in a row). Without a hint, and for retryable errors (a dropped
//     proposal, a stale ring, a node shutting down, a connection failure),
//     the client backs off (bounded exponential with jitter, between
//     Config.BackoffMin and Config.BackoffMax), refreshes its routes (at most
//     once per Config.RefreshInterval) and retries, avoiding the node that
//     failed. The caller's context bounds all of it: when it ends, the call
//     returns an error wrapping ctx.Err().
//
// # Outcomes
//
// A write whose outcome is unknown — the deadline passed while its proposal
// was in flight, the connection broke, the node shut down mid-request — may
// or may not have applied. Put and Delete are retried anyway (writing the
// same value twice is harmless); CompareAndSwap never is: it returns an
// *AmbiguousError (matching ErrAmbiguous and the cause, e.g.
// context.DeadlineExceeded) instead. A write that gives up after an earlier
// attempt had an unknown outcome is reported the same way. Errors the
// server marks as certainly not applied (NotLeader, a dropped proposal, a
// stale ring) are always retried.
//
// Bad input is refused on the client before any round trip, with the same
// errors the server would return: ErrEmptyKey, ErrKeyTooLarge,
// ErrValueTooLarge (limits: Config, lowered to the server's if smaller).
// Other errors of the server are *Error values carrying the gRPC code and
// the server's nodepb.Error detail; errors.Is matches them against the
// sentinels of this package.
//
// # Concurrency model
//
// A Client is safe for concurrent use and starts no goroutine of its own
// beyond gRPC's (one connection each) and, during a Batch, one goroutine
// per shard request, which ends before Batch returns. Route lookups are
// lock-free (router.Router); the node addresses and connections are guarded
// by one mutex, held only for map operations; concurrent route refreshes
// are merged into one call (singleflight).
package client
