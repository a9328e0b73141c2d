package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// countingKV is the key-value state machine counting how often each command
// reached it.
type countingKV struct {
	engine.KV
	mu sync.Mutex
	n  map[string]int // guarded
}

func (c *countingKV) Apply(ctx *engine.ApplyContext, cmd []byte) ([]byte, error) {
	c.mu.Lock()
	c.n[string(cmd)]++
	c.mu.Unlock()
	return c.KV.Apply(ctx, cmd)
}

func (c *countingKV) applied(cmd []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[string(cmd)]
}

// sessionCluster is a cluster of one shard (ID 1, the whole ring) whose
// nodes count the commands their state machines apply.
type sessionCluster struct {
	*testcluster.Cluster
	t    *testing.T
	desc storage.Descriptor
	sms  map[uint64]*countingKV // by node, across restarts
}

// newSessionCluster starts nodes nodes, the shard on voters (nil: all).
func newSessionCluster(t *testing.T, ctx context.Context, nodes int, voters []uint64, adjust func(*engine.Config)) *sessionCluster {
	t.Helper()
	sc := &sessionCluster{t: t, desc: storage.Descriptor{ShardID: 1, Last: ^uint64(0)}, sms: map[uint64]*countingKV{}}
	for id := uint64(1); id <= uint64(nodes); id++ {
		sc.sms[id] = &countingKV{n: map[string]int{}}
	}
	sc.Cluster = newCluster(t, testcluster.Config{Nodes: nodes, Engine: func(cfg *engine.Config) {
		cfg.StateMachine = sc.sms[cfg.NodeID]
		if adjust != nil {
			adjust(cfg)
		}
	}})
	if voters == nil {
		voters = sc.IDs()
	}
	if err := sc.CreateShards(ctx, []storage.Descriptor{sc.desc}, voters); err != nil {
		t.Fatal(err)
	}
	sc.RunClock(2 * time.Millisecond)
	if err := sc.WaitLeaders(ctx, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	return sc
}

// propose runs a session write on the shard's leader, following leader
// changes: a retry of a session write is safe, which is the point.
func (sc *sessionCluster) propose(ctx context.Context, s engine.Session, cmd []byte) ([]byte, error) {
	for {
		// A leader found just before may be gone (an election after a
		// restart): wait for one, then try.
		if err := sc.WaitFor(ctx, "a leader", func() bool { return sc.Engine(sc.Leader(ctx, 1)) != nil }); err != nil {
			return nil, err
		}
		e := sc.Engine(sc.Leader(ctx, 1))
		if e == nil {
			continue
		}
		res, err := e.ProposeSession(ctx, 1, s, cmd)
		var nl *engine.NotLeaderError
		if !errors.As(err, &nl) && !errors.Is(err, engine.ErrProposalDropped) {
			return res, err
		}
	}
}

// mustPropose is propose, failing the test on an error.
func (sc *sessionCluster) mustPropose(ctx context.Context, s engine.Session, cmd []byte) []byte {
	sc.t.Helper()
	res, err := sc.propose(ctx, s, cmd)
	if err != nil {
		sc.t.Fatalf("session %x seq %d: %v", s.ID, s.Seq, err)
	}
	return res
}

// waitApplied waits until every running node's state machine applied cmd
// want times.
func (sc *sessionCluster) waitApplied(ctx context.Context, cmd []byte, want int) {
	sc.t.Helper()
	if err := sc.WaitFor(ctx, "applies", func() bool {
		for _, id := range sc.IDs() {
			if sc.Engine(id) != nil && sc.sms[id].applied(cmd) < want {
				return false
			}
		}
		return true
	}); err != nil {
		sc.t.Fatal(err)
	}
	for _, id := range sc.IDs() {
		if n := sc.sms[id].applied(cmd); sc.Engine(id) != nil && n != want {
			sc.t.Fatalf("node %d applied %q %d times, want %d", id, cmd, n, want)
		}
	}
}

// sessionRecords lists node id's session records of shard 1.
func (sc *sessionCluster) sessionRecords(id uint64) []string {
	sc.t.Helper()
	start, end := storage.SessionSpan(1)
	it, err := sc.Engine(id).Store().DB().NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		sc.t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for it.First(); it.Valid(); it.Next() {
		out = append(out, fmt.Sprintf("%s=%x", storage.DescribeKey(it.Key()), it.Value()))
	}
	return out
}

// header returns node id's header of session, ok false if absent.
func (sc *sessionCluster) header(id, session uint64) (storage.SessionHeader, bool) {
	sc.t.Helper()
	v, closer, err := sc.Engine(id).Store().DB().Get(storage.SessionHeaderKey(1, session))
	if errors.Is(err, pebble.ErrNotFound) {
		return storage.SessionHeader{}, false
	}
	if err != nil {
		sc.t.Fatal(err)
	}
	defer closer.Close()
	h, err := storage.UnmarshalSessionHeader(v, nil)
	if err != nil {
		sc.t.Fatal(err)
	}
	return h, true
}

func decodeCAS(t *testing.T, res []byte) (swapped bool, cur string) {
	t.Helper()
	swapped, c, _, err := engine.DecodeCASResult(res)
	if err != nil {
		t.Fatal(err)
	}
	return swapped, string(c)
}

// TestSessionExactlyOnce: a retried session write applies once and returns
// its first result; rejected writes are evaluated again; the watermark
// refuses what the client acknowledged and drops the results it has.
func TestSessionExactlyOnce(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	sc := newSessionCluster(t, ctx, 3, nil, nil)
	const id = 0xc0ffee
	s := func(seq, ack uint64) engine.Session { return engine.Session{ID: id, Seq: seq, Ack: ack} }

	// A CAS retried: applied once, the retry gets swapped=true again (not
	// "found the value I wrote").
	cas := engine.CASCommand([]byte("counter"), nil, []byte("1"))
	first := sc.mustPropose(ctx, engine.Session{ID: id, Seq: 1, Ack: 1, Register: true}, cas)
	again := sc.mustPropose(ctx, s(1, 1), cas)
	if swapped, _ := decodeCAS(t, again); !swapped || !bytes.Equal(first, again) {
		t.Fatalf("retried CAS: %x, first %x", again, first)
	}
	// A put retried, with the CAS still unacknowledged.
	put := engine.PutCommand([]byte("p"), []byte("x"))
	sc.mustPropose(ctx, s(2, 1), put)
	sc.mustPropose(ctx, s(2, 1), put)
	sc.waitApplied(ctx, cas, 1)
	sc.waitApplied(ctx, put, 1)
	leader := sc.Leader(ctx, 1)
	if r := sc.Engine(leader).Stats().SessionReplays; r < 2 {
		t.Fatalf("leader counted %d replays, want 2", r)
	}

	// A rejected command stores nothing: its retry is evaluated again.
	bad := engine.PutCommand(nil, []byte("v"))
	for range 2 {
		if _, err := sc.propose(ctx, s(3, 1), bad); !errors.Is(err, engine.ErrEmptyKey) {
			t.Fatalf("rejected command: %v", err)
		}
	}
	sc.waitApplied(ctx, bad, 2)

	// Requests applied out of order, then the watermark passes some.
	put5, put6 := engine.PutCommand([]byte("p5"), nil), engine.PutCommand([]byte("p6"), nil)
	sc.mustPropose(ctx, s(6, 1), put6)
	sc.mustPropose(ctx, s(5, 1), put5)
	if h, _ := sc.header(leader, id); h.Watermark != 1 || !slices.Equal(h.Results, []uint64{1, 2, 5, 6}) {
		t.Fatalf("header %+v", h)
	}
	put7 := engine.PutCommand([]byte("p7"), nil)
	sc.mustPropose(ctx, s(7, 6), put7)
	sc.mustPropose(ctx, s(6, 6), put6) // still retried: the client has no response
	sc.waitApplied(ctx, put7, 1)
	for _, node := range sc.IDs() {
		var h storage.SessionHeader
		if err := sc.WaitFor(ctx, "watermark 6", func() bool {
			h, _ = sc.header(node, id) // committed after the state machine counted
			return h.Watermark == 6
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(h.Results, []uint64{6, 7}) || h.LastUsed == 0 {
			t.Fatalf("node %d: header %+v", node, h)
		}
		if n := len(sc.sessionRecords(node)); n != 3 {
			t.Fatalf("node %d: %d session records, want the header and 2 results: %q", node, n, sc.sessionRecords(node))
		}
	}
	// Below the watermark: refused, never applied again.
	var se *engine.SessionError
	if _, err := sc.propose(ctx, s(2, 1), put); !errors.Is(err, engine.ErrDuplicateRequest) || !errors.As(err, &se) || se.Watermark != 6 || se.Seq != 2 {
		t.Fatalf("below the watermark: %v", err)
	}
	sc.waitApplied(ctx, put, 1)
	sc.waitApplied(ctx, put6, 1)

	// An unknown session: refused, nothing applied, until it registers.
	other := engine.PutCommand([]byte("other"), []byte("v"))
	if _, err := sc.propose(ctx, engine.Session{ID: 99, Seq: 4, Ack: 4}, other); !errors.Is(err, engine.ErrSessionNotFound) ||
		!errors.As(err, &se) || se.SessionID != 99 || se.ShardID != 1 {
		t.Fatalf("unknown session: %v", err)
	}
	sc.mustPropose(ctx, engine.Session{ID: 99, Seq: 4, Ack: 4, Register: true}, other)
	sc.waitApplied(ctx, other, 1)

	// Malformed requests.
	e := sc.Engine(leader)
	for name, c := range map[string]struct {
		s   engine.Session
		cmd []byte
	}{
		"session 0":       {engine.Session{Seq: 1}, put},
		"ack above seq":   {engine.Session{ID: id, Seq: 1, Ack: 2}, put},
		"empty command":   {s(9, 6), nil},
		"nested envelope": {s(9, 6), []byte{0xf1, 0}},
	} {
		if _, err := e.ProposeSession(ctx, 1, c.s, c.cmd); !errors.Is(err, engine.ErrBadRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestSessionExpiry: the expiry command deletes the sessions idle before
// its cutoff, on every replica, and nothing else.
func TestSessionExpiry(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	sc := newSessionCluster(t, ctx, 3, nil, nil)
	putA, putB := engine.PutCommand([]byte("a"), nil), engine.PutCommand([]byte("b"), nil)
	sc.mustPropose(ctx, engine.Session{ID: 1, Seq: 1, Register: true}, putA)
	mid := time.Now()
	sc.mustPropose(ctx, engine.Session{ID: 2, Seq: 1, Register: true}, putB)
	if err := sc.Engine(sc.Leader(ctx, 1)).ProposeSessionExpiry(ctx, 1, mid); err != nil {
		t.Fatal(err)
	}
	if err := sc.WaitFor(ctx, "expiry applied", func() bool {
		for _, id := range sc.IDs() {
			// The counter moves at apply, the store at the pass's commit.
			if _, ok := sc.header(id, 1); ok || sc.Engine(id).Stats().SessionsExpired != 1 {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range sc.IDs() {
		if n := len(sc.sessionRecords(id)); n != 2 {
			t.Fatalf("node %d: %q, want session 2's header and result", id, sc.sessionRecords(id))
		}
	}
	if _, err := sc.propose(ctx, engine.Session{ID: 1, Seq: 1}, putA); !errors.Is(err, engine.ErrSessionNotFound) {
		t.Fatalf("expired session: %v", err)
	}
	sc.mustPropose(ctx, engine.Session{ID: 2, Seq: 1}, putB) // a replay
	sc.waitApplied(ctx, putA, 1)
	sc.waitApplied(ctx, putB, 1)
}

// TestSessionExpirySweep: with a tiny TTL, the leader's writes propose the
// expiry themselves.
func TestSessionExpirySweep(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	sc := newSessionCluster(t, ctx, 3, nil, func(cfg *engine.Config) { cfg.SessionTTL = time.Nanosecond })
	putA, putB := engine.PutCommand([]byte("a"), nil), engine.PutCommand([]byte("b"), nil)
	sc.mustPropose(ctx, engine.Session{ID: 1, Seq: 1, Register: true}, putA)
	sc.mustPropose(ctx, engine.Session{ID: 2, Seq: 1, Register: true}, putB)
	if err := sc.WaitFor(ctx, "session 1 expired", func() bool {
		_, ok := sc.header(sc.Leader(ctx, 1), 1)
		return !ok
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.propose(ctx, engine.Session{ID: 1, Seq: 2, Ack: 2}, putA); !errors.Is(err, engine.ErrSessionNotFound) {
		t.Fatalf("expired session: %v", err)
	}
}

// TestSessionCrashRestart: session records are applied state, rebuilt from
// the log after a crash that lost the unsynced apply batches.
func TestSessionCrashRestart(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	sc := newSessionCluster(t, ctx, 3, nil, nil)
	cas := engine.CASCommand([]byte("k"), nil, []byte("1"))
	s := engine.Session{ID: 5, Seq: 1, Register: true}
	first := sc.mustPropose(ctx, s, cas)
	for _, id := range sc.IDs() {
		sc.Crash(id)
	}
	for _, id := range sc.IDs() {
		if err := sc.Start(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := sc.WaitLeaders(ctx, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	if res := sc.mustPropose(ctx, s, cas); !bytes.Equal(res, first) {
		t.Fatalf("retry after restart: %x, first %x", res, first)
	}
	if r := sc.Engine(sc.Leader(ctx, 1)).Stats().SessionReplays; r != 1 {
		t.Fatalf("leader counted %d replays since restart, want 1", r)
	}
	// The state is the first attempt's: a new request sees the value.
	if swapped, cur := decodeCAS(t, sc.mustPropose(ctx, engine.Session{ID: 5, Seq: 2, Ack: 2}, cas)); swapped || cur != "1" {
		t.Fatalf("next CAS: swapped %v, found %q", swapped, cur)
	}
}

// TestSessionSnapshot: sessions travel in snapshots: a replica that caught
// up by snapshot, then leads, answers a retry with the stored result it
// never computed.
func TestSessionSnapshot(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	sc := newSessionCluster(t, ctx, 4, []uint64{1, 2, 3}, func(cfg *engine.Config) { cfg.LogTruncateEntries = 50 })
	cas := engine.CASCommand([]byte("k"), nil, []byte("1"))
	first := sc.mustPropose(ctx, engine.Session{ID: 1, Seq: 1, Register: true}, cas)
	var lastPut []byte
	for i := uint64(1); i <= 300; i++ {
		lastPut = engine.PutCommand([]byte(fmt.Sprint("k", i)), []byte("v"))
		sc.mustPropose(ctx, engine.Session{ID: 2, Seq: i, Ack: i, Register: i == 1}, lastPut)
	}
	leader := sc.Leader(ctx, 1)
	if st := status(t, ctx, sc.Cluster, leader, 1); st.FirstIndex < 100 {
		t.Fatalf("log not truncated: first index %d", st.FirstIndex)
	}
	le := sc.Engine(leader)
	if err := le.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	target := status(t, ctx, sc.Cluster, leader, 1).Applied
	if err := sc.WaitFor(ctx, "learner catch-up", func() bool {
		st, err := sc.Engine(4).Status(ctx, 1)
		return err == nil && st.Applied >= target
	}); err != nil {
		t.Fatal(err)
	}
	if err := sc.WaitFor(ctx, "snapshot counted", func() bool { return sc.Engine(4).Stats().SnapshotsRecv > 0 }); err != nil {
		t.Fatalf("the learner caught up without a snapshot: %v", err)
	}
	if got, want := sc.sessionRecords(4), sc.sessionRecords(leader); !slices.Equal(got, want) || len(want) != 4 {
		t.Fatalf("learner's sessions %q, leader's %q", got, want)
	}
	if err := le.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddVoter, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	if err := le.TransferLeader(ctx, 1, 4); err != nil {
		t.Fatal(err)
	}
	e4 := sc.Engine(4)
	if res, err := e4.ProposeSession(ctx, 1, engine.Session{ID: 1, Seq: 1, Ack: 1}, cas); err != nil || !bytes.Equal(res, first) {
		t.Fatalf("retry on the new leader: %x %v, first %x", res, err, first)
	}
	if _, err := e4.ProposeSession(ctx, 1, engine.Session{ID: 2, Seq: 300, Ack: 300}, lastPut); err != nil {
		t.Fatal(err)
	}
	if n, r := sc.sms[4].applied(cas), e4.Stats().SessionReplays; n != 0 || r != 2 {
		t.Fatalf("node 4 applied the CAS %d times and replayed %d requests, want 0 and 2", n, r)
	}
}
