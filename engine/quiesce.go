package engine

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/heartbeat"
	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Coalesced heartbeats and quiescence (see package heartbeat).
//
// Each tick the tick loop flushes the node's Coalescer: every peer node gets
// one message (shard 0, MsgHeartbeat) carrying the Beats of all shards, even
// none: that message is also the liveness signal between nodes. A peer not
// heard from for an election timeout is suspected down, and the quiesced
// shards it led wake up, tick, and elect a new leader.
//
// A leader quiesces its shard after quiesceTicks consecutive ticks in which
// the shard was idle: nothing to persist or send, no proposal, read, transfer
// or conf change pending, applied == commit == last index, and every live
// follower in StateReplicate with Match == last index (a follower on a node
// suspected down does not hold the shard awake; when its node is heard from
// again, the quiesced shards this node leads for it wake up to catch it up). It sends a Beat with
// Quiesce set and stops ticking the shard. A follower that receives it from
// its leader, at its term, with its log ending at the leader's commit, stops
// ticking too; a follower that is behind stays awake. Any proposal, read,
// transfer, conf change or message other than a heartbeat response wakes a
// shard. A woken follower resumes its election clock where it stopped (close
// to zero, as it had just heard from the leader), so it does not campaign at
// once.

const quiesceTicks = 2

// beatIn is an expanded incoming Beat.
type beatIn struct {
	from, to uint64
	beat     heartbeat.Beat
}

// liveness tracks when each peer node was last heard from, in ticks.
type liveness struct {
	mu    sync.Mutex
	now   uint64            // ticks since start
	heard map[uint64]uint64 // peer -> tick last heard
	// heardAt: peer -> when last heard (wall clock), for the log line of
	// a suspicion: ticks undercount the silence of an overloaded node
	// (a ticker drops the ticks its reader misses).
	heardAt map[uint64]time.Time
	down    map[uint64]uint64 // peers suspected down -> tick suspected
	// seen: the peers heard from since this engine started (a cold
	// start's campaigns wait for them, see start.go).
	seen map[uint64]struct{}
	// unreachable: peers the transport reported unreachable -> tick of the
	// report. A failed stream is a hint, not a verdict: the peer is
	// suspected down only if nothing is heard from it for unreachableTicks
	// after the report (a live peer's per-tick message comes on its own
	// stream), instead of a whole election timeout.
	unreachable map[uint64]uint64
}

// unreachableTicks is how long a peer reported unreachable by the
// transport has to be heard from again before it is suspected down.
const unreachableTicks = 3

// staleTicks is how long after a peer is suspected down its frames are
// dropped: they were sent before it went away (still in flight, or queued
// behind its last writes), and would make its followers take it for their
// leader again just after they forgot it.
const staleTicks = 2

func (l *liveness) init() {
	l.heard = make(map[uint64]uint64)
	l.heardAt = make(map[uint64]time.Time)
	l.down = make(map[uint64]uint64)
	l.unreachable = make(map[uint64]uint64)
	l.seen = make(map[uint64]struct{})
}

// seenPeers adds the peers heard from since the start to into and returns
// how many there are.
func (l *liveness) seenPeers(into map[uint64]struct{}) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.seen {
		into[id] = struct{}{}
	}
	return len(l.seen)
}

// reportUnreachable notes that the transport could not reach id.
func (l *liveness) reportUnreachable(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.unreachable[id]; !ok {
		l.unreachable[id] = l.now
	}
}

// addPeers makes nodes known peers (heard "now", so that they get an election
// timeout of grace).
func (l *liveness) addPeers(ids ...uint64) {
	l.mu.Lock()
	for _, id := range ids {
		if _, ok := l.heard[id]; !ok {
			l.heard[id] = l.now
		}
	}
	l.mu.Unlock()
}

