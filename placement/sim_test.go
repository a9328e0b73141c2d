package placement

import (
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"
)

// sim plays the driver for tests: it plans, checks each plan against the
// rules, and executes the operations in stages over later steps (learner
// added; promoted in one joint change with the outgoing voter; joint
// left), so that the planner sees half-done moves in flight. Operations
// fail at random (an abandoned stage leaves what it did: a stray learner,
// a joint configuration). After every stage it checks that no shard that
// had a quorum of live voters lost it.
type sim struct {
	t        testing.TB
	rng      *rand.Rand // nil: nothing fails, elections pick the lowest node ID
	cfg      Config
	st       State
	inflight []*simOp
	failRate float64
	step     int
	stepTime time.Duration
	// Since the last event (a join, a kill, a drain, a node becoming gone):
	lastEvent int
	moves     map[[3]uint64]int // (shard, from, to) → step completed
	transfers map[[3]uint64]int
	// Leadership handed over by moves of a leader's replica, and
	// transfers that undid an earlier one, since the last event.
	handovers, undone int
	executed          int // operations started
	kinds             map[Kind]int
	shardIdx          map[uint64]int // index in st.Shards, which keeps its order
	leaderExcess      float64        // how far out of band a leader count ended
}

// traceSim logs every plan (PLACEMENT_TRACE=1).
var traceSim = os.Getenv("PLACEMENT_TRACE") != ""

type simOp struct {
	op      Op
	stage   int
	planned int // the step that planned it
}

func newSim(t testing.TB, st State, cfg Config, rng *rand.Rand) *sim {
	s := &sim{t: t, rng: rng, cfg: cfg, st: st, stepTime: 10 * time.Second,
		moves: map[[3]uint64]int{}, transfers: map[[3]uint64]int{}, kinds: map[Kind]int{},
		shardIdx: map[uint64]int{}}
	s.st.Nodes = slices.Clone(st.Nodes)
	s.st.Shards = slices.Clone(st.Shards)
	for i := range s.st.Shards {
		s.st.Shards[i].Replicas = slices.Clone(s.st.Shards[i].Replicas)
		s.shardIdx[s.st.Shards[i].ID] = i
	}
	return s
}

func (s *sim) node(id uint64) *Node {
	for i := range s.st.Nodes {
		if s.st.Nodes[i].ID == id {
			return &s.st.Nodes[i]
		}
	}
	return nil
}

func (s *sim) shard(id uint64) *Shard {
	if i, ok := s.shardIdx[id]; ok {
		return &s.st.Shards[i]
	}
	return nil
}

func (s *sim) live(id uint64) bool {
	n := s.node(id)
	return n != nil && n.Liveness == Live && !n.Removed
}

// gone mirrors the planner's notion, for the test's own checks.
func (s *sim) gone(id uint64) bool {
	n := s.node(id)
	return n.Removed || (n.Liveness == Dead && s.st.Now.Sub(n.Since) >= s.cfg.withDefaults().DownAfter)
}

func (s *sim) eligible(id uint64) bool { return s.live(id) && !s.node(id).Draining }

// liveQuorum reports whether sh can commit: a quorum of live voters in its
// configuration, in both halves while it is joint.
func (s *sim) liveQuorum(sh *Shard) bool {
	var in, inLive, out, outLive int
	joint := sh.Joint
	for _, r := range sh.Replicas {
		joint = joint || r.Role.joint()
	}
	for _, r := range sh.Replicas {
		up := s.live(r.NodeID)
		if r.Role == Voter || r.Role == VoterIncoming {
			in++
			if up {
				inLive++
			}
		}
		if joint && (r.Role == Voter || r.Role == VoterOutgoing || r.Role == VoterDemoting) {
			out++
			if up {
				outLive++
			}
		}
	}
	return in > 0 && inLive >= quorum(in) && (!joint || out == 0 || outLive >= quorum(out))
}

func (s *sim) inflightOps() []Op {
	out := make([]Op, len(s.inflight))
	for i, f := range s.inflight {
		out[i] = f.op
	}
	return out
}

