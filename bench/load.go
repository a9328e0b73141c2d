package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// opKind tells writes from reads in a mixed load.
type opKind int

const (
	opWrite opKind = iota
	opRead
	numKinds
)

// opFunc runs one operation of client (0..clients-1), its seq-th (from 0);
// it returns the kind and nil once the operation is acknowledged, an error
// if it failed (then it is never counted as done).
type opFunc func(ctx context.Context, client int, seq uint64) (opKind, error)

// loadSpec is a load of clients goroutines until the deadline, closed or
// open.
//
// Closed (rate 0): each client runs its next operation as soon as the
// previous one returned; the latency of an operation is its own duration.
//
// Open (rate > 0): operations are due on a fixed schedule, rate per second
// over all clients, spread evenly: the k-th operation of client i is due
// (k*clients + i)/rate seconds after the start. A client runs one
// operation at a time (so at most clients are in flight): it waits until
// its next operation is due, or starts it at once if that time has passed
// (its previous operation was slow). The latency counts from the due time,
// so that the wait behind a slow operation counts (no coordinated
// omission); an operation that starts more than lateAfter after its due
// time is late. Operations due in the window that a client could not start
// before its end are missed (never started, never counted as done).
//
// Either way an operation in flight at the deadline is waited for, never
// cancelled, so that every operation started is either acknowledged or
// failed.
type loadSpec struct {
	clients  int
	duration time.Duration
	// rate is the operations due per second over all clients (open load);
	// 0 for a closed load.
	rate float64
	// grace bounds how long the operations in flight at the deadline may
	// take: then their context ends. (An operation bounds its own retries:
	// a context per operation would cost the allocations it measures.)
	grace   time.Duration
	op      opFunc
	seqBase uint64 // the first seq of every client
	// acked, if set, counts acknowledged operations as they happen (for
	// timelines: failover reads it while the load runs).
	acked *atomic.Uint64
	// stop, if set, ends the load early once closed: no operation starts
	// after that (those in flight finish, as at the deadline); in an open
	// load, the operations due later are not scheduled.
	stop <-chan struct{}
	// done, if set, is called after every operation (tests record them).
	done func(client int, seq uint64, kind opKind, err error)
	// timed, if set, is called after every operation with when it was due
	// (when it started, in a closed load), when it started, and the latency
	// counted (tests check the schedule).
	timed func(client int, seq uint64, due, began time.Time, lat time.Duration)
}

// lateAfter is how long after its due time an operation of an open load
// may start without counting as late: timer wake-ups take some.
const lateAfter = time.Millisecond

// tally is what a load did.
type tally struct {
	acked   [numKinds]uint64
	failed  [numKinds]uint64
	lat     [numKinds][]time.Duration // of the acknowledged operations
	started uint64                    // operations begun
	errs    map[string]uint64         // failures by message (at most maxErrs)
	failAt  []time.Time               // when each failure happened
	elapsed time.Duration             // start to the last operation's end
	// Open loads only.
	late       uint64        // operations started more than lateAfter after due
	lateBehind uint64        // of them, those due while their client's previous operation was in flight
	missed     uint64        // due in the window, not started before its end
	maxLag     time.Duration // the largest delay of a start after its due time
}

const maxErrs = 8

func (t *tally) ops() uint64      { return t.acked[opWrite] + t.acked[opRead] }
func (t *tally) failures() uint64 { return t.failed[opWrite] + t.failed[opRead] }

// scheduled returns the operations due in an open load's window: those
// started and those missed.
func (t *tally) scheduled() uint64 { return t.started + t.missed }

