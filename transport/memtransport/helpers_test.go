package memtransport

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"

	"github.com/flotilla-db/flotilla/engine"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeHandler records what an endpoint receives.
type fakeHandler struct {
	// onBatch, if set, runs at the start of HandleBatch (outside mu).
	onBatch func(b *engine.Batch)
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
	if f.onBatch != nil {
		f.onBatch(b)
	}
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

func (f *fakeHandler) unreachable(node uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.unreachable[node]
}

// cluster is a network with one started endpoint per node.
type cluster struct {
	net *Network
	ep  map[uint64]*Endpoint
	h   map[uint64]*fakeHandler
}

func newCluster(t *testing.T, cfg Config, nodeIDs ...uint64) *cluster {
	t.Helper()
	c := &cluster{net: NewNetwork(cfg), ep: map[uint64]*Endpoint{}, h: map[uint64]*fakeHandler{}}
	t.Cleanup(c.net.Close)
	for _, id := range nodeIDs {
		c.start(t, id, &fakeHandler{})
	}
	return c
}

// start (re)starts node id with handler h.
func (c *cluster) start(t *testing.T, id uint64, h *fakeHandler) {
	t.Helper()
	e := c.net.Endpoint(id)
	if err := e.Start(h); err != nil {
		t.Fatalf("start node %d: %v", id, err)
	}
	c.ep[id], c.h[id] = e, h
}

// stats returns what node from sent to node to.
func (c *cluster) stats(from, to uint64) PeerStats {
	return c.ep[from].Stats()[to]
}

// settled reports whether everything node from sent to node to has been
// delivered or dropped.
func (c *cluster) settled(from, to uint64) bool {
	s := c.stats(from, to)
	return s.Sent+s.Duplicated == s.Delivered+s.Dropped
}

// msgs returns n raft messages of one shard numbered by Index from first,
// each with one entry carrying a little data.
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
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// gate blocks callers of wait until open is called.
type gate struct {
	once    sync.Once
	ch      chan struct{}
	entered chan struct{} // receives once per wait call
}

func newGate() *gate { return &gate{ch: make(chan struct{}), entered: make(chan struct{}, 100)} }

func (g *gate) wait() {
	g.entered <- struct{}{}
	<-g.ch
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }
