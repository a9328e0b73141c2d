package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/engine"
	flnode "github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/placement"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// fullCluster is a cluster of full Flotilla nodes in this process (package
// node's StartCluster: gossip discovery, the meta shard, the placement
// driver, the client and Admin services), every listener on loopback, each
// store on the real disk under dir/n<i>. The rebalance scenario drives it
// through the Go client and watches it through the Admin service, as an
// operator would.
//
// Its methods are called from one goroutine, except snapshotBytes and
// snapshotsSent, which any goroutine may call.
type fullCluster struct {
	o    *options
	v    variant // the variant run: its Driver adjusts the placement driver
	dir  string
	seed string // the gossip address of the first node, which the others join
	log  *slog.Logger
	logf *os.File // --node-log; nil: the nodes' logs are discarded

	// snapBytes counts the bytes written to staged snapshot sstables on
	// every node (snapshotFS).
	snapBytes atomic.Uint64

	nodes  []*flnode.Node
	conns  []*grpc.ClientConn
	admins []nodepb.AdminClient // of nodes, in the same order
}

// startTimeout bounds the start of the first nodes (the bootstrap of every
// shard) and of the nodes that join.
const startTimeout = 5 * time.Minute

// adminTimeout bounds one Admin request.
const adminTimeout = 10 * time.Second

// startFullCluster starts o.nodes nodes that bootstrap a cluster of shards
// shards of o.replicas replicas together, and waits until each is ready
// (its copy of the meta shard, every local shard led).
func startFullCluster(ctx context.Context, o *options, v variant, dir string, shards int) (*fullCluster, error) {
	fc, err := newFullCluster(o, v, dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := fc.add(ctx, o.nodes, func(i int, cfg *flnode.ClusterConfig) {
		cfg.BootstrapExpect, cfg.InitialShards, cfg.Replication = o.nodes, shards, o.replicas
		if i == 0 {
			cfg.GossipAddr, cfg.Join = fc.seed, nil
		}
	}); err != nil {
		fc.close()
		return nil, fmt.Errorf("bootstrap %d nodes with %d shards: %w", o.nodes, shards, err)
	}
	for _, n := range fc.nodes {
		if err := n.WaitReady(ctx); err != nil {
			fc.close()
			return nil, fmt.Errorf("node %d ready: %w", n.NodeID(), err)
		}
	}
	return fc, nil
}

// newFullCluster returns a cluster with no node yet, its logs as --node-log
// says and a free port for the seed's gossip.
func newFullCluster(o *options, v variant, dir string) (*fullCluster, error) {
	fc := &fullCluster{o: o, v: v, dir: dir, log: slog.New(slog.DiscardHandler)}
	if o.nodeLog != "" {
		f, err := os.Create(o.nodeLog)
		if err != nil {
			return nil, fmt.Errorf("--node-log: %w", err)
		}
		fc.logf, fc.log = f, slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the seed's gossip
	if err != nil {
		fc.close()
		return nil, err
	}
	fc.seed = l.Addr().String()
	l.Close()
	return fc, nil
}

// join starts n nodes that join the cluster through the seed; it returns
// once each is registered in the meta shard.
func (fc *fullCluster) join(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	return fc.add(ctx, n, nil)
}

// add starts n nodes at once (bootstrap members wait for each other),
// adjusted by adjust (i counts from 0 among them), and dials their Admin
// service.
func (fc *fullCluster) add(ctx context.Context, n int, adjust func(i int, cfg *flnode.ClusterConfig)) error {
	started := make([]*flnode.Node, n)
	var g errgroup.Group
	for i := range n {
		cfg := fc.config(len(fc.nodes) + i)
		if adjust != nil {
			adjust(i, &cfg)
		}
		if fc.v.Node != nil {
			fc.v.Node(&cfg)
		}
		g.Go(func() error {
			var err error
			started[i], err = flnode.StartCluster(ctx, cfg)
			return err
		})
	}
	err := g.Wait()
	for _, nd := range started {
		if nd == nil {
			continue
		}
		fc.nodes = append(fc.nodes, nd)
		conn, derr := grpc.NewClient(nd.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()), nodepb.CallOptions())
		if derr != nil {
			err = errors.Join(err, derr)
			continue
		}
		fc.conns = append(fc.conns, conn)
		fc.admins = append(fc.admins, nodepb.NewAdminClient(conn))
	}
	return err
}

// moveHistory is how many finished operations the placement drivers keep
// (placement.DriverConfig.History): every one of a run, for the time per
// move.
const moveHistory = 1 << 16

// config returns the configuration of the i-th node (from 0): a joiner of
// the seed with the placement driver on, as the flags say.
func (fc *fullCluster) config(i int) flnode.ClusterConfig {
	o := fc.o
	return flnode.ClusterConfig{
		DataDir:  filepath.Join(fc.dir, fmt.Sprintf("n%d", i+1)),
		RaftAddr: "127.0.0.1:0", ClientAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		Join:            []string{fc.seed},
		BootstrapStable: 200 * time.Millisecond,
		Logger:          fc.log,
		Engine: func(c *engine.Config) {
			c.TickInterval = o.tick
			if o.workers > 0 {
				c.Workers = o.workers
			}
			c.FS = snapshotFS{FS: c.FS, n: &fc.snapBytes}
			if o.hooks.engine != nil {
				o.hooks.engine(c)
			}
		},
		Placement: func(dc *placement.DriverConfig) {
			o.placementConfig(dc)
			if fc.v.Driver != nil {
				fc.v.Driver(dc)
			}
		},
	}
}

// placementConfig applies the --placement-* flags to dc.
func (o *options) placementConfig(dc *placement.DriverConfig) {
	dc.MovesPerMinute, dc.MaxConcurrentOps = o.movesPerMinute, o.placementOps
	dc.Placement.MaxSnapshotsPerNode, dc.MaxSnapshotsPerNode = o.snapshotsPerNode, o.snapshotsPerNode
	dc.History = moveHistory
}

func (fc *fullCluster) clientAddrs() []string {
	out := make([]string, len(fc.nodes))
	for i, n := range fc.nodes {
		out[i] = n.ClientAddr()
	}
	return out
}

// close stops every node and closes the node log.
func (fc *fullCluster) close() {
	fc.stopNodes()
	if fc.logf != nil {
		fc.logf.Close()
	}
}

// stopNodes stops every node (at once: each takes a moment to leave gossip
// and drain its gRPC server) and the Admin connections; their data
// directories stay, for a restart (add).
func (fc *fullCluster) stopNodes() {
	for _, c := range fc.conns {
		c.Close()
	}
	var wg sync.WaitGroup
	for _, n := range fc.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Close()
		}()
	}
	wg.Wait()
	fc.nodes, fc.conns, fc.admins = nil, nil, nil
}