// merge adds o to t.
func (t *tally) merge(o *tally) {
	t.started += o.started
	t.late += o.late
	t.lateBehind += o.lateBehind
	t.missed += o.missed
	t.maxLag = max(t.maxLag, o.maxLag)
	for k := range numKinds {
		t.acked[k] += o.acked[k]
		t.failed[k] += o.failed[k]
		t.lat[k] = append(t.lat[k], o.lat[k]...)
	}
	for m, n := range o.errs {
		if t.errs == nil {
			t.errs = map[string]uint64{}
		}
		if _, ok := t.errs[m]; ok || len(t.errs) < maxErrs {
			t.errs[m] += n
		}
	}
	t.failAt = append(t.failAt, o.failAt...)
}

// errors returns the failures as "count× message", most frequent first.
func (t *tally) errors() []string {
	if len(t.errs) == 0 {
		return nil
	}
	msgs := make([]string, 0, len(t.errs))
	for m := range t.errs {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool {
		if t.errs[msgs[i]] != t.errs[msgs[j]] {
			return t.errs[msgs[i]] > t.errs[msgs[j]]
		}
		return msgs[i] < msgs[j]
	})
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%d× %s", t.errs[m], m)
	}
	return out
}

// failedSince counts the failures at or after since.
func (t *tally) failedSince(since time.Time) uint64 {
	var n uint64
	for _, at := range t.failAt {
		if !at.Before(since) {
			n++
		}
	}
	return n
}

// runLoad runs spec until its deadline or until ctx ends.
func runLoad(ctx context.Context, spec loadSpec) *tally {
	start := time.Now()
	deadline := start.Add(spec.duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(spec.grace))
	defer cancel()
	tallies := make([]*tally, spec.clients) // apart: no false sharing
	var wg sync.WaitGroup
	for i := range spec.clients {
		tallies[i] = new(tally)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if spec.rate > 0 {
				spec.runOpen(ctx, i, start, deadline, tallies[i])
			} else {
				spec.runClosed(ctx, i, deadline, tallies[i])
			}
		}()
	}
	wg.Wait()
	total := &tally{elapsed: time.Since(start)}
	for _, t := range tallies {
		total.merge(t)
	}
	return total
}

// runClosed runs client's operations back to back until the deadline.
func (spec *loadSpec) runClosed(ctx context.Context, client int, deadline time.Time, t *tally) {
	for seq := spec.seqBase; ctx.Err() == nil && time.Now().Before(deadline) && !spec.stopped(); seq++ {
		t.started++
		t0 := time.Now()
		kind, err := spec.op(ctx, client, seq)
		d := time.Since(t0)
		spec.record(t, client, seq, kind, err, t0, t0, d)
	}
}

// runOpen runs client's operations on its schedule (see loadSpec) until
// the deadline.
func (spec *loadSpec) runOpen(ctx context.Context, client int, start, deadline time.Time, t *tally) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	perSecond := float64(time.Second) / spec.rate
	seq := spec.seqBase
	var prevEnd time.Time // of the client's previous operation
	for k := uint64(0); ; k++ {
		due := start.Add(time.Duration(float64(k*uint64(spec.clients)+uint64(client)) * perSecond))
		if !due.Before(deadline) || spec.stopped() {
			return
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			t.missed++ // the window is over before it could start
			continue
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				t.missed++
				continue
			case <-spec.stop:
				return
			case <-timer.C:
			}
		}
		began := time.Now()
		if lag := began.Sub(due); lag > lateAfter {
			t.late++
			if prevEnd.After(due) {
				t.lateBehind++
			}
			t.maxLag = max(t.maxLag, lag)
		}
		t.started++
		kind, err := spec.op(ctx, client, seq)
		prevEnd = time.Now()
		spec.record(t, client, seq, kind, err, due, began, prevEnd.Sub(due))
		seq++
	}
}

// stopped reports whether spec.stop is closed.
func (spec *loadSpec) stopped() bool {
	select {
	case <-spec.stop:
		return true
	default:
		return false
	}
}

