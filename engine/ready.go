package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-db/flotilla/group"
	"github.com/flotilla-db/flotilla/heartbeat"
	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Durability off the workers. raft runs in its asynchronous storage mode
// (etcd raft's AsyncStorageWrites): a Ready is never advanced; what to
// persist comes with a message to the local append thread, whose responses
// (the replica's own acknowledgement of its append, a follower's MsgAppResp,
// a vote) may only be delivered once the write is durable, and what to apply
// with a message to the local apply thread. A pass takes the Ready of every
// dirty shard and writes one Pebble batch for all of them: snapshots
// (ingested first), log entries, HardStates, the state machine's writes for
// the committed entries (raft hands out only entries durable here) and the
// applied indexes. Then:
//
//  1. the batch is applied with Pebble's ApplyNoSyncWait if it needs a sync
//     (its writes are visible at once) and handed to the worker's syncer,
//     or committed at once if it needs none;
//  2. the messages that do not wait for durability go out at once (a
//     leader's appends: followers write in parallel with their leader's
//     sync; a snapshot, which must hold the pass's writes);
//  3. the proposals it applied are answered, reads whose index it reached
//     are served, and raft is told what was applied;
//  4. once the syncer has seen the batch durable (Pebble's commit pipeline
//     lets the batches of every worker share one fsync), the worker steps
//     the append responses addressed to its replicas and sends the others.
//
// Append responses are delivered in the order of their passes, so the
// responses of a pass that needed no sync wait behind those of earlier
// passes still syncing. The worker never waits for an fsync: while a
// batch syncs it steps messages, takes proposals and writes the next
// passes, and a shard may have several appends in flight. A leader counts
// its own append only when its response is stepped, after the sync; a
// follower acknowledges only what is durable; votes and term changes are
// durable before they are sent (their responses wait like the others).
//
// With Config.SyncInWorker (the baseline of benchmarks) raft runs in its
// synchronous mode and the worker commits and syncs each pass's batch
// itself, then sends, answers and calls Advance.

// syncQueueLen bounds the passes of a worker waiting for their sync; a
// worker that has that many waits for the syncer (never in practice: one
// sync covers all of them).
const syncQueueLen = 1024

// inflight is a pass whose append responses wait for its batch's sync (b
// nil: the batch needed none, the responses wait behind earlier passes).
type inflight struct {
	b     *storage.Batch
	resps []localResp
	t0    time.Time // applied
}

// localResp is a response of the local append thread, for replica r.
type localResp struct {
	r *replica
	m raftpb.Message
}

// handleReady processes the Ready of every dirty shard, batched across
// shards. Shards with more work go round again.
func (w *worker) handleReady() {
	t0 := time.Now()
	defer func() { w.e.stats.passNanos.Add(uint64(time.Since(t0))) }()
	// One pass: shards that have more work after it stay dirty and go in
	// the next pass, after the worker has taken its inbox again, so that
	// the pass batches them with everything that arrived meanwhile.
	w.rds = w.rds[:0]
	if len(w.dirty) > 0 {
		for _, r := range w.dirty {
			r.dirty = false
			if !r.destroyed && r.g.RN.HasReady() {
				w.rds = append(w.rds, readyShard{r: r, rd: r.g.RN.Ready()})
			}
			w.yield()
		}
		clear(w.dirty)
		w.dirty = w.dirty[:0]
	}
	if len(w.rds) > 0 {
		w.e.stats.passes.Add(1)
		w.e.stats.readies.Add(uint64(len(w.rds)))
		if w.e.cfg.SyncInWorker || w.e.cfg.SyncEachShard {
			w.passInWorker()
		} else {
			w.passAsync()
		}
		clear(w.rds)
		w.rds = w.rds[:0]
	}
	for _, r := range w.staged {
		if len(r.staged) > 0 && !r.destroyed {
			// Snapshots raft did not take: their range claims, made as
			// they arrived, give way to the replica's own again.
			w.abortStaged(r)
			w.claimOwn(r)
		}
	}
	clear(w.staged)
	w.staged = w.staged[:0]
}

