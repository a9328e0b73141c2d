package client_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc"
)

// harness is a 3-node in-process cluster (raft over the in-memory
// transport) with one client service per node, each served by a real gRPC
// server on 127.0.0.1, the way a node serves applications.
type harness struct {
	t     *testing.T
	c     *testcluster.Cluster
	descs []storage.Descriptor
	ids   []uint64          // shard IDs
	addrs map[uint64]string // node ID -> client address; read-only once built
	// routers are the nodes' routers, node ID -> router; the test keeps
	// their ring (setRing).
	routers map[uint64]*router.Router
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newHarness(t *testing.T, shards int) *harness {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	c := testcluster.New(t, testcluster.Config{Nodes: 3})
	h := &harness{t: t, c: c, descs: testcluster.EvenDescriptors(1, shards), addrs: map[uint64]string{}, routers: map[uint64]*router.Router{}}
	if err := c.CreateShards(ctx, h.descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	c.RunClock(2 * time.Millisecond)
	ranges := make([]router.Range, len(h.descs))
	for i, d := range h.descs {
		ranges[i] = router.Range{ShardID: d.ShardID, Start: d.Start, Last: d.Last}
		h.ids = append(h.ids, d.ShardID)
	}
	ring, err := router.NewRing(1, ranges)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, h.ids); err != nil {
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
		h.routers[id] = r
		for _, d := range h.descs {
			if err := r.SetReplicas(d.ShardID, c.IDs()); err != nil {
				t.Fatal(err)
			}
		}
		svc, err := node.NewClientService(node.DefaultClientServiceConfig(), c.Engine(id), r, func(n uint64) string { return h.addrs[n] })
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.StartLeaderFeed(feedCtx); err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(grpc.MaxRecvMsgSize(8 << 20))
		svc.Register(srv)
		go func() { _ = srv.Serve(lis[id]) }()
		t.Cleanup(func() {
			srv.Stop()
			svc.Close()
		})
	}
	return h
}

func (h *harness) endpoints() []string {
	var eps []string
	for _, id := range h.c.IDs() {
		eps = append(eps, h.addrs[id])
	}
	return eps
}

// client returns a client of the cluster, closed at the end of the test.
func (h *harness) client(cfg client.Config) *client.Client {
	h.t.Helper()
	if cfg.Endpoints == nil {
		cfg.Endpoints = h.endpoints()
	}
	cl, err := client.New(ctxT(h.t, 10*time.Second), cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cl.Close() })
	return cl
}

// fakeKV is a scriptable KV server on 127.0.0.1: one shard covering the
// ring, led by node 1 (itself). Unset handlers answer Unimplemented.
type fakeKV struct {
	nodepb.UnimplementedKVServer
	addr string
	put  func(ctx context.Context, req *nodepb.PutRequest) (*nodepb.PutResponse, error)
	get  func(ctx context.Context, req *nodepb.GetRequest) (*nodepb.GetResponse, error)
	cas  func(ctx context.Context, req *nodepb.CompareAndSwapRequest) (*nodepb.CompareAndSwapResponse, error)
	bat  func(ctx context.Context, req *nodepb.BatchRequest) (*nodepb.BatchResponse, error)
}

func newFake(t *testing.T, f *fakeKV) *fakeKV {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	srv := grpc.NewServer()
	nodepb.RegisterKVServer(srv, f)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return f
}

func (f *fakeKV) Routes(context.Context, *nodepb.RoutesRequest) (*nodepb.RoutesResponse, error) {
	return &nodepb.RoutesResponse{
		NodeId: 1, Generation: 1,
		Shards: []*nodepb.ShardRoute{{ShardId: 1, Start: 0, Last: ^uint64(0), Replicas: []uint64{1}, Leader: 1, Term: 1}},
		Nodes:  []*nodepb.NodeAddress{{NodeId: 1, Addr: f.addr}},
	}, nil
}

func (f *fakeKV) Put(ctx context.Context, req *nodepb.PutRequest) (*nodepb.PutResponse, error) {
	if f.put == nil {
		return f.UnimplementedKVServer.Put(ctx, req)
	}
	return f.put(ctx, req)
}

func (f *fakeKV) Get(ctx context.Context, req *nodepb.GetRequest) (*nodepb.GetResponse, error) {
	if f.get == nil {
		return f.UnimplementedKVServer.Get(ctx, req)
	}
	return f.get(ctx, req)
}

func (f *fakeKV) CompareAndSwap(ctx context.Context, req *nodepb.CompareAndSwapRequest) (*nodepb.CompareAndSwapResponse, error) {
	if f.cas == nil {
		return f.UnimplementedKVServer.CompareAndSwap(ctx, req)
	}
	return f.cas(ctx, req)
}

func (f *fakeKV) Batch(ctx context.Context, req *nodepb.BatchRequest) (*nodepb.BatchResponse, error) {
	if f.bat == nil {
		return f.UnimplementedKVServer.Batch(ctx, req)
	}
	return f.bat(ctx, req)
}
