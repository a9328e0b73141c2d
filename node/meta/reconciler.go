package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/internal/backoff"
)

// Source is the authority a Reconciler checks records against: the shards'
// own replicated descriptors.
type Source interface {
	// Led returns, as records, the applied descriptors of the shards this
	// node leads. It is called from the reconciler's goroutine only, never
	// concurrently with itself, and should return promptly.
	Led(ctx context.Context) ([]ShardRecord, error)
}

// Writer writes shard records for a Reconciler: a *Store on the meta
// shard's leader; elsewhere whatever forwards them to it. It must be safe
// to call again with the same records (Store.PutShards is).
type Writer interface {
	PutShards(ctx context.Context, recs []ShardRecord) error
}

// ReconcilerConfig configures a Reconciler. NewReconciler copies it; zero
// fields take the value of DefaultReconcilerConfig.
type ReconcilerConfig struct {
	// Interval is the time between repair passes, which compare the
	// records of the shards led here with their descriptors; default 30s.
	Interval time.Duration
	// MaxBatch bounds the records of one write; default 1,024.
	MaxBatch int
	// WriteTimeout bounds one write; default 10s.
	WriteTimeout time.Duration
	// Backoff spaces the retries of a failed write; default
	// backoff.DefaultConfig().
	Backoff backoff.Config
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// DefaultReconcilerConfig returns the defaults.
func DefaultReconcilerConfig() ReconcilerConfig {
	return ReconcilerConfig{Interval: 30 * time.Second, MaxBatch: 1024, WriteTimeout: 10 * time.Second, Backoff: backoff.DefaultConfig()}
}

// Validate checks c without changing it.
func (c ReconcilerConfig) Validate() error {
	var errs []error
	if c.Interval < 0 || c.WriteTimeout < 0 {
		errs = append(errs, fmt.Errorf("Interval %v and WriteTimeout %v must not be negative", c.Interval, c.WriteTimeout))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("MaxBatch %d < 0", c.MaxBatch))
	}
	if err := c.Backoff.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("meta: invalid reconciler config: %w", err)
	}
	return nil
}

func (c ReconcilerConfig) withDefaults() ReconcilerConfig {
	d := DefaultReconcilerConfig()
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = d.MaxBatch
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Reconciler keeps the shard records of the shards this node leads in step
// with their descriptors. Descriptors come two ways: Report, fed by the node
// whenever a shard led here applies a change of its descriptor, and a
// repair pass every Interval, which compares the local copy of each led
// shard's record with Source.Led and takes every record that lags. Writes
// go through the Writer, coalesced by shard ID (at most one pending record
// per shard: memory is bounded by the shards led here) and retried with
// backoff until they succeed; a record older than the stored one is
// dropped by the write itself, so a late report never undoes a newer one.
//
// One goroutine, from NewReconciler to Close, does the writes and the
// passes; Report may be called from any goroutine and never blocks.
type Reconciler struct {
	cfg    ReconcilerConfig
	s      *Store
	w      Writer
	src    Source
	log    *slog.Logger
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu struct {
		sync.Mutex
		pending map[uint64]ShardRecord // the newest record reported per shard, not written yet
		closed  bool
	}

	// checked holds the descriptors the last repair pass found current
	// in the local copy, whose ring header was at checkedAt before the
	// pass read them: while no shard record is written (every write
	// raises the header's version) a descriptor that is still the same
	// is current still, and its record is not read again. Owned by the
	// goroutine that runs the passes.
	checked   map[uint64]ShardRecord
	checkedAt uint64
}

// NewReconciler starts a reconciler that reads records from s (its local
// copy), writes them with w (nil: s) and repairs from src.
func NewReconciler(cfg ReconcilerConfig, s *Store, w Writer, src Source) (*Reconciler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if s == nil || src == nil {
		return nil, errors.New("meta: a reconciler needs a store and a source")
	}
	if w == nil {
		w = s
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reconciler{cfg: cfg, s: s, w: w, src: src, log: cfg.Logger, kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	r.mu.pending = map[uint64]ShardRecord{}
	go r.run(ctx)
	return r, nil
}

// Report hands the reconciler a shard's descriptor as applied. It keeps the
// newest per shard until written. It returns a *RecordError for a
// malformed record, ErrClosed after Close.
func (r *Reconciler) Report(rec ShardRecord) error {
	if err := rec.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return ErrClosed
	}
	r.queueLocked(rec.Clone())
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return nil
}

// queueLocked keeps rec unless a newer record of its shard is pending.
func (r *Reconciler) queueLocked(rec ShardRecord) {
	if prev, ok := r.mu.pending[rec.ShardID]; !ok || !prev.Newer(rec) {
		r.mu.pending[rec.ShardID] = rec
	}
}

// Close stops the reconciler; pending records are not written.
func (r *Reconciler) Close() error {
	r.mu.Lock()
	r.mu.closed = true
	r.mu.Unlock()
	r.cancel()
	<-r.done
	return nil
}

func (r *Reconciler) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	b, err := backoff.New(r.cfg.Backoff)
	if err != nil {
		panic(err) // validated by NewReconciler
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
			r.repair(ctx)
		}
		for {
			more, err := r.flush(ctx)
			if err != nil {
				r.log.Debug("meta: writing shard records", "err", err)
				if b.Wait(ctx) != nil {
					return
				}
				continue
			}
			b.Reset()
			if !more {
				break
			}
		}
	}
}

