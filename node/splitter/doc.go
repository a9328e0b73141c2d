// Package splitter runs the split of a shard's hash range on the node that
// leads the shard, for the node's Admin Split request: package engine
// splits (Engine.Split: the parent keeps [Start, At-1], the child gets
// [At, Last] on the same replicas, no data moves), package node/meta
// hands out the child's ID and keeps the records; this package decides
// and sequences.
//
// # A split
//
//  1. The shard's applied descriptor, on its leader (this node): a system
//     shard, a split point outside the range, a range of one hash, a joint
//     configuration or an expected generation that is not the shard's are
//     refused with typed errors before anything is asked of the meta
//     shard.
//  2. The split point, unless given: the median hash of the shard's rows
//     (PointMedian), counted in the leader's store up to
//     Config.MaxScanKeys rows; for a larger shard, where Pebble estimates
//     half of its data on disk to be (PointEstimate); else the middle of
//     the range (PointMiddle). A row's hash is its partition's
//     (router.PartitionRule: the rows of one partition share a hash), so
//     any split point, a hash, keeps every partition whole on one side.
//  3. A new shard ID from the meta shard's allocator (on its leader,
//     wherever that is: the Meta interface forwards). An ID is never
//     handed out twice, so two concurrent splits never create one shard.
//  4. Engine.Split with the generation checked in step 1: a split planned
//     against a range that changed meanwhile fails at apply with a
//     *engine.StaleGenerationError and changes nothing (the ID is skipped).
//  5. The records of both halves, in one meta shard batch, so that the
//     routers get the ring after the split at once rather than when the
//     child has elected a leader. The reconcilers of the two shards'
//     leaders write the same records (the parent's as soon as the split
//     applies, the child's once it has a leader), so this write is an
//     optimisation that may lose the race or fail; a router never sees a
//     half-written state, because the meta shard's watcher builds no ring
//     until the records tile the hash space (see package node/meta).
//
// # Concurrency
//
// A Splitter holds no mutable state: Split may run concurrently, for one
// shard or many. Two splits of one shard planned against one generation
// race at apply, where the second fails with a stale generation.
package splitter
