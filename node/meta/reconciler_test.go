package meta

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	"go.uber.org/goleak"
)

// fakeSource is the descriptors of the shards "led here".
type fakeSource struct {
	mu   sync.Mutex
	led  []ShardRecord
	errs int // Led calls that fail first
}

func (f *fakeSource) set(recs ...ShardRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.led = recs
}

func (f *fakeSource) Led(context.Context) ([]ShardRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs > 0 {
		f.errs--
		return nil, errors.New("not now")
	}
	return append([]ShardRecord(nil), f.led...), nil
}

// flakyWriter fails its first writes.
type flakyWriter struct {
	Writer
	mu    sync.Mutex
	fails int
	calls int
}

func (f *flakyWriter) PutShards(ctx context.Context, recs []ShardRecord) error {
	f.mu.Lock()
	f.calls++
	fail := f.fails > 0
	if fail {
		f.fails--
	}
	f.mu.Unlock()
	if fail {
		return errors.New("meta leader unreachable")
	}
	return f.Writer.PutShards(ctx, recs)
}

func fastReconciler() ReconcilerConfig {
	c := DefaultReconcilerConfig()
	c.Interval = 10 * time.Millisecond
	c.Backoff.Initial, c.Backoff.Max = time.Millisecond, 5*time.Millisecond
	return c
}

func hasRecord(s *Store, want ShardRecord) func() bool {
	return func() bool {
		r, err := s.Shard(context.Background(), want.ShardID, Local)
		return err == nil && r.Equal(want)
	}
}

// TestReconcilerRepairs: a record that lags its shard's descriptor (a
// change whose report was lost) is repaired by the periodic pass; a record
// that is ahead of a stale descriptor is left alone.
func TestReconcilerRepairs(t *testing.T) {
	s, _ := newStore(t, Config{})
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	stale, ahead := record(1, 3, 1, 2, 3), record(2, 9, 1, 2, 3)
	if err := s.PutShards(ctx, []ShardRecord{stale, ahead}); err != nil {
		t.Fatal(err)
	}
	desc1 := record(1, 7, 1, 2, 4)
	desc1.NextReplicaID, desc1.Replicas[2].ReplicaID = 5, 4
	src := &fakeSource{errs: 2}
	src.set(desc1, record(2, 8, 5, 6, 7), record(3, 1, 1)) // shard 3 has no record yet
	r, err := NewReconciler(fastReconciler(), s, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitFor(t, 10*time.Second, "shard 1's record repaired", hasRecord(s, desc1))
	waitFor(t, 10*time.Second, "shard 3's record created", hasRecord(s, record(3, 1, 1)))
	if got, _ := s.Shard(ctx, 2, Linearizable); !got.Equal(ahead) {
		t.Fatalf("a stale descriptor replaced a newer record: %+v", got)
	}
}

// TestReconcilerReports: reports are written, the newest per shard wins
// whatever the order, and a write that fails is retried.
func TestReconcilerReports(t *testing.T) {
	s, _ := newStore(t, Config{})
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := fastReconciler()
	cfg.Interval = time.Hour // reports only
	w := &flakyWriter{Writer: s, fails: 3}
	r, err := NewReconciler(cfg, s, w, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, ci := range []uint64{4, 9, 2, 7} {
		if err := r.Report(record(1, ci, 1, 2)); err != nil {
			t.Fatal(err)
		}
	}
	for id := uint64(2); id <= 50; id++ {
		if err := r.Report(record(id, 1, 1)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "shard 1 at conf index 9", hasRecord(s, record(1, 9, 1, 2)))
	for id := uint64(2); id <= 50; id++ {
		waitFor(t, 10*time.Second, "every reported shard", hasRecord(s, record(id, 1, 1)))
	}
	bad := record(60, 1, 1)
	bad.Start, bad.Last = 2, 1
	var re *RecordError
	if err := r.Report(bad); !errors.As(err, &re) {
		t.Fatalf("a bad report: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Report(record(61, 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("report after Close: %v", err)
	}
}

func TestReconcilerConfigValidate(t *testing.T) {
	if err := DefaultReconcilerConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []ReconcilerConfig{{Interval: -1}, {MaxBatch: -1}, {Backoff: backoff.Config{Jitter: 3}}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := NewReconciler(ReconcilerConfig{}, nil, nil, nil); err == nil {
		t.Error("a reconciler without a store and a source")
	}
}

// recordReads counts the local reads of shard records.
type recordReads struct {
	Engine
	n atomic.Int64
}

func (e *recordReads) ReadLocal(shardID uint64, query []byte) ([]byte, error) {
	if bytes.HasPrefix(query, engine.GetQuery([]byte(ShardPrefix))) {
		e.n.Add(1)
	}
	return e.Engine.ReadLocal(shardID, query)
}

// TestReconcilerRepairReadsChangesOnly: a repair pass reads the record of a
// led shard again only when its descriptor changed since the last pass or
// a shard record was written meanwhile, and still repairs what lags.
func TestReconcilerRepairReadsChangesOnly(t *testing.T) {
	base, e := newStore(t, Config{})
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	reads := &recordReads{Engine: e}
	s, err := New(reads, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	recs := []ShardRecord{record(1, 3, 1, 2, 3), record(2, 3, 1, 2, 3), record(3, 3, 1, 2, 3)}
	if err := base.PutShards(ctx, recs); err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{}
	src.set(recs...)
	cfg := fastReconciler()
	cfg.Interval = time.Hour // the test runs the passes
	r, err := NewReconciler(cfg, s, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pass := func(want int64) {
		t.Helper()
		reads.n.Store(0)
		r.repair(ctx)
		if got := reads.n.Load(); got != want {
			t.Fatalf("a pass read %d shard records, want %d", got, want)
		}
	}
	pass(3) // the first pass reads them all
	pass(0) // nothing changed
	moved := record(2, 7, 1, 2, 4)
	moved.NextReplicaID, moved.Replicas[2].ReplicaID = 5, 4
	src.set(recs[0], moved, recs[2]) // shard 2's descriptor changed, its record lags
	pass(1)
	if more, err := r.flush(ctx); err != nil || more {
		t.Fatalf("flush: %v, %v", more, err)
	}
	waitFor(t, 10*time.Second, "shard 2's record repaired", hasRecord(base, moved))
	pass(3) // a record was written: all read again
	pass(0)
}