// snapshotsSent sums the snapshots every node sent (engine Stats).
func (fc *fullCluster) snapshotsSent() uint64 {
	var n uint64
	for _, nd := range fc.nodes {
		n += nd.Engine.Stats().SnapshotsSent
	}
	return n
}

// counts asks every node (Admin LocalShards) for the user shards it holds
// a replica of and those it leads, by its own replicas.
func (fc *fullCluster) counts(ctx context.Context) (replicas, leaders map[uint64]int, err error) {
	replicas, leaders = map[uint64]int{}, map[uint64]int{}
	// The nodes answer one after the other: a leadership that moves
	// between two answers (a transfer, an election) shows on both nodes.
	// The claim of the higher term stands; a tie (the same term cannot
	// have two leaders) keeps the first.
	type claim struct{ node, term uint64 }
	led := map[uint64]claim{}
	for _, adm := range fc.admins {
		actx, cancel := context.WithTimeout(ctx, adminTimeout)
		resp, err := adm.LocalShards(actx, &nodepb.LocalShardsRequest{})
		cancel()
		if err != nil {
			return nil, nil, fmt.Errorf("local shards: %w", err)
		}
		self := resp.GetNodeId()
		replicas[self], leaders[self] = 0, 0
		for _, s := range resp.GetShards() {
			if s.GetSystem() {
				continue
			}
			replicas[self]++
			if c, ok := led[s.GetShardId()]; s.GetLeader() == self && (!ok || s.GetTerm() > c.term) {
				led[s.GetShardId()] = claim{self, s.GetTerm()}
			}
		}
	}
	for _, c := range led {
		leaders[c.node]++
	}
	return replicas, leaders, nil
}

// placement makes an Admin Placement request (forwarded to the meta
// shard's leader, whose driver answers) and decodes the answer's JSON part
// that get picks into out; it returns the node that answered.
func (fc *fullCluster) placement(ctx context.Context, act nodepb.PlacementAction, get func(*nodepb.PlacementResponse) []byte, out any) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	resp, err := fc.admins[0].Placement(ctx, &nodepb.PlacementRequest{Action: act})
	if err != nil {
		return 0, fmt.Errorf("placement %v: %w", act, err)
	}
	if err := json.Unmarshal(get(resp), out); err != nil {
		return 0, fmt.Errorf("placement %v from node %d: %w", act, resp.GetNodeId(), err)
	}
	return resp.GetNodeId(), nil
}

func (fc *fullCluster) placementStats(ctx context.Context) (uint64, placement.Stats, error) {
	var st placement.Stats
	id, err := fc.placement(ctx, nodepb.PlacementAction_PLACEMENT_ACTION_STATUS, (*nodepb.PlacementResponse).GetStatsJson, &st)
	return id, st, err
}

func (fc *fullCluster) placementMoves(ctx context.Context) (uint64, []placement.Move, error) {
	var moves []placement.Move
	id, err := fc.placement(ctx, nodepb.PlacementAction_PLACEMENT_ACTION_MOVES, (*nodepb.PlacementResponse).GetMovesJson, &moves)
	return id, moves, err
}

// snapshotFS counts the bytes written to the files of a store's snapshot
// staging directory (storage: <store>/snapshots): the sstables in which a
// node receives the snapshots of the replicas it gains. The transport's
// own counter of the snapshot bytes it sent (transport.PeerStats) is not
// reachable through node.Node.
type snapshotFS struct {
	vfs.FS
	n *atomic.Uint64
}

func (fs snapshotFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || filepath.Base(filepath.Dir(name)) != "snapshots" {
		return f, err
	}
	return countingFile{File: f, n: fs.n}, nil
}

type countingFile struct {
	vfs.File
	n *atomic.Uint64
}

func (f countingFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	f.n.Add(uint64(n))
	return n, err
}