// take removes up to n pending records.
func (r *Reconciler) take(n int) (recs []ShardRecord, more bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, rec := range r.mu.pending {
		if len(recs) == n {
			return recs, true
		}
		recs = append(recs, rec)
		delete(r.mu.pending, id)
	}
	return recs, false
}

// flush writes up to MaxBatch pending records; on failure they are pending
// again (unless a newer one was reported meanwhile). more says whether
// records are left.
func (r *Reconciler) flush(ctx context.Context) (more bool, err error) {
	recs, more := r.take(r.cfg.MaxBatch)
	if len(recs) == 0 {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, r.cfg.WriteTimeout)
	defer cancel()
	err = r.w.PutShards(wctx, recs)
	if errors.Is(err, ErrBadRecord) {
		// Report validated them: a writer that forwards disagrees. Retrying
		// cannot help.
		r.log.Error("meta: shard records refused", "records", len(recs), "err", err)
		return more, nil
	}
	if err != nil {
		r.mu.Lock()
		for _, rec := range recs {
			r.queueLocked(rec)
		}
		r.mu.Unlock()
		return true, err
	}
	return more, nil
}

// repair queues the descriptor of every shard led here whose record in the
// local copy is missing or older. A copy that lags only causes a write that
// changes nothing.
//
// A pass reads only the records of the shards whose descriptor changed
// since the last pass, unless a shard record was written meanwhile (see
// Reconciler.checked): on a node leading thousands of idle shards it reads
// none.
func (r *Reconciler) repair(ctx context.Context) {
	h, err := r.s.Header(ctx, Local)
	if err != nil {
		r.log.Debug("meta: repair pass: ring header", "err", err)
		return
	}
	led, err := r.src.Led(ctx)
	if err != nil {
		r.log.Debug("meta: repair pass: led shards", "err", err)
		return
	}
	if h.Version != r.checkedAt {
		r.checked = nil // records were written: read them all again
	}
	checked := make(map[uint64]ShardRecord, len(led))
	var lagging []ShardRecord
	for _, d := range led {
		if d.Validate() != nil {
			continue
		}
		if c, ok := r.checked[d.ShardID]; ok && c.Equal(d) {
			checked[d.ShardID] = c
			continue
		}
		rec, err := r.s.Shard(ctx, d.ShardID, Local)
		switch {
		case errors.Is(err, ErrNotFound) || (err == nil && d.Newer(rec)):
			lagging = append(lagging, d.Clone())
		case err != nil:
			r.log.Debug("meta: repair pass: read record", "shard", d.ShardID, "err", err)
		case !rec.Newer(d) && !d.Equal(rec):
			r.log.Warn("meta: shard record differs from its descriptor at the same conf index and generation",
				"shard", d.ShardID, "conf_index", d.ConfIndex, "generation", d.Generation)
		default:
			checked[d.ShardID] = d.Clone() // current (or the record is newer)
		}
	}
	r.checked, r.checkedAt = checked, h.Version
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range lagging {
		r.queueLocked(d)
	}
}