// plan plans from the current state and checks the plan.
func (s *sim) plan() []Op {
	s.t.Helper()
	ops, err := Plan(s.st, s.cfg, s.inflightOps())
	if err != nil {
		s.t.Fatalf("step %d: Plan: %v", s.step, err)
	}
	s.checkPlan(ops)
	return ops
}

// run steps until a plan has nothing to do, nothing is in flight and no
// dead node is still waiting to be declared gone; it fails the test after
// limit steps since the last event.
func (s *sim) run(limit int, events map[int]func()) {
	s.t.Helper()
	for {
		if ev := events[s.step]; ev != nil {
			ev()
			s.event()
		}
		ops := s.plan()
		if traceSim {
			for _, op := range ops {
				s.t.Logf("step %d: %v", s.step, op)
			}
		}
		idle := len(s.inflight) == 0 && !slices.ContainsFunc(ops, Op.Executable)
		if idle && !s.waiting() && maxKey(events) < s.step {
			return
		}
		if s.step-s.lastEvent > limit && !s.waiting() {
			s.t.Fatalf("step %d: no convergence within %d steps of the last event (step %d); plan: %v", s.step, limit, s.lastEvent, ops)
		}
		s.apply(ops)
	}
}

func maxKey(m map[int]func()) int {
	k := -1
	for i := range m {
		k = max(k, i)
	}
	return k
}

// waiting reports whether a dead node has not been dead for DownAfter yet.
func (s *sim) waiting() bool {
	for _, n := range s.st.Nodes {
		if n.Liveness == Dead && !n.Removed && !s.gone(n.ID) {
			return true
		}
	}
	return false
}

// event marks a change of membership: balance history starts over.
func (s *sim) event() {
	s.lastEvent = s.step
	clear(s.moves)
	clear(s.transfers)
	s.handovers, s.undone = 0, 0
}

// apply starts ops and advances everything in flight by one stage, then
// elects leaders where needed and moves the clock.
func (s *sim) apply(ops []Op) {
	s.t.Helper()
	for _, op := range ops {
		if op.Executable() {
			s.inflight = append(s.inflight, &simOp{op: op, planned: s.step})
			s.executed++
			s.kinds[op.Kind]++
			// The planner counts a leader's move as a handover from now.
			if sh := s.shard(op.ShardID); len(op.Add) > 0 && op.Remove.NodeID != 0 && op.Remove.NodeID == sh.Leader {
				s.handovers++
			}
		}
	}
	var keep []*simOp
	for _, f := range s.inflight {
		sh := s.shard(f.op.ShardID)
		had := s.liveQuorum(sh)
		done := s.advance(f, sh)
		if had && !s.liveQuorum(sh) {
			s.t.Fatalf("step %d: %v (stage %d) left shard %d without a quorum of live voters: %+v", s.step, f.op, f.stage, sh.ID, sh.Replicas)
		}
		if !done {
			keep = append(keep, f)
		}
	}
	s.inflight = keep
	if s.elect() {
		s.event() // raft's choice, not the planner's
	}
	goneBefore := s.goneSet()
	s.step++
	s.st.Now = s.st.Now.Add(s.stepTime)
	if !slices.Equal(goneBefore, s.goneSet()) {
		s.event()
	}
	if err := s.st.Validate(); err != nil {
		s.t.Fatalf("step %d: the simulated state broke: %v", s.step, err)
	}
}

func (s *sim) goneSet() []uint64 {
	var out []uint64
	for _, n := range s.st.Nodes {
		if s.gone(n.ID) {
			out = append(out, n.ID)
		}
	}
	return out
}

func (s *sim) fail() bool { return s.rng != nil && s.rng.Float64() < s.failRate }

func (s *sim) nextReplicaID(sh *Shard) uint64 {
	var m uint64
	for _, r := range sh.Replicas {
		m = max(m, r.ReplicaID)
	}
	return m + 1 + uint64(s.step) // never reused: later steps start higher
}

