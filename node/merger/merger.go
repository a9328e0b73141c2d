package merger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
)

// Why a merge is refused before anything changes (a *RefusalError matches
// one of them), or why it was abandoned (an *AbandonedError wraps it).
var (
	// ErrSystemShard: system shards (the meta shard) are not in the ring.
	ErrSystemShard = errors.New("merger: a system shard has no range to merge")
	// ErrNotAdjacent: the shard is the last of the ring, or the shard its
	// last hash is followed by in this node's ring does not start there
	// (the ring lags a split or a merge: retry).
	ErrNotAdjacent = errors.New("merger: no right neighbour to merge with")
	// ErrReplicasDiffer: the two shards' replicas are not on the same
	// nodes in the same roles.
	ErrReplicasDiffer = errors.New("merger: the shards' replicas are not on the same nodes in the same roles")
	// ErrJointConfig: a shard's configuration is joint (a replica move is
	// under way): retry once it has left it.
	ErrJointConfig = errors.New("merger: a shard's configuration is joint")
	// ErrMerging: a shard is frozen for a merge already.
	ErrMerging = errors.New("merger: a shard is frozen for a merge")
	// ErrMetaUnavailable: the right shard's frozen record could not be
	// written (the merge was abandoned).
	ErrMetaUnavailable = errors.New("merger: meta shard unavailable")
	// ErrAbandoned is matched by an *AbandonedError.
	ErrAbandoned = errors.New("merger: merge abandoned")
)

// RefusalError refuses a merge before anything changed: Err is one of the
// package's errors; Left is the left shard's descriptor as checked, Right
// its neighbour's (zero if there is none, or none here).
type RefusalError struct {
	Err         error
	Left, Right storage.Descriptor
	Reason      string
}

func (e *RefusalError) Error() string {
	return fmt.Sprintf("%v: shard %d [%016x, %016x]: %s", e.Err, e.Left.ShardID, e.Left.Start, e.Left.Last, e.Reason)
}

// Unwrap returns Err.
func (e *RefusalError) Unwrap() error { return e.Err }

// AbandonedError reports a merge that froze the right shard and then
// failed at Step for Err. Settled says that it was abandoned (the left
// shard's generation bumped, the right shard thawed: both serve as before);
// if not, the right shard stays frozen until the recovery settles it
// (SettleErr says why it could not be now). It matches ErrAbandoned and
// Err.
type AbandonedError struct {
	Left, Right uint64
	Step        Step
	Err         error
	Settled     bool
	SettleErr   error
}

func (e *AbandonedError) Error() string {
	if e.Settled {
		return fmt.Sprintf("merger: merge of shard %d into shard %d abandoned (%s: %v): both shards serve as before", e.Right, e.Left, e.Step, e.Err)
	}
	return fmt.Sprintf("merger: merge of shard %d into shard %d failed (%s: %v) and could not be abandoned yet (%v): shard %d stays frozen until the recovery settles it",
		e.Right, e.Left, e.Step, e.Err, e.SettleErr, e.Right)
}

// Unwrap returns ErrAbandoned and Err.
func (e *AbandonedError) Unwrap() []error { return []error{ErrAbandoned, e.Err} }

// Step names a step of a merge after the freeze, for errors and
// Config.Fault.
type Step string

// Steps of a merge.
const (
	StepFrozen Step = "freeze"        // the right shard is frozen
	StepRecord Step = "frozen record" // its frozen record is written
	StepWaited Step = "wait frozen"   // every replica of it is frozen durably
	StepMerge  Step = "merge"         // the merge command
	// StepAbandon is the abandon of a merge that failed (not the
	// recovery's): a fault there leaves the right shard frozen, as the
	// failure of the node that ran the merge would.
	StepAbandon Step = "abandon"
)

// Engine is what a Merger needs of this node's engine; *engine.Engine has
// it. Its methods may be called concurrently.
type Engine interface {
	Status(ctx context.Context, shardID uint64) (engine.ShardStatus, error)
	Statuses(ctx context.Context) ([]engine.ShardStatus, error)
	// LeadingFrozen: the led shards frozen for a merge.
	LeadingFrozen(ctx context.Context) ([]engine.LedShard, error)
	Merge(ctx context.Context, req engine.MergeRequest) (storage.Descriptor, error)
}

