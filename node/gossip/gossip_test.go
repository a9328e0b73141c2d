package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, ignoreProbe)
}

// ignoreProbe: memberlist's Shutdown does not wait for a probe in flight,
// which ends on its own within a probe interval (1 s).
var ignoreProbe = goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode")

// testLogger discards logs unless GOSSIP_TEST_LOG is set (memberlist may log
// after a test ends, so t.Log cannot be used).
func testLogger() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testMeta(id uint64) Meta {
	return Meta{
		NodeID:          id,
		Instance:        0xF1070 + id,
		RaftAddr:        fmt.Sprintf("127.0.0.1:%d", 17000+id),
		ClientAddr:      fmt.Sprintf("127.0.0.1:%d", 18000+id),
		HTTPAddr:        fmt.Sprintf("127.0.0.1:%d", 19000+id),
		BootstrapExpect: 3,
		InitialShards:   64,
		Replication:     3,
	}
}

// testNode is a Gossip with recorders for its callbacks.
type testNode struct {
	*Gossip
	changes atomic.Int64

	mu      sync.Mutex
	leaders map[uint64]LeaderUpdate // last update delivered per shard
	batches int
	trans   map[uint64][]State // state transitions seen, per node
}

func startNode(t *testing.T, id uint64, tweak func(*Config)) *testNode {
	t.Helper()
	n := &testNode{leaders: make(map[uint64]LeaderUpdate), trans: make(map[uint64][]State)}
	cfg := Config{
		BindAddr: "127.0.0.1:0",
		Meta:     testMeta(id),
		Logger:   testLogger(),
		OnChange: func() { n.changes.Add(1) },
		OnLeaders: func(us []LeaderUpdate) {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.batches++
			for _, u := range us {
				n.leaders[u.ShardID] = u
			}
		},
		onStateChange: func(id uint64, _, to State) {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.trans[id] = append(n.trans[id], to)
		},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New(node %d): %v", id, err)
	}
	n.Gossip = g
	t.Cleanup(func() { _ = g.Close() })
	return n
}

func (n *testNode) transitions(id uint64) []State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.trans[id])
}

func (n *testNode) receivedLeaders() map[uint64]LeaderUpdate {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := make(map[uint64]LeaderUpdate, len(n.leaders))
	for k, v := range n.leaders {
		m[k] = v
	}
	return m
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		<-tick.C
	}
}

func joinCtx(t *testing.T, n *testNode, seeds ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Join(ctx, seeds); err != nil {
		t.Fatalf("node %d join: %v", n.Meta().NodeID, err)
	}
}

// startCluster starts one node per key of tweaks (IDs 1..n) and joins them
// all through the first, then waits until everyone sees everyone alive.
func startCluster(t *testing.T, n int, tweak func(*Config)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = startNode(t, uint64(i+1), tweak)
	}
	for _, nd := range nodes[1:] {
		joinCtx(t, nd, nodes[0].LocalAddr())
	}
	waitConverged(t, nodes, nodes)
	return nodes
}

// waitConverged waits until every observer sees exactly the members, alive,
// with their current meta and address.
func waitConverged(t *testing.T, observers, members []*testNode) {
	t.Helper()
	waitFor(t, 10*time.Second, "membership to converge", func() error {
		for _, o := range observers {
			got := o.Members()
			if len(got) != len(members) {
				return fmt.Errorf("node %d sees %d members, want %d", o.Meta().NodeID, len(got), len(members))
			}
			for i, m := range members {
				want := m.Meta()
				if g := got[i]; !g.Meta.Equal(want) || g.State != Alive || g.Addr != m.LocalAddr() {
					return fmt.Errorf("node %d sees %+v, want %+v at %s alive", o.Meta().NodeID, g, want, m.LocalAddr())
				}
			}
		}
		return nil
	})
}

func TestClusterMembership(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	for _, n := range nodes {
		if n.changes.Load() == 0 {
			t.Errorf("node %d: OnChange never called", n.Meta().NodeID)
		}
		if m, ok := n.Member(2); !ok || m.Meta.RaftAddr != testMeta(2).RaftAddr || m.Addr != nodes[1].LocalAddr() {
			t.Errorf("node %d: Member(2) = %+v, %v", n.Meta().NodeID, m, ok)
		}
		if _, ok := n.Member(99); ok {
			t.Errorf("node %d: Member(99) found", n.Meta().NodeID)
		}
		if c := n.Conflicts(); len(c) != 0 {
			t.Errorf("node %d: conflicts %v", n.Meta().NodeID, c)
		}
	}
	// Joining again, and through oneself, is harmless.
	joinCtx(t, nodes[2], nodes[1].LocalAddr(), nodes[2].LocalAddr())
	waitConverged(t, nodes, nodes)
}

