// Package storage owns a node's one Pebble database: the key schema (see
// keys.go), every shard's raft log, HardState, truncated and applied state,
// the user data of all shards, the layout of the shards' client session
// records (session.go), write batches that span many shards and commit with
// one sync, log truncation, shard snapshots (sessions, then data), replica
// removal with tombstones, and the offline rewrite of a replica into the
// only voter of its shard for the recovery from the loss of a majority
// (recover.go).
//
// Concurrency: a Store is safe for concurrent use. A Log (one shard's
// raft.Storage view, with an in-memory cache of the log's tail) belongs to
// the goroutine that drives its shard; a Batch to the goroutine that fills
// and commits it.
//
// Durability contract with the engine: log entries and HardState (its term
// and vote; a commit index alone is not written, it goes with the next
// applied index) are written into a Batch that is durable (Commit with Sync,
// or ApplyNoSyncWait then SyncWait) before any message that depends on them
// is sent; the state machine's writes for applied entries and the applied
// index go into the same batch, so that a restart neither re-applies nor
// skips an entry. Snapshots are ingested as sstables, atomically with the
// shard's new raft state. The store counts its file syncs (FileSyncs): with
// batches sharing syncs, the synced commits do not count the fsyncs.
package storage
