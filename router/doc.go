// Package router maps keys to the shards that own them and to the nodes that
// serve those shards.
//
// # What it owns
//
//   - The key hash: PartitionRule says which part of a key is hashed
//     (xxhash64), so that the rows of one partition land in one shard. It is
//     defined here once and used both by Lookup and by the storage key
//     encoding.
//   - The Ring: the hash space [0, 2^64) split into contiguous ranges, one
//     per shard, at a generation. Ranges are inclusive at both ends
//     (Start, Last), so the top of the space is an ordinary range end.
//     NewRing refuses gaps, overlaps, unsorted ranges and bad shard IDs with
//     a *RingError; EvenRing splits the space evenly. A Ring carries an
//     index over the top bits of the hash (below) that finds a hash's
//     range in a few memory reads.
//   - The Router: the node-local routing table, shard -> Route (replicas,
//     leader hint, term, ring generation), kept up to date from the meta
//     shard (SetRing, SetReplicas), from the engine's leader-change events
//     (UpdateLeader) and from NotLeader errors (NotLeaderHint).
//   - Subscriptions, which hand route changes to gossip and clients.
//
// The ring is authoritative in the meta shard; the Router is a cache of it
// plus leadership, which is not in the meta shard. A request routed with a
// stale table is refused at apply with a typed error carrying the current
// generation, and the caller refreshes and retries: the Router never needs
// to be exact, only monotonic.
//
// # Concurrency model
//
// The package starts no goroutines. Every method of Router, Ring and
// Subscription is safe for concurrent use.
//
// Readers (Lookup, LookupHash, Route, Routes, Ring) never lock: they Load an
// atomic.Pointer to an immutable table {ring, rule, route cells}, find the
// hash's position through the ring's index and Load the shard's route cell,
// an atomic.Pointer[Route] to an immutable Route. Lookup does not allocate.
//
// Writers (SetRing, SetReplicas, UpdateLeader, NotLeaderHint) serialize on
// Router.mu, read the current state and publish a new one copy-on-write:
//
//   - SetRing builds a whole new table (one cell per range of the new ring,
//     carrying over the routes of the shards that stay) and swaps the table
//     pointer. O(shards), but rings change rarely.
//   - SetReplicas, UpdateLeader and NotLeaderHint copy one Route and swap it
//     into the shard's cell. O(1) whatever the number of shards.
//
// Why per-shard cells: leader changes are frequent (every election of every
// shard, every NotLeader hint) while ring changes are rare. Rebuilding the
// table of 100,000 shards costs milliseconds and 6 MB of garbage
// (BenchmarkSetRing); doing that per leader change would make a wave of
// elections quadratic. With a cell per shard, a leader change is one map
// lookup and one 64-byte allocation whatever the shard count
// (BenchmarkUpdateLeader), and a reader pays one extra pointer load. A
// reader sees, for each shard, either the old or the new Route, never a torn
// one. A lookup that loaded the table just before a SetRing may return a
// route of the old generation: the Route says which, and the shard refuses
// a stale generation at apply.
//
// Leadership rule: a notification with a lower term than the held one is
// ignored; one with an equal term replaces the leader only if the held one is
// unknown (0), since a raft term has at most one leader; a higher term always
// applies. Rings only move forward: SetRing refuses a lower generation.
//
// Subscribers are notified under Router.mu, in the order changes are
// applied, by appending to a per-subscriber unbounded queue (its own mutex)
// and a non-blocking send on a 1-buffered signal channel: a writer never
// waits for a subscriber. Next drains the queue, waiting on the signal and
// the caller's context. Lock order: Router.mu, then Subscription.mu.
//
// # The ring index
//
// Lookup cost is dominated by memory, not code. With 100,000 shards a
// binary search over the 800 KB of range ends makes 17 dependent reads,
// most of them cache misses: about 250 ns per lookup, against 35 ns with
// 1,000 shards. So NewRing builds an index over the top k bits of the hash,
// k = floor(log2(shards)), at least 1: 2^k buckets, between half of and as
// many as the shards, and for bucket b the position index[b] of the range
// holding the bucket's first hash. The range holding a hash of bucket b lies
// between index[b] and index[b+1], so a lookup reads those two adjacent
// entries (one cache line) and scans the range ends (lasts, a compact
// []uint64 apart from the routes) from index[b]: on an even ring a bucket
// holds at most two range ends, so the scan compares one or two adjacent
// entries. A bucket crowded with more than 8 range ends (a very uneven ring)
// is binary searched between the two positions, so whatever the ring's
// shape a lookup costs at most the index read and a binary search. The position then
// costs one pointer load, the shard's route cell, and the copy of its Route.
//
// Memory: 4 bytes per bucket, so 2 to 4 bytes per shard: 256 KiB at
// 100,000 shards (next to 800 KB of range ends), 2 KiB at 1,000. NewRing
// builds it in O(shards). A finer index (2 or more buckets per shard)
// measured no faster, being itself more memory to miss in; a coarser one
// (8 shards per bucket) about as fast.
//
// Measured (BenchmarkLookup, BenchmarkLookupSearch, which runs both searches
// on one table): about 25 ns per lookup at 1,000 shards and 100 ns at
// 100,000, against 35 and 250 ns for the binary search. What remains at
// 100,000 shards is mostly the Route read: routes are allocated one by one
// as leaders change, so 100,000 of them spread over megabytes and reading
// one is a cache and TLB miss whatever the search; a search that knows the
// position without reading anything is within 10% of the index.
package router
