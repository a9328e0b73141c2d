package engine

import "github.com/flotilla-db/flotilla/storage"

// A cold start of many shards (New reopening a store).
//
// A node that reopens its replicas does not tick them. Ticking every replica
// from the start, as raft expects, makes every shard wait for a randomized
// election timeout and then run its election, commit its first entry and
// quiesce while all the others do the same: on a 2-core machine, 30,000
// shards x 3 nodes took 2 m 55 s to be led again (the ticks and heartbeats
// of 90,000 awake replicas saturate the workers, the raft clocks slow down
// with them, leaders step down on check-quorum, and the elections start
// over). Instead, with quiescence on (the default):
//
//   - every initialized replica starts quiesced, knowing no leader;
//   - the shard's designated voter (DesignatedVoter: the one that
//     campaigned when the shard was created, and that the node hands the
//     leadership back to) campaigns, StartCampaignsPerTick a tick over the
//     node, in shard order, once the nodes of a quorum of the shard's
//     voters have been heard from since the start (a campaign before would
//     be lost); the voters it asks wake on its request, and the shard
//     quiesces again once the new leader has committed its first entry.
//     Leaders start where the placement wants them, and at most a few
//     ticks' worth of shards are awake at once;
//   - once the start has made no progress (no campaign, no peer heard from
//     the first time) for startFallbackTicks election timeouts, every
//     replica still quiesced without a leader wakes and elects as raft
//     does: the shards whose designated voter's node did not come back,
//     and any other case (a designated voter whose log was behind has its
//     campaign rejected, and the voter that rejected it campaigns itself,
//     see rejectedCampaign).
//
// A replica that hears from a leader meanwhile (the shard was led elsewhere,
// as when one node restarts in a running cluster) follows it as usual: the
// leaders of the other nodes wake their quiesced shards when they hear from
// the restarted node again, and their heartbeats reach it. Config.TickingStart
// restores the ticking start, the baseline of the cluster-start bench.

// DesignatedVoter returns the voter of shardID that campaigns when the shard
// is created or its node starts, and that the node hands leadership back
// to: voters (in descriptor order) picked by shard ID, so that leaders
// spread evenly over the voters. 0 if there are none.
func DesignatedVoter(shardID uint64, voters []uint64) uint64 {
	if len(voters) == 0 {
		return 0
	}
	return voters[shardID%uint64(len(voters))]
}

// designatedNode is DesignatedVoter of desc's voters (incoming voters
// included, as ShardStatus.Voters has them).
func designatedNode(desc storage.Descriptor) uint64 {
	voters, _ := desc.Voters()
	return DesignatedVoter(desc.ShardID, voters)
}

// designatedFor is designatedNode of r's descriptor; 0 if r has none.
func designatedFor(r *replica) uint64 {
	desc, ok := r.log.Descriptor()
	if !ok {
		return 0
	}
	return designatedNode(desc)
}

// startState is a worker's part of a cold start; owned by the worker.
type startState struct {
	// campaign: the replicas this node is the designated voter of, to
	// campaign in turn; deferred: those of them whose quorum of voters'
	// nodes has not been heard from yet; waiting: the other replicas that
	// started quiesced.
	campaign, deferred, waiting []*replica
	// seen: the peers heard from since the engine started, as of the last
	// tick, and how many.
	seen  map[uint64]struct{}
	nseen int
	// idle counts the ticks since the start last made progress (a
	// campaign, or a peer heard from the first time); done: the start is
	// over.
	idle int
	done bool
}

// startFallbackTicks, in election timeouts: how long after its last
// progress a start wakes every replica still quiesced without a leader.
const startFallbackTicks = 5

// loadQuiesced makes r, just reopened by New, start quiesced (see above),
// and queues it for its designated campaign or for the final wake.
func (w *worker) loadQuiesced(r *replica) {
	if !r.log.Initialized() || !w.e.quiescence || w.e.cfg.TickingStart {
		return
	}
	w.quiesce(r)
	if designatedFor(r) == w.e.cfg.NodeID {
		w.start.campaign = append(w.start.campaign, r)
	} else {
		w.start.waiting = append(w.start.waiting, r)
	}
}

// startTick runs at each tick until the start is over: up to this worker's
// share of StartCampaignsPerTick designated campaigns of shards whose
// voters' nodes are heard from in a quorum (a campaign before would be
// lost, and the replica would then wait for raft's timeout), then, when
// the start has made no progress for startFallbackTicks election timeouts,
// the wake of every replica still quiesced without a leader.
func (w *worker) startTick() {
	s := &w.start
	if s.done {
		return
	}
	if s.seen == nil {
		s.seen = make(map[uint64]struct{})
	}
	s.idle++
	if n := w.e.live.seenPeers(s.seen); n != s.nseen {
		s.nseen, s.idle = n, 0
		s.campaign = append(s.campaign, s.deferred...)
		s.deferred = s.deferred[:0]
	}
	budget := max(1, w.e.cfg.StartCampaignsPerTick/len(w.e.workers))
	for budget > 0 && len(s.campaign) > 0 {
		r := s.campaign[0]
		if w.leaderless(r) && w.voteHeld(r) {
			// Lease mode: a replica opened from the store keeps the vote
			// gate for an election timeout (lease.go); they all opened
			// together.
			s.idle = 0
			break
		}
		s.campaign[0] = nil
		s.campaign = s.campaign[1:]
		if !w.leaderless(r) {
			continue
		}
		if !w.quorumSeen(r) {
			s.deferred = append(s.deferred, r)
			continue
		}
		w.wake(r)
		_ = r.g.RN.Campaign()
		w.markDirty(r)
		w.e.stats.startCampaigns.Add(1)
		s.idle = 0
		budget--
	}
	if len(s.campaign) > 0 || s.idle < startFallbackTicks*w.e.cfg.ElectionTicks {
		return
	}
	for _, l := range [][]*replica{s.waiting, s.deferred} {
		for _, r := range l {
			if w.leaderless(r) {
				w.wake(r)
				w.e.stats.startWakes.Add(1)
			}
		}
	}
	*s = startState{done: true}
}

// quorumSeen reports whether the nodes of a quorum of r's voters (this
// one included; in a joint configuration, of both) have been heard from
// since the start.
func (w *worker) quorumSeen(r *replica) bool {
	desc, _ := r.log.Descriptor()
	return desc.HasQuorum(func(nodeID uint64) bool {
		_, ok := w.start.seen[nodeID]
		return ok || nodeID == w.e.cfg.NodeID
	})
}

// leaderless reports whether r is still this worker's replica, quiesced
// since its start, and knows no leader.
func (w *worker) leaderless(r *replica) bool {
	return w.shards[r.shardID] == r && !r.destroyed && r.quiesced && r.g.LeaderNode() == 0 && !r.g.IsLeader()
}