// passInWorker is the synchronous pass: write, commit and sync, send,
// answer, Advance.
func (w *worker) passInWorker() {
	if !w.e.cfg.SendAfterSync {
		w.sendAppendsEarly()
	}
	w.persistAndApply()
	w.commit()
	w.dispatchRangeChanges()
	w.send(w.rds)
	w.completeAll()
	for i := range w.rds {
		rs := &w.rds[i]
		if rs.r.destroyed {
			continue
		}
		if len(rs.rd.CommittedEntries) > 0 || len(rs.rd.ReadStates) > 0 || !raft.IsEmptySnap(rs.rd.Snapshot) {
			applied, _ := rs.r.log.Applied()
			rs.r.g.Applied(applied)
		}
		rs.r.g.RN.Advance(rs.rd)
		if rs.r.remove {
			w.destroy(rs.r)
			continue
		}
		if len(rs.rd.CommittedEntries) > 0 {
			// Only now: raft reads the entries it has not advanced past
			// (unapplied conf changes) from the log.
			w.maybeTruncate(rs.r)
		}
		if rs.r.g.RN.HasReady() {
			w.markDirty(rs.r)
		}
	}
	w.commitTruncations()
}

// passAsync is the pass of asynchronous durability (see above).
func (w *worker) passAsync() {
	w.persistAndApply()
	w.mergeApplyBatch()
	// The local messages: append responses wait for the batch; apply
	// responses are stepped once the batch is visible.
	for i := range w.rds {
		r, rd := w.rds[i].r, &w.rds[i].rd
		for j := range rd.Messages {
			m := &rd.Messages[j]
			switch m.To {
			case raft.LocalAppendThread:
				for _, resp := range m.Responses {
					w.resps = append(w.resps, localResp{r: r, m: resp})
					r.unsynced++
				}
			}
		}
	}
	b := w.batch
	var f *inflight
	if b.NeedsSync() {
		w.e.stats.syncs.Add(1)
		w.e.stats.commits.Add(1)
		if err := b.ApplyNoSyncWait(); err != nil {
			panic(fmt.Sprintf("engine: node %d: storage failed: %v", w.e.cfg.NodeID, err))
		}
		f = w.newInflight()
		f.b = b
		if n := len(w.spareB); n > 0 {
			w.batch, w.spareB = w.spareB[n-1], w.spareB[:n-1]
		} else {
			w.batch = w.e.store.NewBatch()
		}
	} else {
		w.commit()
		if len(w.resps) > 0 && w.inflight > 0 {
			f = w.newInflight() // behind the passes still syncing
		}
	}
	w.dispatchRangeChanges()
	// After the write: a snapshot sent now describes the shard as applied
	// by this pass and must hold its writes.
	w.send(w.rds)
	if f != nil {
		f.resps = append(f.resps[:0], w.resps...)
		f.t0 = time.Now()
		w.inflight++
		w.syncq <- f
	} else {
		w.deliver(w.resps)
	}
	clear(w.resps)
	w.resps = w.resps[:0]
	w.completeAll()
	for i := range w.rds {
		rs := &w.rds[i]
		r := rs.r
		if r.destroyed {
			continue
		}
		if len(rs.rd.CommittedEntries) > 0 || len(rs.rd.ReadStates) > 0 || !raft.IsEmptySnap(rs.rd.Snapshot) {
			applied, _ := r.log.Applied()
			r.g.Applied(applied)
		}
	}
	for i := range w.rds {
		r, rd := w.rds[i].r, &w.rds[i].rd
		if r.destroyed || len(rd.CommittedEntries) == 0 {
			continue
		}
		for j := range rd.Messages {
			if m := &rd.Messages[j]; m.To == raft.LocalApplyThread {
				for _, resp := range m.Responses {
					_ = r.g.RN.Step(resp)
				}
			}
		}
		if r.remove {
			w.destroy(r)
			continue
		}
		// Only now: raft reads the entries it has not seen applied
		// (unapplied conf changes) from the log.
		w.maybeTruncate(r)
	}
	w.commitTruncations()
	for i := range w.rds {
		if r := w.rds[i].r; !r.destroyed && r.g.RN.HasReady() {
			w.markDirty(r)
		}
	}
}

