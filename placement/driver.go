package placement

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// DriverConfig tunes the Driver. Zero fields take their defaults;
// NewDriver copies it.
type DriverConfig struct {
	// Placement configures the planner.
	Placement Config
	// IsLeader reports whether this node leads the meta shard: the driver
	// steps only then. Required; called once per step, must not block.
	IsLeader func() bool
	// Interval between two steps of Run. Default 1s.
	Interval time.Duration
	// IdleInterval is the longest Run goes without a step once a step
	// found nothing to do, while a VersionedSource's version stays the
	// same (see idle.go): the steps in between are skipped. Default 10s;
	// longer when a step costs more than IdleCostRatio-th of it.
	IdleInterval time.Duration
	// IdleCostRatio: an idle driver waits at least this many times what
	// its last step took (idle.go), so that idle steps cost at most
	// 1/IdleCostRatio of a core. Default 100; 1 waits IdleInterval only
	// (the driver before this bound, for benchmarks).
	IdleCostRatio int
	// BusyInterval is the wait between two steps of Run while operations
	// are in flight, so that a move's steps follow each other closely.
	// Default 50ms.
	BusyInterval time.Duration
	// MovesPerMinute bounds the operations that add replicas (each costs
	// a snapshot) started in any minute. Default 30.
	MovesPerMinute int
	// MaxSnapshotsPerNode bounds the operations in flight that add a
	// replica on one node. Default: Placement.MaxSnapshotsPerNode (2).
	MaxSnapshotsPerNode int
	// MaxConcurrentOps bounds the operations in flight. Default 16.
	MaxConcurrentOps int
	// MaxParallelSteps bounds the Actuator calls that run at once, one per
	// operation in flight (each on its own shard). 1 makes them one after
	// the other. Default: MaxConcurrentOps.
	MaxParallelSteps int
	// StepTimeout bounds one Actuator call: a step that has not finished by
	// then fails its operation (a leadership transfer to a node that died
	// meanwhile would otherwise hold the driver for ever). Default 10s.
	StepTimeout time.Duration
	// CatchUpTimeout is how long a new learner may take to catch up before
	// its operation fails and the learner is removed. Default 10 minutes.
	CatchUpTimeout time.Duration
	// History is how many finished operations Moves keeps. Default 100.
	History int
	// Now is the driver's clock (rate limits, timeouts, Moves). Default
	// time.Now.
	Now func() time.Time
}

// DefaultDriverConfig returns the defaults; IsLeader is left nil.
func DefaultDriverConfig() DriverConfig {
	return DriverConfig{
		Placement:        DefaultConfig(),
		Interval:         time.Second,
		IdleInterval:     10 * time.Second,
		IdleCostRatio:    100,
		BusyInterval:     50 * time.Millisecond,
		StepTimeout:      10 * time.Second,
		MovesPerMinute:   30,
		MaxConcurrentOps: 16,
		CatchUpTimeout:   10 * time.Minute,
		History:          100,
		Now:              time.Now,
	}
}

