package node_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// harness is a 3-node in-process cluster with one client service per node,
// each served by a real gRPC server on 127.0.0.1.
type harness struct {
	t       *testing.T
	c       *testcluster.Cluster
	descs   []storage.Descriptor
	ring    *router.Ring
	addrs   map[uint64]string // node ID -> client address; read-only once built
	svcs    map[uint64]*node.ClientService
	routers map[uint64]*router.Router
	conns   map[uint64]*grpc.ClientConn
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newHarness(t *testing.T, shards int, cfg node.ClientServiceConfig) *harness {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	c := testcluster.New(t, testcluster.Config{Nodes: 3})
	h := &harness{
		t: t, c: c, descs: testcluster.EvenDescriptors(1, shards),
		addrs: map[uint64]string{}, svcs: map[uint64]*node.ClientService{},
		routers: map[uint64]*router.Router{}, conns: map[uint64]*grpc.ClientConn{},
	}
	if err := c.CreateShards(ctx, h.descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	c.RunClock(2 * time.Millisecond)
	ranges := make([]router.Range, len(h.descs))
	var ids []uint64
	for i, d := range h.descs {
		ranges[i] = router.Range{ShardID: d.ShardID, Start: d.Start, Last: d.Last}
		ids = append(ids, d.ShardID)
	}
	ring, err := router.NewRing(1, ranges)
	if err != nil {
		t.Fatal(err)
	}
	h.ring = ring
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	lis := map[uint64]net.Listener{}
	for _, id := range c.IDs() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[id], h.addrs[id] = l, l.Addr().String()
	}
	feedCtx, stopFeeds := context.WithCancel(context.Background())
	t.Cleanup(stopFeeds)
	for _, id := range c.IDs() {
		r, err := router.New(router.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		if err := r.SetRing(ring); err != nil {
			t.Fatal(err)
		}
		for _, d := range h.descs {
			if err := r.SetReplicas(d.ShardID, c.IDs()); err != nil {
				t.Fatal(err)
			}
		}
		svc, err := node.NewClientService(cfg, c.Engine(id), r, func(n uint64) string { return h.addrs[n] })
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.StartLeaderFeed(feedCtx); err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(grpc.MaxRecvMsgSize(8 << 20))
		svc.Register(srv)
		go func() { _ = srv.Serve(lis[id]) }()
		conn, err := grpc.NewClient(h.addrs[id], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			conn.Close()
			srv.Stop()
			svc.Close()
		})
		h.svcs[id], h.routers[id], h.conns[id] = svc, r, conn
	}
	h.waitRoutersAgree(ctx)
	return h
}

// waitRoutersAgree waits until every node's router names, for every shard,
// the leader the cluster has.
func (h *harness) waitRoutersAgree(ctx context.Context) {
	h.t.Helper()
	err := h.c.WaitFor(ctx, "routers know the leaders", func() bool {
		leaders := h.c.Leaders(ctx)
		for _, r := range h.routers {
			for _, d := range h.descs {
				rt, err := r.Route(d.ShardID)
				if err != nil || leaders[d.ShardID] == 0 || rt.Leader != leaders[d.ShardID] {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) kv(nodeID uint64) nodepb.KVClient { return nodepb.NewKVClient(h.conns[nodeID]) }

// shardOf returns the shard of key.
func (h *harness) shardOf(key []byte) uint64 {
	return h.ring.Lookup(router.PartitionRule{}.Hash(key))
}

// leaderOf returns the node leading key's shard, waiting for one.
func (h *harness) leaderOf(ctx context.Context, key []byte) uint64 {
	h.t.Helper()
	var leader uint64
	if err := h.c.WaitFor(ctx, "a leader", func() bool {
		leader = h.c.Leader(ctx, h.shardOf(key))
		return leader != 0
	}); err != nil {
		h.t.Fatal(err)
	}
	return leader
}

// follower returns a node other than leader.
func (h *harness) follower(leader uint64) uint64 {
	for _, id := range h.c.IDs() {
		if id != leader {
			return id
		}
	}
	return 0
}
