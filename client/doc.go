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
//   - A session (session.go), unless Config.DisableSessions: a random
//     64-bit ID, a sequence number per write, the set of writes still
//     running (whose lowest sequence number is the acknowledgement sent
//     with every write), and the shards that know the session.
//
// # Outcomes
//
// A write whose outcome is unknown — the deadline passed while its proposal
// was in flight, the connection broke, the node shut down mid-request — may
// or may not have applied. Every write carries the client's session and its
// sequence number, the same on each of its attempts, so the cluster applies
// it once however often it is sent (package engine, ProposeSession): Put,
// Delete and CompareAndSwap are all retried after an unknown outcome, and
// their result is that of the one application — a CompareAndSwap whose
// response was lost and that is retried reports that it swapped, not that
// it found its own value. The first write to a shard registers the session
// there; a shard that forgot it (expired while the client was idle) says so
// and the write is sent again at once, registering it.
//
// A write that gives up (its context ended) after an attempt with an
// unknown outcome returns an *AmbiguousError (matching ErrAmbiguous and the
// cause, e.g. context.DeadlineExceeded). Errors the server marks as
// certainly not applied (NotLeader, a dropped proposal, a stale ring) are
// always retried. The session assumes that a write is not retried for
// longer than the cluster's session TTL (an hour by default).
//
// Without sessions (Config.DisableSessions), Put and Delete are retried
// after an unknown outcome anyway (writing the same value twice is
// harmless, but a Delete then reports what its last attempt found), and
// CompareAndSwap never is: it returns an *AmbiguousError instead.
//
// # Splits
//
// A split narrows a shard and gives the rest of its range to a new shard.
// A request routed with a ring from before it reaches a node that routes
// by its own router: if that one has followed, the node runs the request
// on the new shard; if not, the shard refuses the key (KEY_NOT_IN_SHARD,
// with the shard's range now; nothing applied) and the client refreshes
// its routes and retries after a backoff, until some node's router has
// followed. A refresh never installs a ring older than the one the client
// holds (router.Router.SetRing refuses it), so answers of a lagging node
// cannot take the client back. A write keeps its session and sequence
// number across all this: the new shard starts with a copy of the
// parent's sessions, so a write that applied on the parent before the
// split, and whose response was lost, is answered on the new shard with
// its first result, not applied again.
//
// # Merges
//
// A merge folds a shard into its left neighbour. While it runs, the right
// shard is frozen: a request to it is refused (SHARD_MERGING, nothing
// applied) and the client retries after a backoff, refreshing its routes.
// Once the merge is through, a request routed with the ring from before
// it reaches a node that runs it on the left shard (its router has
// followed) or refuses it (no replica of the merged shard any more:
// NOT_LEADER with no hint), and the client refreshes and retries on the
// left shard. The left shard folded the right one's sessions into its
// own, so a write that applied on the right shard before the freeze, and
// whose response was lost, is answered on the left shard with its first
// result, not applied again. A merge that is abandoned thaws the right
// shard, and the retries go on there.
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
// by one mutex, the session's state by another, both held only for map
// operations; concurrent route refreshes are merged into one call
// (singleflight).
package client