// heardFrom records a frame from id. stale: id was suspected down less than
// staleTicks ago, and the frame is to be dropped; wasDown: it was
// suspected down before, and is not any more.
func (l *liveness) heardFrom(id uint64) (wasDown, stale bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[id] = struct{}{}
	at, down := l.down[id]
	if down && l.now-at < staleTicks {
		return false, true
	}
	// A node that sends frames here is a peer, whether or not a replica
	// here names it: it gets this node's per-tick message from now on. (A
	// node that hosts no replica shared with a leader that suspects it
	// down would otherwise never be heard by that leader again, and the
	// leader's quiesced shard would never wake to catch up the replica it
	// adds there.)
	l.heard[id] = l.now
	l.heardAt[id] = time.Now()
	delete(l.down, id)
	return down, false
}

// silentFor returns how long ago id was last heard from (0: never).
func (l *liveness) silentFor(id uint64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.heardAt[id]; ok {
		return time.Since(at)
	}
	return 0
}

// tick advances the clock; it returns the peers and those newly suspected
// down (silent for more than timeout ticks).
func (l *liveness) tick(timeout uint64, peers []uint64) ([]uint64, []uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now++
	peers = peers[:0]
	var newlyDown []uint64
	for id, t := range l.heard {
		peers = append(peers, id)
		silent := l.now-t > timeout
		if at, ok := l.unreachable[id]; ok {
			if t > at {
				delete(l.unreachable, id) // heard since the report: alive
			} else if l.now-at >= unreachableTicks {
				silent = true
			}
		}
		if _, down := l.down[id]; silent && !down {
			l.down[id] = l.now
			delete(l.unreachable, id)
			newlyDown = append(newlyDown, id)
		}
	}
	return peers, newlyDown
}

// markDown suspects id down now; false if it already was.
func (l *liveness) markDown(id uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, down := l.down[id]; down {
		return false
	}
	l.down[id] = l.now
	return true
}

func (l *liveness) isDown(id uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, down := l.down[id]
	return down
}

// suspect handles a node the transport cannot reach, or that gossip
// declared dead (reason says which): the first time, as if it had been
// silent for an election timeout (it is heard again as soon as one of its
// messages arrives).
func (e *Engine) suspect(node uint64, reason error) {
	if e.live.markDown(node) {
		e.cfg.Logger.Info("peer suspected down: unreachable", "peer", node, "reason", reason)
		e.peerDown(node)
	}
}

// flushBeats sends each peer its coalesced Beats (tick loop).
func (e *Engine) flushBeats(peers []uint64) {
	send := e.transport.Send
	if ps, ok := e.transport.(PrioritySender); ok && !e.cfg.NoPriority {
		send = ps.SendPriority
	}
	e.beats.Flush(peers, func(to uint64, beats []heartbeat.Beat) {
		if to == e.cfg.NodeID {
			return
		}
		m := Message{Msg: raftpb.Message{
			Type:    raftpb.MsgHeartbeat,
			From:    e.cfg.NodeID,
			To:      to,
			Context: heartbeat.AppendBatch(nil, beats),
		}}
		if err := send(to, []Message{m}); err != nil && !errors.Is(err, ErrQueueFull) {
			e.suspect(to, err) // lost beats: raft and liveness cope
		}
		e.countSent(to, 1, uint64(m.Msg.Size()))
	})
}

// stepBeat steps one expanded Beat, quiescing or waking the shard.
func (w *worker) stepBeat(b *beatIn) {
	if b.to != w.e.cfg.NodeID {
		return
	}
	msg := b.beat.Message()
	r := w.replicaFor(b.beat.ShardID, &msg)
	if r == nil {
		return
	}
	r.notePeer(msg.From, b.from)
	if !b.beat.Resp {
		w.heardLeader(r)
	}
	_ = r.g.RN.Step(msg)
	w.markDirty(r)
	switch {
	case b.beat.Resp:
		// A response does not wake a quiesced leader.
	case b.beat.Quiesce:
		lead, term := r.g.Leader()
		last, _ := r.log.LastIndex()
		if lead == b.beat.From && term == b.beat.Term && last == b.beat.Commit && !r.g.IsLeader() && r.g.Pending() == 0 {
			w.quiesce(r)
		} else {
			w.wake(r)
		}
	default:
		w.wake(r)
	}
}

