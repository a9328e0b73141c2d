// Package testcluster runs N engines in one process for tests: an in-process
// fault-injecting transport, a manual clock, and Pebble on
// vfs.NewCrashableMem() so that a crash loses exactly the unsynced writes.
//
// Time: every node gets its ticks from the cluster. Tick ticks every running
// node once; RunClock ticks them at a fixed real interval in the background,
// for tests with concurrent clients. Each tick also advances the engines'
// lease clock (engine.Config.Clock) by their TickInterval, so that leases
// and elections run on the same time. Helpers that wait for a condition tick
// (or let the clock tick) and check, until a deadline: none sleeps.
//
// Durability: Config.OnSend sees every batch of raft messages a node hands
// its transport, in the sending goroutine and before the network has them.
// The engine sends a shard's messages from the worker that owns the shard,
// so that a hook that looks at the sender's disk synchronously sees it as it
// was when the messages left. CrashImage takes what a node's disk holds at
// this instant, the synced data only, without stopping the node:
// storage.Open on it (ReadOnly) reads the node's durable raft state and data.
package testcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/storage"
	"github.com/flotilla-db/flotilla/transport"
	"github.com/flotilla-db/flotilla/transport/memtransport"
)

// Config of a test cluster.
type Config struct {
	Nodes     int   // number of nodes, IDs 1..Nodes
	Seed      int64 // seeds the network's faults
	ClusterID uint64
	// Engine, if set, adjusts each node's engine config.
	Engine func(*engine.Config)
	// Dir, if set, puts each node's store on the real file system under
	// Dir/<node ID>, with real fsyncs (benchmarks); Crash then is refused.
	Dir string
	// GRPC runs the nodes' raft traffic over the gRPC transport on
	// loopback instead of the in-process network. Partitions, isolation,
	// drops and duplicates still apply (in the transport path); delays and
	// reordering do not.
	GRPC bool
	// OnSend, if set, is called with every batch of raft messages a node
	// hands its transport (Transport.Send: the workers' messages, and the
	// coalesced heartbeats of shard 0 from the tick loop; not snapshot
	// streams); from is the sending node, to the destination node. It is
	// called in the sending goroutine, before the transport or the
	// cluster's faults see msgs, and the sender waits for it: what it reads
	// of the sender's disk (CrashImage) is the state the messages leave in.
	// It is called concurrently, by the goroutines of every node. It must
	// not keep msgs (the sender reuses the slice; the entries the messages
	// point to are never modified), and must not call into an engine (a
	// worker of it may be the one waiting).
	OnSend func(from, to uint64, msgs []engine.Message)
	// Drop, if set, is called (after OnSend) for every message of those
	// batches; the messages it returns true for are not sent. Same
	// constraints as OnSend.
	Drop func(from, to uint64, m *engine.Message) bool
}

// Node is one node of the cluster.
type Node struct {
	ID     uint64
	Engine *engine.Engine // nil while stopped
	fs     *vfs.MemFS     // guarded by Cluster.mu
	ticks  chan struct{}
	image  *vfs.MemFS // crash image taken while stopping
}

// Cluster is N engines in one process.
type Cluster struct {
	t   testing.TB
	cfg Config
	Net *memtransport.Network

	mu    sync.Mutex // guards nodes' Engine, ticks and fs, and addrs
	nodes map[uint64]*Node
	addrs map[uint64]string // gRPC listen addresses, kept across restarts
	f     *faults           // faults of the gRPC mode

	clockStop chan struct{}
	clockDone chan struct{}
	// now counts the cluster's ticks: the engines' lease clock (Clock)
	// advances their TickInterval per tick.
	now atomic.Int64
}

// New starts a cluster of cfg.Nodes nodes.
func New(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.ClusterID == 0 {
		cfg.ClusterID = 7
	}
	c := &Cluster{
		t:     t,
		cfg:   cfg,
		Net:   memtransport.NewNetwork(memtransport.Config{ClusterID: cfg.ClusterID, Seed: cfg.Seed, QueueLen: 1 << 16}),
		nodes: make(map[uint64]*Node),
		addrs: make(map[uint64]string),
		f:     newFaults(cfg.Seed),
	}
	for i := 1; i <= cfg.Nodes; i++ {
		id := uint64(i)
		c.nodes[id] = &Node{ID: id, fs: vfs.NewCrashableMem()}
		if err := c.Start(id); err != nil {
			t.Fatalf("start node %d: %v", id, err)
		}
	}
	t.Cleanup(c.Close)
	return c
}