// advance runs the next stage of f; it reports whether f is over (done,
// failed or abandoned). A stage that cannot commit (no quorum, a target
// gone) abandons the operation, as a driver that gives up would.
func (s *sim) advance(f *simOp, sh *Shard) bool {
	op := f.op
	if s.fail() {
		return true
	}
	switch {
	case op.Kind == LeaveJoint:
		if s.liveQuorum(sh) {
			s.leaveJoint(sh, op)
		}
		return true
	case op.Leader != 0:
		if r, ok := replicaOn(sh, op.Leader); ok && r.Role == Voter && s.live(op.Leader) {
			if sh.Leader != op.Leader && sh.Leader != 0 {
				s.record(f, s.transfers, "transferred", [3]uint64{sh.ID, sh.Leader, op.Leader})
			}
			sh.Leader = op.Leader
		}
		return true
	}
	if !s.liveQuorum(sh) {
		return true
	}
	switch f.stage {
	case 0:
		if len(op.Add) == 0 { // a removal by a simple change
			s.remove(sh, op.Remove)
			return true
		}
		for _, id := range op.Add {
			if _, ok := replicaOn(sh, id); !ok {
				sh.Replicas = append(sh.Replicas, Replica{NodeID: id, ReplicaID: s.nextReplicaID(sh), Role: Learner})
				s.node(id).DiskUsed += sh.Size
			}
		}
	case 1:
		for _, id := range op.Add {
			if !s.live(id) {
				return true // the learner cannot catch up: abandoned
			}
		}
		if len(op.Add) == 1 && op.Remove.NodeID == 0 { // one voter added: a simple change
			setRole(sh, op.Add[0], Voter)
			return true
		}
		for _, id := range op.Add {
			setRole(sh, id, VoterIncoming)
		}
		if op.Remove.NodeID != 0 {
			setRole(sh, op.Remove.NodeID, VoterOutgoing)
		}
		sh.Joint = true
	case 2:
		s.leaveJoint(sh, op)
		if op.Remove.NodeID != 0 && len(op.Add) > 0 {
			s.record(f, s.moves, "moved", [3]uint64{sh.ID, op.Remove.NodeID, op.Add[0]})
		}
		return true
	}
	f.stage++
	return false
}

// record notes that shard k[0] went from node k[1] to k[2] by f, and
// fails the test if it went the other way by an operation planned since
// the last event: balancing must not oscillate. An operation planned
// before the last event is not recorded: the event may undo it.
func (s *sim) record(f *simOp, m map[[3]uint64]int, what string, k [3]uint64) {
	s.t.Helper()
	if f.planned < s.lastEvent {
		return
	}
	if at, ok := m[[3]uint64{k[0], k[2], k[1]}]; ok {
		// A replica never moves back. A leadership may, after a move of
		// a leader's replica handed one over (the leader balance then
		// corrects it), but no more often than that.
		s.undone++
		if what == "moved" || s.undone > s.handovers {
			s.t.Fatalf("step %d: shard %d %s from node %d to %d, undoing the move of step %d (last event at step %d; %d undone, %d handovers)",
				s.step, k[0], what, k[1], k[2], at, s.lastEvent, s.undone, s.handovers)
		}
	}
	m[k] = s.step
}

// leaveJoint makes the incoming configuration the only one.
func (s *sim) leaveJoint(sh *Shard, op Op) {
	sh.Replicas = leftJoint(sh.Replicas, func(r Replica) { s.dropped(sh, r, op) })
	sh.Joint = false
}

// leftJoint returns replicas as they are once the joint configuration is
// left: incoming voters are voters, demoting ones learners, and outgoing
// ones gone (dropped is told of each).
func leftJoint(replicas []Replica, dropped func(Replica)) []Replica {
	var out []Replica
	for _, r := range replicas {
		switch r.Role {
		case VoterIncoming:
			r.Role = Voter
		case VoterDemoting:
			r.Role = Learner
		case VoterOutgoing:
			dropped(r)
			continue
		}
		out = append(out, r)
	}
	return out
}