func (w *worker) newInflight() *inflight {
	if n := len(w.spareF); n > 0 {
		f := w.spareF[n-1]
		w.spareF = w.spareF[:n-1]
		return f
	}
	return new(inflight)
}

// syncLoop waits for the sync of each batch handed off by the worker, in
// order, and hands the pass back to the worker. It ends when the worker's
// queue is closed (Close, after the worker stopped).
func (w *worker) syncLoop() {
	defer w.e.syncers.Done()
	for f := range w.syncq {
		if f.b != nil {
			if err := f.b.SyncWait(); err != nil {
				panic(fmt.Sprintf("engine: node %d: storage failed: %v", w.e.cfg.NodeID, err))
			}
			d := time.Since(f.t0)
			w.e.stats.commitNanos.Add(uint64(d))
			w.e.syncLatency.observe(d)
		}
		in := w.lockInbox()
		if in == nil {
			if f.b != nil {
				f.b.Close()
			}
			continue
		}
		in.synced = append(in.synced, f)
		w.unlockInbox()
	}
}

// finishSynced delivers the append responses of a pass whose batch is
// durable now.
func (w *worker) finishSynced(f *inflight) {
	w.inflight--
	w.deliver(f.resps)
	clear(f.resps)
	f.resps = f.resps[:0]
	if f.b != nil {
		f.b.Reset()
		w.spareB = append(w.spareB, f.b)
		f.b = nil
	}
	w.spareF = append(w.spareF, f)
}

// deliver steps the append responses addressed to this node's replicas and
// sends the others (a follower's MsgAppResp, a vote).
func (w *worker) deliver(resps []localResp) {
	for i := range resps {
		r, m := resps[i].r, &resps[i].m
		r.unsynced--
		if r.destroyed {
			continue // superseded or removed while its batch was syncing
		}
		if m.To == r.replicaID {
			_ = r.g.RN.Step(*m)
		} else {
			w.sendOne(r, m)
		}
		w.markDirty(r)
	}
	w.flushOut()
}

// completeAll answers the proposals applied by the pass and publishes its
// leader and descriptor events.
func (w *worker) completeAll() {
	for _, c := range w.done {
		c.p.Complete(c.res)
	}
	clear(w.done)
	w.done = w.done[:0]
	w.e.publishLeaders(w.leaderEvs)
	w.leaderEvs = w.leaderEvs[:0]
	w.e.descHub.publish(w.descEvs)
	clear(w.descEvs)
	w.descEvs = w.descEvs[:0]
}

func (w *worker) persistAndApply() {
	b := w.batch
	for i := range w.rds {
		w.yield()
		rs := &w.rds[i]
		r, rd := rs.r, &rs.rd
		if ch := r.g.OnReady(rd); ch != nil {
			w.leaderEvs = append(w.leaderEvs, LeaderEvent{ShardID: r.shardID, Leader: r.nodeOf(ch.Leader), Term: ch.Term})
		}
		w.countLeader(r)
		if !raft.IsEmptySnap(rd.Snapshot) {
			w.applySnapshot(r, rd)
		}
		if err := r.log.Append(b, rd.Entries); err != nil {
			panic(fmt.Sprintf("engine: node %d: %v", w.e.cfg.NodeID, err))
		}
		if !raft.IsEmptyHardState(rd.HardState) {
			r.log.SetHardState(b, rd.HardState)
		}
		if rd.MustSync {
			b.MarkSync()
		}
		if len(rd.CommittedEntries) > 0 {
			t0 := time.Now()
			w.apply(r, rd.CommittedEntries)
			w.e.applyLatency.observe(time.Since(t0))
		}
		if w.e.cfg.SyncEachShard {
			w.commit()
		}
	}
}

