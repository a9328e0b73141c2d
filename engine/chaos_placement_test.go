package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/placement"
	"github.com/flotilla-db/flotilla/storage"
)

// The chaos test with the placement driver as the membership nemesis: the
// real planner and driver (package placement) move replicas and leaders
// while the fault nemesis partitions, drops, delays and crashes. The
// shards start on the first nodes only, so the driver has replicas to
// balance from the start; the nemesis below keeps it busy:
//
//   - a node is drained (decommissioned) and later recommissioned, so that
//     its replicas and leaderships move off and back;
//   - a node is held down longer than DownAfter, so that its replicas are
//     replaced by repairs, and then restarted with its stale replicas;
//   - the driver is replaced by a new one, as when the meta shard's leader
//     changes: the new driver starts before the old one has stopped (which
//     may still be in the middle of a step: the engine's fencing by replica
//     ID and conf change in progress is what keeps them apart), and
//     finishes or rolls back the operations in flight from their intents.
//
// The driver reaches the shards through chaosActuator, the engine calls the
// node's Admin ReplicaStep makes, and sees them through chaosSource, the
// descriptors that the shards' leaders have applied.

// The placement nemesis's timing: a node dead for longer than
// placementDownAfter is repaired around; a node held down stays down for
// holdDown.
const (
	placementDownAfter = 150 * time.Millisecond
	holdDown           = 400 * time.Millisecond
)

// TestLinearizabilityPlacement runs the chaos test with the placement
// driver moving replicas and leaders: 8 shards of 3 voters start on 3 of 5
// nodes.
func TestLinearizabilityPlacement(t *testing.T) {
	for _, seed := range chaosSeeds(t, []uint64{1, 2, 3, 4}) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runLinearizability(t, chaosRun{voters: 3, nodes: 5, shards: 8, runFor: 3 * time.Second, placement: true}, seed)
		})
	}
}

// placementNemesis runs the placement driver and disturbs it until stopped;
// it is owned by the goroutine that calls run.
type placementNemesis struct {
	t       *testing.T
	c       *testcluster.Cluster
	rng     *rand.Rand
	shards  []uint64
	cfg     placement.Config
	src     *chaosSource
	act     *chaosActuator
	intents *chaosIntents
	hist    *descHistory
	down    *downNodes

	// The driver running now, and the ones replaced, whose Run the nemesis
	// waits for.
	driver  *chaosDriver
	retired []*chaosDriver
	// held is the node held down now (0: none) and until when.
	held      uint64
	heldUntil time.Time

	drained, recommissioned, holds, handovers int
	// enough: the drivers have finished enough operations (see count).
	enough atomic.Bool
	// stats adds up the drivers' statistics; failures are why their
	// operations failed.
	stats    placement.Stats
	failures []string
	// minVoters is the fewest voters (of the incoming configuration) seen
	// in any descriptor of a shard.
	minVoters int
}

// chaosDriver is one incarnation of the driver, as one leader of the meta
// shard would run it.
type chaosDriver struct {
	d       *placement.Driver
	leading *atomicBool
	cancel  context.CancelFunc
	done    chan error
}

type atomicBool struct {
	mu sync.Mutex
	v  bool
}

func (b *atomicBool) set(v bool) { b.mu.Lock(); b.v = v; b.mu.Unlock() }
func (b *atomicBool) get() bool  { b.mu.Lock(); defer b.mu.Unlock(); return b.v }

func newPlacementNemesis(t *testing.T, c *testcluster.Cluster, seed uint64, shards []uint64, voters int, down *downNodes) *placementNemesis {
	cfg := placement.Config{ReplicationFactor: voters, DownAfter: placementDownAfter, MaxSnapshotsPerNode: 2, NoSplits: true, NoMerges: true}
	m := &placementNemesis{
		t: t, c: c, rng: rand.New(rand.NewPCG(seed, 3)), shards: shards, cfg: cfg,
		src: newChaosSource(c, shards), act: &chaosActuator{c: c}, intents: newChaosIntents(),
		hist: newDescHistory(), down: down, minVoters: voters,
	}
	m.act.hist = m.hist
	return m
}