// record counts one finished operation in t.
func (spec *loadSpec) record(t *tally, client int, seq uint64, kind opKind, err error, due, began time.Time, lat time.Duration) {
	if spec.done != nil {
		spec.done(client, seq, kind, err)
	}
	if spec.timed != nil {
		spec.timed(client, seq, due, began, lat)
	}
	if err != nil {
		t.failed[kind]++
		t.failAt = append(t.failAt, time.Now())
		if t.errs == nil {
			t.errs = map[string]uint64{}
		}
		if _, ok := t.errs[err.Error()]; ok || len(t.errs) < maxErrs {
			t.errs[err.Error()]++
		}
		return
	}
	t.acked[kind]++
	t.lat[kind] = append(t.lat[kind], lat)
	if spec.acked != nil {
		spec.acked.Add(1)
	}
}

// percentiles returns the p-quantiles (nearest rank) of lat, which it sorts;
// zeros if lat is empty.
func percentiles(lat []time.Duration, ps ...float64) []time.Duration {
	out := make([]time.Duration, len(ps))
	if len(lat) == 0 {
		return out
	}
	slices.Sort(lat)
	for i, p := range ps {
		rank := int(p*float64(len(lat))+0.999999999) - 1 // ceil(p*n) - 1
		out[i] = lat[min(max(rank, 0), len(lat)-1)]
	}
	return out
}

// latencyMetrics sets prefix+"p50_us", "p99_us", "p999_us" and "max_us".
func latencyMetrics(m map[string]float64, prefix string, lat []time.Duration) {
	ps := percentiles(lat, 0.50, 0.99, 0.999, 1)
	m[prefix+"p50_us"] = us(ps[0])
	m[prefix+"p99_us"] = us(ps[1])
	m[prefix+"p999_us"] = us(ps[2])
	m[prefix+"max_us"] = us(ps[3])
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// usage is a reading of the process's resource counters.
type usage struct {
	at      time.Time
	cpu     time.Duration // user + system, every thread of the process
	mallocs uint64
}

func readUsage() usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{
		at:      time.Now(),
		cpu:     time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		mallocs: ms.Mallocs,
	}
}

// shardClient sends one client's operations on one shard to its leader,
// following NotLeader hints and retrying what is known not to have been
// applied (a redirect, a dropped proposal) for up to timeout. Anything else
// fails the operation.
type shardClient struct {
	c       *cluster
	shard   uint64
	timeout time.Duration
	leader  uint64
	retries uint64 // redirects and drops, for the curious
}

// errNoLeader: an operation found no leader for its shard within its
// timeout.
var errNoLeader = errors.New("bench: no leader within the operation timeout")