func TestSetMetaPropagates(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	m := nodes[1].Meta()
	m.ClusterID = 0xC1
	m.Bootstrap = []uint64{1, 2, 3}
	m.Replicas, m.Leaders = 42, 17
	m.DiskUsed, m.DiskCapacity, m.WriteRate = 1<<30, 1<<40, 5<<20
	m.HTTPAddr = "10.0.0.2:8080"
	if err := nodes[1].SetMeta(m); err != nil {
		t.Fatalf("SetMeta: %v", err)
	}
	if got := nodes[1].Meta(); !got.Equal(m) {
		t.Fatalf("Meta() = %+v, want %+v", got, m)
	}
	waitConverged(t, nodes, nodes)
	for _, n := range nodes {
		if got, _ := n.Member(2); got.Meta.ClusterID != 0xC1 || got.Meta.Replicas != 42 || !slices.Equal(got.Meta.Bootstrap, m.Bootstrap) {
			t.Fatalf("node %d sees %+v", n.Meta().NodeID, got.Meta)
		}
	}
}

func TestAbruptFailureDetected(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	victim := nodes[2]
	if err := victim.Close(); err != nil { // no Leave: a crash, as far as the others can tell
		t.Fatalf("Close: %v", err)
	}
	if err := victim.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "the others to declare node 3 dead", func() error {
		for _, n := range nodes[:2] {
			if m, ok := n.Member(3); !ok || m.State != Dead {
				return fmt.Errorf("node %d sees node 3 %v", n.Meta().NodeID, m.State)
			}
		}
		return nil
	})
	t.Logf("node 3 declared dead by both after %v", time.Since(start))
	for _, n := range nodes[:2] {
		// Every survivor probes node 3 itself and suspects it before the
		// verdict (its own suspicion timeout, or its confirmation that ends
		// the other's).
		tr := n.transitions(3)
		i := slices.Index(tr, Suspect)
		if i < 0 || !slices.Contains(tr[i:], Dead) || tr[len(tr)-1] != Dead {
			t.Errorf("node %d saw node 3 go through %v, want suspect then dead", n.Meta().NodeID, tr)
		}
		if m := n.Members(); len(m) != 3 || m[0].State != Alive || m[1].State != Alive {
			t.Errorf("node %d members %+v", n.Meta().NodeID, m)
		}
	}
}

func TestGracefulLeave(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	leaver := nodes[2]
	if err := leaver.Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if m, _ := leaver.Member(3); m.State != Left {
		t.Errorf("leaver sees itself %v", m.State)
	}
	waitFor(t, 5*time.Second, "the others to see node 3 left", func() error {
		for _, n := range nodes[:2] {
			if m, ok := n.Member(3); !ok || m.State != Left {
				return fmt.Errorf("node %d sees node 3 %v", n.Meta().NodeID, m.State)
			}
		}
		return nil
	})
	if err := leaver.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := leaver.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Leave after Close: %v", err)
	}
}

