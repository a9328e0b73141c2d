package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Snapshots. raft asks for one (a MsgSnap in a Ready) when a follower needs
// entries that were truncated. The engine describes the shard as applied at
// the moment it sends (at least what raft asked for: applied entries are
// committed), opens a Pebble snapshot right then on the worker, so that the
// data matches the description exactly, and streams the shard's range on
// its own goroutine. The receiver stages the stream in an sstable, then
// steps the MsgSnap; when raft accepts it, the worker ingests the sstable
// atomically with the shard's new raft state.

const snapshotTimeout = 10 * time.Minute

func (w *worker) sendSnapshot(r *replica, toNode uint64, m raftpb.Message) {
	to := m.To
	fail := func() { r.g.RN.ReportSnapshot(to, raft.SnapshotFailure) }
	snap, err := r.log.Snapshot()
	if err != nil {
		fail()
		return
	}
	desc, _ := r.log.Descriptor()
	select {
	case w.e.snapSem <- struct{}{}:
	default:
		fail() // too many streams: raft retries later
		return
	}
	src, err := w.e.store.NewSnapshotSource(desc, w.e.cfg.SnapshotChunkBytes)
	if err != nil {
		<-w.e.snapSem
		fail()
		return
	}
	m.Snapshot = &snap
	h := SnapshotHeader{ClusterID: w.e.cfg.ClusterID, From: w.e.cfg.NodeID, To: toNode, ShardID: r.shardID, Msg: m}
	shardID := r.shardID
	w.e.wg.Add(1)
	go func() {
		defer w.e.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
		go func() {
			select {
			case <-w.e.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := w.e.transport.SendSnapshot(ctx, h, src)
		cancel()
		_ = src.Close()
		<-w.e.snapSem
		status := raft.SnapshotFinish
		if err != nil {
			status = raft.SnapshotFailure
			w.e.cfg.Logger.Debug("snapshot failed", "shard", shardID, "to", to, "err", err)
		} else {
			w.e.stats.snapsSent.Add(1)
		}
		w.enqueueFn(func() {
			if r := w.shards[shardID]; r != nil {
				r.g.RN.ReportSnapshot(to, status)
				w.markDirty(r)
			}
		})
	}()
}

// HandleSnapshot implements Handler: it stages the stream, then hands the
// MsgSnap to the shard's worker.
func (e *Engine) HandleSnapshot(ctx context.Context, h SnapshotHeader, body SnapshotBody) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if h.ClusterID != e.cfg.ClusterID || h.To != e.cfg.NodeID || h.Msg.Type != raftpb.MsgSnap ||
		h.Msg.Snapshot == nil || h.Msg.To == 0 {
		return fmt.Errorf("%w: snapshot header for cluster %d node %d (type %v)", ErrBadRequest, h.ClusterID, h.To, h.Msg.Type)
	}
	desc, err := storage.UnmarshalDescriptor(h.Msg.Snapshot.Data)
	if err != nil || desc.ShardID != h.ShardID {
		return fmt.Errorf("%w: snapshot descriptor: %v", ErrBadRequest, err)
	}
	if rep, ok := desc.Replica(h.Msg.To); ok && rep.NodeID != e.cfg.NodeID {
		return fmt.Errorf("%w: snapshot for replica %d of shard %d, which is on node %d", ErrBadRequest, h.Msg.To, h.ShardID, rep.NodeID)
	}
	if err := e.dropSubsumed(ctx, desc); err != nil {
		return err
	}
	// Make sure the replica may exist here and claim its range.
	if _, err := call(ctx, e, h.ShardID, func(w *worker) (struct{}, error) {
		if w.replicaFor(h.ShardID, &h.Msg) == nil {
			return struct{}{}, fmt.Errorf("%w: shard %d replica %d", ErrTombstoned, h.ShardID, h.Msg.To)
		}
		// A snapshot of an older range than the replica's (sent before a
		// split or merge this replica applied) is stale: raft would
		// ignore it, and claiming its range would take back what the
		// split handed to the child.
		if r := w.shards[h.ShardID]; r != nil {
			if cur, ok := r.log.Descriptor(); ok && cur.Generation > desc.Generation {
				return struct{}{}, fmt.Errorf("%w: snapshot of shard %d at generation %d, the replica is at %d", ErrBadRequest, h.ShardID, desc.Generation, cur.Generation)
			}
		}
		return struct{}{}, e.claimRange(desc)
	}); err != nil {
		return err
	}
	if !e.acquire() {
		return ErrClosed
	}
	defer e.release()
	st, err := e.store.StageSnapshot(desc)
	if err != nil {
		return err
	}
	for {
		chunk, err := body.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			err = st.Write(chunk)
		}
		if err != nil {
			st.Abort()
			return fmt.Errorf("engine: receive snapshot of shard %d: %w", h.ShardID, err)
		}
	}
	if err := st.Finish(); err != nil {
		return err
	}
	done := make(chan error, 1)
	w := e.workerFor(h.ShardID)
	if !w.enqueueSnapshot(snapReq{shardID: h.ShardID, msg: h.Msg, staged: st, done: done}) {
		st.Abort()
		return ErrClosed
	}
	select {
	case err := <-done:
		if err == nil {
			e.stats.snapsRecv.Add(1)
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-e.stop:
		return ErrClosed
	}
}

func (w *worker) stepSnapshot(s snapReq) {
	r := w.shards[s.shardID]
	if r == nil || r.replicaID != s.msg.To {
		s.staged.Abort()
		s.done <- fmt.Errorf("%w: shard %d", ErrShardNotFound, s.shardID)
		return
	}
	r.staged = append(r.staged, stagedSnap{index: s.msg.Snapshot.Metadata.Index, st: s.staged})
	w.staged = append(w.staged, r)
	w.heardLeader(r)
	_ = r.g.RN.Step(s.msg)
	w.markDirty(r)
	w.wake(r)
	s.done <- nil
}

// applySnapshot installs the snapshot of rd, staged when it arrived.
func (w *worker) applySnapshot(r *replica, rd *raft.Ready) {
	idx := rd.Snapshot.Metadata.Index
	for i, s := range r.staged {
		if s.index != idx {
			continue
		}
		r.staged = append(r.staged[:i], r.staged[i+1:]...)
		hs := rd.HardState
		if raft.IsEmptyHardState(hs) {
			hs = r.log.HardState()
		}
		if old, ok := r.log.Descriptor(); ok {
			r.setFormer(old)
		}
		if err := r.log.ApplySnapshot(s.st, rd.Snapshot, hs); err != nil {
			panic(fmt.Sprintf("engine: node %d shard %d: apply snapshot: %v", w.e.cfg.NodeID, r.shardID, err))
		}
		r.g.SnapshotApplied(idx)
		// Claimed as it arrived; claimed again, as another snapshot that
		// raft did not take may have put the replica's former claim back.
		w.claimOwn(r)
		if r.heldFrom != 0 {
			// raft applies what follows the snapshot again.
			r.heldFrom, r.heldTo = 0, 0
			delete(w.holding, r.shardID)
		}
		w.e.notePeers(r) // a replica created by a snapshot learns its peers here
		w.descChanged(r)
		return
	}
	panic(fmt.Sprintf("engine: node %d shard %d: raft accepted snapshot %d that was not staged", w.e.cfg.NodeID, r.shardID, idx))
}

// claimOwn makes r's range claim its descriptor's (none while it has
// none). A failure is logged: another replica here claims part of the range.
func (w *worker) claimOwn(r *replica) {
	d, ok := r.log.Descriptor()
	if !ok {
		w.e.releaseRange(r.shardID)
		return
	}
	if err := w.e.claimRange(d); err != nil {
		w.e.cfg.Logger.Error("snapshot: claiming the replica's range", "shard", r.shardID, "err", err)
	}
}

func (w *worker) abortStaged(r *replica) {
	for _, s := range r.staged {
		s.st.Abort()
	}
	r.staged = nil
}
