package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testCluster = 1

// fakeHandler records what a transport receives.
type fakeHandler struct {
	// onSnapshot, if set, replaces the default HandleSnapshot (which reads
	// the body to the end).
	onSnapshot func(ctx context.Context, h engine.SnapshotHeader, body engine.SnapshotBody) error

	mu struct {
		sync.Mutex
		batches     []*engine.Batch
		unreachable map[uint64]int
		snapshots   []engine.SnapshotHeader
	}
}

var _ engine.Handler = (*fakeHandler)(nil)

func (f *fakeHandler) HandleBatch(b *engine.Batch) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.batches = append(f.mu.batches, b)
}

func (f *fakeHandler) HandleSnapshot(ctx context.Context, h engine.SnapshotHeader, body engine.SnapshotBody) error {
	f.mu.Lock()
	f.mu.snapshots = append(f.mu.snapshots, h)
	f.mu.Unlock()
	if f.onSnapshot != nil {
		return f.onSnapshot(ctx, h, body)
	}
	for {
		if _, err := body.Next(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func (f *fakeHandler) PeerUnreachable(node uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.unreachable == nil {
		f.mu.unreachable = make(map[uint64]int)
	}
	f.mu.unreachable[node]++
}

func (f *fakeHandler) batches() []*engine.Batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*engine.Batch(nil), f.mu.batches...)
}

// messages returns the messages received from node from, in arrival order.
func (f *fakeHandler) messages(from uint64) []engine.Message {
	var out []engine.Message
	for _, b := range f.batches() {
		if b.From == from {
			out = append(out, b.Messages...)
		}
	}
	return out
}

func (f *fakeHandler) snapshots() []engine.SnapshotHeader {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]engine.SnapshotHeader(nil), f.mu.snapshots...)
}

func (f *fakeHandler) unreachable(node uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.unreachable[node]
}

// logSink is a slog.Handler that keeps the messages and attributes logged.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler       { return s }
func (s *logSink) WithGroup(string) slog.Handler            { return s }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, b.String())
	return nil
}

// contains reports whether a line logged contains every one of subs.
func (s *logSink) contains(subs ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
next:
	for _, l := range s.lines {
		for _, sub := range subs {
			if !strings.Contains(l, sub) {
				continue next
			}
		}
		return true
	}
	return false
}

// testConfig is the configuration of node id in tests: loopback, short
// backoffs, logs kept in sink.
func testConfig(id uint64, sink *logSink) Config {
	cfg := DefaultConfig()
	cfg.NodeID, cfg.ClusterID = id, testCluster
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.BackoffMin, cfg.BackoffMax = 5*time.Millisecond, 50*time.Millisecond
	cfg.DialTimeout = 5 * time.Second
	if sink == nil {
		sink = &logSink{}
	}
	cfg.Logger = slog.New(sink)
	return cfg
}

// start creates and starts a transport for cfg with a new fakeHandler; the
// test closes it.
func start(t testing.TB, cfg Config) (*Transport, *fakeHandler) {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	h := &fakeHandler{}
	if err := tr.Start(h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return tr, h
}

// link makes every transport know every other's address.
func link(ts ...*Transport) {
	for _, a := range ts {
		for _, b := range ts {
			if a != b {
				a.AddPeer(b.NodeID(), b.Addr().String())
			}
		}
	}
}

// msgs returns n raft messages of shard 7 numbered by Index from first, each
// with one entry carrying a little data.
func msgs(from, to, first uint64, n int) []engine.Message {
	out := make([]engine.Message, n)
	for i := range out {
		idx := first + uint64(i)
		out[i] = engine.Message{ShardID: 7, Msg: raftpb.Message{
			Type: raftpb.MsgApp, From: from, To: to, Term: 1, Index: idx,
			Entries: []raftpb.Entry{{Term: 1, Index: idx + 1, Data: []byte(fmt.Sprintf("entry-%d", idx))}},
		}}
	}
	return out
}

// indexes returns the Index of each message.
func indexes(ms []engine.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Msg.Index
	}
	return out
}

// waitUntil waits until cond holds, failing the test after a deadline.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// rawClient is a gRPC client of a transport's service that sends whatever
// the test crafts.
func rawClient(t *testing.T, addr string) transportpb.RaftClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return transportpb.NewRaftClient(cc)
}

// wireFrame encodes ms as a frame from node from to node to of cluster c.
func wireFrame(t testing.TB, c, from, to uint64, ms []engine.Message) *transportpb.Frame {
	t.Helper()
	f := &transportpb.Frame{ClusterId: c, From: from, To: to}
	for _, m := range ms {
		raw, err := m.Msg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		f.Messages = append(f.Messages, &transportpb.ShardMessage{ShardId: m.ShardID, RaftMessage: raw})
	}
	return f
}

// refused sums the frames and streams tr refused, from any node.
func refused(tr *Transport) uint64 {
	var n uint64
	for _, s := range tr.Stats() {
		n += s.Refused
	}
	return n
}