func TestLeaderGossip(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	a := nodes[0]

	const shards = 500
	want := make(map[uint64]LeaderUpdate, shards)
	first := make([]LeaderUpdate, 0, shards)
	second := make([]LeaderUpdate, 0, shards)
	stale := make([]LeaderUpdate, 0, shards/5)
	for s := uint64(1); s <= shards; s++ {
		first = append(first, LeaderUpdate{ShardID: s, Leader: 1, Term: 1})
		u := LeaderUpdate{ShardID: s, Leader: s%5 + 1, Term: 1 + s%3}
		second = append(second, u)
		want[s] = u
		if s%5 == 0 {
			stale = append(stale, LeaderUpdate{ShardID: s, Leader: 9, Term: 0})
		}
	}
	a.BroadcastLeaders(first)
	a.BroadcastLeaders(second)
	a.BroadcastLeaders(stale)                                            // older terms: ignored
	a.BroadcastLeaders([]LeaderUpdate{{ShardID: 0, Leader: 1, Term: 1}}) // shard 0: ignored

	for _, n := range nodes[1:] {
		waitFor(t, 10*time.Second, fmt.Sprintf("node %d to learn all leaders", n.Meta().NodeID), func() error {
			got := n.receivedLeaders()
			if len(got) != shards {
				return fmt.Errorf("%d shards", len(got))
			}
			for s, u := range want {
				if got[s] != u {
					return fmt.Errorf("shard %d: got %+v, want %+v", s, got[s], u)
				}
			}
			return nil
		})
	}

	// The gossip dies down: nothing pending or queued anywhere, so no update
	// circulates forever.
	waitFor(t, 10*time.Second, "leader gossip to quiesce", func() error {
		for _, n := range nodes {
			n.lmu.Lock()
			pending := len(n.pending)
			n.lmu.Unlock()
			if q := n.bq.NumQueued(); pending != 0 || q != 0 {
				return fmt.Errorf("node %d: %d pending, %d queued", n.Meta().NodeID, pending, q)
			}
		}
		return nil
	})
	if got := a.receivedLeaders(); len(got) != 0 {
		t.Errorf("node 1 got its own updates back: %d shards", len(got))
	}
	st := a.Stats()
	t.Logf("node 1 stats: %+v", st)
	if st.LeaderUpdatesSent < shards || st.LeaderMessagesSent == 0 || st.LeaderMessagesSent > shards/25 {
		t.Errorf("node 1 sent %d updates in %d messages, want >= %d in a handful",
			st.LeaderUpdatesSent, st.LeaderMessagesSent, shards)
	}
	for _, n := range nodes[1:] {
		st := n.Stats()
		n.mu.Lock()
		batches := n.batches
		n.mu.Unlock()
		t.Logf("node %d stats: %+v, %d OnLeaders calls", n.Meta().NodeID, st, batches)
		if st.LeaderUpdatesReceived < shards {
			t.Errorf("node %d accepted %d updates", n.Meta().NodeID, st.LeaderUpdatesReceived)
		}
		if st.LeaderMessagesInvalid != 0 {
			t.Errorf("node %d: %d invalid messages", n.Meta().NodeID, st.LeaderMessagesInvalid)
		}
	}

	// A newer term still goes through once everything has quiesced.
	a.BroadcastLeaders([]LeaderUpdate{{ShardID: 7, Leader: 3, Term: 100}})
	for _, n := range nodes[1:] {
		waitFor(t, 5*time.Second, "a later update", func() error {
			if u := n.receivedLeaders()[7]; u.Term != 100 || u.Leader != 3 {
				return fmt.Errorf("shard 7: %+v", u)
			}
			return nil
		})
	}
}