func (sc *shardClient) do(ctx context.Context, fn func(e *engine.Engine) error) error {
	backoff := time.Millisecond
	var giveUp time.Time // set at the first retry
	for {
		if sc.leader == 0 {
			sc.leader = sc.c.leaderOf(ctx, sc.shard)
		}
		var e *engine.Engine
		if sc.leader != 0 {
			e = sc.c.engine(sc.leader)
		}
		if e != nil {
			err := fn(e)
			if err == nil {
				return nil
			}
			switch nl := notLeader(err); {
			case nl != nil:
				sc.leader = nl.Leader
				if sc.leader != 0 && sc.c.engine(sc.leader) != nil {
					sc.retries++
					continue // a fresh hint: follow it at once
				}
			case errors.Is(err, engine.ErrProposalDropped), errors.Is(err, engine.ErrShardNotFound),
				errors.Is(err, engine.ErrNotInitialized):
				sc.leader = 0
			default:
				if errors.Is(err, engine.ErrClosed) {
					sc.leader = 0 // the node is gone: look again next time
				}
				return err
			}
		}
		// No leader known: wait a little (more each time) and look again.
		sc.leader = 0
		sc.retries++
		if giveUp.IsZero() {
			giveUp = time.Now().Add(sc.timeout)
		} else if time.Now().After(giveUp) {
			return fmt.Errorf("shard %d: %w", sc.shard, errNoLeader)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("shard %d: no leader: %w", sc.shard, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

// notLeader returns err's *NotLeaderError, if any. (Apart from do, whose
// every call would otherwise allocate the target of errors.As.)
func notLeader(err error) *engine.NotLeaderError {
	var nl *engine.NotLeaderError
	if errors.As(err, &nl) {
		return nl
	}
	return nil
}

// writer is a client that puts payload-byte values to its key; the first 8
// bytes of a value are the client and the sequence number (the rest is
// filler), so that every write is distinct.
type writer struct {
	shardClient
	cmd   []byte // PutCommand(key, value), reused: Propose copies it
	value []byte // the value inside cmd
	query []byte // GetQuery(key)
}

func newWriter(c *cluster, shard uint64, key []byte, payload int, timeout time.Duration) *writer {
	w := &writer{shardClient: shardClient{c: c, shard: shard, timeout: timeout}}
	w.cmd = engine.PutCommand(key, make([]byte, payload))
	w.value = w.cmd[len(w.cmd)-payload:]
	w.query = engine.GetQuery(key)
	for i := range w.value {
		w.value[i] = 'a' + byte(i%26)
	}
	return w
}

func (w *writer) write(ctx context.Context, client int, seq uint64) error {
	stampValue(w.value, client, seq)
	return w.do(ctx, func(e *engine.Engine) error {
		_, err := e.Propose(ctx, w.shard, w.cmd)
		return err
	})
}

func (w *writer) read(ctx context.Context, lease bool) error {
	return w.do(ctx, func(e *engine.Engine) error {
		read := e.Read
		if lease {
			read = e.ReadLease
		}
		res, err := read(ctx, w.shard, w.query)
		if err != nil {
			return err
		}
		_, found, err := engine.DecodeGetResult(res)
		if err == nil && !found {
			err = errReadNotFound // every key is written before it is read
		}
		return err
	})
}

var errReadNotFound = errors.New("bench: linearizable read did not find a written key")

// The ways the read scenario reads (variant.Read).
const (
	readLeader   = ""         // engine.Read on the leader
	readFollower = "follower" // engine.ReadOnReplica on a follower
	readStale    = "stale"    // engine.ReadLocal on a follower
	readLease    = "lease"    // engine.ReadLease on the leader
)

// readAs reads w's key as how says; a follower read goes to one of the
// shard's voters other than its leader, picked by client.
func (w *writer) readAs(ctx context.Context, how string, client int) error {
	if how == readLeader || how == readLease {
		return w.read(ctx, how == readLease)
	}
	return w.do(ctx, func(leader *engine.Engine) error {
		var others []uint64
		for _, id := range w.c.voters(w.shard) {
			if id != leader.NodeID() {
				others = append(others, id)
			}
		}
		e := leader
		if len(others) > 0 {
			if f := w.c.engine(others[client%len(others)]); f != nil {
				e = f
			}
		}
		var res []byte
		var err error
		if how == readFollower {
			res, err = e.ReadOnReplica(ctx, w.shard, w.query)
		} else {
			res, err = e.ReadLocal(w.shard, w.query)
		}
		if err != nil {
			return err
		}
		_, found, err := engine.DecodeGetResult(res)
		if err == nil && !found && how == readFollower {
			err = errReadNotFound
		}
		return err
	})
}

// stampValue writes client and seq big-endian into the first 8 bytes of v
// (fewer if v is shorter).
func stampValue(v []byte, client int, seq uint64) {
	x := uint64(client)<<32 | seq&0xffffffff
	for i := 0; i < 8 && i < len(v); i++ {
		v[i] = byte(x >> (56 - 8*i))
	}
}

// clientsFor returns the number of clients for a point with shards shards.
func (o *options) clientsFor(shards int) int {
	switch {
	case o.clients > 0:
		return o.clients
	case o.clientsPerShard > 0:
		return o.clientsPerShard * shards
	case o.remote != nil:
		return remoteClients
	}
	return max(64, shards)
}