func (w *worker) quiesce(r *replica) {
	if r.quiesced {
		return
	}
	r.quiesced, r.idle = true, 0
	delete(w.ticking, r.shardID)
	r.log.ReleaseCache()
	w.e.stats.quiesced.Add(1)
}

func (w *worker) wake(r *replica) {
	r.idle = 0
	if !r.quiesced {
		return
	}
	r.quiesced = false
	w.ticking[r.shardID] = r
	w.e.stats.quiesced.Add(^uint64(0))
}

// tickReplica ticks a shard, or quiesces it if it is an idle leader.
func (w *worker) tickReplica(r *replica) {
	if w.e.quiescence && w.idleLeader(r) {
		r.idle++
		if r.idle >= quiesceTicks {
			w.quiesceLeader(r)
			return
		}
	} else {
		r.idle = 0
	}
	if r.campaignIn > 0 {
		r.campaignIn--
		// Messages the dead leader sent before it died, queued behind the
		// news of its death, may have made it this replica's leader again:
		// forget it again while it is still suspected down.
		lead := r.g.LeaderNode()
		if lead != 0 && lead == r.downLeader && w.e.live.isDown(lead) {
			_ = r.g.RN.ForgetLeader()
			lead = 0
		}
		if r.campaignIn == 0 && r.successor && lead == 0 && !r.g.IsLeader() {
			if w.voteHeldFor(r, w.e.electionNanos()+int64(w.e.cfg.TickInterval)) {
				// The vote gate holds (lease.go): campaign once it is
				// over, a tick after, when the other voters' are too.
				r.campaignIn = 1
			} else {
				w.e.stats.campaigns.Add(1)
				_ = r.g.RN.Campaign()
			}
		}
		if r.campaignIn == 0 {
			r.successor = false // one campaign per suspicion or rejection
		}
	}
	r.g.Tick()
	w.markDirty(r)
}

// idleLeader reports whether r leads and has nothing in flight. Whether a
// message touched r in this cycle (r.dirty) does not matter, only whether
// raft has anything to do (HasReady): in a cycle that takes longer than a
// heartbeat round trip, which a node's workers with tens of thousands of
// awake shards do, every leader steps its followers' heartbeat responses
// in the same cycle as each tick, and counting those would keep every
// leader of the node awake for good (cluster-start at 100,000 shards: no
// leader quiesced, the workers saturated by the ticks and heartbeats).
func (w *worker) idleLeader(r *replica) bool {
	if !r.g.IsLeader() || r.g.Pending() > 0 || r.unsynced > 0 || r.g.RN.HasReady() || (r.dirty && w.e.cfg.BusyOnMessage) {
		return false
	}
	bs := r.g.RN.BasicStatus()
	last, _ := r.log.LastIndex()
	applied, _ := r.log.Applied()
	if bs.LeadTransferee != 0 || bs.Commit != last || applied != last || len(r.log.ConfState().VotersOutgoing) > 0 {
		return false
	}
	ok := true
	r.g.RN.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id != r.replicaID && !w.e.live.isDown(r.nodeOf(id)) && (pr.Match != last || pr.State != tracker.StateReplicate) {
			ok = false
		}
	})
	return ok
}

// quiesceLeader sends the followers a quiescing Beat and stops ticking.
func (w *worker) quiesceLeader(r *replica) {
	bs := r.g.RN.BasicStatus()
	r.g.RN.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		// A follower on a node suspected down gets nothing: it may be behind,
		// and when its node is heard again the shard wakes to catch it up.
		if node := r.nodeOf(id); id != r.replicaID && node != 0 && !w.e.live.isDown(node) {
			// As raft's own heartbeats: never a commit index beyond the
			// follower's log.
			w.e.beats.Add(node, heartbeat.Beat{ShardID: r.shardID, From: r.replicaID, To: id, Term: bs.Term, Commit: min(pr.Match, bs.Commit), Quiesce: true})
		}
	})
	w.quiesce(r)
}