func TestReceiveRejectsGarbage(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	n := startNode(t, 1, func(c *Config) {
		c.OnLeaders = func([]LeaderUpdate) { calls.Add(1) }
	})
	d := (*delegate)(n.Gossip)
	msg, _ := packLeaders([]LeaderUpdate{{ShardID: 1, Leader: 2, Term: 3}}, maxLeaderMsgSize)
	for _, b := range [][]byte{
		nil, {}, {0xFF}, {msgTypeLeaders}, {msgTypeLeaders, 9, 1, 1, 1, 1},
		msg[:len(msg)-1], append(slices.Clone(msg), 0),
		{msgTypeLeaders, leadersVersion, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01},
	} {
		d.NotifyMsg(b)
	}
	if st := n.Stats(); st.LeaderMessagesInvalid != 6 || st.LeaderMessagesReceived != 0 {
		t.Fatalf("stats %+v", st)
	}
	d.NotifyMsg(msg)
	d.NotifyMsg(msg) // a retransmission: a duplicate
	waitFor(t, 5*time.Second, "OnLeaders", func() error {
		if calls.Load() != 1 {
			return fmt.Errorf("%d calls", calls.Load())
		}
		return nil
	})
	if st := n.Stats(); st.LeaderUpdatesReceived != 1 || st.LeaderUpdatesDuplicate != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestEncryptedCluster(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 2, func(c *Config) { c.SecretKey = testKey(0xA5) })

	for _, tc := range []struct {
		name string
		key  []byte
	}{{"other key", testKey(0x5A)}, {"no key", nil}} {
		intruder := startNode(t, 3, func(c *Config) { c.SecretKey = tc.key })
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		start := time.Now()
		err := intruder.Join(ctx, []string{nodes[0].LocalAddr()})
		cancel()
		if !errors.Is(err, ErrJoinFailed) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Join = %v", tc.name, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: Join took %v past its context", tc.name, d)
		}
		if err := intruder.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		if _, ok := n.Member(3); ok {
			t.Fatalf("node %d lists the intruder", n.Meta().NodeID)
		}
	}
	waitConverged(t, nodes, nodes)
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	big := testMeta(1)
	big.RaftAddr = strings.Repeat("x", MaxMetaSize)
	manyIDs := testMeta(1)
	for i := range 200 {
		manyIDs.Bootstrap = append(manyIDs.Bootstrap, 1<<40+uint64(i))
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want error
	}{
		{"node ID 0", Config{Meta: Meta{RaftAddr: "x"}}, ErrInvalidNodeID},
		{"7-byte key", Config{Meta: testMeta(1), SecretKey: make([]byte, 7)}, ErrBadKey},
		{"33-byte key", Config{Meta: testMeta(1), SecretKey: make([]byte, 33)}, ErrBadKey},
		{"long address", Config{Meta: big}, ErrMetaTooLarge},
		{"many bootstrap IDs", Config{Meta: manyIDs}, ErrMetaTooLarge},
		{"host name", Config{Meta: testMeta(1), BindAddr: "localhost:0"}, ErrInvalidConfig},
		{"no port", Config{Meta: testMeta(1), BindAddr: "127.0.0.1"}, ErrInvalidConfig},
		{"bad advertise", Config{Meta: testMeta(1), BindAddr: "127.0.0.1:0", AdvertiseAddr: "nowhere:1"}, ErrInvalidConfig},
		{"negative interval", Config{Meta: testMeta(1), BindAddr: "127.0.0.1:0", LeaderFlushInterval: -1}, ErrInvalidConfig},
		{"tiny packets", Config{Meta: testMeta(1), BindAddr: "127.0.0.1:0",
			MemberlistConfig: func(c *memberlist.Config) { c.UDPBufferSize = 200 }}, ErrInvalidConfig},
	} {
		tc.cfg.Logger = testLogger()
		g, err := New(tc.cfg)
		if !errors.Is(err, tc.want) {
			if g != nil {
				_ = g.Close()
			}
			t.Errorf("%s: New = %v, want %v", tc.name, err, tc.want)
		}
	}

	// The address is taken.
	n := startNode(t, 1, nil)
	if g, err := New(Config{Meta: testMeta(2), BindAddr: n.LocalAddr(), Logger: testLogger()}); !errors.Is(err, ErrStart) {
		if g != nil {
			_ = g.Close()
		}
		t.Errorf("New on a used port = %v", err)
	}

	// SetMeta validates too, and changes nothing on error.
	before := n.Meta()
	if err := n.SetMeta(big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("SetMeta(big) = %v", err)
	}
	other := testMeta(2)
	if err := n.SetMeta(other); !errors.Is(err, ErrInvalidNodeID) {
		t.Errorf("SetMeta(other node) = %v", err)
	}
	if got := n.Meta(); !got.Equal(before) {
		t.Errorf("meta changed to %+v", got)
	}
}

