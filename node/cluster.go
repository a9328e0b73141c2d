package node

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/flotilla-db/flotilla/node/gossip"
	"github.com/flotilla-db/flotilla/node/merger"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/node/placer"
	"github.com/flotilla-db/flotilla/node/recovery"
	"github.com/flotilla-db/flotilla/node/shardload"
	"github.com/flotilla-db/flotilla/placement"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ClusterConfig configures a node that finds its cluster by gossip
// (StartCluster): the flotilla daemon's `start`.
type ClusterConfig struct {
	// DataDir holds the node's identity file and its store (DataDir/store).
	DataDir string
	// NodeID: 0 takes the data directory's, or draws one on first start.
	NodeID uint64
	// Listen addresses ("host:port"; port 0 picks a free one). HTTPAddr ""
	// serves no metrics.
	RaftAddr, ClientAddr, GossipAddr, HTTPAddr string
	// AdvertiseHost is the host (name or IP) other nodes and clients reach
	// this node at, with the listeners' ports. Default: the listen host, or,
	// where that is unspecified (0.0.0.0), the IP gossip advertises.
	AdvertiseHost string
	// Join lists gossip addresses of nodes to join.
	Join []string
	// BootstrapExpect: when this many fresh nodes see each other, the one
	// with the lowest node ID bootstraps the cluster with them. 0: join only.
	BootstrapExpect int
	// InitialShards (default 64) and Replication (default 3) of a cluster
	// this node bootstraps.
	InitialShards, Replication int
	// GossipKey, if set, encrypts gossip (16, 24 or 32 bytes).
	GossipKey []byte
	// TLS, if set, secures the raft transport.
	TLS *tls.Config
	// BootstrapStable is how long the view of the bootstrap members must
	// hold still before the lowest node bootstraps (default 1 s).
	BootstrapStable time.Duration
	// Engine, if set, adjusts the engine's config.
	Engine func(*engine.Config)
	// Gossip, if set, adjusts the gossip config (tests shorten timers).
	Gossip func(*gossip.Config)
	// Placement, if set, adjusts the placement driver's config (its
	// defaults, with the cluster's replication factor).
	Placement func(*placement.DriverConfig)
	// ShardLoad tunes the measure of the load of the shards this node
	// leads (window and sampling interval), which the placement driver's
	// split and merge duties read; zero fields: package shardload's
	// defaults.
	ShardLoad shardload.Config
	// NoPlacement runs no placement driver on this node: replicas move
	// only by hand (add-replica, remove-replica).
	NoPlacement bool
	// Reconciler, if set, adjusts the config of the reconciler that keeps
	// the shard records of the shards this node leads current (tests
	// shorten its interval).
	Reconciler func(*nodemeta.ReconcilerConfig)
	// Merger, if set, adjusts the config of the merges this node runs and
	// of its recovery of merges left unfinished (tests shorten its
	// timeouts and inject faults).
	Merger func(*merger.Config)
	Logger *slog.Logger
	// ProgressInterval, BootstrapBatch and NoLeaderHandBack: see Config.
	ProgressInterval time.Duration
	// SnapshotRate limits this node's outgoing snapshots, in bytes a
	// second (Config.SnapshotRate); 0: no limit.
	SnapshotRate     int64
	BootstrapBatch   int
	NoLeaderHandBack bool
	// EveryPass makes the stale-replica loop pass over every replica here
	// every time, instead of skipping its passes while nothing it reads
	// has moved, and merge recovery look every 5 s rather than four times
	// per FrozenTimeout (staleReplicaLoop): the nodes before, for
	// benchmarks.
	EveryPass bool
	// ForceNewCluster, if set, recovers the node from the loss of a
	// majority before it starts (recover.go); Join and BootstrapExpect
	// may then both be empty.
	ForceNewCluster *ForceNewCluster
}

