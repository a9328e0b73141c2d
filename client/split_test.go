package client_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// split splits shardID at hash at on its leader, the new shard being
// childID, and returns the ring after the split (one generation above the
// routers'), which it does not install.
func (h *harness) split(ctx context.Context, shardID, at, childID uint64) *router.Ring {
	h.t.Helper()
	leader := h.c.Leader(ctx, shardID)
	e := h.c.Engine(leader)
	st, err := e.Status(ctx, shardID)
	if err != nil {
		h.t.Fatal(err)
	}
	res, err := e.Split(ctx, engine.SplitRequest{ShardID: shardID, Generation: st.Desc.Generation, At: at, ChildID: childID})
	if err != nil {
		h.t.Fatal(err)
	}
	old := h.routers[leader].Ring()
	ranges := []router.Range{{ShardID: childID, Start: res.Child.Start, Last: res.Child.Last}}
	for _, rg := range old.Ranges() {
		if rg.ShardID == shardID {
			rg.Last = res.Parent.Last
		}
		ranges = append(ranges, rg)
	}
	slices.SortFunc(ranges, func(a, b router.Range) int { return cmp.Compare(a.Start, b.Start) })
	ring, err := router.NewRing(old.Generation()+1, ranges)
	if err != nil {
		h.t.Fatal(err)
	}
	return ring
}

// setRing installs ring on the routers of nodes (all if none), every
// shard on every node.
func (h *harness) setRing(ring *router.Ring, nodes ...uint64) {
	h.t.Helper()
	if len(nodes) == 0 {
		nodes = h.c.IDs()
	}
	for _, id := range nodes {
		r := h.routers[id]
		if err := r.SetRing(ring); err != nil {
			h.t.Fatal(err)
		}
		for _, rg := range ring.Ranges() {
			if err := r.SetReplicas(rg.ShardID, h.c.IDs()); err != nil {
				h.t.Fatal(err)
			}
		}
	}
}

// keyAbove returns a key of shardID (by c's ring) whose hash is above the
// shard's first, and its hash: a split there moves the key to the child.
func keyAbove(t *testing.T, c *client.Client, shardID uint64, start uint64) ([]byte, uint64) {
	t.Helper()
	for i := range 1000 {
		key := fmt.Appendf(nil, "key-%d", i)
		if s, err := c.ShardOf(key); err == nil && s == shardID {
			if h := (router.PartitionRule{}).Hash(key); h > start {
				return key, h
			}
		}
	}
	t.Fatalf("no key of shard %d", shardID)
	return nil, 0
}

// TestClientSplitLostResponse: a compare-and-swap applies on a shard, its
// response is lost, and the shard splits before the retry, which moves the
// key to the new shard: the retry, under the same session and sequence
// number, finds the result the split copied and reports the swap; the
// compare-and-swap applied once.
func TestClientSplitLostResponse(t *testing.T) {
	h := newHarness(t, 2)
	var at uint64
	h.lostCASResponse("split", func(ctx context.Context) { h.setRing(h.split(ctx, 1, at, 10)) }, func(cl *client.Client) []byte {
		var key []byte
		key, at = keyAbove(t, cl, 1, h.descs[0].Start)
		return key
	}, 10)
}

// lostCASResponse runs a compare-and-swap of the key keyOf chooses whose
// first response is lost, and reshard (a split or a merge that moves the
// key to shard want, the routers following) before the retry: the retry
// must find the result of the one application on shard want. Then the key
// reads back there, and a second compare-and-swap, which needs no
// registration of the session there, applies.
func (h *harness) lostCASResponse(what string, reshard func(ctx context.Context), keyOf func(*client.Client) []byte, want uint64) {
	t := h.t
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	var once sync.Once
	reshardAfterFirst := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if _, ok := req.(*nodepb.CompareAndSwapRequest); !ok || err != nil {
			return err
		}
		lost := false
		once.Do(func() {
			reshard(ctx)
			lost = true
		})
		if lost {
			return status.Error(codes.Unavailable, "test: response lost")
		}
		return err
	}
	cl := h.client(client.Config{BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond, DialOptions: []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUnaryInterceptor(reshardAfterFirst)}})
	key := keyOf(cl)
	replays := func() (n uint64) {
		for _, id := range h.c.IDs() {
			n += h.c.Engine(id).Stats().SessionReplays
		}
		return n
	}
	r, err := cl.CompareAndSwap(ctx, key, nil, []byte("1"))
	if err != nil || !r.Swapped {
		t.Fatalf("compare-and-swap across the %s: %+v, %v", what, r, err)
	}
	if replays() == 0 {
		t.Fatalf("the retry after the %s applied again", what)
	}
	if err := cl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := cl.ShardOf(key); s != want {
		t.Fatalf("the key is in shard %d after the %s, want %d", s, what, want)
	}
	if v, _, err := cl.Get(ctx, key); err != nil || string(v) != "1" {
		t.Fatalf("value %q, %v", v, err)
	}
	// The shard knows the session: the next write there needs no
	// registration, and applies.
	if r, err := cl.CompareAndSwap(ctx, key, []byte("1"), []byte("2")); err != nil || !r.Swapped {
		t.Fatalf("second compare-and-swap: %+v, %v", r, err)
	}
}

// TestClientStaleRingAfterSplit: while the nodes' routers lag a split, a
// write of a key that moved gets KEY_NOT_IN_SHARD and the client retries
// until they follow, then succeeds; a refresh from a node that still lags
// never takes the client's ring back.
func TestClientStaleRingAfterSplit(t *testing.T) {
	h := newHarness(t, 2)
	ctx := ctxT(t, 60*time.Second)
	cl := h.client(client.Config{BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond, RefreshInterval: time.Millisecond})
	key, at := keyAbove(t, cl, 1, h.descs[0].Start)
	ring := h.split(ctx, 1, at, 10)
	done := make(chan error, 1)
	backoffs := cl.Stats().Backoffs
	go func() { done <- cl.Put(ctx, key, []byte("v")) }()
	if err := h.c.WaitFor(ctx, "the put refused as not in the shard, retried", func() bool { return cl.Stats().Backoffs >= backoffs+3 }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("the put ended while every router lagged: %v", err)
	default:
	}
	// One node's router lags: not one that leads either half, which the
	// client could reach only through it (a node routes by its own ring).
	var lagging uint64
	if err := h.c.WaitFor(ctx, "a node that leads neither half", func() bool {
		l1, l10 := h.c.Leader(ctx, 1), h.c.Leader(ctx, 10)
		for _, id := range h.c.IDs() {
			if l1 != 0 && l10 != 0 && id != l1 && id != l10 {
				lagging = id
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	var following []uint64
	for _, id := range h.c.IDs() {
		if id != lagging {
			following = append(following, id)
		}
	}
	h.setRing(ring, following...)
	if err := <-done; err != nil {
		t.Fatalf("put after the routers followed: %v", err)
	}
	// The put went to a node that follows; the client's ring follows from
	// one of them, and a lagging one's does not take it back.
	if err := h.c.WaitFor(ctx, "the client's ring after the split", func() bool {
		return cl.Refresh(ctx) == nil && cl.Generation() == ring.Generation()
	}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := cl.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if g := cl.Generation(); g != ring.Generation() {
			t.Fatalf("client ring generation %d after a refresh, want %d (a lagging node's ring taken)", g, ring.Generation())
		}
	}
	if v, found, err := cl.Get(ctx, key); err != nil || !found || string(v) != "v" {
		t.Fatalf("get: %q %v %v", v, found, err)
	}
}