// IDs returns the node IDs, sorted.
func (c *Cluster) IDs() []uint64 {
	ids := make([]uint64, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Engine returns node id's engine, nil while it is stopped.
func (c *Cluster) Engine(id uint64) *engine.Engine {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[id]; n != nil {
		return n.Engine
	}
	return nil
}

// Start opens node id's engine on its file system.
func (c *Cluster) Start(id uint64) error {
	c.mu.Lock()
	n := c.nodes[id]
	fs := n.fs
	c.mu.Unlock()
	if n.Engine != nil {
		return fmt.Errorf("node %d already running", id)
	}
	cfg := engine.DefaultConfig(c.cfg.ClusterID, id, "/data")
	cfg.FS = fs
	cfg.Workers = 2
	cfg.StoreCacheBytes = 8 << 20
	ticks := make(chan struct{}, 1)
	cfg.Ticks = ticks
	if c.cfg.Dir != "" {
		cfg.FS = vfs.Default
		cfg.Dir = filepath.Join(c.cfg.Dir, fmt.Sprint(id))
	} else {
		cfg.BeforeStoreClose = func() { n.image = fs.CrashClone(vfs.CrashCloneCfg{}) }
	}
	if c.cfg.Engine != nil {
		c.cfg.Engine(&cfg)
	}
	if cfg.Clock == nil {
		interval := cfg.TickInterval
		cfg.Clock = func() time.Time { return time.Unix(0, 0).Add(time.Duration(c.now.Load()) * interval) }
	}
	var (
		t   engine.Transport
		err error
	)
	if c.cfg.GRPC {
		t, err = c.grpcTransport(id)
	} else {
		t = c.Net.Endpoint(id)
	}
	if err != nil {
		return err
	}
	if c.cfg.OnSend != nil || c.cfg.Drop != nil {
		t = &hookTransport{Transport: t, id: id, onSend: c.cfg.OnSend, drop: c.cfg.Drop}
	}
	e, err := engine.New(cfg, t)
	if err != nil {
		_ = t.Close()
		return err
	}
	c.mu.Lock()
	n.Engine, n.ticks = e, ticks
	c.mu.Unlock()
	return nil
}

// StoreFS returns the file system of node id, which must be stopped: its
// store is in /data, for tests that rewrite a stopped node's store.
func (c *Cluster) StoreFS(id uint64) vfs.FS {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[id].Engine != nil {
		panic(fmt.Sprintf("testcluster: StoreFS of running node %d", id))
	}
	return c.nodes[id].fs
}

// Stop closes node id's engine cleanly; Start reopens it.
func (c *Cluster) Stop(id uint64) {
	c.stop(id, false)
}

// Crash stops node id as a crash would: whatever its store had not synced
// when it stopped is lost. Start reopens it from what survived.
func (c *Cluster) Crash(id uint64) {
	c.stop(id, true)
}

func (c *Cluster) stop(id uint64, crash bool) {
	c.mu.Lock()
	n := c.nodes[id]
	e := n.Engine
	n.Engine, n.ticks = nil, nil
	c.mu.Unlock()
	if e == nil {
		return
	}
	n.image = nil
	if err := e.Close(); err != nil && !errors.Is(err, engine.ErrClosed) {
		c.t.Logf("close node %d: %v", id, err)
	}
	if crash {
		if c.cfg.Dir != "" {
			c.t.Fatalf("node %d: Crash needs the in-memory file system", id)
		}
		if n.image == nil {
			c.t.Fatalf("node %d: no crash image", id)
		}
		c.mu.Lock()
		n.fs = n.image
		c.mu.Unlock()
	}
	n.image = nil
}

// CrashImage returns what node id's disk would hold after a crash at this
// instant: a copy of its file system with exactly the synced data, taken
// without stopping the node (the store is in /data). Writes in progress
// wait while the copy is made. The cluster must be on the in-memory file
// system (no Config.Dir).
func (c *Cluster) CrashImage(id uint64) *vfs.MemFS {
	if c.cfg.Dir != "" {
		panic("testcluster: CrashImage needs the in-memory file system")
	}
	c.mu.Lock()
	fs := c.nodes[id].fs
	c.mu.Unlock()
	return fs.CrashClone(vfs.CrashCloneCfg{})
}

// hookTransport calls Config.OnSend before handing messages to the node's
// transport.
type hookTransport struct {
	engine.Transport
	id     uint64
	onSend func(from, to uint64, msgs []engine.Message)
	drop   func(from, to uint64, m *engine.Message) bool
}

func (t *hookTransport) Send(to uint64, msgs []engine.Message) error {
	if t.onSend != nil {
		t.onSend(t.id, to, msgs)
	}
	if t.drop != nil {
		var kept []engine.Message
		for i := range msgs {
			if !t.drop(t.id, to, &msgs[i]) {
				kept = append(kept, msgs[i])
			}
		}
		if len(kept) == 0 {
			return nil
		}
		msgs = kept
	}
	return t.Transport.Send(to, msgs)
}

// grpcTransport makes node id's gRPC transport on loopback, on the address
// it had before if it is restarting.
func (c *Cluster) grpcTransport(id uint64) (engine.Transport, error) {
	c.mu.Lock()
	addr := c.addrs[id]
	c.mu.Unlock()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	tc := transport.DefaultConfig()
	tc.NodeID, tc.ClusterID, tc.ListenAddr = id, c.cfg.ClusterID, addr
	tc.BackoffMin, tc.BackoffMax = time.Millisecond, 20*time.Millisecond
	tc.Logger = slog.New(slog.DiscardHandler)
	tc.Resolver = func(peer uint64) (string, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if a := c.addrs[peer]; a != "" {
			return a, nil
		}
		return "", engine.ErrUnknownPeer
	}
	t, err := transport.New(tc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.addrs[id] = t.Addr().String()
	c.mu.Unlock()
	return &faultTransport{Transport: t, id: id, f: c.f}, nil
}

// Partition cuts the links between the groups, both ways.
func (c *Cluster) Partition(a, b []uint64) {
	if c.cfg.GRPC {
		c.f.partition(a, b)
	} else {
		c.Net.Partition(a, b)
	}
}

// Isolate cuts node id off from every other node.
func (c *Cluster) Isolate(id uint64) {
	if c.cfg.GRPC {
		c.f.isolate(id)
	} else {
		c.Net.Isolate(id)
	}
}

// Flush waits until every message sent to node id so far has been
// delivered or dropped. A cut link drops a message when it leaves its
// sender's queue, as a partition loses what it holds; one still queued when
// the cut heals is delivered, as TCP delivers a retransmitted segment. A
// test that isolates a node, changes something and heals, and means the
// node not to hear of the change, flushes before it heals. Over gRPC the
// test transport drops a cut link's messages as they are sent: nothing to
// wait for.
func (c *Cluster) Flush(ctx context.Context, id uint64) error {
	if c.cfg.GRPC {
		return nil
	}
	return c.WaitFor(ctx, fmt.Sprintf("the messages to node %d to leave their queues", id), func() bool {
		for _, from := range c.Net.Nodes() {
			if from == id {
				continue
			}
			st, ok := c.Net.Endpoint(from).Stats()[id]
			if ok && st.Sent+st.Duplicated != st.Delivered+st.Dropped {
				return false
			}
		}
		return true
	})
}

// Heal removes every cut and fault.
func (c *Cluster) Heal() {
	c.f.heal()
	c.Net.Heal()
}

// SetFaults sets message faults (over gRPC: drops and duplicates only).
func (c *Cluster) SetFaults(f memtransport.Faults) error {
	if c.cfg.GRPC {
		c.f.set(f)
		return nil
	}
	return c.Net.SetFaults(f)
}

// Running reports whether node id is running.
func (c *Cluster) Running(id uint64) bool { return c.Engine(id) != nil }

// Tick ticks every running node once (a tick still pending is not doubled).
func (c *Cluster) Tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now.Add(1)
	for _, n := range c.nodes {
		if n.ticks != nil {
			select {
			case n.ticks <- struct{}{}:
			default:
			}
		}
	}
}

// RunClock ticks every running node each interval in the background until
// StopClock or Close.
func (c *Cluster) RunClock(interval time.Duration) {
	c.StopClock()
	c.clockStop, c.clockDone = make(chan struct{}), make(chan struct{})
	stop, done := c.clockStop, c.clockDone
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				c.Tick()
			case <-stop:
				return
			}
		}
	}()
}