// clusterState is what a gossip-discovered node knows of its cluster: the
// gossip view, the meta shard's records (through one nodemeta.Store; the
// node records of the local copy are kept here), and the background loops
// that keep the router and the meta shard current.
type clusterState struct {
	cfg ClusterConfig
	id  Identity
	// raftAddr and clientAddr are the addresses this node advertises.
	raftAddr, clientAddr string
	g                    *gossip.Gossip
	log                  *slog.Logger
	// n and store are set by attach, before the node serves.
	n     *Node
	store *nodemeta.Store
	// recordsDone is closed once the local copy of the meta shard holds
	// the bootstrap records (writeBootstrapRecords), or at once on a node
	// that writes none: the placement driver waits for it.
	recordsDone chan struct{}
	// rec writes the shard records of the shards this node leads; set once
	// the loops start, closed by stop.
	rec    *nodemeta.Reconciler
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// placer runs the placement driver; set once the cluster record is
	// readable (nil before, and with NoPlacement).
	placer atomic.Pointer[placer.Placer]
	// loads measures the shards this node leads (shard_loads.go); set once
	// the loops start.
	loads atomic.Pointer[shardload.Tracker]

	// syncMu serializes syncMeta, which owns watcher.
	syncMu  sync.Mutex
	watcher *nodemeta.Watcher

	mu struct {
		sync.Mutex
		records map[uint64]NodeRecord // the local copy's node records
		dead    map[uint64]bool       // the nodes gossip declared dead, told to the engine
	}
	changed chan struct{}
}

// attach gives the cluster state its node, and the node the meta shard's
// records: a store on its engine with the engine's proposal size limit.
// start calls it before the node serves any request.
func (cs *clusterState) attach(n *Node, maxProposalBytes int) error {
	s, err := nodemeta.New(n.Engine, nodemeta.Config{MaxProposalBytes: maxProposalBytes})
	if err != nil {
		return err
	}
	cs.n, cs.store, cs.watcher = n, s, nodemeta.NewWatcher(s)
	return nil
}

// peer returns node id's addresses: its meta record, else what gossip says
// (a node that is joining is not in the meta shard yet).
func (cs *clusterState) peer(id uint64) (Peer, bool) {
	cs.mu.Lock()
	rec, ok := cs.mu.records[id]
	cs.mu.Unlock()
	if m, found := cs.member(id, rec.Instance); found && m.Meta.RaftAddr != "" {
		return Peer{NodeID: id, RaftAddr: m.Meta.RaftAddr, ClientAddr: m.Meta.ClientAddr}, true
	}
	if ok {
		return Peer{NodeID: id, RaftAddr: rec.RaftAddr, ClientAddr: rec.ClientAddr}, true
	}
	return Peer{}, false
}

// member returns the gossip member with node ID id, preferring the one with
// the given instance (0: any) and live ones.
func (cs *clusterState) member(id, instance uint64) (gossip.Member, bool) {
	var best gossip.Member
	found := false
	for _, m := range cs.g.Members() {
		if m.Meta.NodeID != id || (instance != 0 && m.Meta.Instance != instance) {
			continue
		}
		if !found || (best.State != gossip.Alive && m.State == gossip.Alive) {
			best, found = m, true
		}
	}
	return best, found
}

func (cs *clusterState) isRemoved(id uint64) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.mu.records[id].Removed
}

func (cs *clusterState) records() []NodeRecord {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]NodeRecord, 0, len(cs.mu.records))
	for _, r := range cs.mu.records {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b NodeRecord) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return out
}

func (cs *clusterState) stop() {
	if cs.cancel != nil {
		cs.cancel()
	}
	cs.wg.Wait()
	if cs.rec != nil {
		_ = cs.rec.Close()
	}
	_ = cs.g.Leave(2 * time.Second)
	_ = cs.g.Close()
}

// Gossip returns the node's gossip layer (nil with static peers).
func (n *Node) Gossip() *gossip.Gossip {
	if n.cl == nil {
		return nil
	}
	return n.cl.g
}

// GossipAddr returns the gossip address ("" with static peers).
func (n *Node) GossipAddr() string {
	if n.cl == nil {
		return ""
	}
	return n.cl.g.LocalAddr()
}