// mergeApplyBatch moves the state machine's writes of the pass into the
// pass's batch.
func (w *worker) mergeApplyBatch() {
	if !w.applyBatch.Empty() {
		if err := w.batch.Pebble().Apply(w.applyBatch, nil); err != nil {
			panic(fmt.Sprintf("engine: merge apply batch: %v", err))
		}
		w.applyBatch.Reset()
	}
}

// commit writes the pass's batch (with the state machine's writes merged
// in), synced if any shard needs it.
func (w *worker) commit() {
	b := w.batch
	w.mergeApplyBatch()
	if !b.Empty() {
		if b.NeedsSync() {
			w.e.stats.syncs.Add(1)
		}
		w.e.stats.commits.Add(1)
		t0, synced := time.Now(), b.NeedsSync()
		defer func() {
			d := time.Since(t0)
			w.e.stats.commitNanos.Add(uint64(d))
			if synced {
				w.e.syncLatency.observe(d)
			}
		}()
		if err := b.Commit(false); err != nil {
			panic(fmt.Sprintf("engine: node %d: storage failed: %v", w.e.cfg.NodeID, err))
		}
	}
	b.Reset()
}

// apply hands the committed entries to the state machine (into the apply
// batch) and applies conf changes, recording results for this node's
// proposals.
func (w *worker) apply(r *replica, ents []raftpb.Entry) {
	if len(ents) == 0 {
		return
	}
	if r.heldFrom != 0 {
		// Held for a merge: applied from the log later, in order.
		w.holdFrom(r, r.heldFrom, ents[len(ents)-1].Index)
		return
	}
	desc, _ := r.log.Descriptor()
	ctx := &w.actx
	ctx.Desc, ctx.b = desc, w.applyBatch
	sm := w.e.cfg.StateMachine
	var last *raftpb.Entry
	for i := range ents {
		e := &ents[i]
		switch e.Type {
		case raftpb.EntryNormal:
			id, cmd, err := group.DecodeEntry(e.Data)
			if err == nil && cmd == nil {
				break // a new leader's empty entry
			}
			var res []byte
			if err == nil {
				ctx.Index = e.Index
				var held bool
				switch {
				case len(cmd) > 0 && cmd[0] == cmdSplit:
					res, err = w.applySplit(r, ctx, cmd)
				case len(cmd) > 0 && cmd[0] >= cmdFreeze && cmd[0] <= cmdBump:
					res, held, err = w.applyRangeCommand(r, ctx, cmd)
				case ctx.Desc.Frozen():
					err = &ShardMergingError{ShardID: r.shardID, Into: ctx.Desc.MergeInto}
				default:
					res, err = w.applyCommand(r.shardID, ctx, sm, cmd)
				}
				if held {
					w.holdFrom(r, e.Index, ents[len(ents)-1].Index)
					if last != nil {
						r.log.SetApplied(w.batch, last.Index, last.Term)
					}
					return
				}
				w.e.stats.applied.Add(1)
			}
			if p := r.g.TakeProposal(id); p != nil {
				w.done = append(w.done, completion{p: p, res: group.Result{Value: res, Err: err, Index: e.Index}})
			}
		case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
			w.applyConfChange(r, e)
		}
		last = e
	}
	r.log.SetApplied(w.batch, last.Index, last.Term)
}

