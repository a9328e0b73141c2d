package engine

import (
	"errors"
	"sync"

	"github.com/flotilla-db/flotilla/heartbeat"
	"go.etcd.io/raft/v3/raftpb"
)

// HandleBatch implements Handler: it sorts the frame's messages into the
// inboxes of their shards' workers, one lock per worker.
func (e *Engine) HandleBatch(b *Batch) {
	if e.closed.Load() || b.ClusterID != e.cfg.ClusterID || b.To != e.cfg.NodeID {
		if !e.closed.Load() {
			e.cfg.Logger.Warn("dropped frame", "cluster", b.ClusterID, "from", b.From, "to", b.To, "want_cluster", e.cfg.ClusterID)
		}
		return
	}
	wasDown, stale := e.live.heardFrom(b.From)
	if stale {
		e.cfg.Logger.Debug("dropped a frame of a node just suspected down", "from", b.From)
		return
	}
	if wasDown {
		e.cfg.Logger.Info("peer is back", "peer", b.From)
		for _, w := range e.workers {
			w.enqueueFn(func() { w.wakeFollowedBy(b.From) })
		}
	}
	b.Messages = e.expandBeats(b)
	if len(b.Messages) == 0 {
		return
	}
	for i := range b.Messages {
		b.Messages[i].fromNode = b.From
	}
	if len(e.workers) == 1 {
		w := e.workers[0]
		if in := w.lockInbox(); in != nil {
			in.msgs = append(in.msgs, b.Messages...)
			w.unlockInbox()
		}
		return
	}
	// One lock per worker: each takes its messages in one sweep.
	idx := idxPool.Get().(*[]uint16)
	*idx = (*idx)[:0]
	for i := range b.Messages {
		*idx = append(*idx, uint16(e.workerFor(b.Messages[i].ShardID).id))
	}
	for wi, w := range e.workers {
		in := w.lockInbox()
		if in == nil {
			continue
		}
		n := len(in.msgs)
		for i, x := range *idx {
			if int(x) == wi {
				in.msgs = append(in.msgs, b.Messages[i])
			}
		}
		if len(in.msgs) > n {
			w.unlockInbox()
		} else {
			w.mu.Unlock()
		}
	}
	idxPool.Put(idx)
}

var idxPool = sync.Pool{New: func() any { s := make([]uint16, 0, 256); return &s }}

// PeerUnreachable implements Handler: every shard this node leads is told,
// so that raft stops pipelining to the peer and probes instead. A failed
// stream is not a dead node: the followers here keep their leader. It is a
// hint all the same: if nothing is heard from the node for a few ticks
// (unreachableTicks, not a whole election timeout), liveness suspects it
// down, and its shards here elect (a live node's per-tick message arrives
// on its own stream and clears the hint).
func (e *Engine) PeerUnreachable(node uint64) {
	if node != e.cfg.NodeID {
		e.live.reportUnreachable(node)
	}
	for _, w := range e.workers {
		w.enqueueFn(func() {
			for _, r := range w.shards {
				if r.g.IsLeader() {
					if id := r.replicaOn(node); id != 0 {
						r.g.RN.ReportUnreachable(id)
					}
				}
			}
		})
	}
}

// errDeclaredDead is the reason PeerDown gives to suspect.
var errDeclaredDead = errors.New("declared dead by the failure detector")

// PeerDown tells the engine that node is down (gossip's failure detector
// declared it dead): as when the node has been silent for an election
// timeout, the shards it led here wake up and elect a new leader.
func (e *Engine) PeerDown(node uint64) {
	if node != e.cfg.NodeID {
		e.suspect(node, errDeclaredDead)
	}
}

// PeerSuspected reports whether this engine suspects node down (silent
// for an election timeout, reported unreachable and not heard since, or
// declared dead by gossip), until a message of it arrives.
func (e *Engine) PeerSuspected(node uint64) bool { return e.live.isDown(node) }

// expandBeats takes the coalesced heartbeat messages (shard 0) out of b and
// hands their Beats to the workers; it returns the other messages.
func (e *Engine) expandBeats(b *Batch) []Message {
	keep := b.Messages[:0]
	var beats []heartbeat.Beat
	for _, m := range b.Messages {
		if m.ShardID != 0 {
			keep = append(keep, m)
			continue
		}
		if m.Msg.Type != raftpb.MsgHeartbeat || m.Msg.From != b.From {
			e.cfg.Logger.Warn("dropped node-level message", "from", b.From, "type", m.Msg.Type)
			continue
		}
		var err error
		if beats, err = heartbeat.DecodeBatch(beats[:0], m.Msg.Context); err != nil {
			e.cfg.Logger.Warn("dropped heartbeat batch", "from", b.From, "err", err)
			continue
		}
		for wi, w := range e.workers {
			in := w.lockInbox()
			if in == nil {
				continue
			}
			n := len(in.beats)
			for _, beat := range beats {
				if len(e.workers) == 1 || e.workerFor(beat.ShardID).id == wi {
					in.beats = append(in.beats, beatIn{from: b.From, to: b.To, beat: beat})
				}
			}
			if len(in.beats) > n {
				w.unlockInbox()
			} else {
				w.mu.Unlock()
			}
		}
	}
	return keep
}