// StopClock stops the background clock.
func (c *Cluster) StopClock() {
	if c.clockStop != nil {
		close(c.clockStop)
		<-c.clockDone
		c.clockStop, c.clockDone = nil, nil
	}
}

// Close stops the clock and every node.
func (c *Cluster) Close() {
	c.StopClock()
	for _, id := range c.IDs() {
		c.Stop(id)
	}
	c.Net.Close()
}

// EvenDescriptors splits the hash space evenly among n shards with IDs
// first, first+1, ...
func EvenDescriptors(first uint64, n int) []storage.Descriptor {
	out := make([]storage.Descriptor, n)
	for i := 0; i < n; i++ {
		out[i] = storage.Descriptor{ShardID: first + uint64(i), Start: boundary(i, n), Last: boundary(i+1, n) - 1}
	}
	out[n-1].Last = ^uint64(0)
	return out
}

// boundary returns floor(i * 2^64 / n).
func boundary(i, n int) uint64 {
	if i >= n {
		return 0
	}
	q, _ := bits.Div64(uint64(i), 0, uint64(n))
	return q
}

// CreateShards creates the shards of descs on the given nodes (all running).
func (c *Cluster) CreateShards(ctx context.Context, descs []storage.Descriptor, voters []uint64) error {
	for _, id := range voters {
		e := c.Engine(id)
		if e == nil {
			return fmt.Errorf("node %d not running", id)
		}
		for _, d := range descs {
			// A replica may already exist: the first voters elected a leader,
			// whose snapshot created it before this call.
			if err := e.CreateShard(ctx, engine.ShardSpec{Desc: d, Voters: voters}); err != nil && !errors.Is(err, engine.ErrShardExists) {
				return fmt.Errorf("node %d shard %d: %w", id, d.ShardID, err)
			}
		}
	}
	return nil
}

