package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
	"github.com/flotilla-db/flotilla/transport"
	"github.com/flotilla-db/flotilla/transport/memtransport"
	"golang.org/x/sync/errgroup"
)

// cluster is N engines in this process, each with its Pebble store on the
// real file system under dir/<node ID> (real fsyncs) and its own ticker, as
// a deployed node has. They talk over the in-process memtransport network or
// over the gRPC transport on loopback. It is internal/testcluster without
// the testing.TB, the manual clock and the crashable file system, which a
// benchmark does not want.
type cluster struct {
	cfg clusterConfig
	net *memtransport.Network // transport "mem" only
	log *slog.Logger

	mu struct {
		sync.Mutex
		nodes map[uint64]*node // guarded: each node's engine and transport
		addrs map[uint64]string
		// retired counts the messages sent by transports closed since,
		// so that messagesSent is monotonic across restarts.
		retired uint64
	}
}

type clusterConfig struct {
	Nodes        int
	Replicas     int // per shard, at most Nodes
	Dir          string
	Transport    string // "mem" or "grpc"
	TickInterval time.Duration
	Workers      int                    // 0: engine default (GOMAXPROCS)
	Engine       []func(*engine.Config) // applied in order
}

type node struct {
	id   uint64
	eng  *engine.Engine // nil while stopped
	mem  *memtransport.Endpoint
	grpc *transport.Transport
}

const clusterID = 42

func newCluster(cfg clusterConfig) (*cluster, error) {
	c := &cluster{cfg: cfg, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	c.mu.nodes = make(map[uint64]*node)
	c.mu.addrs = make(map[uint64]string)
	switch cfg.Transport {
	case "mem":
		c.net = memtransport.NewNetwork(memtransport.Config{ClusterID: clusterID, QueueLen: 1 << 16})
	case "grpc":
	default:
		return nil, fmt.Errorf("unknown transport %q (mem or grpc)", cfg.Transport)
	}
	for id := uint64(1); id <= uint64(cfg.Nodes); id++ {
		c.mu.nodes[id] = &node{id: id}
		if err := c.start(id); err != nil {
			c.close()
			return nil, fmt.Errorf("start node %d: %w", id, err)
		}
	}
	return c, nil
}

// ids returns the node IDs in order.
func (c *cluster) ids() []uint64 {
	ids := make([]uint64, 0, c.cfg.Nodes)
	for id := uint64(1); id <= uint64(c.cfg.Nodes); id++ {
		ids = append(ids, id)
	}
	return ids
}

// engine returns node id's engine, nil while it is stopped.
func (c *cluster) engine(id uint64) *engine.Engine {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.mu.nodes[id]; n != nil {
		return n.eng
	}
	return nil
}

// start opens node id's engine on its store (a restart if it ran before).
func (c *cluster) start(id uint64) error {
	c.mu.Lock()
	n := c.mu.nodes[id]
	running := n.eng != nil
	c.mu.Unlock()
	if running {
		return fmt.Errorf("node %d already running", id)
	}
	cfg := engine.DefaultConfig(clusterID, id, filepath.Join(c.cfg.Dir, fmt.Sprint(id)))
	cfg.TickInterval = c.cfg.TickInterval
	cfg.Logger = c.log
	if c.cfg.Workers > 0 {
		cfg.Workers = c.cfg.Workers
	}
	for _, f := range c.cfg.Engine {
		if f != nil {
			f(&cfg)
		}
	}
	var (
		t   engine.Transport
		mem *memtransport.Endpoint
		gt  *transport.Transport
	)
	if c.net != nil {
		mem = c.net.Endpoint(id)
		t = mem
	} else {
		tc := transport.DefaultConfig()
		tc.NodeID, tc.ClusterID, tc.Logger = id, clusterID, c.log
		c.mu.Lock()
		tc.ListenAddr = c.mu.addrs[id] // the same port on a restart
		c.mu.Unlock()
		if tc.ListenAddr == "" {
			tc.ListenAddr = "127.0.0.1:0"
		}
		tc.Resolver = c.resolve
		var err error
		if gt, err = transport.New(tc); err != nil {
			return err
		}
		c.mu.Lock()
		c.mu.addrs[id] = gt.Addr().String()
		c.mu.Unlock()
		t = gt
	}
	e, err := engine.New(cfg, t)
	if err != nil {
		_ = t.Close()
		return err
	}
	c.mu.Lock()
	n.eng, n.mem, n.grpc = e, mem, gt
	c.mu.Unlock()
	return nil
}

func (c *cluster) resolve(id uint64) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.mu.addrs[id]; ok {
		return a, nil
	}
	return "", fmt.Errorf("no node %d", id)
}

// stop closes node id's engine (and its transport), as a kill would leave
// its peers: they see it go silent. Its store stays for start.
func (c *cluster) stop(id uint64) error {
	c.mu.Lock()
	n := c.mu.nodes[id]
	e := n.eng
	c.mu.Unlock()
	if e == nil {
		return nil
	}
	// Out of the cluster first, so that no client picks it while it closes.
	c.mu.Lock()
	n.eng = nil
	c.mu.Unlock()
	err := e.Close()
	c.mu.Lock()
	c.mu.retired += n.sent()
	n.mem, n.grpc = nil, nil
	c.mu.Unlock()
	if errors.Is(err, engine.ErrClosed) {
		err = nil
	}
	return err
}

// close stops every node.
func (c *cluster) close() {
	for _, id := range c.ids() {
		if err := c.stop(id); err != nil {
			c.log.Error("close node", "node", id, "err", err)
		}
	}
	if c.net != nil {
		c.net.Close()
	}
}