func TestJoin(t *testing.T) {
	t.Parallel()
	var retries atomic.Int64
	n := startNode(t, 1, func(c *Config) {
		c.Logger = slog.New(&countingHandler{Handler: c.Logger.Handler(), msg: "gossip: join failed, retrying", n: &retries})
	})
	ctx := context.Background()
	if err := n.Join(ctx, nil); err != nil {
		t.Fatalf("Join(nil) = %v", err)
	}
	port := n.LocalAddr()[strings.LastIndexByte(n.LocalAddr(), ':'):]
	start := time.Now()
	if err := n.Join(ctx, []string{n.LocalAddr(), "localhost" + port, ""}); err != nil {
		t.Fatalf("Join(self) = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Join(self) took %v", d)
	}

	// Nobody listens at the seed: retries until the context ends.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	_ = l.Close()
	tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err = n.Join(tctx, []string{dead})
	if !errors.Is(err, ErrJoinFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Join(dead seed) = %v", err)
	}
	t.Logf("Join(dead seed): %v", err)

	// A seed that comes up later is found by the retries.
	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	later := l.Addr().String()
	_ = l.Close()
	jctx, jcancel := context.WithTimeout(ctx, 10*time.Second)
	defer jcancel()
	joined := make(chan error, 1)
	before := retries.Load()
	go func() { joined <- n.Join(jctx, []string{dead, later}) }()
	waitFor(t, 5*time.Second, "a failed join attempt", func() error {
		if retries.Load() == before {
			return errors.New("no retry yet")
		}
		return nil
	})
	seed := startNode(t, 2, func(c *Config) { c.BindAddr = later })
	if err := <-joined; err != nil {
		t.Fatalf("Join(dead, late) = %v", err)
	}
	waitConverged(t, []*testNode{n, seed}, []*testNode{n, seed})

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Join(ctx, []string{seed.LocalAddr()}); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Close = %v", err)
	}
	if err := n.SetMeta(n.Meta()); !errors.Is(err, ErrClosed) {
		t.Errorf("SetMeta after Close = %v", err)
	}
	n.BroadcastLeaders([]LeaderUpdate{{ShardID: 1, Leader: 1, Term: 1}}) // must not block or panic
}

func TestNameConflict(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 2, nil)
	impostor := startNode(t, 2, func(c *Config) { c.Meta.Instance = 0xBAD })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = impostor.Join(ctx, []string{nodes[0].LocalAddr()}) // may or may not count as joined
	waitFor(t, 5*time.Second, "the conflict on node 2 to be reported", func() error {
		if c := nodes[0].Conflicts(); !slices.Equal(c, []uint64{2}) {
			return fmt.Errorf("node 1 conflicts %v", c)
		}
		if c := impostor.Conflicts(); !slices.Equal(c, []uint64{2}) {
			return fmt.Errorf("impostor conflicts %v", c)
		}
		return nil
	})
	// The original keeps its place.
	if m, _ := nodes[0].Member(2); m.Addr != nodes[1].LocalAddr() || m.Meta.Instance != testMeta(2).Instance {
		t.Errorf("node 1 sees node 2 as %+v", m)
	}
}

// countingHandler counts the records with a given message.
type countingHandler struct {
	slog.Handler
	msg string
	n   *atomic.Int64
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithAttrs(as), msg: h.msg, n: h.n}
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithGroup(name), msg: h.msg, n: h.n}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Alive: "live", Suspect: "suspect", Dead: "dead", Left: "left", State(9): "State(9)"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", int(s), got, want)
		}
	}
}

func TestLogBridge(t *testing.T) {
	for line, want := range map[string]struct {
		level slog.Level
		msg   string
	}{
		"[DEBUG] memberlist: Stream connection from=1.2.3.4:5\n": {slog.LevelDebug, "memberlist: Stream connection from=1.2.3.4:5"},
		"[ERR] memberlist: boom":                                 {slog.LevelError, "memberlist: boom"},
		"[WARN] memberlist: hmm\n":                               {slog.LevelWarn, "memberlist: hmm"},
		"no level here":                                          {slog.LevelInfo, "no level here"},
	} {
		if l, m := parseMemberlistLog(line); l != want.level || m != want.msg {
			t.Errorf("%q: %v %q", line, l, m)
		}
	}
	_, msg := parseMemberlistLog("[INFO] memberlist: Suspect 42 has failed, no acks received\n")
	if name, ok := suspectedName(msg); !ok || name != "42" {
		t.Errorf("suspectedName(%q) = %q, %v", msg, name, ok)
	}
	for _, msg := range []string{"memberlist: Suspect  has failed, no acks received", "memberlist: Marking 4 as failed", "memberlist: Suspect 4"} {
		if name, ok := suspectedName(msg); ok {
			t.Errorf("suspectedName(%q) = %q", msg, name)
		}
	}
}

// advertiseRaw makes n advertise b as its meta, whatever it is, and waits
// for the broadcast.
func advertiseRaw(t *testing.T, n *testNode, b []byte) {
	t.Helper()
	n.Gossip.mu.Lock()
	n.metaBytes = b
	n.Gossip.mu.Unlock()
	if err := n.ml.UpdateNode(5 * time.Second); err != nil {
		t.Fatalf("UpdateNode: %v", err)
	}
}