// maybeTruncate truncates a shard's log that grew past the configured size.
// A leader keeps what its followers still need when that is not too far
// behind; a follower too far behind gets a snapshot instead.
func (w *worker) maybeTruncate(r *replica) {
	first, _ := r.log.FirstIndex()
	last, _ := r.log.LastIndex()
	cfg := w.e.cfg
	if r.log.LogBytes() <= cfg.LogTruncateBytes && last-first+1 <= cfg.LogTruncateEntries {
		return
	}
	index, _ := r.log.Applied()
	if r.g.IsLeader() {
		min := index
		r.g.RN.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
			if pr.Match < min {
				min = pr.Match
			}
		})
		if index-min < cfg.LogTruncateEntries/2 {
			index = min
		}
	}
	if index < first {
		return
	}
	if err := r.log.Truncate(w.truncs, index); err != nil {
		panic(fmt.Sprintf("engine: shard %d: truncate: %v", r.shardID, err))
	}
}

// commitTruncations commits the pass's truncations (no sync: a lost one is
// done again), right after the pass: left for the next pass's batch, a
// truncation would follow whatever that pass writes, such as a snapshot of
// the same shard, which an older truncation point must never overwrite.
func (w *worker) commitTruncations() {
	if w.truncs.Empty() {
		return
	}
	if err := w.truncs.Commit(false); err != nil {
		panic(fmt.Sprintf("engine: node %d: storage failed: %v", w.e.cfg.NodeID, err))
	}
	w.truncs.Reset()
}

// send hands every message of rds to the transport, one Send per
// destination node; snapshots go out on their own stream. Messages to the
// local append and apply threads are the pass's own business.
func (w *worker) send(rds []readyShard) {
	for i := range rds {
		r, rd := rds[i].r, &rds[i].rd
		if r.destroyed {
			continue
		}
		for j := range rd.Messages {
			if m := &rd.Messages[j]; m.To != raft.LocalAppendThread && m.To != raft.LocalApplyThread {
				w.sendOne(r, m)
			}
		}
	}
	w.flushOut()
}

// sendOne queues m of r for the transport (flushOut sends).
func (w *worker) sendOne(r *replica, m *raftpb.Message) {
	if m.Type == raftpb.MsgPreVoteResp && m.Reject {
		w.rejectedCampaign(r)
	}
	if w.e.lease {
		if w.dropVote(r, m) {
			return // raft asks again at its next election timeout
		}
		if m.Type == raftpb.MsgTimeoutNow {
			voidLease(r) // a transfer raft started (lease.go)
		}
	}
	to := r.nodeOf(m.To)
	if to == 0 {
		return // a replica no descriptor of r's names: nowhere to send
	}
	switch {
	case m.Type == raftpb.MsgSnap:
		w.sendSnapshot(r, to, *m)
	case w.e.coalesce && heartbeat.IsCoalescable(m):
		w.e.beats.Add(to, heartbeat.FromMessage(r.shardID, m))
	default:
		w.out[to] = append(w.out[to], Message{ShardID: r.shardID, Msg: *m})
	}
}

// sendAppendsEarly sends the MsgApps of the shards this node led before this
// Ready, and still leads, before the pass's batch is written and synced:
// the followers then append and sync in parallel with the leader instead of
// after it. Raft allows it (messages may go out while the entries of the
// same Ready are being persisted; etcd raft's README): a leader counts its
// own append only at Advance, after its sync, so an entry commits before
// the leader's sync only if enough followers hold it durably without the
// leader. A Ready whose HardState changes the term keeps all its messages
// for after the sync.
func (w *worker) sendAppendsEarly() {
	sent := false
	for i := range w.rds {
		r, rd := w.rds[i].r, &w.rds[i].rd
		if !r.g.IsLeader() || (rd.SoftState != nil && rd.SoftState.RaftState != raft.StateLeader) {
			continue
		}
		if _, term := r.g.Leader(); !raft.IsEmptyHardState(rd.HardState) && rd.HardState.Term != term {
			continue
		}
		keep := rd.Messages[:0]
		for _, m := range rd.Messages {
			if to := r.nodeOf(m.To); m.Type == raftpb.MsgApp && to != 0 {
				w.out[to] = append(w.out[to], Message{ShardID: r.shardID, Msg: m})
				sent = true
			} else {
				keep = append(keep, m)
			}
		}
		rd.Messages = keep
	}
	if sent {
		w.flushOut()
	}
}