// startDriver starts a new incarnation of the driver, writing intents
// under a new epoch (the old driver's writes fail from now on).
func (m *placementNemesis) startDriver() {
	epoch := m.intents.newEpoch()
	leading := &atomicBool{v: true}
	d, err := placement.NewDriver(placement.DriverConfig{
		Placement: m.cfg, IsLeader: leading.get,
		Interval: 20 * time.Millisecond, BusyInterval: 5 * time.Millisecond,
		StepTimeout: changeTimeout, CatchUpTimeout: 2 * time.Second,
		MovesPerMinute: 100000, MaxConcurrentOps: 4,
	}, m.src, m.act, m.intents.at(epoch), slog.New(slog.DiscardHandler))
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cd := &chaosDriver{d: d, leading: leading, cancel: cancel, done: make(chan error, 1)}
	go func() { cd.done <- d.Run(ctx) }()
	m.driver = cd
}

// retire takes the leadership from the running driver and stops it after
// delay (it may be in the middle of a step meanwhile).
func (m *placementNemesis) retire(delay time.Duration) {
	cd := m.driver
	cd.leading.set(false)
	m.retired = append(m.retired, cd)
	time.AfterFunc(delay, cd.cancel)
}

func (m *placementNemesis) run(stop chan struct{}) {
	m.startDriver()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	defer m.stopAll()
	for {
		select {
		case <-stop:
			m.finishWork(tick)
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m.observe(ctx)
		cancel()
		m.step()
		m.count()
	}
}

// afterFaults bounds how long the drivers go on once the faults stopped.
const afterFaults = 20 * time.Second

// finishWork lets the drivers go on, undisturbed (the node held down is
// back), until they have done enough (see count), for at most afterFaults:
// on a machine so loaded that the faults starved them, the run still tests
// what they do.
func (m *placementNemesis) finishWork(tick *time.Ticker) {
	if m.held != 0 {
		if err := m.c.Start(m.held); err != nil {
			m.t.Errorf("restart node %d: %v", m.held, err)
		}
		m.held = 0
		m.down.release(downByPlacement)
	}
	deadline := time.Now().Add(afterFaults)
	for m.count(); !m.enough.Load() && time.Now().Before(deadline); m.count() {
		<-tick.C
	}
}

// Enough placement operations for a run: some, and at least one that
// moved a replica (not only leaderships).
const minPlacementOps, minReplicaMoves = 6, 1

// count adds up the operations every driver finished.
func (m *placementNemesis) count() {
	var ops, moves uint64
	for _, cd := range append(slices.Clone(m.retired), m.driver) {
		for k, v := range cd.d.Stats().Succeeded {
			ops += v
			if k == placement.Repair || k == placement.Decommission || k == placement.RebalanceReplica {
				moves += v
			}
		}
	}
	m.enough.Store(ops >= minPlacementOps && moves >= minReplicaMoves)
}

func (m *placementNemesis) progressed() bool { return m.enough.Load() }

// observe records every descriptor on every node, and the fewest voters.
func (m *placementNemesis) observe(ctx context.Context) {
	m.hist.observeAll(ctx, m.c)
	m.hist.mu.Lock()
	defer m.hist.mu.Unlock()
	for _, byIndex := range m.hist.descs {
		for _, d := range byIndex {
			n := 0
			for _, r := range d.Replicas {
				if r.Role == storage.RoleVoter || r.Role == storage.RoleVoterIncoming {
					n++
				}
			}
			m.minVoters = min(m.minVoters, n)
		}
	}
}

// step makes one disturbance now and then: the driver keeps working in
// between.
func (m *placementNemesis) step() {
	now := time.Now()
	if m.held != 0 && now.After(m.heldUntil) {
		if err := m.c.Start(m.held); err != nil {
			m.t.Errorf("restart node %d: %v", m.held, err)
		}
		m.held = 0
		m.down.release(downByPlacement)
	}
	ids := m.c.IDs()
	// Each tick (20ms): a drain or recommission about every second, a
	// node held down every two, a handover every second.
	switch p := m.rng.IntN(100); {
	case p < 2: // drain a node, or recommission the one draining
		if d := m.src.drainingNode(); d != 0 {
			m.src.setDraining(d, false)
			m.recommissioned++
		} else {
			m.src.setDraining(ids[m.rng.IntN(len(ids))], true)
			m.drained++
		}
	case p < 3 && m.held == 0 && m.src.drainingNode() == 0 && m.down.take(downByPlacement):
		// Hold a node down past DownAfter; the fault nemesis crashes
		// nothing meanwhile (see downNodes).
		id := ids[m.rng.IntN(len(ids))]
		m.c.Crash(id)
		m.held, m.heldUntil = id, now.Add(holdDown)
		m.holds++
	case p < 5: // a new leader of the meta shard
		m.retire(time.Duration(m.rng.IntN(20)) * time.Millisecond)
		m.startDriver()
		m.handovers++
	}
}

// stopAll stops every driver, restarts the node held down, and adds up the
// drivers' statistics.
func (m *placementNemesis) stopAll() {
	m.retire(0)
	for _, cd := range m.retired {
		if err := <-cd.done; err != nil && !errors.Is(err, context.Canceled) {
			m.t.Errorf("placement driver: %v", err)
		}
		for _, mv := range cd.d.Moves() {
			if mv.Outcome == placement.Failed {
				m.failures = append(m.failures, fmt.Sprintf("%s %s at %q: %s", mv.Outcome, mv.Op.Kind, mv.Step, mv.Err))
			}
		}
		s := cd.d.Stats()
		addCounts(&m.stats.Started, s.Started)
		addCounts(&m.stats.Succeeded, s.Succeeded)
		addCounts(&m.stats.Failed, s.Failed)
	}
	if m.held != 0 {
		if err := m.c.Start(m.held); err != nil {
			m.t.Errorf("restart node %d: %v", m.held, err)
		}
		m.held = 0
		m.down.release(downByPlacement)
	}
	// The drivers did work: a run in which the placement driver moved
	// nothing tests nothing.
	m.count()
	if !m.enough.Load() {
		m.t.Errorf("the placement drivers finished too few operations (want %d, %d of them moving a replica): started %v, succeeded %v, failed %v",
			minPlacementOps, minReplicaMoves, m.stats.Started, m.stats.Succeeded, m.stats.Failed)
	}
	// The driver adds a voter before it removes one (a move is one joint
	// change, a repair promotes before it removes the voter that is gone):
	// no shard ever has fewer voters than the replication factor.
	if m.minVoters < m.cfg.ReplicationFactor {
		m.t.Errorf("a descriptor had %d voters, fewer than the replication factor %d", m.minVoters, m.cfg.ReplicationFactor)
	}
}

func addCounts(into *map[placement.Kind]uint64, from map[placement.Kind]uint64) {
	if *into == nil {
		*into = map[placement.Kind]uint64{}
	}
	for k, v := range from {
		(*into)[k] += v
	}
}

func (m *placementNemesis) history() *descHistory { return m.hist }

func (m *placementNemesis) summary() string {
	format := func(c map[placement.Kind]uint64) string {
		var parts []string
		for k, v := range c {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		return strings.Join(parts, ", ")
	}
	if len(m.failures) > 0 {
		m.t.Logf("placement operations failed: %s", strings.Join(m.failures, "; "))
	}
	return fmt.Sprintf("placement operations succeeded: %s; failed: %s; %d drains, %d recommissions, %d nodes held down past DownAfter, %d driver handovers; fewest voters in a descriptor %d",
		format(m.stats.Succeeded), format(m.stats.Failed), m.drained, m.recommissioned, m.holds, m.handovers, m.minVoters)
}

// downNodes keeps the two nemeses from having nodes down at once: the
// fault nemesis crashes a minority for one of its steps, the placement
// nemesis holds one node down for long; both at once would leave shards
// without a quorum for long, and one might restart a node the other holds.
type downNodes struct {
	mu    sync.Mutex
	owner string // "" when no node is down
}

const (
	downByFaults    = "faults"
	downByPlacement = "placement"
)

// take reports whether owner may take nodes down now (no other owner has
// any down), and records that it does.
func (d *downNodes) take(owner string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.owner != "" && d.owner != owner {
		return false
	}
	d.owner = owner
	return true
}

// release records that owner has no node down any more.
func (d *downNodes) release(owner string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.owner == owner {
		d.owner = ""
	}
}

// chaosSource is the driver's view of the test cluster: a node is live
// while its engine runs and dead since the source first saw it stopped; a
// shard is its leader's applied descriptor (or, with no leader, the
// descriptor with the highest conf index any replica has).
type chaosSource struct {
	c      *testcluster.Cluster
	shards []uint64
	mu     struct {
		sync.Mutex
		downSince map[uint64]time.Time
		draining  uint64 // the node being drained, 0 if none
	}
}

func newChaosSource(c *testcluster.Cluster, shards []uint64) *chaosSource {
	s := &chaosSource{c: c, shards: shards}
	s.mu.downSince = map[uint64]time.Time{}
	return s
}

func (s *chaosSource) drainingNode() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.draining
}

func (s *chaosSource) setDraining(id uint64, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.mu.draining = id
	} else if s.mu.draining == id {
		s.mu.draining = 0
	}
}

