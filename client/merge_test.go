package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// freeze freezes right for a merge into left, on right's leader, and waits
// until every node has it frozen; it returns left's descriptor and right's
// frozen one.
func (h *harness) freeze(ctx context.Context, left, right uint64) (l, r storage.Descriptor) {
	h.t.Helper()
	desc := func(id uint64) storage.Descriptor {
		st, err := h.c.Engine(h.c.Leader(ctx, id)).Status(ctx, id)
		if err != nil {
			h.t.Fatal(err)
		}
		return st.Desc
	}
	l, rd := desc(left), desc(right)
	r, err := h.c.Engine(h.c.Leader(ctx, right)).FreezeForMerge(ctx, engine.FreezeRequest{Right: right, RightGeneration: rd.Generation, Left: left, LeftGeneration: l.Generation})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, id := range h.c.IDs() {
		if err := h.c.Engine(id).WaitFrozen(ctx, right, r.Generation); err != nil {
			h.t.Fatal(err)
		}
	}
	return l, r
}

// merge merges r (frozen) into l on l's leader and returns the ring after
// the merge (one generation above the routers'), which it does not
// install.
func (h *harness) merge(ctx context.Context, l, r storage.Descriptor) *router.Ring {
	h.t.Helper()
	merged, err := h.c.Engine(h.c.Leader(ctx, l.ShardID)).Merge(ctx, engine.MergeRequest{Left: l.ShardID, LeftGeneration: l.Generation,
		Right: r.ShardID, RightGeneration: r.Generation})
	if err != nil {
		h.t.Fatal(err)
	}
	old := h.routers[h.c.IDs()[0]].Ring()
	var ranges []router.Range
	for _, rg := range old.Ranges() {
		switch rg.ShardID {
		case r.ShardID:
			continue
		case l.ShardID:
			rg.Last = merged.Last
		}
		ranges = append(ranges, rg)
	}
	ring, err := router.NewRing(old.Generation()+1, ranges)
	if err != nil {
		h.t.Fatal(err)
	}
	return ring
}

// keyOf returns a key of shardID by c's ring.
func keyOf(t *testing.T, c *client.Client, shardID uint64) []byte {
	t.Helper()
	key, _ := keyAbove(t, c, shardID, 0)
	return key
}

// TestClientMergeLostResponse: a compare-and-swap applies on a shard, its
// response is lost, and the shard is merged into its left neighbour
// before the retry: the retry, under the same session and sequence
// number, finds the result the merge folded into the left shard and
// reports the swap; the compare-and-swap applied once.
func TestClientMergeLostResponse(t *testing.T) {
	h := newHarness(t, 2)
	h.lostCASResponse("merge", func(ctx context.Context) {
		l, r := h.freeze(ctx, 1, 2)
		h.setRing(h.merge(ctx, l, r))
	}, func(cl *client.Client) []byte { return keyOf(t, cl, 2) }, 1)
}

// TestClientWaitsOutAFrozenShard: writes and reads of a shard frozen for
// a merge are refused (SHARD_MERGING) and retried until the merge is
// through and the routers follow; then they run on the left shard. A
// write of the right shard applied before the freeze reads back there.
func TestClientWaitsOutAFrozenShard(t *testing.T) {
	h := newHarness(t, 2)
	ctx := ctxT(t, 60*time.Second)
	cl := h.client(client.Config{BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond, RefreshInterval: time.Millisecond})
	before, after := keyOf(t, cl, 2), []byte(nil)
	for i := range 1000 {
		if k := []byte{'k', byte(i), byte(i >> 8)}; string(k) != string(before) {
			if s, _ := cl.ShardOf(k); s == 2 {
				after = k
				break
			}
		}
	}
	if err := cl.Put(ctx, before, []byte("before")); err != nil {
		t.Fatal(err)
	}
	l, r := h.freeze(ctx, 1, 2)
	backoffs := cl.Stats().Backoffs
	done := make(chan error, 2)
	go func() { done <- cl.Put(ctx, after, []byte("after")) }()
	go func() {
		v, _, err := cl.Get(ctx, before)
		if err == nil && string(v) != "before" {
			err = status.Errorf(codes.Internal, "read %q", v)
		}
		done <- err
	}()
	if err := h.c.WaitFor(ctx, "requests refused by the frozen shard, retried", func() bool { return cl.Stats().Backoffs >= backoffs+6 }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("a request ended while the shard was frozen: %v", err)
	default:
	}
	h.setRing(h.merge(ctx, l, r))
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("after the merge: %v", err)
		}
	}
	if err := cl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{string(before): "before", string(after): "after"} {
		if s, _ := cl.ShardOf([]byte(k)); s != 1 {
			t.Fatalf("key %q in shard %d after the merge", k, s)
		}
		if v, _, err := cl.Get(ctx, []byte(k)); err != nil || string(v) != want {
			t.Fatalf("key %q: %q, %v", k, v, err)
		}
	}
}