// sent returns the raft messages n's transport has sent.
func (n *node) sent() uint64 {
	var total uint64
	switch {
	case n.mem != nil:
		for _, s := range n.mem.Stats() {
			total += s.Sent
		}
	case n.grpc != nil:
		for _, s := range n.grpc.Stats() {
			total += s.MessagesSent
		}
	}
	return total
}

// messagesSent returns the raft messages sent between nodes since the
// cluster started.
func (c *cluster) messagesSent() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := c.mu.retired
	for _, n := range c.mu.nodes {
		total += n.sent()
	}
	return total
}

// bytesSent returns the encoded bytes the running engines handed their
// transports.
func (c *cluster) bytesSent() uint64 {
	var total uint64
	for _, id := range c.ids() {
		if e := c.engine(id); e != nil {
			for _, p := range e.PeerStats() {
				total += p.Bytes
			}
		}
	}
	return total
}

// quiesced returns the replicas quiesced now on the running nodes.
func (c *cluster) quiesced() uint64 {
	var total uint64
	for _, id := range c.ids() {
		if e := c.engine(id); e != nil {
			total += e.Stats().ShardsQuiesced
		}
	}
	return total
}

// syncs returns the synced batch commits of the running nodes.
func (c *cluster) syncs() uint64 {
	var total uint64
	for _, id := range c.ids() {
		if e := c.engine(id); e != nil {
			total += e.Stats().FileSyncs
		}
	}
	return total
}

// descriptors splits the hash space evenly among n shards with IDs 1..n,
// as the router's EvenRing does (it is the router's ring).
func descriptors(n int) []storage.Descriptor {
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	ring, err := router.EvenRing(1, ids)
	if err != nil {
		panic(fmt.Sprintf("even ring of %d shards: %v", n, err)) // n > 0: cannot happen
	}
	out := make([]storage.Descriptor, n)
	for i, r := range ring.Ranges() {
		out[i] = storage.Descriptor{ShardID: r.ShardID, Start: r.Start, Last: r.Last}
	}
	return out
}

// keyOf returns the n-th key (from 0) whose hash lies in d's range.
func keyOf(d storage.Descriptor, n int) []byte {
	var rule router.PartitionRule // the engine's default: the whole key
	for i, found := 0, 0; ; i++ {
		k := fmt.Appendf(nil, "key-%d-%d", d.ShardID, i)
		if d.Contains(rule.Hash(k)) {
			if found == n {
				return k
			}
			found++
		}
	}
}

// voters returns the nodes of shardID's replicas: cfg.Replicas consecutive
// nodes from a start that rotates with the shard, so that replicas (and
// leaders, which the engine spreads over a shard's voters) are even.
func (c *cluster) voters(shardID uint64) []uint64 {
	n := uint64(c.cfg.Nodes)
	r := uint64(min(max(c.cfg.Replicas, 1), c.cfg.Nodes))
	out := make([]uint64, r)
	for k := range out {
		out[k] = 1 + (shardID+uint64(k))%n
	}
	return out
}

// replicasOn returns how many shards of descs have a replica on node id.
func (c *cluster) replicasOn(descs []storage.Descriptor, id uint64) int {
	n := 0
	for _, d := range descs {
		if slices.Contains(c.voters(d.ShardID), id) {
			n++
		}
	}
	return n
}

// createShards creates descs on their voters, a bounded number of
// creations at once.
func (c *cluster) createShards(ctx context.Context, descs []storage.Descriptor) error {
	var g errgroup.Group
	g.SetLimit(64)
	for _, d := range descs {
		voters := c.voters(d.ShardID)
		for _, id := range voters {
			e := c.engine(id)
			if e == nil {
				return fmt.Errorf("node %d not running", id)
			}
			g.Go(func() error {
				err := e.CreateShard(ctx, engine.ShardSpec{Desc: d, Voters: voters})
				if err != nil && !errors.Is(err, engine.ErrShardExists) {
					return fmt.Errorf("node %d shard %d: %w", id, d.ShardID, err)
				}
				return nil
			})
		}
	}
	return g.Wait()
}

// leaders returns, for every shard a running node leads, the leader with
// the highest term.
func (c *cluster) leaders(ctx context.Context) map[uint64]uint64 {
	var es []*engine.Engine
	for _, id := range c.ids() {
		if e := c.engine(id); e != nil {
			es = append(es, e)
		}
	}
	return testcluster.LeadersOf(ctx, es)
}

// leaderOf returns the running node that leads shardID, or else the leader
// a running replica knows of, or 0.
func (c *cluster) leaderOf(ctx context.Context, shardID uint64) uint64 {
	var best, term, hint uint64
	for _, id := range c.ids() {
		e := c.engine(id)
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
		if st.Leader != 0 && c.engine(st.Leader) != nil {
			hint = st.Leader
		}
	}
	if best != 0 {
		return best
	}
	return hint
}

// waitLeaders waits until every shard of descs has a leader on a running
// node, polling every interval.
func (c *cluster) waitLeaders(ctx context.Context, descs []storage.Descriptor, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		leaders := c.leaders(ctx)
		if !slices.ContainsFunc(descs, func(d storage.Descriptor) bool { return leaders[d.ShardID] == 0 }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for leaders: %d of %d shards have one: %w", len(leaders), len(descs), ctx.Err())
		case <-t.C:
		}
	}
}

// pollInterval is how often waits poll the cluster's status: a shard's
// status costs a worker round trip on every node.
func pollInterval(shards int) time.Duration {
	return min(max(time.Duration(shards)*10*time.Microsecond, 5*time.Millisecond), 100*time.Millisecond)
}
