// Package backup takes, checks and restores backups of a Flotilla cluster:
// flotillactl backup DIR (Take), flotillactl backup --verify DIR (Verify)
// and flotilla restore --backup DIR --data-dir NEW (Restore).
//
// # What a backup holds
//
// One file per user shard and a MANIFEST (JSON): the cluster's ID and
// replication factor, the store format of the keys, when the backup began
// and ended, and per shard its ID, hash range, generation, the applied
// index (and term) its file holds, the node it was read from, the file's
// name, size, SHA-256, and the number of pairs and their bytes. The meta
// shard is not backed up: a restored cluster is a new cluster (a new ID,
// new node IDs), whose meta shard is made from the manifest's ring.
//
// A shard's file is the shard's client session records and user data, the
// pairs a raft snapshot of it streams (storage keys, in increasing order),
// as framed chunks: the 8-byte magic "FLOTBAK1", then per chunk its length
// (uvarint) and its bytes, length-prefixed key/value pairs
// (storage.SnapshotDecoder). The session records are kept so that
// exactly-once survives a restore: a client that retries a write against
// the restored cluster with the session it used gets the first attempt's
// result, as it would after a failover. The keys are the store's own, so a
// backup restores into a store of the same format only (StoreFormat).
//
// # Consistency
//
// Each shard is read by the Admin service's Backup call on one replica
// (the leader first, then the others, on failure): engine.BackupShard does
// a read barrier first (the shard's leader confirms a read index with a
// quorum; the replica applies it), then takes, on the shard's worker
// between two passes, the applied index together with a Pebble snapshot of
// the shard's sessions and data, which the node reads and streams on the
// call's goroutine, never on the worker. So each shard's file is the
// shard's state at one applied index, and it holds every write
// acknowledged before the backup began (Started), since its barrier came
// later. Shards are read at different moments: the backup as a whole is
// not one point in time (a write acknowledged while the backup ran is in
// it or not, shard by shard). The ring is read before and checked after:
// a shard split or merged while the backup ran makes the ranges that were
// read not tile the hash space, and the backup fails (ErrRingChanged)
// rather than keep a shard twice or lose one; retry it.
//
// Take writes each file under a temporary name, syncs it, renames it, and
// writes the MANIFEST the same way last, syncing the directory: a
// directory without a MANIFEST is not a backup. DIR must be empty or new
// (ErrDirNotEmpty); a failed backup removes what it wrote.
//
// # Restore
//
// Restore checks the backup as Verify does, then prepares an empty data
// directory with node.PrepareBootstrap: the data of every shard goes into
// the new store first (each file staged into an sstable, checked pair by
// pair, and hashed again as it is read, then ingested with
// storage.Store.IngestData), and the node's identity last, holding the
// bootstrap parameters of a new cluster whose only member is the new node
// and whose initial ring is the backup's (meta.ClusterRecord.Ring). The
// restored node's first `flotilla start` then bootstraps that cluster by
// the code of every bootstrap (one replica of each shard, created over the
// data already in place, and the meta shard's records) and serves it. The
// cluster record keeps the backup's replication factor, so the placement
// driver adds replicas of every shard onto the nodes that join it with
// --join, by its repair duty (a shard with fewer voters than the factor).
package backup
