package splitter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
)

// Errors of a split that the engine does not type. The engine's own come
// as they are: *engine.NotLeaderError, engine.ErrShardNotFound,
// *engine.StaleGenerationError, an ambiguous outcome.
var (
	// ErrSystemShard: system shards (the meta shard) are not in the ring
	// and have no range to split.
	ErrSystemShard = errors.New("splitter: a system shard has no range to split")
	// ErrOutOfRange is matched by a *PointError.
	ErrOutOfRange = errors.New("splitter: split point outside the shard's range")
	// ErrJointConfig: the shard's configuration is joint (a replica move
	// is under way); a split waits until it has left it.
	ErrJointConfig = errors.New("splitter: the shard's configuration is joint")
	// ErrMetaUnavailable: no new shard ID could be had from the meta shard.
	// Nothing was split.
	ErrMetaUnavailable = errors.New("splitter: meta shard unavailable")
)

// PointError refuses a split point outside the shard's range (Start,
// Last], or a range of a single hash, which cannot be split. It matches
// ErrOutOfRange.
type PointError struct {
	ShardID, At uint64
	Start, Last uint64
	Generation  uint64
	singleHash  bool // the range is one hash: no point splits it
}

func (e *PointError) Error() string {
	if e.singleHash {
		return fmt.Sprintf("splitter: shard %d's range [%016x, %016x] is a single hash: it cannot be split", e.ShardID, e.Start, e.Last)
	}
	return fmt.Sprintf("splitter: split point %016x is not in shard %d's range (%016x, %016x]", e.At, e.ShardID, e.Start, e.Last)
}

// Is makes errors.Is(err, ErrOutOfRange) true.
func (e *PointError) Is(target error) bool { return target == ErrOutOfRange }

// Engine is what a Splitter needs of the engine; *engine.Engine has it.
// Its methods may be called concurrently.
type Engine interface {
	Status(ctx context.Context, shardID uint64) (engine.ShardStatus, error)
	Split(ctx context.Context, req engine.SplitRequest) (engine.SplitResult, error)
}

// Meta is what a Splitter needs of the meta shard, whose leader may be
// another node: the node forwards there. Its methods may be called
// concurrently.
type Meta interface {
	// AllocateShardID hands out a new shard ID
	// (nodemeta.Store.AllocateShardID).
	AllocateShardID(ctx context.Context) (uint64, error)
	// PutShards writes shard records, each if newer than the stored one
	// (nodemeta.Store.PutShards).
	PutShards(ctx context.Context, recs []nodemeta.ShardRecord) error
}

// Config configures a Splitter. New copies it; zero fields take the value
// of DefaultConfig.
type Config struct {
	// NodeID is this node's ID: a split runs on the shard's leader.
	NodeID uint64
	// DB is the node's store, in which a split point is chosen by the
	// shard's data; nil: the middle of the range.
	DB *pebble.DB
	// MaxScanKeys bounds the rows counted to find a shard's median hash;
	// past it the point is estimated from the store's disk usage. Default
	// 100,000 (a few milliseconds).
	MaxScanKeys int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{MaxScanKeys: 100_000} }

