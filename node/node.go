package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
	"github.com/flotilla-db/flotilla/transport"
	"google.golang.org/grpc"
)

// Peer is one node of a cluster with static membership.
type Peer struct {
	NodeID     uint64
	RaftAddr   string // the node's raft transport address
	ClientAddr string // the node's client service address
}

// Config configures a Node. Start copies it.
type Config struct {
	NodeID    uint64
	ClusterID uint64
	// DataDir holds the node's store.
	DataDir string
	// RaftAddr and ClientAddr are the listen addresses of the raft transport
	// and of the client service ("127.0.0.1:0" picks a free port).
	RaftAddr   string
	ClientAddr string
	// Peers lists every node of the cluster, this one included: static
	// membership (gossip discovery replaces it in cmd/flotilla later).
	Peers []Peer
	// InitialShards is the number of shards the hash space is split into
	// when the cluster is bootstrapped; default 64.
	InitialShards int
	// Replication is the number of replicas of each initial shard (at most
	// the number of peers); default 3.
	Replication int
	// HTTPAddr, if set, is the listen address of the metrics, health and
	// pprof endpoint ("127.0.0.1:0" picks a free port).
	HTTPAddr string
	// Engine, if set, adjusts the engine's config.
	Engine func(*engine.Config)
	// TLS, if set, secures the raft transport (see transport.LoadMutualTLS).
	TLS *tls.Config
	// SnapshotRate limits this node's outgoing snapshots together, in
	// bytes a second (replicas moved, repaired or caught up); 0: no limit.
	SnapshotRate int64
	// RaftListener and ClientListener, if set, are used instead of
	// listening on RaftAddr and ClientAddr.
	RaftListener, ClientListener net.Listener
	// Logger; default slog.Default().
	Logger *slog.Logger
	// ProgressInterval is how often the node logs, from its start until
	// every shard it hosts has a leader, how many have one and how fast
	// they get one; 0: DefaultProgressInterval, negative: never.
	ProgressInterval time.Duration
	// BootstrapBatch is how many initial shards a bootstrap creates per
	// engine call, with one synced write per engine worker each; default
	// DefaultBootstrapBatch. 1 creates them one by one, a synced write
	// each (the baseline of the cluster-start benchmark).
	BootstrapBatch int
	// NoLeaderHandBack leaves the leaders where the elections of the start
	// put them; by default, once every shard it hosts is led, the node
	// hands the leaderships it holds to their designated nodes (the voter
	// shardID mod voters), so that leaders start balanced.
	NoLeaderHandBack bool
}

// Validate checks c without changing it.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == 0 || c.ClusterID == 0 {
		errs = append(errs, errors.New("NodeID and ClusterID are required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("DataDir is required"))
	}
	seen := map[uint64]bool{}
	self := false
	for _, p := range c.Peers {
		if p.NodeID == 0 || seen[p.NodeID] {
			errs = append(errs, fmt.Errorf("peer node ID %d is zero or repeated", p.NodeID))
		}
		seen[p.NodeID] = true
		self = self || p.NodeID == c.NodeID
	}
	if !self && len(c.Peers) > 0 {
		errs = append(errs, fmt.Errorf("node %d is not among the peers", c.NodeID))
	}
	if c.InitialShards < 0 || c.Replication < 0 || c.BootstrapBatch < 0 {
		errs = append(errs, errors.New("InitialShards, Replication and BootstrapBatch must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: invalid config: %w", err)
	}
	return nil
}

// Node is one Flotilla node assembled: engine, raft transport, router and
// client service. Its methods are safe for concurrent use.
type Node struct {
	cfg       Config
	Engine    *engine.Engine
	Router    *router.Router
	transport *transport.Transport
	service   *ClientService
	server    *grpc.Server
	clientLis net.Listener
	cancel    context.CancelFunc
	served    chan struct{}
	peers     map[uint64]Peer
	stopHTTP  func() error
	httpAddr  string
	admin     *adminService
	// progressed is closed when the start's progress log and leader
	// hand-back (afterStart) have ended.
	progressed chan struct{}
	// created is set once the node has created the replicas it starts with
	// (its part of a bootstrap), for the progress log.
	created atomic.Bool
	// cl is the gossip-discovered cluster state; nil with static Peers.
	cl *clusterState
	// leaderGrace is how long a shard may be without a leader before a
	// node that was ready says it is not (Ready): two election timeouts.
	leaderGrace time.Duration
	ready       readiness
}

// readiness is what Ready remembers between calls: whether the node has
// been ready, and since when each shard it saw without a leader is.
type readiness struct {
	mu         sync.Mutex
	was        bool
	leaderless map[uint64]time.Time
}

// Start opens the node's store, starts its transport and client service
// and bootstraps the initial shards it hosts (a restart finds them).
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if len(cfg.Peers) == 0 {
		return nil, fmt.Errorf("node: invalid config: Peers is required (or use StartCluster)")
	}
	return start(ctx, cfg, nil)
}