func (s *sim) remove(sh *Shard, rm Replica) {
	i := slices.IndexFunc(sh.Replicas, func(r Replica) bool { return r.ReplicaID == rm.ReplicaID })
	if i < 0 {
		return
	}
	s.dropped(sh, sh.Replicas[i], Op{})
	sh.Replicas = slices.Delete(sh.Replicas, i, i+1)
}

// dropped frees a removed replica's disk and its leadership.
func (s *sim) dropped(sh *Shard, r Replica, op Op) {
	n := s.node(r.NodeID)
	n.DiskUsed -= min(n.DiskUsed, sh.Size)
	if sh.Leader == r.NodeID {
		sh.Leader = 0
		if len(op.Add) > 0 && s.live(op.Add[0]) {
			sh.Leader = op.Add[0] // the driver handed it over
		}
	}
}

// elect gives a leader to every shard that can commit and has none live;
// it reports whether it elected any.
func (s *sim) elect() bool {
	elected := false
	for i := range s.st.Shards {
		sh := &s.st.Shards[i]
		if r, ok := replicaOn(sh, sh.Leader); ok && r.Role != Learner && s.live(sh.Leader) {
			continue
		}
		sh.Leader = 0
		if !s.liveQuorum(sh) {
			continue
		}
		var cands []uint64
		for _, r := range sh.Replicas {
			if (r.Role == Voter || r.Role == VoterIncoming) && s.live(r.NodeID) {
				cands = append(cands, r.NodeID)
			}
		}
		slices.Sort(cands)
		if len(cands) > 0 {
			sh.Leader = cands[0]
			if s.rng != nil {
				sh.Leader = cands[s.rng.IntN(len(cands))]
			}
			elected = true
		}
	}
	return elected
}

func setRole(sh *Shard, nodeID uint64, role Role) {
	for i := range sh.Replicas {
		if sh.Replicas[i].NodeID == nodeID {
			sh.Replicas[i].Role = role
		}
	}
}

// checkPlan checks one plan against the planner's rules, independently of
// the planner's code.
func (s *sim) checkPlan(ops []Op) {
	s.t.Helper()
	cfg := s.cfg.withDefaults()
	fail := func(op Op, format string, args ...any) {
		s.t.Helper()
		s.t.Fatalf("step %d: %v: %s", s.step, op, fmt.Sprintf(format, args...))
	}
	busy := map[uint64]bool{}
	snapshots := map[uint64]int{}
	incoming := map[uint64]uint64{}
	for _, f := range s.inflight {
		busy[f.op.ShardID] = true
		sh := s.shard(f.op.ShardID)
		for _, id := range f.op.Add {
			snapshots[id]++
			if _, ok := replicaOn(sh, id); !ok {
				incoming[id] += sh.Size
			}
		}
	}
	executable := 0
	for _, op := range ops {
		if busy[op.ShardID] {
			fail(op, "a second operation on the shard")
		}
		busy[op.ShardID] = true
		sh := s.shard(op.ShardID)
		if sh == nil {
			fail(op, "unknown shard")
		}
		if op.Executable() {
			executable++
		}
		joint := sh.Joint || slices.ContainsFunc(sh.Replicas, func(r Replica) bool { return r.Role.joint() })
		if joint && op.Kind != LeaveJoint && op.Kind != QuorumLost {
			fail(op, "on a joint shard")
		}
		if op.Kind == QuorumLost {
			if s.liveQuorum(sh) {
				fail(op, "reported, but the shard has a quorum of live voters")
			}
			continue
		}
		if op.Reason == "" {
			fail(op, "no reason")
		}
		if op.Leader != 0 {
			if r, ok := replicaOn(sh, op.Leader); !ok || r.Role != Voter || !s.eligible(op.Leader) {
				fail(op, "leadership to a node that is not an eligible voter")
			}
		}
		for _, id := range op.Add {
			n := s.node(id)
			if n == nil || !s.eligible(id) {
				fail(op, "adds onto node %d, which is not live or drains", id)
			}
			r, has := replicaOn(sh, id)
			if has && r.Role != Learner {
				fail(op, "node %d already holds a voter", id)
			}
			if has {
				continue // a promotion: no snapshot, no new data
			}
			snapshots[id]++
			incoming[id] += sh.Size
			if snapshots[id] > cfg.MaxSnapshotsPerNode {
				fail(op, "node %d receives %d snapshots at once", id, snapshots[id])
			}
			if n.DiskCapacity > 0 && float64(n.DiskUsed+incoming[id]) > cfg.MaxDiskFraction*float64(n.DiskCapacity) {
				fail(op, "node %d would use %d of %d bytes", id, n.DiskUsed+incoming[id], n.DiskCapacity)
			}
		}
		if op.Remove.NodeID != 0 {
			r, ok := replicaOn(sh, op.Remove.NodeID)
			if !ok || r != op.Remove {
				fail(op, "removes a replica the shard does not have")
			}
			if op.Remove.NodeID == sh.Leader && len(op.Add) == 0 && s.live(sh.Leader) {
				fail(op, "removes the leader without a voter to hand leadership to")
			}
		}
		if len(op.Add) > 0 || op.Remove.NodeID != 0 {
			s.checkSafe(sh, op, fail)
		}
	}
	if executable > cfg.MaxOpsPerPlan {
		s.t.Fatalf("step %d: %d operations > MaxOpsPerPlan %d", s.step, executable, cfg.MaxOpsPerPlan)
	}
	if s.step%4 == 0 { // it plans again: every step would double the test's time
		s.checkDeterministic(ops)
	}
}