// Validate checks c without changing it.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == 0 {
		errs = append(errs, errors.New("NodeID is required"))
	}
	if c.MaxScanKeys < 0 {
		errs = append(errs, fmt.Errorf("MaxScanKeys %d < 0", c.MaxScanKeys))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("splitter: invalid config: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxScanKeys == 0 {
		c.MaxScanKeys = DefaultConfig().MaxScanKeys
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Splitter splits shards led by this node. It holds no mutable state and
// is safe for concurrent use.
type Splitter struct {
	cfg  Config
	e    Engine
	meta Meta
}

// New returns a Splitter on e and meta; cfg is copied.
func New(cfg Config, e Engine, meta Meta) (*Splitter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if e == nil || meta == nil {
		return nil, errors.New("splitter: an engine and a meta shard are required")
	}
	return &Splitter{cfg: cfg.withDefaults(), e: e, meta: meta}, nil
}

// Request asks for a split of ShardID's range.
type Request struct {
	ShardID uint64
	// At is the first hash of the new shard's range; 0: chosen (see
	// Point).
	At uint64
	// Generation is the generation of the shard's range the split is
	// planned against; 0: the one it has.
	Generation uint64
}

// Result is a split as it applied.
type Result struct {
	// Parent is the shard's descriptor after the split, Child the new
	// shard's.
	Parent, Child storage.Descriptor
	// Point says how the split point (Child.Start) was chosen.
	Point Point
}

// Split splits req.ShardID's range on this node, its leader: it checks the
// request against the shard's descriptor, chooses the split point, takes a
// new shard ID from the meta shard, proposes the split, and once it has
// applied writes the records of both halves in one batch: the routers get
// the ring after the split as soon as the meta shard has it. The
// reconcilers of the two shards' leaders write the same records (the
// parent's often first, leaving a gap in the records for a moment, during
// which the routers keep the ring before the split), and repair them if
// this write fails, which Split only logs.
//
// Errors: engine.ErrShardNotFound (no replica here), *engine.NotLeaderError,
// ErrSystemShard, a *PointError, ErrJointConfig,
// *engine.StaleGenerationError, ErrMetaUnavailable (wrapping the meta
// shard's error; nothing split), and the engine's errors of the proposal
// (an ambiguous outcome: look at the shard's generation).
func (s *Splitter) Split(ctx context.Context, req Request) (Result, error) {
	d, err := s.descriptor(ctx, req.ShardID)
	if err != nil {
		return Result{}, err
	}
	if err := check(d, req); err != nil {
		return Result{}, err
	}
	at, point := req.At, PointGiven
	if at == 0 {
		if at, point, err = choose(s.cfg.DB, d, s.cfg.MaxScanKeys); err != nil {
			return Result{}, fmt.Errorf("splitter: shard %d: choose a split point: %w", d.ShardID, err)
		}
	}
	childID, err := s.meta.AllocateShardID(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("%w: a new shard ID for the split of shard %d: %w", ErrMetaUnavailable, d.ShardID, err)
	}
	// A proposal dropped (a leadership transfer under way, as right after
	// a start) never applies: tried again, for a few seconds.
	var res engine.SplitResult
	rctx, cancel := context.WithTimeout(ctx, droppedRetry)
	err = backoff.Retry(rctx, backoff.Config{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}, func(ctx context.Context) error {
		var err error
		res, err = s.e.Split(ctx, engine.SplitRequest{ShardID: d.ShardID, Generation: d.Generation, At: at, ChildID: childID})
		if err != nil && !errors.Is(err, engine.ErrProposalDropped) {
			return backoff.Permanent(err)
		}
		return err
	})
	cancel()
	if errors.Is(err, engine.ErrBadRequest) {
		// The descriptor changed between the check and the proposal
		// without a new generation: a conf change made it joint.
		if d, derr := s.descriptor(ctx, req.ShardID); derr == nil && nodemeta.JointConfig(d) {
			return Result{}, fmt.Errorf("%w: shard %d: %w", ErrJointConfig, d.ShardID, err)
		}
	}
	if err != nil {
		return Result{}, err
	}
	s.cfg.Logger.Info("split", "shard", d.ShardID, "child", childID, "at", fmt.Sprintf("%016x", at), "point", point,
		"generation", res.Parent.Generation)
	recs := []nodemeta.ShardRecord{nodemeta.RecordOf(res.Parent), nodemeta.RecordOf(res.Child)}
	if err := s.meta.PutShards(ctx, recs); err != nil {
		s.cfg.Logger.Warn("split: the records of both halves were not written; the shards' reconcilers will",
			"shard", d.ShardID, "child", childID, "err", err)
	}
	return Result{Parent: res.Parent, Child: res.Child, Point: point}, nil
}

// descriptor returns the applied descriptor of shardID, which this node
// must lead.
func (s *Splitter) descriptor(ctx context.Context, shardID uint64) (storage.Descriptor, error) {
	if storage.IsSystemShard(shardID) {
		return storage.Descriptor{}, fmt.Errorf("%w: shard %d", ErrSystemShard, shardID)
	}
	st, err := s.e.Status(ctx, shardID)
	if err != nil {
		return storage.Descriptor{}, err
	}
	if st.Leader != s.cfg.NodeID {
		return storage.Descriptor{}, &engine.NotLeaderError{ShardID: shardID, Leader: st.Leader, Term: st.Term}
	}
	return st.Desc, nil
}

// check checks req against the shard's descriptor d as the engine will at
// apply, but with typed errors.
func check(d storage.Descriptor, req Request) error {
	switch {
	case req.Generation != 0 && req.Generation != d.Generation:
		return &engine.StaleGenerationError{ShardID: d.ShardID, Expected: req.Generation, Generation: d.Generation, Start: d.Start, Last: d.Last}
	case d.Start == d.Last:
		return &PointError{ShardID: d.ShardID, At: req.At, Start: d.Start, Last: d.Last, Generation: d.Generation, singleHash: true}
	case req.At != 0 && !inside(d, req.At):
		return &PointError{ShardID: d.ShardID, At: req.At, Start: d.Start, Last: d.Last, Generation: d.Generation}
	case nodemeta.JointConfig(d):
		return fmt.Errorf("%w: shard %d (%v): retry once it has left it", ErrJointConfig, d.ShardID, d)
	}
	return nil
}

// droppedRetry bounds how long a split whose proposal raft dropped is
// tried again.
const droppedRetry = 5 * time.Second