// State implements placement.Source.
func (s *chaosSource) State(ctx context.Context) (placement.State, error) {
	now := time.Now()
	st := placement.State{Now: now}
	s.mu.Lock()
	for _, id := range s.c.IDs() {
		n := placement.Node{ID: id, Liveness: placement.Live, Draining: id == s.mu.draining}
		if s.c.Running(id) {
			delete(s.mu.downSince, id)
		} else {
			since, ok := s.mu.downSince[id]
			if !ok {
				since = now
				s.mu.downSince[id] = since
			}
			n.Liveness, n.Since = placement.Dead, since
		}
		st.Nodes = append(st.Nodes, n)
	}
	s.mu.Unlock()
	for _, shard := range s.shards {
		desc, leader, ok := s.shard(ctx, shard)
		if !ok {
			return placement.State{}, fmt.Errorf("shard %d: no replica answers", shard)
		}
		sh := placement.Shard{ID: shard, Start: desc.Start, Last: desc.Last, Generation: desc.Generation, Leader: leader}
		for _, r := range desc.Replicas {
			role := placementRoles[r.Role]
			sh.Joint = sh.Joint || (role != placement.Voter && role != placement.Learner)
			sh.Replicas = append(sh.Replicas, placement.Replica{NodeID: r.NodeID, ReplicaID: r.ReplicaID, Role: role})
		}
		st.Shards = append(st.Shards, sh)
	}
	return st, nil
}

