package placement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeCluster is a tiny in-memory cluster: the driver's Source, Actuator
// and IntentStore. Every actuator call is checked against the shard's
// configuration (refused as the engine would refuse it) and, after it,
// every shard that had a quorum of live voters must still have one.
type fakeCluster struct {
	// mu serializes the actuator's calls, which the driver makes
	// concurrently (one per operation in flight).
	mu      sync.Mutex
	t       *testing.T
	now     time.Time
	nodes   map[uint64]*Node
	shards  map[uint64]*fakeShard
	lagging map[uint64]bool // replica IDs not caught up yet
	// fail, if set, can fail an actuator call before it changes anything.
	fail  func(method string, shardID uint64) error
	calls map[string]int
	// touched counts actuator calls per shard.
	touched map[uint64]int
}

type fakeShard struct {
	Shard
	next uint64 // NextReplicaID
}

var errFake = errors.New("fake: injected failure")

// newFake returns nodes 1..nodes (live) and shards 1..shards with rf voters
// each on consecutive nodes among the first onNodes, led by the first.
func newFake(t *testing.T, nodes, onNodes, shards, rf int) *fakeCluster {
	f := &fakeCluster{t: t, now: t0, nodes: map[uint64]*Node{}, shards: map[uint64]*fakeShard{},
		lagging: map[uint64]bool{}, calls: map[string]int{}, touched: map[uint64]int{}}
	for _, n := range liveNodes(nodes) {
		f.nodes[n.ID] = &n
	}
	var on []uint64
	for i := range onNodes {
		on = append(on, uint64(i+1))
	}
	for _, sh := range roundRobin(shards, on, rf) {
		f.shards[sh.ID] = &fakeShard{Shard: sh, next: uint64(rf + 1)}
	}
	return f
}

func (f *fakeCluster) State(context.Context) (State, error) {
	st := State{Now: f.now}
	for _, id := range slices.Sorted(maps.Keys(f.nodes)) {
		st.Nodes = append(st.Nodes, *f.nodes[id])
	}
	for _, id := range slices.Sorted(maps.Keys(f.shards)) {
		sh := f.shards[id].Shard
		sh.Replicas = slices.Clone(sh.Replicas)
		st.Shards = append(st.Shards, sh)
	}
	return st, nil
}

func (f *fakeCluster) live(id uint64) bool {
	n := f.nodes[id]
	return n != nil && n.Liveness == Live && !n.Removed
}

// quorate reports whether sh has a quorum of live voters (in both halves
// while joint).
func (f *fakeCluster) quorate(sh *fakeShard) bool {
	return jointQuorum(&sh.Shard, f.live) && (isJoint(&sh.Shard) || safeChange(&sh.Shard, f.live, nil, 0))
}

// do runs one actuator call on shardID: refused by fail, then checked.
func (f *fakeCluster) do(method string, shardID uint64, fn func(sh *fakeShard) error) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
	f.touched[shardID]++
	sh := f.shards[shardID]
	if sh == nil {
		return fmt.Errorf("fake: shard %d not found", shardID)
	}
	if f.fail != nil {
		if err := f.fail(method, shardID); err != nil {
			return err
		}
	}
	had := f.quorate(sh)
	if err := fn(sh); err != nil {
		return err
	}
	if had && !f.quorate(sh) {
		f.t.Errorf("%s on shard %d left it without a quorum of live voters: %+v", method, shardID, sh.Replicas)
	}
	f.elect(sh)
	return nil
}

// elect gives sh a leader if its leader is not a live voter.
func (f *fakeCluster) elect(sh *fakeShard) {
	if r, ok := replicaOn(&sh.Shard, sh.Leader); ok && r.Role != Learner && f.live(r.NodeID) {
		return
	}
	sh.Leader = 0
	for _, r := range sh.Replicas {
		if (r.Role == Voter || r.Role == VoterIncoming) && f.live(r.NodeID) && f.quorate(sh) {
			sh.Leader = r.NodeID
			return
		}
	}
}

func (f *fakeCluster) replica(sh *fakeShard, replicaID uint64) *Replica {
	for i := range sh.Replicas {
		if sh.Replicas[i].ReplicaID == replicaID {
			return &sh.Replicas[i]
		}
	}
	return nil
}

