package node_test

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"google.golang.org/grpc/codes"
)

// TestClientServiceReroutesAfterSplit: a shard splits while the routers
// still hold the ring from before. A write of a key that moved reaches the
// parent, which refuses it; the service updates its router (OnStaleRoute)
// and runs the write on the new shard, registering the client's session
// there, which the new shard does not know (it was registered on the
// parent after the split). Without a refresh, the refusal goes back with
// the parent's range now.
func TestClientServiceReroutesAfterSplit(t *testing.T) {
	h := newHarness(t, 2, node.DefaultClientServiceConfig())
	ctx := ctxT(t, 30*time.Second)
	var key []byte
	var at uint64
	for i := 0; key == nil; i++ {
		k := fmt.Appendf(nil, "key-%d", i)
		if hash := (router.PartitionRule{}).Hash(k); h.shardOf(k) == 1 && hash > h.descs[0].Start+1 {
			key, at = k, hash
		}
	}
	leader := h.leaderOf(ctx, key)
	e := h.c.Engine(leader)
	st, err := e.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Split(ctx, engine.SplitRequest{ShardID: 1, Generation: st.Desc.Generation, At: at, ChildID: 10})
	if err != nil {
		t.Fatal(err)
	}
	// The node that leads the parent leads the child too: it campaigns
	// (and, should another replica have won, gets it handed over).
	if err := h.c.WaitFor(ctx, "the child's leader", func() bool { return h.c.Leader(ctx, 10) != 0 }); err != nil {
		t.Fatal(err)
	}
	if l := h.c.Leader(ctx, 10); l != leader {
		t.Logf("the child's first leader is node %d, not the parent's %d", l, leader)
		if err := h.c.Engine(l).TransferLeader(ctx, 10, leader); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.c.WaitFor(ctx, "the child led where the parent is", func() bool { return h.c.Leader(ctx, 10) == leader }); err != nil {
		t.Fatal(err)
	}
	// The client's session, registered on the parent after the split.
	sess := &nodepb.Session{Id: 77, Seq: 1, Ack: 1, Register: true}
	other := []byte{}
	for i := 0; len(other) == 0; i++ {
		k := fmt.Appendf(nil, "other-%d", i)
		if (router.PartitionRule{}).Hash(k) < at && h.shardOf(k) == 1 {
			other = k
		}
	}
	if _, err := h.kv(leader).Put(ctx, &nodepb.PutRequest{Key: other, Value: []byte("o"), Session: sess}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ProposeSession(ctx, 10, engine.Session{ID: 77, Seq: 2, Ack: 1}, engine.PutCommand(key, []byte("x"))); !errors.Is(err, engine.ErrSessionNotFound) {
		t.Fatalf("the child knows the session registered after the split: %v", err)
	}

	// No refresh: the parent's refusal, with its range now.
	put := &nodepb.PutRequest{Key: key, Value: []byte("v"), Session: &nodepb.Session{Id: 77, Seq: 2, Ack: 1}}
	_, err = h.kv(leader).Put(ctx, put)
	d := wantError(t, "put with a stale router and no refresh", err, codes.FailedPrecondition, nodepb.Reason_REASON_KEY_NOT_IN_SHARD)
	if d.GetShardId() != 1 || d.GetLast() != res.Parent.Last || d.GetStart() != res.Parent.Start || d.GetGeneration() != res.Parent.Generation || !d.GetNotApplied() {
		t.Fatalf("the refusal: %v", d)
	}

	// The refresh installs the ring after the split.
	ranges := []router.Range{{ShardID: 10, Start: res.Child.Start, Last: res.Child.Last}}
	for _, rg := range h.ring.Ranges() {
		if rg.ShardID == 1 {
			rg.Last = res.Parent.Last
		}
		ranges = append(ranges, rg)
	}
	slices.SortFunc(ranges, func(a, b router.Range) int { return cmp.Compare(a.Start, b.Start) })
	ring, err := router.NewRing(2, ranges)
	if err != nil {
		t.Fatal(err)
	}
	r, svc := h.routers[leader], h.svcs[leader]
	svc.OnStaleRoute(func() { _ = r.SetRing(ring) })
	resp, err := h.kv(leader).Put(ctx, put)
	if err != nil || resp.GetShardId() != 10 || svc.Rerouted() != 1 {
		t.Fatalf("put rerouted: %v, %v, %d rerouted", resp, err, svc.Rerouted())
	}
	got, err := h.kv(leader).Get(ctx, &nodepb.GetRequest{Key: key})
	if err != nil || got.GetShardId() != 10 || string(got.GetValue()) != "v" {
		t.Fatalf("get: %v, %v", got, err)
	}
}