// wakeFollowedBy wakes the quiesced shards led here that have a replica on
// node (back after being suspected down), so that they catch it up.
func (w *worker) wakeFollowedBy(node uint64) {
	for _, r := range w.shards {
		if r.quiesced && r.g.IsLeader() && r.replicaOn(node) != 0 {
			w.wake(r)
		}
	}
}

// leaderDown handles node suspected down (silent for an election timeout,
// or reported unreachable by the transport): the shards it led here wake up
// if quiesced, and forget it as their leader, so that with PreVote and
// CheckQuorum they grant a pre-vote to the first follower whose election
// timer fires instead of waiting for their own: a shard elects within about
// one election timeout of the leader's death. (In lease mode the vote gate
// holds their votes and the successor's campaign until an election timeout
// after they last heard from it: lease.go.)
func (w *worker) leaderDown(node uint64) {
	for _, r := range w.shards {
		if r.g.LeaderNode() == node && !r.g.IsLeader() {
			w.wake(r)
			_ = r.g.RN.ForgetLeader()
			r.downLeader, r.campaignIn = node, successorDelayTicks
			r.successor = w.successor(r, node) == w.e.cfg.NodeID
			w.markDirty(r)
		}
	}
}

// rejectedCampaign handles r's rejection of another voter's pre-vote. A
// follower that knows no leader rejects a pre-vote because the candidate's
// log is behind its own (a follower that knows one would only be counting
// the leader's lease): the shard's best candidate is then this replica, and
// it campaigns at the next tick, rather than leave the shard leaderless for
// an election timeout while the stale candidate waits for votes it cannot
// get (the successor of a dead leader may be the follower that received
// fewer entries).
func (w *worker) rejectedCampaign(r *replica) {
	if lead, _ := r.g.Leader(); lead == 0 && !r.g.IsLeader() && r.campaignIn == 0 && r.g.RN.BasicStatus().RaftState == raft.StateFollower {
		r.campaignIn, r.successor = 1, true
		w.wake(r)
	}
}

// successorDelayTicks is how long the successor waits before it campaigns:
// the other voters learn that the leader is down at about the same time, but
// not at the same instant (a tick apart), and a voter that still counts the
// leader's lease rejects the campaign, which would then wait for a whole
// election timeout. Meanwhile every follower of the dead leader forgets it
// again at each tick if messages sent before its death revived it.
const successorDelayTicks = 2

// successor names the voter of r's shard that campaigns at once when the
// shard's leader, node, is suspected down: the voters not suspected down,
// sorted, picked by shard ID so that the new leaderships spread. Every
// replica computes the same one; the others wait for their election timeout
// as usual, so one campaign runs instead of a split vote, and the shard is
// led again after about one round trip rather than one to two election
// timeouts. (Safety is raft's: a campaign that cannot win, because the
// successor is behind or the others still hear the leader, ends in the
// ordinary election.) 0 while the configuration is joint.
func (w *worker) successor(r *replica, node uint64) uint64 {
	desc, ok := r.log.Descriptor()
	if !ok || len(r.log.ConfState().VotersOutgoing) > 0 {
		return 0
	}
	var live []uint64
	for _, rep := range desc.Replicas {
		v := rep.NodeID
		if rep.Role == storage.RoleVoter && v != node && (v == w.e.cfg.NodeID || !w.e.live.isDown(v)) {
			live = append(live, v)
		}
	}
	if len(live) == 0 {
		return 0
	}
	slices.Sort(live)
	return live[r.shardID%uint64(len(live))]
}