// Cluster is what a Merger needs of the other nodes and of the meta shard:
// the node runs each step on the node it must run on (the Admin MergeStep
// request, forwarded to the shard's leader). Errors are the engine's
// (*engine.StaleGenerationError with the shard's range now,
// *engine.ShardMergingError, *engine.NotLeaderError, engine.ErrBadRequest,
// engine.ErrShardNotFound, an ambiguous outcome), as if the engine of the
// node that ran the step had returned them. Its methods may be called
// concurrently.
type Cluster interface {
	// ShardAt returns the shard whose range holds hash, by this node's
	// ring; false if there is no ring.
	ShardAt(hash uint64) (uint64, bool)
	// Freeze runs Engine.FreezeForMerge on req.Right's leader.
	Freeze(ctx context.Context, req engine.FreezeRequest) (storage.Descriptor, error)
	// WaitFrozen runs Engine.WaitFrozen on node nodeID.
	WaitFrozen(ctx context.Context, nodeID, shardID, generation uint64) error
	// Unfreeze and BumpGeneration run the engine's on the shard's leader.
	Unfreeze(ctx context.Context, shardID, generation uint64) (storage.Descriptor, error)
	BumpGeneration(ctx context.Context, shardID, generation uint64) (storage.Descriptor, error)
	// PutShards writes shard records (nodemeta.Store.PutShards, on the
	// meta shard's leader).
	PutShards(ctx context.Context, recs []nodemeta.ShardRecord) error
	// MergedAway reports whether shard shardID was merged into its left
	// neighbour (into), by its tombstone in the meta shard
	// (nodemeta.Store.Merged); ok is false while it has none. Only the
	// tombstone says a shard is gone: one without a leader, or not found
	// on some node, may still exist. A tombstone is never removed, so a
	// stale read (this node's copy of the meta shard) may miss a recent
	// one but never reports one that is not there.
	MergedAway(ctx context.Context, shardID uint64) (into uint64, ok bool, err error)
}

// Config configures a Merger. New copies it; zero fields take the value of
// DefaultConfig.
type Config struct {
	// NodeID is this node's ID: a merge runs on the left shard's leader.
	NodeID uint64
	// WaitTimeout bounds the wait for every replica of the right shard to
	// be frozen, and then the merge; default 10s.
	WaitTimeout time.Duration
	// SettleTimeout bounds the abandon of a failed merge (bump, thaw),
	// retried meanwhile; default 10s.
	SettleTimeout time.Duration
	// FrozenTimeout is how long a shard stays frozen before Recovery
	// settles it: well above WaitTimeout, so that it does not abandon a
	// merge still running. Default 1 minute.
	FrozenTimeout time.Duration
	// Fault, if set, is called before each step after the freeze, and
	// before abandoning a merge that failed; an error fails that step, as
	// a failure there would (fault injection).
	Fault func(Step) error
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{WaitTimeout: 10 * time.Second, SettleTimeout: 10 * time.Second, FrozenTimeout: time.Minute}
}