// StartCluster starts a node that finds its cluster by gossip. A fresh node
// either joins the cluster its --join seeds belong to, or, with
// BootstrapExpect, waits until that many fresh nodes see each other; the one
// with the lowest node ID then bootstraps the cluster (a random cluster ID,
// the meta shard and the initial shards placed evenly over the bootstrap
// members) and the others follow its lead. A node whose data directory
// already belongs to a cluster resumes. It returns once the node is
// registered in the meta shard; a node ID held by another data directory
// (ErrDuplicateNodeID), removed from the cluster (ErrNodeRemoved), or a data
// directory of another cluster (ErrWrongCluster) is refused.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Node, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: invalid config: DataDir is required")
	}
	if cfg.BootstrapExpect < 0 || cfg.InitialShards < 0 || cfg.Replication < 0 || cfg.BootstrapBatch < 0 {
		return nil, errors.New("node: invalid config: BootstrapExpect, InitialShards, Replication and BootstrapBatch must not be negative")
	}
	if cfg.InitialShards == 0 {
		cfg.InitialShards = 64
	}
	if cfg.Replication == 0 {
		cfg.Replication = 3
	}
	if cfg.BootstrapStable == 0 {
		cfg.BootstrapStable = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BootstrapExpect == 0 && len(cfg.Join) == 0 && cfg.ForceNewCluster == nil && !peekIdentity(cfg.DataDir).isBootstrapOnly() {
		return nil, errors.New("node: invalid config: give --join seeds, --bootstrap-expect, or both (only a data directory prepared by flotilla restore, or started with --force-new-cluster, starts without)")
	}
	id, err := loadIdentity(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", id.NodeID)
	cs := &clusterState{cfg: cfg, id: id, log: log, changed: make(chan struct{}, 1)}
	cs.mu.records = map[uint64]NodeRecord{}
	cs.mu.dead = map[uint64]bool{}
	var recovered *recovery.Report
	if cfg.ForceNewCluster != nil {
		rep, err := cs.forceNewCluster(ctx, cfg.ForceNewCluster)
		if err != nil {
			return nil, err
		}
		recovered = &rep
	}
	gcfg := gossip.Config{
		BindAddr:  cfg.GossipAddr,
		SecretKey: cfg.GossipKey,
		Meta: gossip.Meta{
			NodeID: id.NodeID, ClusterID: id.ClusterID, Instance: id.Instance,
			BootstrapExpect: cfg.BootstrapExpect, InitialShards: cfg.InitialShards, Replication: cfg.Replication,
		},
		Logger:   cfg.Logger,
		OnChange: cs.notifyChange,
	}
	var leaders leaderSink
	gcfg.OnLeaders = leaders.deliver
	if cfg.Gossip != nil {
		cfg.Gossip(&gcfg)
	}
	if cs.g, err = gossip.New(gcfg); err != nil {
		return nil, err
	}
	fail := func(err error) (*Node, error) {
		_ = cs.g.Close()
		return nil, err
	}
	if err := cs.joinGossip(ctx); err != nil {
		return fail(err)
	}
	cr, member, err := cs.discover(ctx)
	if err != nil {
		return fail(err)
	}
	if cs.id.ClusterID == 0 {
		cs.id.ClusterID = cr.ClusterID
		if member {
			cs.id.Cluster = &cr
		}
		if err := saveIdentity(cfg.DataDir, cs.id); err != nil {
			return fail(err)
		}
	} else if cs.id.Cluster != nil {
		cr, member = *cs.id.Cluster, true // a bootstrap member resuming
	}
	// Bind the listeners first, so that gossip advertises real addresses.
	raftLis, err := net.Listen("tcp", orDefault(cfg.RaftAddr, "127.0.0.1:0"))
	if err != nil {
		return fail(fmt.Errorf("node: raft address: %w", err))
	}
	clientLis, err := net.Listen("tcp", orDefault(cfg.ClientAddr, "127.0.0.1:0"))
	if err != nil {
		raftLis.Close()
		return fail(fmt.Errorf("node: client address: %w", err))
	}
	host := cfg.AdvertiseHost
	if host == "" {
		host, _, _ = net.SplitHostPort(cs.g.LocalAddr())
	}
	cs.raftAddr = advertised(raftLis.Addr(), host, cfg.AdvertiseHost != "")
	cs.clientAddr = advertised(clientLis.Addr(), host, cfg.AdvertiseHost != "")
	n, err := start(ctx, Config{
		NodeID: id.NodeID, ClusterID: cs.id.ClusterID,
		DataDir:        StoreDir(cfg.DataDir),
		RaftListener:   raftLis,
		ClientListener: clientLis,
		HTTPAddr:       cfg.HTTPAddr,
		InitialShards:  cfg.InitialShards, Replication: cfg.Replication,
		Engine: cfg.Engine, Logger: log, TLS: cfg.TLS, ProgressInterval: cfg.ProgressInterval, SnapshotRate: cfg.SnapshotRate,
		BootstrapBatch: cfg.BootstrapBatch, NoLeaderHandBack: cfg.NoLeaderHandBack,
	}, cs)
	if err != nil {
		raftLis.Close()
		clientLis.Close()
		if errors.Is(err, storage.ErrIdentMismatch) {
			err = fmt.Errorf("%w: %s/store: %v", ErrWrongCluster, cfg.DataDir, err)
		}
		return fail(err)
	}
	leaders.set(n.Router)
	m := cs.g.Meta()
	m.RaftAddr, m.ClientAddr, m.HTTPAddr = cs.raftAddr, cs.clientAddr, advertisedString(n.HTTPAddr(), host, cfg.AdvertiseHost != "")
	if err := cs.g.SetMeta(m); err != nil {
		n.Close()
		return nil, err
	}
	if member && !cs.id.Bootstrapped {
		if err := cs.createInitialReplicas(ctx, cr); err != nil {
			n.Close()
			return nil, err
		}
	}
	n.created.Store(true)
	if err := cs.startReconciler(); err != nil {
		n.Close()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	cs.cancel = cancel
	cs.syncMeta() // what the local copy of the meta shard holds already
	descs := n.Engine.WatchDescriptors()
	cs.wg.Add(4)
	go cs.metaLoop(lctx)
	go cs.leaderLoop(lctx)
	go cs.loadLoop(lctx)
	go cs.reportLoop(lctx, descs)
	cs.wg.Add(1)
	go cs.staleReplicaLoop(lctx)
	if lt, err := shardload.New(cfg.ShardLoad, loadEngine{n.Engine}); err == nil {
		cs.loads.Store(lt)
		cs.wg.Add(1)
		go cs.shardLoadLoop(lctx, lt, lt.Interval())
	} else {
		cs.log.Error("shard loads not measured: the placement driver splits and merges nothing on its own", "err", err)
	}
	cs.recordsDone = make(chan struct{})
	if member && !cs.id.RecordsWritten {
		cs.wg.Add(1)
		go cs.writeBootstrapRecords(lctx, cr)
	} else {
		close(cs.recordsDone)
	}
	if !cfg.NoPlacement {
		cs.wg.Add(1)
		go cs.placementLoop(lctx)
	}
	if err := cs.register(ctx); err != nil {
		n.Close()
		return nil, err
	}
	if recovered != nil && recovered.MetaKept && len(recovered.Gone) > 0 {
		if err := cs.removeGone(ctx, recovered.Gone); err != nil {
			n.Close()
			return nil, err
		}
	}
	log.Info("node started", "cluster", fmt.Sprintf("%016x", cs.id.ClusterID), "raft", cs.raftAddr,
		"client", cs.clientAddr, "gossip", cs.g.LocalAddr(), "http", n.HTTPAddr())
	return n, nil
}

// advertised returns the address others reach a listener at: host with the
// listener's port when force is set or the listener's host is unspecified.
func advertised(lis net.Addr, host string, force bool) string {
	h, port, err := net.SplitHostPort(lis.String())
	if err != nil {
		return lis.String()
	}
	if ip := net.ParseIP(h); force || (ip != nil && ip.IsUnspecified()) {
		h = host
	}
	return net.JoinHostPort(h, port)
}

func advertisedString(addr, host string, force bool) string {
	if addr == "" {
		return ""
	}
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return addr
	}
	return advertised(a, host, force)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func (cs *clusterState) notifyChange() {
	select {
	case cs.changed <- struct{}{}:
	default:
	}
}

// discover finds the cluster this node belongs to. It returns the cluster's
// bootstrap parameters as its bootstrapper advertises them (ClusterID only,
// for a node that resumes or joins a running cluster), and whether this node
// is a bootstrap member.
func (cs *clusterState) discover(ctx context.Context) (ClusterRecord, bool, error) {
	self := cs.g.Meta()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var stableSince time.Time
	var lastView []uint64
	for {
		if slices.Contains(cs.g.Conflicts(), self.NodeID) {
			return ClusterRecord{}, false, fmt.Errorf("%w: node %d already runs with another data directory; pick another --node-id or none", ErrDuplicateNodeID, self.NodeID)
		}
		var fresh []uint64
		for _, m := range cs.g.Members() {
			if m.State != gossip.Alive {
				continue
			}
			mm := m.Meta
			if mm.NodeID == self.NodeID && mm.Instance != self.Instance {
				return ClusterRecord{}, false, fmt.Errorf("%w: node %d runs at %s (another data directory); pick another --node-id or none", ErrDuplicateNodeID, mm.NodeID, m.Addr)
			}
			if mm.ClusterID != 0 && cs.id.ClusterID != 0 && mm.ClusterID != cs.id.ClusterID {
				return ClusterRecord{}, false, fmt.Errorf("%w: %s belongs to cluster %016x, but node %d at %s is in cluster %016x; use that cluster's data directory or an empty one",
					ErrWrongCluster, cs.cfg.DataDir, cs.id.ClusterID, mm.NodeID, m.Addr, mm.ClusterID)
			}
			if mm.ClusterID != 0 && cs.id.ClusterID == 0 {
				cr := ClusterRecord{ClusterID: mm.ClusterID, Bootstrap: mm.Bootstrap, InitialShards: mm.InitialShards, Replication: mm.Replication}
				return cr, slices.Contains(mm.Bootstrap, self.NodeID), nil
			}
			if mm.ClusterID == 0 && mm.BootstrapExpect > 0 {
				fresh = append(fresh, mm.NodeID)
			}
		}
		if cs.id.ClusterID != 0 {
			// Resuming: a bootstrap member that has not created its
			// replicas yet recomputes the layout from its own record.
			return ClusterRecord{ClusterID: cs.id.ClusterID}, false, nil
		}
		slices.Sort(fresh)
		if !slices.Equal(fresh, lastView) {
			lastView, stableSince = fresh, time.Now()
		}
		want := cs.cfg.BootstrapExpect
		if want > 0 && len(fresh) >= want && fresh[0] == self.NodeID && time.Since(stableSince) >= cs.cfg.BootstrapStable {
			cr := ClusterRecord{
				ClusterID: randomID(), Bootstrap: slices.Clone(fresh[:want]),
				InitialShards: cs.cfg.InitialShards, Replication: cs.cfg.Replication, Created: time.Now().UTC(),
			}
			self.ClusterID, self.Bootstrap = cr.ClusterID, cr.Bootstrap
			if err := cs.g.SetMeta(self); err != nil {
				return ClusterRecord{}, false, err
			}
			cs.log.Info("bootstrapping cluster", "cluster", fmt.Sprintf("%016x", cr.ClusterID), "members", cr.Bootstrap,
				"shards", cr.InitialShards, "replication", cr.Replication)
			return cr, true, nil
		}
		select {
		case <-ctx.Done():
			if want > 0 {
				return ClusterRecord{}, false, fmt.Errorf("node: waiting for %d nodes to bootstrap (seeing %d: %v) or for a cluster to join: %w", want, len(fresh), fresh, ctx.Err())
			}
			return ClusterRecord{}, false, fmt.Errorf("node: no node of a cluster answered at %v: %w", cs.cfg.Join, ctx.Err())
		case <-t.C:
		}
	}
}

// createInitialReplicas creates this bootstrap member's replicas of the
// initial layout: the meta shard and its initial shards, each from its
// bootstrap record's Spec, so that the engine numbers the replicas as the
// record does.
func (cs *clusterState) createInitialReplicas(ctx context.Context, cr ClusterRecord) error {
	l, err := nodemeta.NewLayout(cr)
	if err != nil {
		return err
	}
	self := cs.id.NodeID
	var specs []engine.ShardSpec
	if slices.Contains(l.MetaVoters, self) || slices.Contains(l.MetaLearners, self) {
		specs = append(specs, engine.ShardSpec{Desc: MetaDescriptor(), Voters: l.MetaVoters, Learners: l.MetaLearners})
	}
	for _, rec := range l.Shards {
		if !slices.Contains(rec.NodeIDs(), self) {
			continue
		}
		spec, err := rec.Spec()
		if err != nil {
			return fmt.Errorf("node: bootstrap shard %d: %w", rec.ShardID, err)
		}
		specs = append(specs, spec)
	}
	if err := createShards(ctx, cs.n.Engine, specs, cs.n.cfg.BootstrapBatch); err != nil {
		return err
	}
	cs.id.Bootstrapped = true
	return saveIdentity(cs.cfg.DataDir, cs.id)
}

// writeBootstrapRecords writes the records of a cluster this node helped
// bootstrap: the cluster record and the initial layout's shard records
// (Store.Bootstrap). Every bootstrap member runs it; the one that leads the
// meta shard writes (records that exist are kept, so a second writer
// changes nothing), and each stops once its local copy holds the cluster
// record and at least the initial shards' records. The shards' leaders may
// have written some of those already, from their descriptors: the same
// records.
func (cs *clusterState) writeBootstrapRecords(ctx context.Context, cr ClusterRecord) {
	defer cs.wg.Done()
	defer close(cs.recordsDone)
	written := func(ctx context.Context) error {
		h, err := cs.store.Header(ctx, nodemeta.Local)
		if err != nil {
			return err
		}
		if _, err := cs.store.Cluster(ctx, nodemeta.Local); err != nil {
			return err
		}
		if h.Shards < cr.InitialShards {
			return fmt.Errorf("%d of the %d initial shards' records", h.Shards, cr.InitialShards)
		}
		return nil
	}
	err := backoff.Retry(ctx, backoff.DefaultConfig(), cs.attempt("write bootstrap records", func(ctx context.Context) error {
		if written(ctx) == nil {
			return nil
		}
		st, err := cs.n.Engine.Status(ctx, MetaShardID)
		if err != nil {
			return err
		}
		if st.Leader != cs.id.NodeID {
			return fmt.Errorf("waiting for the meta shard's leader (node %d) to write the records", st.Leader)
		}
		if err := cs.store.Bootstrap(ctx, cr); err != nil {
			return err
		}
		return written(ctx)
	}))
	if err != nil {
		return
	}
	cs.notifyChange()
	cs.id.RecordsWritten = true
	if err := saveIdentity(cs.cfg.DataDir, cs.id); err != nil {
		cs.log.Error("save identity", "err", err)
	}
}

// attemptTimeout bounds one attempt of a step the background loops retry.
const attemptTimeout = 5 * time.Second

// attempt adapts fn for backoff.Retry: each call gets attemptTimeout, and a
// failed one is logged at debug level.
func (cs *clusterState) attempt(what string, fn func(ctx context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		err := fn(actx)
		if err != nil {
			cs.log.Debug("retrying", "what", what, "err", err)
		}
		return err
	}
}

// register records this node in the meta shard through some node's Admin
// service (its own if it has a meta replica), retrying until it is done or
// refused.
func (cs *clusterState) register(ctx context.Context) error {
	n := cs.n
	req := &nodepb.JoinRequest{ClusterId: cs.id.ClusterID, Node: &nodepb.NodeRecord{
		NodeId: cs.id.NodeID, Instance: cs.id.Instance, RaftAddr: cs.raftAddr, ClientAddr: cs.clientAddr,
		GossipAddr: cs.g.LocalAddr(), HttpAddr: cs.g.Meta().HTTPAddr,
	}}
	err := backoff.Retry(ctx, backoff.DefaultConfig(), cs.attempt("register in the meta shard", func(ctx context.Context) error {
		_, err := n.admin.Join(ctx, req)
		if e := adminErrorOf(err); e != nil {
			switch e.Reason {
			case nodepb.Reason_REASON_DUPLICATE_NODE:
				return backoff.Permanent(fmt.Errorf("%w: %s", ErrDuplicateNodeID, e.Message))
			case nodepb.Reason_REASON_NODE_REMOVED:
				return backoff.Permanent(fmt.Errorf("%w: %s", ErrNodeRemoved, e.Message))
			case nodepb.Reason_REASON_WRONG_CLUSTER:
				return backoff.Permanent(fmt.Errorf("%w: %s", ErrWrongCluster, e.Message))
			}
		}
		return err
	}))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrDuplicateNodeID), errors.Is(err, ErrNodeRemoved), errors.Is(err, ErrWrongCluster):
		return err
	}
	return fmt.Errorf("node: register node %d in the meta shard: %w", cs.id.NodeID, err)
}

// dialer caches gRPC client connections to other nodes' client addresses
// (the KV and Admin services share a server, so one connection serves
// both). mu guards conns and closed; once closed, it opens no connection.
type dialer struct {
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// errDialerClosed is returned by a dialer's calls after close.
var errDialerClosed = errors.New("node: closed: no connection to other nodes")

func (d *dialer) conn(addr string) (*grpc.ClientConn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errDialerClosed
	}
	if d.conns == nil {
		d.conns = map[string]*grpc.ClientConn{}
	}
	c, ok := d.conns[addr]
	if !ok {
		var err error
		if c, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), nodepb.CallOptions()); err != nil {
			return nil, err
		}
		d.conns[addr] = c
	}
	return c, nil
}

func (d *dialer) admin(addr string) (nodepb.AdminClient, error) {
	c, err := d.conn(addr)
	if err != nil {
		return nil, err
	}
	return nodepb.NewAdminClient(c), nil
}

func (d *dialer) kv(addr string) (nodepb.KVClient, error) {
	c, err := d.conn(addr)
	if err != nil {
		return nil, err
	}
	return nodepb.NewKVClient(c), nil
}

func (d *dialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns, d.closed = nil, true
}