// shard returns shard's descriptor as its leader applied it, and the
// leader (0 if none, with the most recent descriptor a replica has).
func (s *chaosSource) shard(ctx context.Context, shard uint64) (storage.Descriptor, uint64, bool) {
	var best storage.Descriptor
	var leader, term uint64
	found := false
	for _, id := range s.c.IDs() {
		e := s.c.Engine(id)
		if e == nil {
			continue
		}
		st, err := e.Status(ctx, shard)
		if err != nil || !st.Initialized {
			continue
		}
		switch {
		case st.State == "StateLeader" && st.Term >= term:
			best, leader, term, found = st.Desc, id, st.Term, true
		case leader == 0 && (!found || st.Desc.ConfIndex > best.ConfIndex):
			best, found = st.Desc, true
		}
	}
	return best, leader, found
}

// placementRoles maps the descriptor's roles to the planner's.
var placementRoles = map[storage.ReplicaRole]placement.Role{
	storage.RoleVoter: placement.Voter, storage.RoleLearner: placement.Learner,
	storage.RoleVoterIncoming: placement.VoterIncoming, storage.RoleVoterOutgoing: placement.VoterOutgoing,
	storage.RoleVoterDemoting: placement.VoterDemoting,
}

// chaosActuator makes the driver's steps on the shards' leaders, as the
// node's Admin ReplicaStep does: each step is retried while the shard has
// no leader or refuses it for the moment (a change in progress, a
// proposal dropped), up to changeTimeout; any other refusal (a stale
// replica ID, a quorum at risk) fails the step, and its operation.
type chaosActuator struct {
	c    *testcluster.Cluster
	hist *descHistory
}