// Validate checks c without changing it.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == 0 {
		errs = append(errs, errors.New("NodeID is required"))
	}
	if c.WaitTimeout < 0 || c.SettleTimeout < 0 || c.FrozenTimeout < 0 {
		errs = append(errs, fmt.Errorf("timeouts must not be negative (wait %v, settle %v, frozen %v)", c.WaitTimeout, c.SettleTimeout, c.FrozenTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("merger: invalid config: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.WaitTimeout == 0 {
		c.WaitTimeout = d.WaitTimeout
	}
	if c.SettleTimeout == 0 {
		c.SettleTimeout = d.SettleTimeout
	}
	if c.FrozenTimeout == 0 {
		c.FrozenTimeout = d.FrozenTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Merger merges shards led by this node with their right neighbours. It
// holds no mutable state and is safe for concurrent use.
type Merger struct {
	cfg Config
	e   Engine
	c   Cluster
}

// New returns a Merger on e and c; cfg is copied.
func New(cfg Config, e Engine, c Cluster) (*Merger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if e == nil || c == nil {
		return nil, errors.New("merger: an engine and a cluster are required")
	}
	return &Merger{cfg: cfg.withDefaults(), e: e, c: c}, nil
}

// FrozenTimeout returns the merger's Config.FrozenTimeout, defaults
// applied: the caller of Recovery.Pass should call it at least twice as
// often.
func (m *Merger) FrozenTimeout() time.Duration { return m.cfg.FrozenTimeout }

// Request asks for the merge of shard Left with its right neighbour.
type Request struct {
	Left uint64
	// Generation is the left shard's generation the merge is planned
	// against; 0: the one it has.
	Generation uint64
	// RightGeneration is the right neighbour's generation the merge is
	// planned against; 0: the one it has.
	RightGeneration uint64
}

// Result is a merge as it applied.
type Result struct {
	// Left is the left shard's descriptor after the merge (its range
	// widened), Right the merged shard's, frozen, as it was merged.
	Left, Right storage.Descriptor
}

// Merge merges req.Left, which this node leads, with its right neighbour
// (see the package doc). Errors: engine.ErrShardNotFound (no replica
// here), *engine.NotLeaderError, a *RefusalError, an
// *engine.StaleGenerationError (of the left shard, or of the right one if
// it is not at req.RightGeneration or changed before the freeze), an
// *engine.ShardMergingError, the engine's errors of the freeze (nothing
// frozen), and an *AbandonedError for a merge that failed after the
// freeze.
func (m *Merger) Merge(ctx context.Context, req Request) (Result, error) {
	l, r, err := m.plan(ctx, req)
	if err != nil {
		return Result{}, err
	}
	freq := engine.FreezeRequest{Right: r.ShardID, RightGeneration: r.Generation, Left: l.ShardID, LeftGeneration: l.Generation}
	frozen, err := m.c.Freeze(ctx, freq)
	if err != nil {
		if !ambiguous(err) {
			return Result{}, err
		}
		// The freeze may have applied: settle what it would have left.
		frozen = r.Clone()
		frozen.Generation, frozen.MergeInto, frozen.MergeIntoGeneration = r.Generation+1, l.ShardID, l.Generation
		return m.failed(ctx, frozen, StepFrozen, err)
	}
	m.cfg.Logger.Info("merge: right shard frozen", "shard", l.ShardID, "right", r.ShardID, "generation", frozen.Generation)
	if !sameNodes(l, frozen) {
		return m.failed(ctx, frozen, StepFrozen, &RefusalError{Err: ErrReplicasDiffer, Left: l, Right: frozen,
			Reason: fmt.Sprintf("shard %d's replicas changed before it froze: %v, shard %d's %v", frozen.ShardID, frozen.Replicas, l.ShardID, l.Replicas)})
	}
	if err := m.step(StepRecord, func() error {
		return m.c.PutShards(ctx, []nodemeta.ShardRecord{nodemeta.RecordOf(frozen)})
	}); err != nil {
		return m.failed(ctx, frozen, StepRecord, fmt.Errorf("%w: shard %d's frozen record: %w", ErrMetaUnavailable, frozen.ShardID, err))
	}
	wctx, cancel := context.WithTimeout(ctx, m.cfg.WaitTimeout)
	defer cancel()
	if err := m.step(StepWaited, func() error { return m.waitFrozen(wctx, frozen) }); err != nil {
		return m.failed(ctx, frozen, StepWaited, err)
	}
	var merged storage.Descriptor
	err = m.step(StepMerge, func() (err error) {
		merged, err = m.e.Merge(wctx, engine.MergeRequest{Left: l.ShardID, LeftGeneration: l.Generation, Right: frozen.ShardID, RightGeneration: frozen.Generation})
		return err
	})
	if err != nil {
		res, err := m.failed(ctx, frozen, StepMerge, err)
		if err != nil {
			return Result{}, err
		}
		merged = res.Left
	}
	m.cfg.Logger.Info("merged", "shard", l.ShardID, "right", frozen.ShardID, "generation", merged.Generation,
		"range", fmt.Sprintf("[%016x, %016x]", merged.Start, merged.Last))
	if err := m.c.PutShards(ctx, []nodemeta.ShardRecord{nodemeta.RecordOf(merged)}); err != nil {
		m.cfg.Logger.Warn("merge: the widened record was not written; the shard's reconciler will", "shard", l.ShardID, "err", err)
	}
	return Result{Left: merged, Right: frozen}, nil
}

// step runs fn unless Config.Fault fails step first.
func (m *Merger) step(step Step, fn func() error) error {
	if m.cfg.Fault != nil {
		if err := m.cfg.Fault(step); err != nil {
			return err
		}
	}
	return fn()
}

// plan returns the descriptors of req.Left, led here, and of its right
// neighbour, from its replica here, once the merge of the two passes the
// checks the shards will make.
func (m *Merger) plan(ctx context.Context, req Request) (l, r storage.Descriptor, err error) {
	if storage.IsSystemShard(req.Left) {
		return l, r, &RefusalError{Err: ErrSystemShard, Left: storage.Descriptor{ShardID: req.Left}, Reason: "the meta shard is not in the ring"}
	}
	st, err := m.e.Status(ctx, req.Left)
	if err != nil {
		return l, r, err
	}
	if st.Leader != m.cfg.NodeID {
		return l, r, &engine.NotLeaderError{ShardID: req.Left, Leader: st.Leader, Term: st.Term}
	}
	l = st.Desc
	if req.Generation != 0 && req.Generation != l.Generation {
		return l, r, &engine.StaleGenerationError{ShardID: l.ShardID, Expected: req.Generation, Generation: l.Generation, Start: l.Start, Last: l.Last}
	}
	refuse := func(err error, format string, args ...any) error {
		return &RefusalError{Err: err, Left: l, Right: r, Reason: fmt.Sprintf(format, args...)}
	}
	if l.Last == ^uint64(0) {
		return l, r, refuse(ErrNotAdjacent, "it is the last shard of the ring")
	}
	if r, err = m.neighbour(ctx, l); err != nil {
		var refusal *RefusalError
		if errors.As(err, &refusal) {
			refusal.Left = l
		}
		return l, r, err
	}
	switch {
	case req.RightGeneration != 0 && req.RightGeneration != r.Generation:
		return l, r, &engine.StaleGenerationError{ShardID: r.ShardID, Expected: req.RightGeneration, Generation: r.Generation, Start: r.Start, Last: r.Last}
	case l.Frozen() || r.Frozen():
		return l, r, refuse(ErrMerging, "shard %d is frozen for a merge into shard %d at generation %d", frozenOf(l, r).ShardID,
			frozenOf(l, r).MergeInto, frozenOf(l, r).MergeIntoGeneration)
	case nodemeta.JointConfig(l) || nodemeta.JointConfig(r):
		return l, r, refuse(ErrJointConfig, "shard %d's replicas %v, shard %d's %v: retry once they have left it", l.ShardID, l.Replicas, r.ShardID, r.Replicas)
	case !sameNodes(l, r):
		return l, r, refuse(ErrReplicasDiffer, "shard %d's replicas %v, shard %d's %v", l.ShardID, l.Replicas, r.ShardID, r.Replicas)
	}
	return l, r, nil
}

// neighbour returns the descriptor of l's right neighbour, from its
// replica here: the shard this node's ring has after l's last hash, or,
// when the ring lags a split or a merge, the one shard hosted here that
// starts there.
func (m *Merger) neighbour(ctx context.Context, l storage.Descriptor) (storage.Descriptor, error) {
	next := l.Last + 1
	if id, ok := m.c.ShardAt(next); ok && id != l.ShardID {
		st, err := m.e.Status(ctx, id)
		switch {
		case err == nil && st.Desc.Start == next:
			return st.Desc, nil
		case err != nil && !errors.Is(err, engine.ErrShardNotFound):
			return storage.Descriptor{}, err
		}
	}
	sts, err := m.e.Statuses(ctx)
	if err != nil {
		return storage.Descriptor{}, err
	}
	var found []storage.Descriptor
	for _, st := range sts {
		if st.Initialized && st.ShardID != l.ShardID && !storage.IsSystemShard(st.ShardID) && st.Desc.Start == next {
			found = append(found, st.Desc)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return storage.Descriptor{}, &RefusalError{Err: ErrNotAdjacent, Reason: fmt.Sprintf("shards %d and %d here both start at %016x; retry", found[0].ShardID, found[1].ShardID, next)}
	}
	id, _ := m.c.ShardAt(next)
	return storage.Descriptor{}, &RefusalError{Err: ErrReplicasDiffer,
		Reason: fmt.Sprintf("its right neighbour (shard %d by this node's ring) has no replica on node %d, which leads shard %d", id, m.cfg.NodeID, l.ShardID)}
}

func frozenOf(l, r storage.Descriptor) storage.Descriptor {
	if l.Frozen() {
		return l
	}
	return r
}

// waitFrozen waits until every replica of frozen is frozen durably, on
// its node.
func (m *Merger) waitFrozen(ctx context.Context, frozen storage.Descriptor) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, rp := range frozen.Replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.c.WaitFrozen(ctx, rp.NodeID, frozen.ShardID, frozen.Generation); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("node %d: %w", rp.NodeID, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// failed abandons the merge frozen was frozen for, which failed at step
// for cause (abandon), and returns its *AbandonedError, or, if it turns
// out to have applied, its result, the left shard's descriptor as this
// node has it.
func (m *Merger) failed(ctx context.Context, frozen storage.Descriptor, step Step, cause error) (Result, error) {
	if err := m.abandon(frozen, step, cause); err != nil {
		return Result{}, err
	}
	st, err := m.e.Status(ctx, frozen.MergeInto)
	if err != nil {
		return Result{}, err
	}
	return Result{Left: st.Desc, Right: frozen}, nil
}

// abandon settles the merge frozen was frozen for, which failed at step
// for cause: nil if it turns out to have applied, else an *AbandonedError.
func (m *Merger) abandon(frozen storage.Descriptor, step Step, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.SettleTimeout)
	defer cancel()
	var out outcome
	err := m.step(StepAbandon, func() (err error) {
		out, err = m.settle(ctx, frozen)
		return err
	})
	switch out {
	case outcomeMerged:
		m.cfg.Logger.Info("merge: failed here but applied", "shard", frozen.MergeInto, "right", frozen.ShardID, "step", step, "err", cause)
		return nil
	case outcomeAbandoned, outcomeLeftGone:
		m.cfg.Logger.Warn("merge abandoned", "shard", frozen.MergeInto, "right", frozen.ShardID, "step", step, "err", cause)
		return &AbandonedError{Left: frozen.MergeInto, Right: frozen.ShardID, Step: step, Err: cause, Settled: true}
	}
	m.cfg.Logger.Error("merge failed and could not be abandoned: the right shard stays frozen until the recovery settles it",
		"shard", frozen.MergeInto, "right", frozen.ShardID, "step", step, "err", cause, "settle_err", err)
	return &AbandonedError{Left: frozen.MergeInto, Right: frozen.ShardID, Step: step, Err: cause, SettleErr: err}
}

// ambiguous reports whether err leaves the outcome of a proposal unknown.
func ambiguous(err error) bool {
	return errors.Is(err, engine.ErrAmbiguous) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || errors.Is(err, engine.ErrClosed)
}

// sameNodes reports whether l's and r's replicas are on the same nodes in
// the same roles.
func sameNodes(l, r storage.Descriptor) bool {
	if len(l.Replicas) != len(r.Replicas) {
		return false
	}
	for _, rp := range r.Replicas {
		if lp, ok := l.ReplicaOfNode(rp.NodeID); !ok || lp.Role != rp.Role {
			return false
		}
	}
	return true
}