func start(ctx context.Context, cfg Config, cl *clusterState) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.InitialShards == 0 {
		cfg.InitialShards = 64
	}
	if cfg.Replication == 0 {
		cfg.Replication = 3
	}
	cfg.Replication = min(cfg.Replication, len(cfg.Peers))
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BootstrapBatch == 0 {
		cfg.BootstrapBatch = DefaultBootstrapBatch
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	n := &Node{cfg: cfg, peers: map[uint64]Peer{}, served: make(chan struct{}), progressed: make(chan struct{}), cl: cl}
	for _, p := range cfg.Peers {
		n.peers[p.NodeID] = p
	}
	tcfg := transport.DefaultConfig()
	tcfg.NodeID, tcfg.ClusterID, tcfg.ListenAddr, tcfg.Logger = cfg.NodeID, cfg.ClusterID, cfg.RaftAddr, cfg.Logger
	tcfg.Listener, tcfg.TLS, tcfg.SnapshotRateBytesPerSec = cfg.RaftListener, cfg.TLS, cfg.SnapshotRate
	tcfg.Resolver = func(id uint64) (string, error) {
		if p, ok := n.peer(id); ok && p.RaftAddr != "" {
			return p.RaftAddr, nil
		}
		return "", engine.ErrUnknownPeer
	}
	if cl != nil {
		tcfg.IsRemoved = cl.isRemoved
	}
	t, err := transport.New(tcfg)
	if err != nil {
		return nil, err
	}
	n.transport = t
	ecfg := engine.DefaultConfig(cfg.ClusterID, cfg.NodeID, cfg.DataDir)
	ecfg.Logger = cfg.Logger
	// The meta shard is the control plane: a worker of its own, its
	// messages ahead of the raft traffic of the user shards.
	ecfg.PriorityShards = []uint64{MetaShardID}
	if cfg.Engine != nil {
		cfg.Engine(&ecfg)
	}
	n.leaderGrace = 2 * time.Duration(ecfg.ElectionTicks) * ecfg.TickInterval
	if n.Engine, err = engine.New(ecfg, t); err != nil {
		_ = t.Close()
		return nil, err
	}
	if cl != nil {
		if err := cl.attach(n, ecfg.MaxProposalBytes); err != nil {
			n.Engine.Close()
			return nil, err
		}
	}
	rcfg := router.DefaultConfig()
	rcfg.Rule = ecfg.PartitionRule
	if n.Router, err = router.New(rcfg); err != nil {
		n.Engine.Close()
		return nil, err
	}
	if cl == nil {
		if err := n.bootstrap(ctx); err != nil {
			n.Engine.Close()
			return nil, err
		}
		n.created.Store(true)
	}
	if n.service, err = NewClientService(DefaultClientServiceConfig(), n.Engine, n.Router, n.clientAddr); err != nil {
		n.Engine.Close()
		return nil, err
	}
	if cl != nil {
		// A key a split moved: the router polls the meta shard at once.
		n.service.OnStaleRoute(cl.syncMeta)
	}
	if n.clientLis = cfg.ClientListener; n.clientLis == nil {
		if n.clientLis, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
			n.Engine.Close()
			return nil, fmt.Errorf("node: client address: %w", err)
		}
	}
	n.server = grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	n.service.Register(n.server)
	n.admin = newAdminService(n)
	nodepb.RegisterAdminServer(n.server, n.admin)
	var fctx context.Context
	fctx, n.cancel = context.WithCancel(context.Background())
	if err := n.service.StartLeaderFeed(fctx); err != nil {
		n.cancel()
		n.clientLis.Close()
		n.Engine.Close()
		return nil, err
	}
	go func() {
		defer close(n.served)
		_ = n.server.Serve(n.clientLis)
	}()
	go func() {
		defer close(n.progressed)
		n.afterStart(fctx)
	}()
	if cfg.HTTPAddr != "" {
		if n.stopHTTP, n.httpAddr, err = n.StartHTTP(cfg.HTTPAddr); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// HTTPAddr returns the address of the metrics, health and pprof endpoint,
// "" when it is off.
func (n *Node) HTTPAddr() string { return n.httpAddr }

// clientAddr maps a node to its client address (for NotLeader hints).
func (n *Node) clientAddr(id uint64) string {
	if id == n.cfg.NodeID && n.cl != nil && n.cl.clientAddr != "" {
		return n.cl.clientAddr
	}
	if id == n.cfg.NodeID && n.clientLis != nil {
		return n.clientLis.Addr().String()
	}
	p, _ := n.peer(id)
	return p.ClientAddr
}

// peer returns what this node knows of node id's addresses: the static
// peers, or gossip and the meta shard.
func (n *Node) peer(id uint64) (Peer, bool) {
	if n.cl != nil {
		return n.cl.peer(id)
	}
	p, ok := n.peers[id]
	return p, ok
}

// NodeID returns the node's ID.
func (n *Node) NodeID() uint64 { return n.cfg.NodeID }

// ClusterID returns the node's cluster ID.
func (n *Node) ClusterID() uint64 { return n.cfg.ClusterID }

// ClientAddr returns the address the client service listens on.
func (n *Node) ClientAddr() string { return n.clientLis.Addr().String() }

// RaftAddr returns the address the raft transport listens on.
func (n *Node) RaftAddr() string { return n.transport.Addr().String() }

// bootstrap creates this node's replicas of the initial shards (existing
// ones are kept: a restart resumes) and sets the router's ring.
func (n *Node) bootstrap(ctx context.Context) error {
	ring, err := nodemeta.InitialRing(n.cfg.InitialShards)
	if err != nil {
		return err
	}
	if err := n.Router.SetRing(ring); err != nil {
		return err
	}
	var ids []uint64
	for id := range n.peers {
		ids = append(ids, id)
	}
	var specs []engine.ShardSpec
	for i, rg := range ring.Ranges() {
		voters := nodemeta.Placement(ids, i, n.cfg.Replication)
		if err := n.Router.SetReplicas(rg.ShardID, voters); err != nil {
			return err
		}
		if !slices.Contains(voters, n.cfg.NodeID) {
			continue
		}
		desc := storage.Descriptor{ShardID: rg.ShardID, Start: rg.Start, Last: rg.Last, Generation: ring.Generation()}
		specs = append(specs, engine.ShardSpec{Desc: desc, Voters: voters})
	}
	return createShards(ctx, n.Engine, specs, n.cfg.BootstrapBatch)
}

// DefaultBootstrapBatch is how many shards a bootstrap creates per engine
// call (one synced write per worker each): few fsyncs, and no worker busy
// creating for long while the shards already created elect.
const DefaultBootstrapBatch = 1000

// createShards creates this node's replicas of specs, those that exist
// already kept (a restart resumes a bootstrap), batch at a time.
func createShards(ctx context.Context, e *engine.Engine, specs []engine.ShardSpec, batch int) error {
	for chunk := range slices.Chunk(specs, batch) {
		errs, err := e.CreateShards(ctx, chunk)
		if err != nil {
			return fmt.Errorf("node: bootstrap shards: %w", err)
		}
		for i, err := range errs {
			if err != nil && !errors.Is(err, engine.ErrShardExists) {
				return fmt.Errorf("node: bootstrap shard %d: %w", chunk[i].Desc.ShardID, err)
			}
		}
	}
	return nil
}

// WaitReady waits until the node is ready (see Ready).
func (n *Node) WaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := n.Ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %d: waiting until ready: %w (%v)", n.cfg.NodeID, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Ready returns nil when every shard this node hosts has a leader and, in a
// gossip-discovered cluster, the node holds an initialized copy of the meta
// shard and the ring it describes; else an error that says what it waits
// for: the meta shard, or a leader for how many of its shards (a few of
// them named).
//
// Once the node has been ready, a shard without a leader counts only after
// leaderGrace (two election timeouts) without one, as seen by successive
// calls: a leadership transfer (the hand-back after a start, the placement
// driver's moves) or an election after a node's loss leaves a shard
// leaderless for a moment, and a readiness probe that failed for each of
// them would take a serving node out of its load balancer's rotation. A
// starting node is ready only when every shard is led.
func (n *Node) Ready(ctx context.Context) error {
	// Most probes find every shard led: the engine's counters say so
	// without a status of every replica (probes come every few seconds).
	if s := n.Engine.Stats(); s.Shards > 0 && s.ShardsLed >= uint64(s.Shards) {
		metaReady := n.cl == nil
		if !metaReady {
			st, err := n.Engine.Status(ctx, MetaShardID)
			metaReady = err == nil && st.Initialized && n.Router.Ring() != nil
		}
		if metaReady {
			err := n.Engine.Healthy(ctx) // not a closed or stuck engine's counters
			if err == nil {
				n.ready.mu.Lock()
				n.ready.was, n.ready.leaderless = true, nil
				n.ready.mu.Unlock()
			}
			return err
		}
	}
	sts, err := n.Engine.Statuses(ctx)
	if err != nil {
		return err
	}
	var leaderless []uint64
	metaReady := n.cl == nil
	for _, st := range sts {
		if st.Leader == 0 {
			leaderless = append(leaderless, st.ShardID)
		}
		if st.ShardID == MetaShardID && st.Initialized {
			metaReady = true
		}
	}
	if !metaReady || (n.cl != nil && n.Router.Ring() == nil) {
		return errors.New("waiting for a local copy of the meta shard and its ring")
	}
	long, was := n.leaderlessLong(leaderless, time.Now())
	if len(long) > 0 {
		if was {
			return fmt.Errorf("%s of %s shards without a leader for more than %v (%s led), e.g. %s",
				thousands(uint64(len(long))), thousands(uint64(len(sts))), n.leaderGrace, thousands(uint64(len(sts)-len(leaderless))), someShards(long, 5))
		}
		return fmt.Errorf("waiting for a leader of %s of %s shards (%s led), e.g. %s",
			thousands(uint64(len(leaderless))), thousands(uint64(len(sts))), thousands(uint64(len(sts)-len(leaderless))), someShards(leaderless, 5))
	}
	n.ready.mu.Lock()
	n.ready.was = true
	n.ready.mu.Unlock()
	return nil
}

// leaderlessLong records the shards seen without a leader now and returns
// those that count against readiness: all of them while the node has never
// been ready (was false), else those seen leaderless for more than
// leaderGrace.
func (n *Node) leaderlessLong(leaderless []uint64, now time.Time) (long []uint64, was bool) {
	n.ready.mu.Lock()
	defer n.ready.mu.Unlock()
	if !n.ready.was {
		return leaderless, false
	}
	seen := make(map[uint64]time.Time, len(leaderless))
	for _, id := range leaderless {
		since, ok := n.ready.leaderless[id]
		if !ok {
			since = now
		}
		seen[id] = since
		if now.Sub(since) > n.leaderGrace {
			long = append(long, id)
		}
	}
	n.ready.leaderless = seen
	return long, true
}

// someShards names up to k of ids, the lowest, e.g. "shards 3, 7 and 2 more".
func someShards(ids []uint64, k int) string {
	slices.Sort(ids)
	var b strings.Builder
	b.WriteString("shard")
	if len(ids) > 1 {
		b.WriteString("s")
	}
	for i, id := range ids[:min(k, len(ids))] {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %d", id)
	}
	if len(ids) > k {
		fmt.Fprintf(&b, " and %s more", thousands(uint64(len(ids)-k)))
	}
	return b.String()
}

// Close stops the client service, then the engine and its transport.
func (n *Node) Close() error {
	if n.stopHTTP != nil {
		_ = n.stopHTTP()
	}
	stopped := make(chan struct{})
	go func() { n.server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		n.server.Stop()
	}
	<-n.served
	n.cancel()
	<-n.progressed
	n.service.Close()
	if n.cl != nil {
		n.cl.stop() // before admin.close: the reconciler writes through the admin service
	}
	n.admin.close()
	return n.Engine.Close()
}