func (f *fakeCluster) AddLearner(_ context.Context, shardID, nodeID uint64) (uint64, error) {
	var id uint64
	err := f.do("AddLearner", shardID, func(sh *fakeShard) error {
		if r, ok := replicaOn(&sh.Shard, nodeID); ok {
			if r.Role != Learner {
				return fmt.Errorf("fake: node %d holds a %s of shard %d", nodeID, r.Role, shardID)
			}
			id = r.ReplicaID
			return nil
		}
		if isJoint(&sh.Shard) {
			return errors.New("fake: joint")
		}
		if !f.live(nodeID) {
			return fmt.Errorf("fake: node %d unreachable", nodeID)
		}
		id = sh.next
		sh.next++
		sh.Replicas = append(sh.Replicas, Replica{NodeID: nodeID, ReplicaID: id, Role: Learner})
		return nil
	})
	return id, err
}

func (f *fakeCluster) CaughtUp(_ context.Context, shardID, replicaID uint64) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["CaughtUp"]++
	sh := f.shards[shardID]
	if sh == nil || f.replica(sh, replicaID) == nil {
		return false, errors.New("fake: no such replica")
	}
	return !f.lagging[replicaID], nil
}

func (f *fakeCluster) ChangeVoters(_ context.Context, shardID uint64, promote, demote []uint64) error {
	return f.do("ChangeVoters", shardID, func(sh *fakeShard) error {
		if isJoint(&sh.Shard) {
			return errors.New("fake: conf change in progress (joint)")
		}
		for _, id := range promote {
			if r := f.replica(sh, id); r == nil || r.Role != Learner || f.lagging[id] {
				return fmt.Errorf("fake: replica %d is no caught-up learner", id)
			}
		}
		for _, id := range demote {
			if r := f.replica(sh, id); r == nil || r.Role != Voter {
				return fmt.Errorf("fake: replica %d is no voter", id)
			}
		}
		if len(promote) == 1 && len(demote) == 0 {
			f.replica(sh, promote[0]).Role = Voter
			return nil
		}
		for _, id := range promote {
			f.replica(sh, id).Role = VoterIncoming
		}
		for _, id := range demote {
			f.replica(sh, id).Role = VoterDemoting
		}
		sh.Joint = true
		return nil
	})
}

func (f *fakeCluster) LeaveJoint(_ context.Context, shardID uint64) error {
	return f.do("LeaveJoint", shardID, func(sh *fakeShard) error {
		sh.Replicas, sh.Joint = leftJoint(sh.Replicas, func(Replica) {}), false
		return nil
	})
}

func (f *fakeCluster) RemoveReplica(_ context.Context, shardID, replicaID uint64) error {
	return f.do("RemoveReplica", shardID, func(sh *fakeShard) error {
		r := f.replica(sh, replicaID)
		if r == nil {
			return nil
		}
		if r.Role.joint() {
			return errors.New("fake: joint")
		}
		if r.Role == Voter {
			if isJoint(&sh.Shard) {
				return errors.New("fake: joint")
			}
			if !slices.ContainsFunc(sh.Replicas, func(o Replica) bool { return o.Role == Voter && o.ReplicaID != replicaID }) {
				return errors.New("fake: last voter")
			}
		}
		sh.Replicas = slices.DeleteFunc(sh.Replicas, func(o Replica) bool { return o.ReplicaID == replicaID })
		return nil
	})
}

func (f *fakeCluster) TransferLeader(_ context.Context, shardID, nodeID uint64) error {
	return f.do("TransferLeader", shardID, func(sh *fakeShard) error {
		r, ok := replicaOn(&sh.Shard, nodeID)
		if !ok || (r.Role != Voter && r.Role != VoterIncoming) || !f.live(nodeID) {
			return fmt.Errorf("fake: node %d is no live voter of shard %d", nodeID, shardID)
		}
		sh.Leader = nodeID
		return nil
	})
}

// fakeIntents is the IntentStore half, kept apart so that a second driver
// can share it.
type fakeIntents struct{ m map[uint64]Intent }

func (s *fakeIntents) Save(_ context.Context, in Intent) error {
	in.Learners = slices.Clone(in.Learners)
	s.m[in.Op.ShardID] = in
	return nil
}

