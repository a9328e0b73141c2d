package engine

import (
	"context"
	"fmt"
	"sync"

	"github.com/flotilla-db/flotilla/storage"
)

// Backups. BackupShard reads one shard as a backup takes it: first a read
// barrier (ReadOnReplica's: the shard's leader confirms a read index with a
// quorum, and this replica applies it), so that the replica holds every
// write acknowledged before the call; then, on the shard's worker, between
// two passes, the applied index and descriptor are taken together with a
// Pebble snapshot of the shard's sessions and data (the same source a raft
// snapshot streams), so that the data is exactly the shard's state at that
// applied index. The worker only opens the Pebble snapshot; the caller
// reads it on its own goroutine.

// ShardBackup is a consistent read of one shard's client sessions and user
// data at one applied index. It is used by one goroutine; Close releases
// its Pebble snapshot, and must be called.
type ShardBackup struct {
	// Desc is the shard's descriptor at AppliedIndex.
	Desc storage.Descriptor
	// AppliedIndex and AppliedTerm: the replica's state the backup holds.
	AppliedIndex, AppliedTerm uint64

	e      *Engine
	src    *storage.SnapshotSource
	closed bool
}

// BackupShard opens a consistent read of this node's replica of shardID
// (leader, follower or learner) holding every write acknowledged before the
// call. Errors: ErrShardNotFound (no initialized replica here), a
// *NotLeaderError (the replica knows no leader), a *ShardMergingError
// (frozen for a merge: retry once it is over), ErrClosed, ctx's error.
// chunkBytes is the target size of the chunks Next returns (0: the
// engine's SnapshotChunkBytes).
func (e *Engine) BackupShard(ctx context.Context, shardID uint64, chunkBytes int) (*ShardBackup, error) {
	if chunkBytes <= 0 {
		chunkBytes = e.cfg.SnapshotChunkBytes
	}
	if err := e.readBarrier(ctx, shardID, readOnReplica); err != nil {
		return nil, err
	}
	type result struct {
		b   *ShardBackup
		err error
	}
	// The worker opens the backup; a caller that gives up first must not
	// leave it open (it holds the store: Close would wait for it).
	var (
		mu        sync.Mutex
		abandoned bool
	)
	done := make(chan result, 1)
	w := e.workerFor(shardID)
	open := func() {
		b, err := w.openBackup(shardID, chunkBytes)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if b != nil {
				_ = b.Close()
			}
			return
		}
		done <- result{b, err}
	}
	if !w.enqueueFn(open) {
		return nil, ErrClosed
	}
	giveUp := func(err error) (*ShardBackup, error) {
		mu.Lock()
		abandoned = true
		mu.Unlock()
		select {
		case r := <-done:
			if r.b != nil {
				_ = r.b.Close()
			}
		default:
		}
		return nil, err
	}
	select {
	case r := <-done:
		return r.b, r.err
	case <-ctx.Done():
		return giveUp(fmt.Errorf("engine: backup of shard %d: %w", shardID, ctx.Err()))
	case <-e.stop:
		return giveUp(ErrClosed)
	}
}

// openBackup runs on the shard's worker, between passes: what the replica
// has applied is in the store, and nothing else of the shard is.
func (w *worker) openBackup(shardID uint64, chunkBytes int) (*ShardBackup, error) {
	r := w.shards[shardID]
	if r == nil {
		return nil, fmt.Errorf("%w: shard %d", ErrShardNotFound, shardID)
	}
	desc, ok := r.log.Descriptor()
	if !ok {
		return nil, fmt.Errorf("%w: shard %d (its replica here waits for a snapshot)", ErrShardNotFound, shardID)
	}
	if desc.Frozen() {
		return nil, &ShardMergingError{ShardID: shardID, Into: desc.MergeInto}
	}
	if !w.e.acquire() {
		return nil, ErrClosed
	}
	src, err := w.e.store.NewSnapshotSource(desc, chunkBytes)
	if err != nil {
		w.e.release()
		return nil, err
	}
	index, term := r.log.Applied()
	return &ShardBackup{Desc: desc.Clone(), AppliedIndex: index, AppliedTerm: term, e: w.e, src: src}, nil
}

// Next returns the next chunk of the shard's sessions and data, as a raft
// snapshot streams them (length-prefixed key/value pairs, storage keys in
// increasing order; see storage.SnapshotDecoder), or io.EOF after the
// last. The chunk is valid until the next call. ErrClosed once the engine
// is closing: the caller then closes the backup.
func (b *ShardBackup) Next() ([]byte, error) {
	if b.closed {
		return nil, fmt.Errorf("%w: backup of shard %d closed", ErrBadRequest, b.Desc.ShardID)
	}
	if b.e.closed.Load() {
		return nil, ErrClosed
	}
	return b.src.Next()
}

// Keys and Bytes count the pairs, and the bytes of their keys and values,
// that Next returned so far.
func (b *ShardBackup) Keys() uint64  { return b.src.Keys }
func (b *ShardBackup) Bytes() uint64 { return b.src.Bytes }

// Close releases the Pebble snapshot and the engine's store.
func (b *ShardBackup) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.src.Close()
	b.e.release()
	return err
}