func (c DriverConfig) withDefaults() DriverConfig {
	d := DefaultDriverConfig()
	c.Placement = c.Placement.withDefaults()
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.IdleInterval == 0 {
		c.IdleInterval = d.IdleInterval
	}
	if c.IdleCostRatio == 0 {
		c.IdleCostRatio = d.IdleCostRatio
	}
	if c.BusyInterval == 0 {
		c.BusyInterval = d.BusyInterval
	}
	if c.StepTimeout == 0 {
		c.StepTimeout = d.StepTimeout
	}
	if c.MovesPerMinute == 0 {
		c.MovesPerMinute = d.MovesPerMinute
	}
	if c.MaxSnapshotsPerNode == 0 {
		c.MaxSnapshotsPerNode = c.Placement.MaxSnapshotsPerNode
	}
	if c.MaxConcurrentOps == 0 {
		c.MaxConcurrentOps = d.MaxConcurrentOps
	}
	if c.MaxParallelSteps == 0 {
		c.MaxParallelSteps = c.MaxConcurrentOps
	}
	if c.CatchUpTimeout == 0 {
		c.CatchUpTimeout = d.CatchUpTimeout
	}
	if c.History == 0 {
		c.History = d.History
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Validate checks c, with its zero fields taken as their defaults, without
// changing it. The error matches ErrBadConfig.
func (c DriverConfig) Validate() error {
	if err := c.Placement.Validate(); err != nil {
		return err
	}
	c = c.withDefaults()
	var errs []error
	if c.IsLeader == nil {
		errs = append(errs, errors.New("IsLeader is nil"))
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MovesPerMinute", c.MovesPerMinute}, {"MaxSnapshotsPerNode", c.MaxSnapshotsPerNode},
		{"MaxConcurrentOps", c.MaxConcurrentOps}, {"MaxParallelSteps", c.MaxParallelSteps}, {"History", c.History},
	} {
		if f.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d < 1", f.name, f.v))
		}
	}
	if c.IdleCostRatio < 0 {
		errs = append(errs, fmt.Errorf("IdleCostRatio %d < 0", c.IdleCostRatio))
	}
	if c.Interval < 0 || c.IdleInterval < 0 || c.BusyInterval < 0 || c.StepTimeout < 0 || c.CatchUpTimeout < 0 {
		errs = append(errs, fmt.Errorf("Interval %v, IdleInterval %v, BusyInterval %v, StepTimeout %v or CatchUpTimeout %v < 0",
			c.Interval, c.IdleInterval, c.BusyInterval, c.StepTimeout, c.CatchUpTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return nil
}

// intentTimeout bounds clearing an intent when the step's context ended.
const intentTimeout = 10 * time.Second

// Outcome is where an operation stands.
type Outcome uint8

// Outcomes.
const (
	Running   Outcome = iota // in flight
	Succeeded                // every step done
	Failed                   // a step failed; a later plan may issue it again
	Dropped                  // stale (its replica gone, its target not live, ...): stopped, learners rolled back
	Abandoned                // this node stopped leading the meta shard; its intent stays for the next leader
)

func (o Outcome) String() string {
	switch o {
	case Running:
		return "running"
	case Succeeded:
		return "succeeded"
	case Failed:
		return "failed"
	case Dropped:
		return "dropped"
	case Abandoned:
		return "abandoned"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// MarshalText makes an Outcome its name in JSON.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText reads an Outcome's name, as MarshalText writes it.
func (o *Outcome) UnmarshalText(b []byte) error {
	for c := Running; c <= Abandoned; c++ {
		if c.String() == string(b) {
			*o = c
			return nil
		}
	}
	return fmt.Errorf("placement: unknown outcome %q", b)
}

// Move is one operation the driver runs or ran, for flotillactl moves.
type Move struct {
	Op Op
	// Step is the last step taken or waited on ("add learner on n4").
	Step     string
	Started  time.Time
	Finished time.Time // zero while running
	Outcome  Outcome
	// Err says why it failed or was dropped.
	Err string
	// Resumed: recovered from an intent recorded by an earlier leader.
	Resumed bool
}

// Stats are the driver's counters since it was created.
type Stats struct {
	// Operations by kind.
	Started, Succeeded, Failed, Dropped map[Kind]uint64
	// QuorumLost counts the reports of shards without a quorum of live
	// voters, one per shard per plan.
	QuorumLost uint64
	// Plans counts the plans made.
	Plans    uint64
	InFlight int
	// ReplicaSpread and LeaderSpread are the largest minus the smallest
	// replica and leader counts of user shards over live, non-draining
	// nodes, in the state of the last plan.
	ReplicaSpread, LeaderSpread int
	Paused                      bool
}

// Driver runs the planner's operations on the meta shard's leader: each
// step it advances every operation in flight by one step, plans, and
// starts what the plan asks for within the rate limits. See Step.
//
// Concurrency: Step (or Run, which calls it) runs on one goroutine at a
// time and owns the operations in flight; Pause, Resume, Paused, Moves and
// Stats may be called from any goroutine and never wait for a step.
type Driver struct {
	cfg     DriverConfig
	src     Source
	act     Actuator
	intents IntentStore
	log     *slog.Logger

	// Owned by the goroutine that steps.
	loaded   bool       // intents loaded since this node became leader
	inflight []*running // by shard ID
	starts   []time.Time
	lost     map[uint64]bool // shards reported QuorumLost by the last plan
	idle     idleState       // whether Run may skip steps (idle.go)

	mu struct {
		sync.Mutex
		// Guarded by mu: what the other goroutines read.
		paused  bool
		moves   map[uint64]*Move // in flight, by shard
		history []Move           // finished, oldest first
		stats   counters
	}
}

type counters struct {
	started, succeeded, failed, dropped [QuorumLost + 1]uint64
	quorumLost, plans                   uint64
	replicaSpread, leaderSpread         int
}

// running is an operation in flight.
type running struct {
	op        Op
	learners  []uint64 // added by this operation (recorded in its intent)
	started   time.Time
	waitSince time.Time // when it began waiting for its learners to catch up
	acted     bool
	intent    bool // an intent is recorded
	move      *Move
}

// NewDriver returns a driver; it starts nothing (see Run). logger may be
// nil.
func NewDriver(cfg DriverConfig, src Source, act Actuator, intents IntentStore, logger *slog.Logger) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src == nil || act == nil || intents == nil {
		return nil, fmt.Errorf("%w: nil Source, Actuator or IntentStore", ErrBadConfig)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg.withDefaults(), src: src, act: act, intents: intents, log: logger}
	d.mu.moves = map[uint64]*Move{}
	return d, nil
}

// Run steps every Interval, or every BusyInterval while operations are in
// flight, until ctx ends, and returns ctx's error. A step that fails is
// logged. With a VersionedSource, once a step found nothing to do, the
// steps that follow are skipped until the source's version moves or
// IdleInterval passes (idle.go).
func (d *Driver) Run(ctx context.Context) error {
	t := time.NewTimer(d.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if !d.due(ctx) {
			t.Reset(d.cfg.Interval)
			continue
		}
		if err := d.Step(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("placement: step failed", "err", err)
		}
		if len(d.inflight) > 0 {
			t.Reset(d.cfg.BusyInterval)
		} else {
			t.Reset(d.cfg.Interval)
		}
	}
}

// Pause stops the driver from starting operations; those in flight go on
// to their end (half-done moves are not left behind).
func (d *Driver) Pause() { d.setPaused(true) }

// Resume undoes Pause.
func (d *Driver) Resume() { d.setPaused(false) }

func (d *Driver) setPaused(p bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.paused != p {
		d.log.Info("placement: driver paused", "paused", p)
	}
	d.mu.paused = p
}

// Paused reports whether the driver is paused.
func (d *Driver) Paused() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.paused
}

// Moves returns the operations in flight, by shard ID, then the last
// History finished ones, newest first.
func (d *Driver) Moves() []Move {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Move, 0, len(d.mu.moves)+len(d.mu.history))
	for _, m := range d.mu.moves {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Move) int { return cmp.Compare(a.Op.ShardID, b.Op.ShardID) })
	for i := len(d.mu.history) - 1; i >= 0; i-- {
		out = append(out, d.mu.history[i])
	}
	return out
}

// Stats returns the counters.
func (d *Driver) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &d.mu.stats
	toMap := func(a *[QuorumLost + 1]uint64) map[Kind]uint64 {
		m := map[Kind]uint64{}
		for k, v := range a {
			if v != 0 {
				m[Kind(k)] = v
			}
		}
		return m
	}
	return Stats{Started: toMap(&c.started), Succeeded: toMap(&c.succeeded), Failed: toMap(&c.failed),
		Dropped: toMap(&c.dropped), QuorumLost: c.quorumLost, Plans: c.plans, InFlight: len(d.mu.moves),
		ReplicaSpread: c.replicaSpread, LeaderSpread: c.leaderSpread, Paused: d.mu.paused}
}

// Step does one round, if this node leads the meta shard: on the first
// round since it became leader it loads the recorded intents and takes
// their operations in flight; it advances each operation in flight by one
// step, re-reading the state before each; then it plans from a fresh state
// and starts the new operations that the rate limits allow (unless
// paused), each with its first step. When this node does not lead, the
// operations in flight are abandoned to the next leader (their intents
// stay). It returns an error when the state or the intents cannot be read
// or the plan fails; an operation's failure is the operation's, not the
// step's.
func (d *Driver) Step(ctx context.Context) error {
	if !d.cfg.IsLeader() {
		d.idle.idle = false
		d.abandon()
		return nil
	}
	if !d.loaded {
		if err := d.load(ctx); err != nil {
			return err
		}
	}
	version, versionAt, versioned := d.versionBefore(ctx)
	if len(d.inflight) > 0 {
		st, err := d.src.State(ctx)
		if err != nil {
			return fmt.Errorf("placement: reading the state: %w", err)
		}
		if err := d.advance(ctx, st, slices.Clone(d.inflight)); err != nil {
			return err
		}
	}
	st, err := d.src.State(ctx)
	if err != nil {
		return fmt.Errorf("placement: reading the state: %w", err)
	}
	ops, err := Plan(st, d.cfg.Placement, d.inflightOps())
	if err != nil {
		return err
	}
	d.noteIdle(version, versionAt, versioned, ops)
	rs, ls := spread(st)
	d.mu.Lock()
	d.mu.stats.plans++
	d.mu.stats.replicaSpread, d.mu.stats.leaderSpread = rs, ls
	paused := d.mu.paused
	d.mu.Unlock()
	lost := map[uint64]bool{}
	var started []*running
	for _, op := range ops {
		if op.Kind == QuorumLost {
			lost[op.ShardID] = true
			d.mu.Lock()
			d.mu.stats.quorumLost++
			d.mu.Unlock()
			if !d.lost[op.ShardID] { // logged once, when it starts
				d.log.Warn("placement: quorum lost", "kind", op.Kind, "shard", op.ShardID, "reason", op.Reason)
			}
			continue
		}
		if paused || !d.allowed(op) {
			continue
		}
		if r := d.start(ctx, op); r != nil {
			started = append(started, r)
		}
	}
	d.lost = lost
	// The first steps of the operations just started, on the state they
	// were planned on.
	return d.advance(ctx, st, started)
}

// allowed applies the rate limits to a new operation.
func (d *Driver) allowed(op Op) bool {
	if len(d.inflight) >= d.cfg.MaxConcurrentOps || d.busy(op.ShardID) {
		return false
	}
	if len(op.Add) == 0 {
		return true
	}
	now := d.cfg.Now()
	d.starts = slices.DeleteFunc(d.starts, func(t time.Time) bool { return now.Sub(t) >= time.Minute })
	if len(d.starts) >= d.cfg.MovesPerMinute {
		return false
	}
	for _, id := range op.Add {
		n := 0
		for _, r := range d.inflight {
			if slices.Contains(r.op.Add, id) {
				n++
			}
		}
		if n >= d.cfg.MaxSnapshotsPerNode {
			return false
		}
	}
	return true
}

func (d *Driver) busy(shardID uint64) bool {
	return slices.ContainsFunc(d.inflight, func(r *running) bool { return r.op.ShardID == shardID })
}

func (d *Driver) inflightOps() []Op {
	out := make([]Op, len(d.inflight))
	for i, r := range d.inflight {
		out[i] = r.op
	}
	return out
}

// load takes the operations of the recorded intents in flight.
func (d *Driver) load(ctx context.Context) error {
	ins, err := d.intents.Load(ctx)
	if err != nil {
		return fmt.Errorf("placement: loading intents: %w", err)
	}
	slices.SortFunc(ins, func(a, b Intent) int { return cmp.Compare(a.Op.ShardID, b.Op.ShardID) })
	for _, in := range ins {
		if d.busy(in.Op.ShardID) {
			continue
		}
		r := &running{op: in.Op, learners: slices.Clone(in.Learners), started: in.Started, intent: true, acted: true}
		d.track(r, true)
		d.log.Info("placement: op resumed", "kind", in.Op.Kind, "shard", in.Op.ShardID, "reason", in.Op.Reason, "op", in.Op.String())
	}
	d.loaded = true
	return nil
}

// abandon forgets the operations in flight when this node stops leading.
func (d *Driver) abandon() {
	if !d.loaded {
		return
	}
	for _, r := range slices.Clone(d.inflight) {
		d.finish(context.Background(), r, Abandoned, errors.New("no longer the meta shard's leader"))
	}
	d.loaded = false
	d.starts = nil
}

func (d *Driver) track(r *running, resumed bool) {
	r.move = &Move{Op: r.op, Started: r.started, Outcome: Running, Resumed: resumed, Step: "started"}
	d.inflight = append(d.inflight, r)
	slices.SortFunc(d.inflight, func(a, b *running) int { return cmp.Compare(a.op.ShardID, b.op.ShardID) })
	d.mu.Lock()
	d.mu.moves[r.op.ShardID] = r.move
	d.mu.Unlock()
}

// start records op's intent if it is a move, and puts it in flight; nil if
// the intent could not be recorded (the operation is not started).
func (d *Driver) start(ctx context.Context, op Op) *running {
	now := d.cfg.Now()
	r := &running{op: op, started: now}
	if len(op.Add) > 0 {
		if err := d.intents.Save(ctx, Intent{Op: op, Started: now}); err != nil {
			d.log.Warn("placement: recording an intent failed; op not started", "kind", op.Kind, "shard", op.ShardID, "err", err)
			return nil
		}
		r.intent = true
		d.starts = append(d.starts, now)
	}
	d.track(r, false)
	d.mu.Lock()
	d.mu.stats.started[op.Kind]++
	d.mu.Unlock()
	d.log.Info("placement: op started", "kind", op.Kind, "shard", op.ShardID, "reason", op.Reason, "op", op.String())
	return r
}

// stepCall is one operation's step: decided on a state, then executed by
// the Actuator.
type stepCall struct {
	r     *running
	a     action
	id    uint64 // the learner AddLearner added
	ready bool   // ChangeVoters: the learners have caught up
	err   error
}

// advance takes the next step of each of rs, decided from st (a state read
// after their last steps). The Actuator calls of the operations (each on
// its own shard) run at once (up to MaxParallelSteps), each bounded by
// StepTimeout: a step waits on
// raft and the network, and one after the other they made the driver's
// pace (measured at 1,000 shards: about 3 steps a second with 4 moves in
// flight, the rate limit far away). What follows a call (intents, rollback,
// outcome) is done in order, on this goroutine. It returns an error only
// when ctx ended (the operations stay in flight, their outcome unknown).
func (d *Driver) advance(ctx context.Context, st State, rs []*running) error {
	var calls []*stepCall
	for _, r := range rs {
		a := nextAction(r.op, st, r.acted)
		d.setStep(r, a.String())
		switch a.kind {
		case actDone:
			d.finish(ctx, r, Succeeded, nil)
		case actDrop:
			d.finish(ctx, r, Dropped, errors.New(a.why))
		case actRollback:
			d.rollback(ctx, r, st)
			d.finish(ctx, r, Dropped, errors.New(a.why))
		default:
			calls = append(calls, &stepCall{r: r, a: a})
		}
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, d.cfg.MaxParallelSteps)
	for _, c := range calls {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			d.call(ctx, c)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var failed *State // read once, if a step failed
	for _, c := range calls {
		r, a, err := c.r, c.a, c.err
		if a.kind == actChangeVoters && err == nil && !c.ready {
			continue // wait for the learners
		}
		if a.kind == actAddLearner && err == nil && !slices.Contains(r.learners, c.id) {
			r.learners = append(r.learners, c.id)
			err = d.intents.Save(ctx, Intent{Op: r.op, Learners: r.learners, Started: r.started})
		}
		r.acted = true
		if err != nil {
			if failed == nil {
				if st, serr := d.src.State(ctx); serr == nil {
					failed = &st
				}
			}
			if failed != nil {
				d.rollback(ctx, r, *failed)
			}
			d.finish(ctx, r, Failed, fmt.Errorf("%s: %w", a, err))
			continue
		}
		if a.final {
			d.finish(ctx, r, Succeeded, nil)
		}
	}
	return nil
}

// call makes c's Actuator call (on its own goroutine).
func (d *Driver) call(ctx context.Context, c *stepCall) {
	sctx, cancel := context.WithTimeout(ctx, d.cfg.StepTimeout)
	defer cancel()
	r, a := c.r, c.a
	switch a.kind {
	case actAddLearner:
		c.id, c.err = d.act.AddLearner(sctx, r.op.ShardID, a.node)
	case actChangeVoters:
		if c.ready, c.err = d.caughtUp(sctx, r, a.promote); c.err == nil && c.ready {
			c.err = d.act.ChangeVoters(sctx, r.op.ShardID, a.promote, a.demote)
		}
	case actTransfer:
		c.err = d.act.TransferLeader(sctx, r.op.ShardID, a.node)
	case actLeaveJoint:
		c.err = d.act.LeaveJoint(sctx, r.op.ShardID)
	case actRemove:
		c.err = d.act.RemoveReplica(sctx, r.op.ShardID, a.replica)
	case actSplit:
		c.err = d.act.Split(sctx, r.op.ShardID, r.op.Generation)
	case actMerge:
		c.err = d.act.Merge(sctx, r.op.ShardID, r.op.Generation, r.op.MergeRight, r.op.RightGeneration)
	}
}

// caughtUp reports whether every learner in promote has caught up; past
// CatchUpTimeout it fails.
func (d *Driver) caughtUp(ctx context.Context, r *running, promote []uint64) (bool, error) {
	for _, id := range promote {
		ok, err := d.act.CaughtUp(ctx, r.op.ShardID, id)
		if err != nil {
			return false, err
		}
		if !ok {
			now := d.cfg.Now()
			if r.waitSince.IsZero() {
				r.waitSince = now
			}
			if now.Sub(r.waitSince) > d.cfg.CatchUpTimeout {
				return false, fmt.Errorf("learner %d not caught up after %v", id, d.cfg.CatchUpTimeout)
			}
			d.setStep(r, fmt.Sprintf("wait for learner %d to catch up", id))
			return false, nil
		}
	}
	return true, nil
}

// rollback removes the learners r added that are still learners (not
// promoted), best effort: one left behind is a stray learner, which the
// planner's repair removes.
func (d *Driver) rollback(ctx context.Context, r *running, st State) {
	i := slices.IndexFunc(st.Shards, func(s Shard) bool { return s.ID == r.op.ShardID })
	if i < 0 {
		return
	}
	for _, rep := range st.Shards[i].Replicas {
		if rep.Role != Learner || !slices.Contains(r.learners, rep.ReplicaID) {
			continue
		}
		if err := d.act.RemoveReplica(ctx, r.op.ShardID, rep.ReplicaID); err != nil {
			d.log.Warn("placement: rolling back a learner failed", "shard", r.op.ShardID, "replica", rep.ReplicaID, "err", err)
			continue
		}
		d.log.Info("placement: learner rolled back", "shard", r.op.ShardID, "replica", rep.ReplicaID, "node", rep.NodeID)
	}
}

func (d *Driver) setStep(r *running, step string) {
	d.mu.Lock()
	r.move.Step = step
	d.mu.Unlock()
}

// finish takes r out of flight, clears its intent (unless abandoned),
// counts and logs it.
func (d *Driver) finish(ctx context.Context, r *running, o Outcome, err error) {
	d.inflight = slices.DeleteFunc(d.inflight, func(x *running) bool { return x == r })
	if r.intent && o != Abandoned {
		// Cleared even when the step's ctx ended (a finished operation is
		// not worth resuming), within a bound.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), intentTimeout)
		derr := d.intents.Delete(dctx, r.op.ShardID)
		cancel()
		if derr != nil {
			d.log.Warn("placement: clearing an intent failed", "shard", r.op.ShardID, "err", derr)
		}
	}
	now := d.cfg.Now()
	d.mu.Lock()
	m := *r.move
	m.Finished, m.Outcome = now, o
	if err != nil {
		m.Err = err.Error()
	}
	delete(d.mu.moves, r.op.ShardID)
	d.mu.history = append(d.mu.history, m)
	if n := len(d.mu.history) - d.cfg.History; n > 0 {
		d.mu.history = slices.Delete(d.mu.history, 0, n)
	}
	switch o {
	case Succeeded:
		d.mu.stats.succeeded[r.op.Kind]++
	case Failed:
		d.mu.stats.failed[r.op.Kind]++
	case Dropped:
		d.mu.stats.dropped[r.op.Kind]++
	}
	d.mu.Unlock()
	args := []any{"kind", r.op.Kind, "shard", r.op.ShardID, "reason", r.op.Reason, "outcome", o,
		"took", now.Sub(r.started)}
	if err != nil {
		args = append(args, "err", err)
	}
	if o == Failed {
		d.log.Warn("placement: op finished", args...)
	} else {
		d.log.Info("placement: op finished", args...)
	}
}

// spread returns the largest minus the smallest replica and leader counts
// of user shards over live, non-draining nodes.
func spread(st State) (replicas, leaders int) {
	rc, lc := map[uint64]int{}, map[uint64]int{}
	for _, n := range st.Nodes {
		if n.Liveness == Live && !n.Removed && !n.Draining {
			rc[n.ID], lc[n.ID] = 0, 0
		}
	}
	for _, sh := range st.Shards {
		if sh.Meta {
			continue
		}
		for _, r := range sh.Replicas {
			if _, ok := rc[r.NodeID]; ok {
				rc[r.NodeID]++
			}
		}
		if _, ok := lc[sh.Leader]; ok {
			lc[sh.Leader]++
		}
	}
	span := func(m map[uint64]int) int {
		if len(m) == 0 {
			return 0
		}
		lo, hi := int(^uint(0)>>1), 0
		for _, v := range m {
			lo, hi = min(lo, v), max(hi, v)
		}
		return hi - lo
	}
	return span(rc), span(lc)
}