func (s *fakeIntents) Delete(_ context.Context, shardID uint64) error {
	delete(s.m, shardID)
	return nil
}

func (s *fakeIntents) Load(context.Context) ([]Intent, error) {
	return slices.Collect(maps.Values(s.m)), nil
}

// harness is a driver on a fake cluster with a manual clock.
type harness struct {
	t       *testing.T
	f       *fakeCluster
	intents *fakeIntents
	d       *Driver
	leader  bool
	cfg     DriverConfig
	src     Source // the driver's source; nil: f
}

func newHarness(t *testing.T, f *fakeCluster, cfg DriverConfig) *harness {
	h := &harness{t: t, f: f, intents: &fakeIntents{m: map[uint64]Intent{}}, leader: true}
	cfg.IsLeader = func() bool { return h.leader }
	cfg.Now = func() time.Time { return h.f.now }
	h.cfg = cfg
	h.newDriver()
	return h
}

// newDriver replaces the driver with a new one on the same cluster and
// intents, as a new leader of the meta shard would start.
func (h *harness) newDriver() {
	h.t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	src := h.src
	if src == nil {
		src = h.f
	}
	d, err := NewDriver(h.cfg, src, h.f, h.intents, logger)
	if err != nil {
		h.t.Fatal(err)
	}
	h.d = d
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// step runs one driver step and moves the clock by dt, then checks the
// rate limits on what is in flight.
func (h *harness) step(dt time.Duration) {
	h.t.Helper()
	if err := h.d.Step(context.Background()); err != nil {
		h.t.Fatalf("Step: %v", err)
	}
	h.checkLimits()
	h.f.now = h.f.now.Add(dt)
}

func (h *harness) checkLimits() {
	h.t.Helper()
	cfg := h.d.cfg
	var running []Move
	for _, m := range h.d.Moves() {
		if m.Outcome == Running {
			running = append(running, m)
		}
	}
	if len(running) > cfg.MaxConcurrentOps {
		h.t.Fatalf("%d ops in flight > MaxConcurrentOps %d", len(running), cfg.MaxConcurrentOps)
	}
	per := map[uint64]int{}
	for _, m := range running {
		for _, id := range m.Op.Add {
			per[id]++
			if per[id] > cfg.MaxSnapshotsPerNode {
				h.t.Fatalf("%d moves in flight onto node %d > MaxSnapshotsPerNode %d", per[id], id, cfg.MaxSnapshotsPerNode)
			}
		}
	}
	var starts []time.Time
	for _, m := range h.d.Moves() {
		if len(m.Op.Add) > 0 && !m.Resumed {
			starts = append(starts, m.Started)
		}
	}
	slices.SortFunc(starts, time.Time.Compare)
	for i := range starts {
		j := i
		for j < len(starts) && starts[j].Sub(starts[i]) < time.Minute {
			j++
		}
		if j-i > cfg.MovesPerMinute {
			h.t.Fatalf("%d moves started within a minute of %v > MovesPerMinute %d", j-i, starts[i], cfg.MovesPerMinute)
		}
	}
}

// settle steps until nothing is in flight and a plan has nothing to do.
func (h *harness) settle(limit int) {
	h.t.Helper()
	for i := 0; i < limit; i++ {
		h.step(10 * time.Second)
		st, _ := h.f.State(context.Background())
		ops, err := Plan(st, h.d.cfg.Placement, nil)
		if err != nil {
			h.t.Fatal(err)
		}
		if h.d.Stats().InFlight == 0 && !slices.ContainsFunc(ops, Op.Executable) {
			return
		}
	}
	h.t.Fatalf("not settled after %d steps; stats %+v", limit, h.d.Stats())
}

// counts returns the replica and leader counts of user shards per node.
func (f *fakeCluster) counts() (replicas, leaders map[uint64]int) {
	replicas, leaders = map[uint64]int{}, map[uint64]int{}
	for _, sh := range f.shards {
		for _, r := range sh.Replicas {
			replicas[r.NodeID]++
		}
		leaders[sh.Leader]++
	}
	return replicas, leaders
}

// checkBalanced checks that every node in ids is within ±max(5%, 2) of the
// mean in replicas and leaders, and that every shard has rf voters, no
// learner, and is not joint.
func (h *harness) checkBalanced(ids []uint64, rf int) {
	h.t.Helper()
	replicas, leaders := h.f.counts()
	for what, m := range map[string]map[uint64]int{"replicas": replicas, "leaders": leaders} {
		sum := 0
		for _, id := range ids {
			sum += m[id]
		}
		mean := float64(sum) / float64(len(ids))
		band := max(0.05*mean, 2)
		for _, id := range ids {
			if d := float64(m[id]) - mean; d > band || d < -band {
				h.t.Errorf("node %d has %d %s, mean %.1f ± %.1f: %v", id, m[id], what, mean, band, m)
			}
		}
	}
	h.checkShards(rf)
}

func (h *harness) checkShards(rf int) {
	h.t.Helper()
	for _, id := range slices.Sorted(maps.Keys(h.f.shards)) {
		sh := h.f.shards[id]
		voters := 0
		for _, r := range sh.Replicas {
			if r.Role != Voter {
				h.t.Errorf("shard %d has a %s: %+v", id, r.Role, sh.Replicas)
			}
			voters++
			if !h.f.live(r.NodeID) || h.f.nodes[r.NodeID].Draining {
				h.t.Errorf("shard %d has a replica on node %d (not live or draining)", id, r.NodeID)
			}
		}
		if voters != rf || sh.Joint {
			h.t.Errorf("shard %d: %d voters, joint %v: %+v", id, voters, sh.Joint, sh.Replicas)
		}
	}
	if len(h.intents.m) != 0 {
		h.t.Errorf("intents left: %v", h.intents.m)
	}
}

func join(f *fakeCluster, ids ...uint64) {
	for _, id := range ids {
		n := liveNodes(int(id))[id-1]
		f.nodes[id] = &n
	}
}

func TestDriverJoinBalances(t *testing.T) {
	f := newFake(t, 3, 3, 30, 3)
	h := newHarness(t, f, DriverConfig{MovesPerMinute: 6})
	h.settle(5)
	if n := h.d.Stats().Started[RebalanceReplica]; n != 0 {
		t.Fatalf("a balanced cluster got %d moves", n)
	}
	join(f, 4, 5)
	h.settle(400)
	h.checkBalanced([]uint64{1, 2, 3, 4, 5}, 3)
	s := h.d.Stats()
	if s.Started[RebalanceReplica] == 0 || s.Succeeded[RebalanceReplica] != s.Started[RebalanceReplica] {
		t.Errorf("stats: %+v", s)
	}
	if s.ReplicaSpread > 4 || s.LeaderSpread > 4 {
		t.Errorf("spread %d replicas, %d leaders", s.ReplicaSpread, s.LeaderSpread)
	}
}

func TestDriverRepairsDeadNode(t *testing.T) {
	f := newFake(t, 4, 4, 12, 3)
	h := newHarness(t, f, DriverConfig{})
	f.nodes[4].Liveness, f.nodes[4].Since = Dead, f.now.Add(-6*time.Minute)
	h.settle(200)
	h.checkBalanced([]uint64{1, 2, 3}, 3)
	if h.d.Stats().Succeeded[Repair] == 0 {
		t.Errorf("no repair: %+v", h.d.Stats())
	}
}

func TestDriverDrainsNode(t *testing.T) {
	f := newFake(t, 4, 4, 12, 3)
	h := newHarness(t, f, DriverConfig{})
	f.nodes[2].Draining = true
	h.settle(200)
	replicas, leaders := f.counts()
	if replicas[2] != 0 || leaders[2] != 0 {
		t.Fatalf("node 2 still holds %d replicas, %d leaderships", replicas[2], leaders[2])
	}
	h.checkShards(3)
	if s := h.d.Stats(); s.Succeeded[Decommission] == 0 {
		t.Errorf("no decommission: %+v", s)
	}
}

func TestDriverPause(t *testing.T) {
	f := newFake(t, 3, 3, 30, 3)
	h := newHarness(t, f, DriverConfig{})
	h.d.Pause()
	join(f, 4, 5)
	for range 5 {
		h.step(time.Minute)
	}
	if len(f.calls) != 0 || !h.d.Paused() || !h.d.Stats().Paused {
		t.Fatalf("paused driver acted: %v", f.calls)
	}
	h.d.Resume()
	h.settle(400)
	h.checkBalanced([]uint64{1, 2, 3, 4, 5}, 3)
}

// interrupted starts a driver on a joining node until it added learners,
// then drops it.
func interrupted(t *testing.T) *harness {
	f := newFake(t, 3, 3, 12, 3)
	h := newHarness(t, f, DriverConfig{})
	join(f, 4)
	h.step(10 * time.Second)
	if f.calls["AddLearner"] == 0 || len(h.intents.m) == 0 {
		t.Fatalf("no learner added: %v, intents %v", f.calls, h.intents.m)
	}
	for _, in := range h.intents.m {
		if len(in.Learners) != 1 {
			t.Fatalf("intent without its learner: %+v", in)
		}
	}
	return h
}

func TestDriverFinishesInterruptedOp(t *testing.T) {
	h := interrupted(t)
	resumed := len(h.intents.m)
	h.newDriver()
	h.settle(200)
	h.checkBalanced([]uint64{1, 2, 3, 4}, 3)
	n := 0
	for _, m := range h.d.Moves() {
		if m.Resumed {
			n++
			if m.Outcome != Succeeded {
				t.Errorf("resumed op %v: %v %s", m.Op, m.Outcome, m.Err)
			}
		}
	}
	if n != resumed {
		t.Errorf("%d ops resumed, %d intents", n, resumed)
	}
}

func TestDriverRollsBackInterruptedOp(t *testing.T) {
	h := interrupted(t)
	h.f.nodes[4].Liveness, h.f.nodes[4].Since = Suspect, h.f.now
	h.newDriver()
	h.step(10 * time.Second)
	if len(h.intents.m) != 0 {
		t.Fatalf("intents left: %v", h.intents.m)
	}
	for _, sh := range h.f.shards {
		if _, ok := replicaOn(&sh.Shard, 4); ok {
			t.Errorf("shard %d keeps a replica on node 4: %+v", sh.ID, sh.Replicas)
		}
	}
	for _, m := range h.d.Moves() {
		if m.Outcome != Dropped || !m.Resumed {
			t.Errorf("%v: %v %s", m.Op, m.Outcome, m.Err)
		}
	}
}

func TestDriverFailedStepRetried(t *testing.T) {
	f := newFake(t, 3, 3, 30, 3)
	h := newHarness(t, f, DriverConfig{})
	failed := 0
	f.fail = func(method string, _ uint64) error {
		if method == "ChangeVoters" && failed < 3 {
			failed++
			return errFake
		}
		return nil
	}
	join(f, 4, 5)
	h.settle(400)
	h.checkBalanced([]uint64{1, 2, 3, 4, 5}, 3)
	s := h.d.Stats()
	if s.Failed[RebalanceReplica] != 3 {
		t.Errorf("failed %v, want 3 rebalances", s.Failed)
	}
	nFailed := 0
	for _, m := range h.d.Moves() {
		if m.Outcome == Failed {
			nFailed++
			if m.Err == "" {
				t.Errorf("failed move without an error: %+v", m)
			}
		}
	}
	if nFailed == 0 {
		t.Errorf("no failed move in Moves")
	}
}

func TestDriverCatchUpTimeout(t *testing.T) {
	f := newFake(t, 3, 3, 6, 3)
	h := newHarness(t, f, DriverConfig{CatchUpTimeout: time.Minute})
	for id := uint64(1); id < 100; id++ {
		f.lagging[id] = true // every new learner lags
	}
	join(f, 4)
	for range 10 {
		h.step(10 * time.Second)
	}
	if h.d.Stats().Failed[RebalanceReplica] == 0 {
		t.Fatalf("no op failed: %+v", h.d.Stats())
	}
	clear(f.lagging)
	h.settle(200)
	h.checkBalanced([]uint64{1, 2, 3, 4}, 3)
}

func TestDriverRateLimits(t *testing.T) {
	f := newFake(t, 3, 3, 60, 3)
	h := newHarness(t, f, DriverConfig{MovesPerMinute: 3, MaxConcurrentOps: 4, MaxSnapshotsPerNode: 1})
	join(f, 4, 5, 6)
	for range 5 {
		h.step(0) // the clock stands still: no more than 3 moves
	}
	if n := h.d.Stats().Started[RebalanceReplica]; n != 3 {
		t.Fatalf("%d moves started in no time, want 3", n)
	}
	h.settle(2000) // checkLimits runs after every step
	h.checkBalanced([]uint64{1, 2, 3, 4, 5, 6}, 3)
}

func TestDriverQuorumLost(t *testing.T) {
	f := newFake(t, 4, 4, 4, 3)
	h := newHarness(t, f, DriverConfig{})
	for _, id := range []uint64{3, 4} {
		f.nodes[id].Liveness, f.nodes[id].Since = Dead, f.now.Add(-time.Hour)
	}
	for range 20 {
		h.step(10 * time.Second)
	}
	if h.d.Stats().QuorumLost == 0 {
		t.Fatalf("no quorum-lost report: %+v", h.d.Stats())
	}
	// Shards 2 (2,3,4) and 3 (3,4,1) have 1 live voter of 3.
	for _, id := range []uint64{2, 3} {
		if f.touched[id] != 0 {
			t.Errorf("shard %d without quorum was acted on %d times", id, f.touched[id])
		}
	}
}

func TestDriverNotLeader(t *testing.T) {
	f := newFake(t, 3, 3, 6, 3)
	h := newHarness(t, f, DriverConfig{})
	join(f, 4)
	h.step(10 * time.Second)
	inflight := h.d.Stats().InFlight
	if inflight == 0 {
		t.Fatal("nothing started")
	}
	h.leader = false
	calls := maps.Clone(f.calls)
	h.step(10 * time.Second)
	if !maps.Equal(calls, f.calls) {
		t.Fatalf("a follower acted: %v -> %v", calls, f.calls)
	}
	if h.d.Stats().InFlight != 0 || len(h.intents.m) != inflight {
		t.Fatalf("ops not abandoned or intents cleared: %+v, %v", h.d.Stats(), h.intents.m)
	}
	h.leader = true
	h.settle(200)
	h.checkBalanced([]uint64{1, 2, 3, 4}, 3)
}

func TestDriverRunStops(t *testing.T) {
	f := newFake(t, 3, 3, 3, 3)
	h := newHarness(t, f, DriverConfig{Interval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.d.Run(ctx) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}

func TestDriverConfigValidate(t *testing.T) {
	if err := (DriverConfig{}).Validate(); !errors.Is(err, ErrBadConfig) {
		t.Errorf("no IsLeader: %v", err)
	}
	cfg := DriverConfig{IsLeader: func() bool { return true }, MovesPerMinute: -1}
	if err := cfg.Validate(); !errors.Is(err, ErrBadConfig) {
		t.Errorf("MovesPerMinute -1: %v", err)
	}
	if cfg.MovesPerMinute != -1 {
		t.Error("Validate changed its receiver")
	}
}

// TestNextAction walks a leader's move and a two-voter meta growth through
// the steps nextAction picks from the shard alone.
func TestNextAction(t *testing.T) {
	nodes := liveNodes(5)
	r := func(node, id uint64, role Role) Replica { return Replica{NodeID: node, ReplicaID: id, Role: role} }
	st := func(leader uint64, joint bool, rs ...Replica) State {
		return State{Now: t0, Nodes: nodes, Shards: []Shard{{ID: 1, Last: 1, Leader: leader, Joint: joint, Replicas: rs}}}
	}
	move := Op{Kind: RebalanceReplica, ShardID: 1, Add: []uint64{4}, Remove: r(1, 1, Voter)}
	meta := Op{Kind: MetaVoter, ShardID: 1, Add: []uint64{4, 5}}
	for _, tc := range []struct {
		name string
		op   Op
		st   State
		want string
	}{
		{"add learner", move, st(1, false, r(1, 1, Voter), r(2, 2, Voter), r(3, 3, Voter)), "add learner on n4"},
		{"promote and demote", move, st(1, false, r(1, 1, Voter), r(2, 2, Voter), r(3, 3, Voter), r(4, 4, Learner)), "promote [4] demote [1]"},
		{"hand leadership over while joint", move, st(1, true, r(1, 1, VoterDemoting), r(2, 2, Voter), r(3, 3, Voter), r(4, 4, VoterIncoming)), "transfer leadership to n4"},
		{"leave joint", move, st(4, true, r(1, 1, VoterDemoting), r(2, 2, Voter), r(3, 3, Voter), r(4, 4, VoterIncoming)), "leave joint"},
		{"remove the demoted replica", move, st(4, false, r(1, 1, Learner), r(2, 2, Voter), r(3, 3, Voter), r(4, 4, Voter)), "remove replica 1"},
		{"done", move, st(4, false, r(2, 2, Voter), r(3, 3, Voter), r(4, 4, Voter)), "done"},
		{"stale: replica gone", move, st(2, false, r(2, 2, Voter), r(3, 3, Voter), r(5, 5, Voter)), "dropped: shard 1 no longer has replica 1 on node 1"},
		{"stale: a joint shard not ours", move, st(1, true, r(1, 1, Voter), r(2, 2, VoterOutgoing), r(3, 3, Voter)), "dropped: shard 1 is joint"},
		{"meta: second learner", meta, st(1, false, r(1, 1, Voter), r(2, 2, Voter), r(3, 3, Voter), r(4, 4, Learner)), "add learner on n5"},
		{"meta: promote both", meta, st(1, false, r(1, 1, Voter), r(2, 2, Voter), r(3, 3, Voter), r(4, 4, Learner), r(5, 5, Learner)), "promote [4 5] demote []"},
	} {
		if got := nextAction(tc.op, tc.st, true).String(); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	dead := st(1, false, r(1, 1, Voter), r(2, 2, Voter), r(3, 3, Voter), r(4, 4, Learner))
	dead.Nodes = slices.Clone(nodes)
	dead.Nodes[1].Liveness, dead.Nodes[1].Since = Dead, t0
	dead.Nodes[2].Liveness = Suspect
	if a := nextAction(move, dead, true); a.kind != actRollback {
		t.Errorf("a change without a live quorum: %v, want a rollback", a)
	}
}

// Split splits the shard at the middle of its range: the child gets the
// next shard ID, the same replicas, and half of the size and the writes.
func (f *fakeCluster) Split(_ context.Context, shardID, generation uint64) error {
	return f.do("Split", shardID, func(sh *fakeShard) error {
		if sh.Generation != generation || sh.Start == sh.Last {
			return fmt.Errorf("fake: shard %d at generation %d, not %d", shardID, sh.Generation, generation)
		}
		c := *sh
		c.Replicas = slices.Clone(sh.Replicas)
		c.ID = slices.Max(slices.Collect(maps.Keys(f.shards))) + 1
		at := sh.Start + (sh.Last-sh.Start)/2 + 1
		c.Start, sh.Last = at, at-1
		sh.Generation++
		c.Generation = sh.Generation
		sh.Size /= 2
		sh.WritesPerSecond /= 2
		c.Size, c.WritesPerSecond = sh.Size, sh.WritesPerSecond
		sh.RangeChanged, c.RangeChanged = f.now, f.now
		f.shards[c.ID] = &c
		return nil
	})
}

// Merge folds right into left, which must be adjacent and on the same
// nodes in the same roles.
func (f *fakeCluster) Merge(_ context.Context, left, leftGen, right, rightGen uint64) error {
	return f.do("Merge", left, func(l *fakeShard) error {
		r := f.shards[right]
		switch {
		case r == nil || l.Generation != leftGen || r.Generation != rightGen:
			return fmt.Errorf("fake: shards %d and %d moved on", left, right)
		case l.Last+1 != r.Start:
			return fmt.Errorf("fake: shards %d and %d are not adjacent", left, right)
		}
		for _, rep := range r.Replicas {
			if lr, ok := replicaOn(&l.Shard, rep.NodeID); !ok || lr.Role != rep.Role {
				f.t.Errorf("merge of shards %d and %d on other nodes: %v and %v", left, right, l.Replicas, r.Replicas)
				return errFake
			}
		}
		l.Last, l.Generation = r.Last, max(l.Generation, r.Generation)+1
		l.Size += r.Size
		l.WritesPerSecond += r.WritesPerSecond
		l.RangeChanged = f.now
		delete(f.shards, right)
		return nil
	})
}