// flushOut hands the messages gathered in w.out to the transport, one Send
// per destination node.
func (w *worker) flushOut() {
	for to, msgs := range w.out {
		if len(msgs) == 0 {
			continue
		}
		var bytes uint64
		for i := range msgs {
			bytes += uint64(msgs[i].Msg.Size())
		}
		w.e.countSent(to, uint64(len(msgs)), bytes)
		err := ErrQueueFull
		if ps, ok := w.e.transport.(PrioritySender); ok && w.priority && !w.e.cfg.NoPriority {
			err = ps.SendPriority(to, msgs)
		}
		if errors.Is(err, ErrQueueFull) {
			err = w.e.transport.Send(to, msgs) // behind the queue, then
		}
		if err != nil {
			for _, m := range msgs {
				if r := w.shards[m.ShardID]; r != nil {
					r.g.RN.ReportUnreachable(m.Msg.To)
				}
			}
			if !errors.Is(err, ErrQueueFull) {
				w.e.suspect(to, err) // the transport cannot reach the node at all
			}
		}
		clear(msgs) // drop references to entries; keep the capacity
		w.out[to] = msgs[:0]
	}
}

// destroy removes a replica that a conf change took off this node (or that
// a newer replica of this node supersedes). Its range is released before
// its data is deleted, so that a concurrent ReadLocal that found the range
// knows whether the data was there for its whole read (see ReadLocal).
func (w *worker) destroy(r *replica) {
	r.destroyed = true
	w.wake(r) // keeps the quiesced count right
	delete(w.shards, r.shardID)
	delete(w.ticking, r.shardID)
	w.uncountLeader(r)
	r.g.FailAll(ErrShardRemoved)
	w.abortStaged(r)
	desc, ok := r.log.Descriptor()
	var dp = &desc
	next := r.replicaID + 1
	if !ok {
		dp = nil
	} else {
		next = max(next, desc.NextReplicaID)
	}
	w.e.releaseRange(r.shardID)
	// Writes of this replica still queued in the pass's batches go first:
	// the deletion must cover them.
	w.commit()
	if err := w.e.store.DestroyReplica(r.shardID, dp, next); err != nil {
		panic(fmt.Sprintf("engine: destroy shard %d: %v", r.shardID, err))
	}
	w.tombstones[r.shardID] = next
	w.leaderEvs = append(w.leaderEvs[:0], LeaderEvent{ShardID: r.shardID})
	w.e.publishLeaders(w.leaderEvs)
	w.leaderEvs = w.leaderEvs[:0]
}

// countLeader updates the engine's counts of the replicas leading and of
// those that know a leader after r's Ready.
func (w *worker) countLeader(r *replica) {
	if leading := r.g.IsLeader(); leading != r.leading {
		r.leading = leading
		if leading {
			w.e.stats.leading.Add(1)
			w.leading[r.shardID] = r
		} else {
			w.e.stats.leading.Add(^uint64(0))
			delete(w.leading, r.shardID)
		}
	}
	if led := r.g.LeaderNode() != 0; led != r.led {
		r.led = led
		if led {
			w.e.stats.led.Add(1)
		} else {
			w.e.stats.led.Add(^uint64(0))
		}
	}
}

// uncountLeader takes r, which is going away, out of those counts.
func (w *worker) uncountLeader(r *replica) {
	if r.leading {
		w.e.stats.leading.Add(^uint64(0))
		r.leading = false
		delete(w.leading, r.shardID)
	}
	if r.led {
		w.e.stats.led.Add(^uint64(0))
		r.led = false
	}
}
