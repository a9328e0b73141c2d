// Package meta owns the records of the meta shard, the cluster's authority
// on what it is made of, and the code that writes, reads, follows and
// repairs them. The meta shard is a system raft group (ShardID) with
// voters on up to MaxVoters nodes and a learner on every other node, so
// that each node reads its own copy; it runs the engine's key-value state
// machine.
//
// # Records
//
// Values are JSON; IDs and versions in keys are 20-digit zero-padded
// decimals, so that key order is numeric order:
//
//	cluster                 ClusterRecord: the cluster's bootstrap parameters
//	nodes                   NodeIndex: the IDs of all node records, and a version
//	node/<node ID>          NodeRecord, one per node: addresses, removed, draining; IDs are never reused
//	ring                    RingHeader: ring generation, shard count, version, change-log start,
//	                        the shards frozen for a merge
//	ring/change/<version>   RingChange: the shards whose records that version wrote or retired
//	shard/<shard ID>        ShardRecord, one per shard: range, generation, conf index,
//	                        next replica ID, replicas (node ID, replica ID, role),
//	                        the left neighbour it is frozen to be merged into
//	merged/<shard ID>       MergedRecord: the tombstone of a shard merged into its left neighbour
//	shard-ids               ShardIDRecord: the shard ID allocator, the lowest ID never handed out
//	intents                 IntentIndex: the IDs of the shards with an intent record
//	intent/<shard ID>       the placement driver's intent of the operation in flight
//	                        on that shard, as the caller encoded it (JSON)
//
// The key-value state machine keeps a shard's keys in the order of their
// hash (the engine's PartitionRule), not of the keys: the records of one
// prefix are not contiguous, so a scan of shard/ walks the whole meta shard
// (almost all of which is shard records anyway) and sorts what it keeps.
// Everything else is found without a scan: the node index lists the node
// records, the intent index the intent records, and change entries name
// the shard records that changed.
//
// # Writing
//
// The shard is the authority on itself: its replicated descriptor changes
// only when it applies its own conf change, split or merge, and raises its
// ConfIndex or its Generation when it does. A shard record follows the
// descriptor and is never replaced by an older one: PutShards writes a
// record only if it is newer (a higher ConfIndex, or the same and a higher
// Generation) than the stored one, and drops an older or equal one without
// error, so writes may be repeated, retried after an unknown outcome and
// delivered out of order. RecordOf makes a record of a descriptor; a
// shard of the initial layout is created with its record's Spec, so that
// the engine's first descriptor and the bootstrap record are equal.
//
// Shard records are written in the engine's Batch commands, all or
// nothing, each within the engine's proposal size limit (1 MiB by default,
// some 3,000 records). A batch puts its records stamped with Version v+1,
// writes the change entry of v+1 with their IDs, and compare-and-swaps the
// ring header from version v to v+1. Since every write of a shard record
// is such a batch, the header's version guards all records at once: a
// writer reads the header, then the records (a replica's later reads are
// at least as new), keeps those of its records that are newer, and its
// batch applies only if the header is still the one it read, that is if no
// record changed in between. A batch that loses is rebuilt from a fresh
// (linearizable) read, so concurrent writers neither lose each other's
// records nor replace a newer one, and a record costs its writer no
// compare-and-swap of its own. The header's Generation, the generation of
// the router's ring, rises with every batch that adds a shard or changes a
// range. Node records are written with a compare-and-swap each, together
// with the node index. Nothing but this package may write these keys.
//
// # Splits
//
// A split narrows its parent (same ConfIndex, Generation + 1: newer) and
// creates a child whose first descriptor has the parent's replicas and
// replica IDs, NextReplicaID and the new generation, at ConfIndex 0. Both
// records are ordinary writes: a new shard's record is accepted whatever
// its configuration (the child's replica IDs are not 1..n, and it may have
// changed its configuration before its first record is written), and
// Validate asks only for a well-formed record. Nothing but a shard's own
// descriptor makes a record, so a record cannot claim a range its shard
// does not have; it can only be behind. The parent's and the child's
// records may land in either order, or in one batch (the node that ran the
// split writes both): in between, the records overlap (child first) or
// leave a gap (parent first), and a Watcher hands out no ring until they
// tile the hash space again, so a router keeps the ring before the split
// until it can have the one after.
//
// The child's ID comes from the shard ID allocator (AllocateShardID): a
// record advanced by compare-and-swap, read linearizably, so that no ID is
// handed out twice or reused, whichever node leads the meta shard. An
// allocation that failed may have used its ID up: IDs may be skipped.
//
// # Merges
//
// A merge folds a shard R into its left neighbour L (package engine,
// merge.go): R is frozen first (its descriptor, and so its record, says
// into which L at which generation, at a higher generation of its own),
// then L's range widens over R's (L's generation rises above both) and R
// is gone. The records must not keep R beside the widened L, which would
// overlap it for good: the ring header lists the shards whose records are
// frozen (Merging), and the write that stores a record of L showing R's
// range taken over (a generation above the one R was frozen against, a
// range that holds R's first hash) retires R in the same batch: R's record
// is deleted, its tombstone (merged/<ID>) written, and the change entry
// names R, so a watcher sees R removed and the records tile the hash space
// again in the same version. A frozen record of R written after L's
// widened one (the other order) retires R at once. A tombstoned shard's
// records are dropped from then on, however late they come. So the node
// that runs a merge writes R's frozen record before it proposes the merge,
// and L's widened record after: whoever writes L's record later (L's
// reconciler, should that node fail) retires R too. An abandoned merge (L's
// generation bumped, R thawed at a higher generation of its own) retires
// nothing: L's bumped record does not hold R's range, and R's thawed record
// takes it off the header's list. See merges.go for why L's record proves
// the merge.
//
// # Intents
//
// The placement driver runs on the meta shard's leader and records an
// intent per shard for every multi-step operation in flight, so that the
// next leader can finish or roll it back (placement.IntentStore). PutIntent,
// DeleteIntent and Intents keep them. The value is opaque to this package:
// JSON made by the caller (the node encodes placement.Intent), checked to
// be JSON and stored as is. This package does not import placement and
// store placement.Intent itself because that type is not a storage format:
// it and its Op carry no JSON tags, and Op.Kind is an iota, so a renamed
// field or a reordered kind in a package that does not know it is writing
// records would silently change what a new meta leader reads back. The
// encoder (the node's adapter) owns that format and can pin it; keeping the
// intent's shard ID equal to the key's is its duty too.
//
// An intent record and the intent index are written in one batch with
// compare-and-swap, the index only when a shard gains or loses its intent
// (a record replaced in place proves by its own compare-and-swap that it
// exists, hence that the index lists it). Intents reads the index and then
// the records it lists: at 100,000 shard records (TestScale) that takes
// about 1 ms for 300 intents, where a scan of the intent/ prefix walks the
// whole meta shard and takes some 165 ms, a hundred pages of shard records
// read to keep none. The index costs one more key in a batch.
//
// Writes need the meta shard's leader. On another node, the first
// (linearizable) read of every write fails with the engine's
// *engine.NotLeaderError, as a proposal would: nothing is written, even
// when there was nothing to write. A leader deposed after it proposed gets
// engine.ErrProposalDropped if the new leader's log replaced its entry (it never
// applies), an *engine.AmbiguousError if it cannot tell (it may have
// applied), or nil if the entry was in the new leader's log and committed
// by it; so a write that returns nil is durable, and a new leader's
// Intents with Linearizable (served only once it has committed an entry of
// its own term, and so every earlier entry it will ever commit) sees it.
//
// # Following
//
// A Watcher follows the local copy for a router. Nothing changed: one local
// read of the ring header. Something changed: the change entries from its
// version to the header's, and the records they name. It reads every
// record only on a first poll, when it is more than
// Config.ChangeLogVersions behind (the header's LogStart), or when the
// entries name so many records that one scan is cheaper. Because a record,
// its version and its change entry are written in one batch, a watcher
// that has read the entries up to version v and the records they name
// holds every record as of v or later; it re-reads the header to make
// sure no write landed meanwhile before it builds a ring, so that the ring
// of a generation is always the same.
//
// # Repairing
//
// A Reconciler on every node takes the descriptors of the shards that node
// leads, reported as they apply (Report) and compared with the records in a
// pass every interval, and writes those that lag, coalesced by shard ID and
// retried with backoff.
//
// # Concurrency
//
// A Store holds no mutable state and is safe for concurrent use; its writes
// must run on the meta shard's leader, its reads with Linearizable too, and
// its Local reads anywhere there is a replica. A Watcher belongs to one
// goroutine. A Reconciler runs one goroutine from NewReconciler to Close;
// Report may be called from any goroutine and never blocks.
package meta