// waitMember waits until n sees node id as cond wants it.
func waitMember(t *testing.T, n *testNode, id uint64, what string, cond func(Member) error) {
	t.Helper()
	waitFor(t, 10*time.Second, what, func() error {
		m, ok := n.Member(id)
		if !ok {
			return fmt.Errorf("node %d not listed", id)
		}
		if err := cond(m); err != nil {
			return fmt.Errorf("%w: %+v", err, m)
		}
		return nil
	})
}

// flagged is a waitMember condition: m is listed in state s, with no meta
// but its node ID and an error wrapping ErrMalformedMeta.
func flagged(s State) func(Member) error {
	return func(m Member) error {
		if m.State != s || !errors.Is(m.MetaErr, ErrMalformedMeta) || m.Usable() || !m.Meta.Equal(Meta{NodeID: m.Meta.NodeID}) {
			return fmt.Errorf("not %v and flagged", s)
		}
		return nil
	}
}

// TestUndecodableMeta: a peer whose meta does not decode is listed with its
// state but flagged (MetaErr, not Usable), counted and logged once per
// distinct error, and unflagged once it advertises a meta that decodes; a
// newer peer's meta with fields this version does not know is not flagged.
func TestUndecodableMeta(t *testing.T) {
	t.Parallel()
	var warnings atomic.Int64 // node 1's
	nodes := startCluster(t, 2, func(c *Config) {
		if c.Meta.NodeID == 1 {
			c.Logger = slog.New(&countingHandler{Handler: c.Logger.Handler(),
				msg: "gossip: member's meta does not decode: listed, flagged unusable", n: &warnings})
		}
	})
	a := nodes[0]
	bad := startNode(t, 3, nil)
	advertiseRaw(t, bad, []byte{metaVersion, 0xff}) // a truncated tag
	joinCtx(t, bad, a.LocalAddr())
	for _, n := range nodes {
		waitMember(t, n, 3, "node 3 listed alive and flagged", flagged(Alive))
	}
	if m, _ := a.Member(3); m.Addr != bad.LocalAddr() {
		t.Errorf("flagged member's address %q, want %q", m.Addr, bad.LocalAddr())
	}
	if ms := a.Members(); len(ms) != 3 || ms[2].MetaErr == nil || ms[1].MetaErr != nil {
		t.Errorf("Members() = %+v", ms)
	}
	t.Logf("flagged: %v", func() error { m, _ := a.Member(3); return m.MetaErr }())

	// Another meta with the same error: counted, not logged again.
	before := a.Stats().MetaInvalid
	if before == 0 {
		t.Fatal("MetaInvalid not counted")
	}
	advertiseRaw(t, bad, []byte{metaVersion, 0xff, 0xff})
	waitFor(t, 10*time.Second, "the second bad meta", func() error {
		if a.Stats().MetaInvalid == before {
			return errors.New("not counted")
		}
		return nil
	})
	if n := warnings.Load(); n != 1 {
		t.Errorf("%d warnings for one error", n)
	}

	// A newer version with a field this one does not know: decoded.
	enc, err := encodeMeta(bad.Meta(), 0)
	if err != nil {
		t.Fatal(err)
	}
	newer := append([]byte{metaVersion + 1}, enc[1:]...)
	newer = append(newer, tagged(0, field{metaTagEnd, []byte("a later field")})[1:]...)
	advertiseRaw(t, bad, newer)
	waitMember(t, a, 3, "node 3's newer meta decoded", func(m Member) error {
		if !m.Usable() || !m.Meta.Equal(bad.Meta()) {
			return errors.New("not usable with its meta")
		}
		return nil
	})

	// A mandatory field this version does not know: flagged again.
	advertiseRaw(t, bad, append(slices.Clone(newer), tagged(0, field{metaTagEnd + 1, nil})[1:]...))
	waitMember(t, a, 3, "node 3 flagged for a mandatory field", flagged(Alive))
	if n := warnings.Load(); n != 2 {
		t.Errorf("%d warnings for two errors", n)
	}

	// Its failure is seen: it stays listed, dead and flagged.
	if err := bad.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitMember(t, n, 3, "node 3 listed dead and flagged", flagged(Dead))
	}
	for _, n := range nodes {
		for _, o := range nodes {
			if m, _ := n.Member(o.Meta().NodeID); !m.Usable() || !m.Meta.Equal(o.Meta()) {
				t.Errorf("node %d sees %+v", n.Meta().NodeID, m)
			}
		}
	}
}