var errNoLeader = errors.New("no leader")

// onLeader runs step on shard's leader, with its status, until it succeeds,
// fails for good, or changeTimeout passes.
func (a *chaosActuator) onLeader(ctx context.Context, shard uint64, step func(ctx context.Context, e *engine.Engine, st engine.ShardStatus) error) error {
	ctx, cancel := context.WithTimeout(ctx, changeTimeout)
	defer cancel()
	return backoff.Retry(ctx, backoff.Config{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}, func(ctx context.Context) error {
		e := a.c.Engine(a.c.Leader(ctx, shard))
		if e == nil {
			return fmt.Errorf("shard %d: %w", shard, errNoLeader)
		}
		st, err := e.Status(ctx, shard)
		if err == nil && st.State != "StateLeader" {
			err = fmt.Errorf("shard %d: node %d no longer leads: %w", shard, e.NodeID(), errNoLeader)
		}
		if err == nil {
			a.hist.observe(e.NodeID(), st)
			err = step(ctx, e, st)
		}
		var nl *engine.NotLeaderError
		if err == nil || errors.Is(err, errNoLeader) || errors.As(err, &nl) || errors.Is(err, engine.ErrConfChangeInProgress) ||
			errors.Is(err, engine.ErrProposalDropped) || errors.Is(err, engine.ErrClosed) || errors.Is(err, engine.ErrShardNotFound) {
			return err
		}
		return backoff.Permanent(err)
	})
}

func (a *chaosActuator) AddLearner(ctx context.Context, shard, node uint64) (replica uint64, err error) {
	return replica, a.onLeader(ctx, shard, func(ctx context.Context, e *engine.Engine, st engine.ShardStatus) error {
		if r, ok := st.Desc.ReplicaOfNode(node); ok {
			if r.Role != storage.RoleLearner {
				return fmt.Errorf("node %d holds replica %d of shard %d as a %s", node, r.ReplicaID, shard, r.Role)
			}
			replica = r.ReplicaID
			return nil
		}
		if err := e.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: shard, Changes: []engine.ReplicaChange{{Type: engine.AddLearner, NodeID: node}}}); err != nil {
			return err
		}
		after, err := e.Status(ctx, shard)
		if err != nil {
			return err
		}
		r, ok := after.Desc.ReplicaOfNode(node)
		if !ok || r.Role != storage.RoleLearner {
			return fmt.Errorf("shard %d: no learner on node %d after it was added: %v", shard, node, after.Desc)
		}
		replica = r.ReplicaID
		return nil
	})
}

func (a *chaosActuator) CaughtUp(ctx context.Context, shard, replica uint64) (caughtUp bool, err error) {
	return caughtUp, a.onLeader(ctx, shard, func(_ context.Context, _ *engine.Engine, st engine.ShardStatus) error {
		if _, ok := st.Desc.Replica(replica); !ok {
			return fmt.Errorf("%w: shard %d has no replica %d", engine.ErrReplicaNotFound, shard, replica)
		}
		for _, p := range st.Progress {
			if p.ReplicaID == replica {
				caughtUp = p.State == "StateReplicate" && p.Match >= st.Commit
			}
		}
		return nil
	})
}