// checkSafe checks that the change keeps a quorum of live voters in the old
// and the new configuration.
func (s *sim) checkSafe(sh *Shard, op Op, fail func(Op, string, ...any)) {
	var old, oldLive, nw, nwLive int
	for _, r := range sh.Replicas {
		if r.Role != Voter {
			continue
		}
		old++
		up := s.live(r.NodeID)
		if up {
			oldLive++
		}
		if r.NodeID != op.Remove.NodeID {
			nw++
			if up {
				nwLive++
			}
		}
	}
	nw += len(op.Add)
	nwLive += len(op.Add)
	if oldLive < quorum(old) || nwLive < quorum(nw) {
		fail(op, "below quorum: %d of %d voters live before, %d of %d after", oldLive, old, nwLive, nw)
	}
}

// checkDeterministic plans again from shuffled copies of the state and the
// operations in flight: the plan must not change.
func (s *sim) checkDeterministic(ops []Op) {
	s.t.Helper()
	seed := uint64(s.step)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	st := s.st
	st.Nodes = slices.Clone(st.Nodes)
	st.Shards = slices.Clone(st.Shards)
	for i := range st.Shards {
		st.Shards[i].Replicas = slices.Clone(st.Shards[i].Replicas)
		r.Shuffle(len(st.Shards[i].Replicas), func(a, b int) {
			st.Shards[i].Replicas[a], st.Shards[i].Replicas[b] = st.Shards[i].Replicas[b], st.Shards[i].Replicas[a]
		})
	}
	r.Shuffle(len(st.Nodes), func(a, b int) { st.Nodes[a], st.Nodes[b] = st.Nodes[b], st.Nodes[a] })
	r.Shuffle(len(st.Shards), func(a, b int) { st.Shards[a], st.Shards[b] = st.Shards[b], st.Shards[a] })
	inflight := s.inflightOps()
	r.Shuffle(len(inflight), func(a, b int) { inflight[a], inflight[b] = inflight[b], inflight[a] })
	again, err := Plan(st, s.cfg, inflight)
	if err != nil || !reflect.DeepEqual(again, ops) {
		s.t.Fatalf("step %d: the plan depends on input order (err %v):\n%v\n%v", s.step, err, ops, again)
	}
}