// Leader returns the node that leads shardID with the highest term among the
// running nodes' views, or 0.
func (c *Cluster) Leader(ctx context.Context, shardID uint64) uint64 {
	var best, term uint64
	for _, id := range c.IDs() {
		e := c.Engine(id)
		if e == nil {
			continue
		}
		st, err := e.Status(ctx, shardID)
		if err != nil {
			continue
		}
		if st.State == "StateLeader" && st.Term >= term {
			best, term = id, st.Term
		}
	}
	return best
}

// WaitFor ticks (unless a clock runs) and checks cond until it holds or ctx
// ends.
func (c *Cluster) WaitFor(ctx context.Context, what string, cond func() bool) error {
	ticker := time.NewTicker(2 * time.Millisecond)
	defer ticker.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-ticker.C:
			if c.clockStop == nil {
				c.Tick()
			}
		}
	}
}

// Leaders returns, for every shard some running node leads, the leader
// with the highest term.
func (c *Cluster) Leaders(ctx context.Context) map[uint64]uint64 {
	var es []*engine.Engine
	for _, id := range c.IDs() {
		if e := c.Engine(id); e != nil {
			es = append(es, e)
		}
	}
	return LeadersOf(ctx, es)
}

// LeadersOf returns, for every shard one of the engines leads, the node ID
// of the engine that leads it with the highest term (engines of one
// process: the test cluster's, the bench harness's).
func LeadersOf(ctx context.Context, engines []*engine.Engine) map[uint64]uint64 {
	type lt struct{ leader, term uint64 }
	best := map[uint64]lt{}
	for _, e := range engines {
		sts, err := e.Statuses(ctx)
		if err != nil {
			continue
		}
		for _, st := range sts {
			if st.State == "StateLeader" && st.Term >= best[st.ShardID].term {
				best[st.ShardID] = lt{e.NodeID(), st.Term}
			}
		}
	}
	out := make(map[uint64]uint64, len(best))
	for s, b := range best {
		out[s] = b.leader
	}
	return out
}

// EachStatus calls fn with the status of every replica of every running
// node.
func (c *Cluster) EachStatus(ctx context.Context, fn func(node uint64, st engine.ShardStatus)) {
	for _, id := range c.IDs() {
		e := c.Engine(id)
		if e == nil {
			continue
		}
		sts, err := e.Statuses(ctx)
		if err != nil {
			continue
		}
		for _, st := range sts {
			fn(id, st)
		}
	}
}

// WaitLeaders waits until every shard of ids has a leader at once.
func (c *Cluster) WaitLeaders(ctx context.Context, ids []uint64) error {
	return c.WaitFor(ctx, "leaders", func() bool {
		leaders := c.Leaders(ctx)
		for _, id := range ids {
			if leaders[id] == 0 {
				return false
			}
		}
		return true
	})
}

// Propose sends cmd to shardID's leader, following NotLeader hints and
// retrying dropped proposals, and those whose outcome is unknown, until ctx
// ends: cmd must be idempotent (the tests' puts are), as it may apply more
// than once.
func (c *Cluster) Propose(ctx context.Context, shardID uint64, cmd []byte) ([]byte, error) {
	var leader uint64
	for {
		if leader == 0 {
			leader = c.Leader(ctx, shardID)
		}
		if e := c.Engine(leader); leader != 0 && e != nil {
			res, err := e.Propose(ctx, shardID, cmd)
			var nl *engine.NotLeaderError
			switch {
			case err == nil:
				return res, nil
			case errors.As(err, &nl):
				leader = nl.Leader
				continue
			case errors.Is(err, engine.ErrProposalDropped), errors.Is(err, engine.ErrAmbiguous):
				leader = 0
			default:
				return nil, err
			}
		} else {
			leader = 0
		}
		select { // back off a millisecond before asking again
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
			if c.clockStop == nil {
				c.Tick()
			}
		}
	}
}