func (a *chaosActuator) ChangeVoters(ctx context.Context, shard uint64, promote, demote []uint64) error {
	return a.onLeader(ctx, shard, func(ctx context.Context, e *engine.Engine, st engine.ShardStatus) error {
		var changes []engine.ReplicaChange
		for i, ids := range [][]uint64{promote, demote} {
			for _, id := range ids {
				r, ok := st.Desc.Replica(id)
				if !ok {
					return fmt.Errorf("%w: shard %d has no replica %d", engine.ErrReplicaNotFound, shard, id)
				}
				typ := engine.AddVoter
				if i == 1 {
					typ = engine.AddLearner
				}
				changes = append(changes, engine.ReplicaChange{Type: typ, NodeID: r.NodeID, ReplicaID: id})
			}
		}
		simple := len(promote) == 1 && len(demote) == 0
		return e.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: shard, Changes: changes, Explicit: !simple})
	})
}

func (a *chaosActuator) LeaveJoint(ctx context.Context, shard uint64) error {
	return a.onLeader(ctx, shard, func(ctx context.Context, e *engine.Engine, _ engine.ShardStatus) error {
		return e.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: shard, LeaveJoint: true})
	})
}

func (a *chaosActuator) RemoveReplica(ctx context.Context, shard, replica uint64) error {
	return a.onLeader(ctx, shard, func(ctx context.Context, e *engine.Engine, st engine.ShardStatus) error {
		r, ok := st.Desc.Replica(replica)
		if !ok {
			return nil
		}
		if r.NodeID == e.NodeID() && r.Role.IsVoter() {
			return fmt.Errorf("replica %d of shard %d leads: transfer the leadership first", replica, shard)
		}
		return e.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: shard, Changes: []engine.ReplicaChange{{Type: engine.Remove, NodeID: r.NodeID, ReplicaID: replica}}})
	})
}

// Split and Merge are never planned by the placement nemesis's drivers
// (placement.Config NoSplits, NoMerges): the split nemesis does those.
func (a *chaosActuator) Split(context.Context, uint64, uint64) error {
	return errors.New("chaos: the placement nemesis plans no splits")
}

func (a *chaosActuator) Merge(context.Context, uint64, uint64, uint64, uint64) error {
	return errors.New("chaos: the placement nemesis plans no merges")
}

func (a *chaosActuator) TransferLeader(ctx context.Context, shard, node uint64) error {
	return a.onLeader(ctx, shard, func(ctx context.Context, e *engine.Engine, _ engine.ShardStatus) error {
		if e.NodeID() == node {
			return nil
		}
		return e.TransferLeader(ctx, shard, node)
	})
}

// chaosIntents is the intent store the drivers share, as the meta shard
// is: a write by a driver that no longer leads (an older epoch) fails.
type chaosIntents struct {
	mu      sync.Mutex
	epoch   int
	intents map[uint64]placement.Intent
}

func newChaosIntents() *chaosIntents {
	return &chaosIntents{intents: map[uint64]placement.Intent{}}
}

func (s *chaosIntents) newEpoch() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	return s.epoch
}

// at returns the store as the driver of epoch writes to it.
func (s *chaosIntents) at(epoch int) placement.IntentStore { return epochIntents{s, epoch} }

type epochIntents struct {
	s     *chaosIntents
	epoch int
}

var errNotMetaLeader = errors.New("intents written by a driver that no longer leads")

func (e epochIntents) Save(_ context.Context, in placement.Intent) error {
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	if e.epoch != e.s.epoch {
		return errNotMetaLeader
	}
	in.Learners = slices.Clone(in.Learners)
	e.s.intents[in.Op.ShardID] = in
	return nil
}

func (e epochIntents) Delete(_ context.Context, shard uint64) error {
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	if e.epoch != e.s.epoch {
		return errNotMetaLeader
	}
	delete(e.s.intents, shard)
	return nil
}

func (e epochIntents) Load(context.Context) ([]placement.Intent, error) {
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	var out []placement.Intent
	for _, in := range e.s.intents {
		out = append(out, in)
	}
	return out, nil
}
