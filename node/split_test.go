package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/node/splitter"
	"github.com/flotilla-db/flotilla/router"
	"google.golang.org/grpc/codes"
)

// loadWriters writes distinct keys through c from n goroutines until stop
// is closed, each write under its own long deadline: a write that fails is
// a failure of the cluster to absorb what happens meanwhile.
type loadWriters struct {
	wg     sync.WaitGroup
	stop   chan struct{}
	writes atomic.Int64
	mu     struct {
		sync.Mutex
		acked  []string // guarded
		failed []error  // guarded
	}
}

func startWriters(ctx context.Context, c *client.Client, n int) *loadWriters {
	l := &loadWriters{stop: make(chan struct{})}
	for w := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d/key-%d", w, i)
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := c.Put(wctx, []byte(key), []byte(key))
				cancel()
				l.mu.Lock()
				if err != nil {
					l.mu.failed = append(l.mu.failed, fmt.Errorf("put %s: %w", key, err))
				} else {
					l.mu.acked = append(l.mu.acked, key)
				}
				l.mu.Unlock()
				l.writes.Add(1)
			}
		}()
	}
	return l
}

// startLoad waits until nodes are ready and starts 8 writers through a
// client of them, stopped at the end of the test if the test does not;
// it returns once they have written 100 keys.
func startLoad(t *testing.T, ctx context.Context, nodes []*Node) (*client.Client, *loadWriters) {
	t.Helper()
	var eps []string
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		eps = append(eps, n.ClientAddr())
	}
	cl, err := client.New(ctx, client.Config{Endpoints: eps, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	load := startWriters(ctx, cl, 8)
	t.Cleanup(func() {
		select {
		case <-load.stop:
		default:
			load.finish()
		}
		cl.Close()
	})
	load.waitWrites(t, ctx, 100)
	return cl, load
}

// waitWrites waits until n more writes have ended.
func (l *loadWriters) waitWrites(t *testing.T, ctx context.Context, n int64) {
	t.Helper()
	target := l.writes.Load() + n
	waitFor(t, ctx, fmt.Sprintf("%d more writes", n), func() error {
		if got := l.writes.Load(); got < target {
			return fmt.Errorf("%d of %d writes", got, target)
		}
		return nil
	})
}

func (l *loadWriters) finish() (acked []string, failed []error) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.acked, l.mu.failed
}

// userRanges returns the user shards' ranges of an Admin Shards listing,
// in hash order, and fails unless they tile the hash space.
func userRanges(resp *nodepb.ShardsResponse) (*router.Ring, error) {
	var recs []nodemeta.ShardRecord
	for _, si := range resp.GetShards() {
		if !si.GetSystem() {
			recs = append(recs, nodemeta.ShardRecord{ShardID: si.GetShardId(), Start: si.GetStart(), Last: si.GetLast()})
		}
	}
	return nodemeta.BuildRing(1, recs)
}

// TestSplitUnderLoad splits shards through the Admin API, on every node
// (forwarded to the shards' leaders), while clients write: not one write
// fails, every acknowledged key reads back, the shard listing tiles the
// hash space, and every node's router reaches the meta shard's ring
// generation. Refused splits change nothing and say why.
func TestSplitUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	nodes := startClusterNodes(t, ctx, t.TempDir(), 3, 3, func(_ int, cfg *ClusterConfig) { cfg.InitialShards = 4 })
	cl, load := startLoad(t, ctx, nodes)

	split := func(via *Node, req *nodepb.SplitRequest) *nodepb.SplitResponse {
		t.Helper()
		start := time.Now()
		resp, err := via.admin.Split(ctx, req)
		if err != nil {
			t.Fatalf("split of shard %d via node %d: %v", req.GetShardId(), via.NodeID(), err)
		}
		p, c := resp.GetParent(), resp.GetChild()
		if p.GetLast()+1 != c.GetStart() || p.GetGeneration() != c.GetGeneration() || c.GetConfIndex() != 0 {
			t.Fatalf("split of shard %d: parent %v, child %v", req.GetShardId(), p, c)
		}
		t.Logf("split of shard %d via node %d in %v (%s point): [%016x, %016x] and shard %d [%016x, %016x], generation %d",
			p.GetShardId(), via.NodeID(), time.Since(start).Round(time.Millisecond), resp.GetPoint(),
			p.GetStart(), p.GetLast(), c.GetShardId(), c.GetStart(), c.GetLast(), c.GetGeneration())
		load.waitWrites(t, ctx, 50) // the load goes on after each split
		return resp
	}
	first := split(nodes[0], &nodepb.SplitRequest{ShardId: 1})
	if first.GetPoint() != string(splitter.PointMedian) {
		t.Errorf("the first split's point was chosen by %q, not by the data", first.GetPoint())
	}
	child := first.GetChild().GetShardId()
	split(nodes[1], &nodepb.SplitRequest{ShardId: child, Generation: first.GetChild().GetGeneration()})
	third := split(nodes[2], &nodepb.SplitRequest{ShardId: 3, At: 0xb000_0000_0000_0000})
	if third.GetPoint() != string(splitter.PointGiven) || third.GetChild().GetStart() != 0xb000_0000_0000_0000 {
		t.Errorf("split at a given point: %v", third)
	}
	split(nodes[0], &nodepb.SplitRequest{ShardId: 1})
	// Two at once, on two nodes: the meta shard hands out two IDs.
	var (
		wg      sync.WaitGroup
		resps   [2]*nodepb.SplitResponse
		errs    [2]error
		targets = [2]uint64{2, 4}
	)
	for i := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = nodes[i+1].admin.Split(ctx, &nodepb.SplitRequest{ShardId: targets[i]})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent split of shard %d: %v", targets[i], err)
		}
	}
	if a, b := resps[0].GetChild().GetShardId(), resps[1].GetChild().GetShardId(); a == b {
		t.Fatalf("two concurrent splits made shard %d", a)
	}
	const shards = 4 + 6

	// Refusals, with the shard's range now where it matters.
	p1 := first.GetParent()
	for _, tc := range []struct {
		name   string
		req    *nodepb.SplitRequest
		code   codes.Code
		reason nodepb.Reason
	}{
		{"stale generation", &nodepb.SplitRequest{ShardId: child, Generation: 1}, codes.FailedPrecondition, nodepb.Reason_REASON_STALE_GENERATION},
		{"point outside", &nodepb.SplitRequest{ShardId: 1, At: p1.GetLast() + 1}, codes.OutOfRange, nodepb.Reason_REASON_OUT_OF_RANGE},
		{"unknown shard", &nodepb.SplitRequest{ShardId: 999}, codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND},
		{"system shard", &nodepb.SplitRequest{ShardId: MetaShardID}, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
	} {
		_, err := nodes[1].admin.Split(ctx, tc.req)
		e := adminErrorOf(err)
		if e == nil || codes.Code(e.GetCode()) != tc.code || e.GetReason() != tc.reason {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tc.reason == nodepb.Reason_REASON_STALE_GENERATION && (e.GetGeneration() < 3 || e.GetStart() != first.GetChild().GetStart()) {
			t.Errorf("%s: the shard's range now: %v", tc.name, e)
		}
	}

	// Every node's router follows to the meta shard's generation, with the
	// ranges the shards themselves report, while the load goes on.
	checkRing(t, ctx, nodes, shards)
	load.waitWrites(t, ctx, 100)
	checkLoad(t, ctx, load, cl, nodes, shards)
}

// checkRing waits until the Admin listing tiles the hash space with want
// user shards, the meta shard's records are those shards (no merged one
// left behind, none merging), and every node's router has the meta
// shard's ring with the listing's ranges.
func checkRing(t *testing.T, ctx context.Context, nodes []*Node, want int) {
	t.Helper()
	waitFor(t, ctx, "every router at the meta shard's ring", func() error {
		resp, err := nodes[len(nodes)-1].admin.Shards(ctx, nil)
		if err != nil {
			return err
		}
		listing, err := userRanges(resp)
		if err != nil {
			return fmt.Errorf("listing: %w", err)
		}
		if listing.Len() != want {
			return fmt.Errorf("%d shards listed", listing.Len())
		}
		st, err := nodes[0].Engine.Status(ctx, MetaShardID)
		if err != nil {
			return err
		}
		recs, h, err := metaLeader(nodes, st.Leader).cl.store.Shards(ctx, nodemeta.Linearizable)
		if err != nil {
			return err
		}
		if len(recs) != want || h.Shards != want || len(h.Merging) != 0 {
			return fmt.Errorf("meta shard: %d records, header %+v", len(recs), h)
		}
		for _, n := range nodes {
			rg := n.Router.Ring()
			if rg.Generation() != h.Generation || !slices.Equal(rg.Ranges(), listing.Ranges()) {
				return fmt.Errorf("node %d: ring generation %d (%d ranges), meta shard %d", n.NodeID(), rg.Generation(), rg.Len(), h.Generation)
			}
		}
		return nil
	})
}

// checkLoad stops the writers and checks that none of their writes failed
// and every acknowledged key reads back through cl, whose ring, once
// refreshed, has want shards.
func checkLoad(t *testing.T, ctx context.Context, load *loadWriters, cl *client.Client, nodes []*Node, want int) {
	t.Helper()
	acked, failed := load.finish()
	for _, err := range failed {
		t.Error(err)
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d writes failed", len(failed), len(failed)+len(acked))
	}
	for _, key := range acked {
		v, found, err := cl.Get(ctx, []byte(key))
		if err != nil || !found || string(v) != key {
			t.Fatalf("key %s: %q, found %v, %v", key, v, found, err)
		}
	}
	// The client's ring is the routers': a refresh takes it forward.
	if err := cl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cl.Shards(); len(got) != want {
		t.Errorf("the client's ring has %d shards", len(got))
	}
	var rerouted uint64
	for _, n := range nodes {
		rerouted += n.service.Rerouted()
	}
	st := cl.Stats()
	t.Logf("%d writes acknowledged, none failed; the client refreshed its routes %d times, backed off %d times; %d requests rerouted by the nodes",
		len(acked), st.Refreshes, st.Backoffs, rerouted)
}

// metaLeader returns the node with ID id.
func metaLeader(nodes []*Node, id uint64) *Node {
	for _, n := range nodes {
		if n.NodeID() == id {
			return n
		}
	}
	return nodes[0]
}

// TestSplitErrors: how the errors of a split are told to the caller.
func TestSplitErrors(t *testing.T) {
	a := &adminService{}
	for _, tc := range []struct {
		err        error
		code       codes.Code
		reason     nodepb.Reason
		start, gen uint64
	}{
		{&splitter.PointError{ShardID: 5, At: 3, Start: 10, Last: 20, Generation: 4}, codes.OutOfRange, nodepb.Reason_REASON_OUT_OF_RANGE, 10, 4},
		{fmt.Errorf("wrapped: %w", &engine.StaleGenerationError{ShardID: 5, Expected: 2, Generation: 3, Start: 11, Last: 20}),
			codes.FailedPrecondition, nodepb.Reason_REASON_STALE_GENERATION, 11, 3},
		{fmt.Errorf("%w: shard 5", splitter.ErrJointConfig), codes.FailedPrecondition, nodepb.Reason_REASON_JOINT_CONFIG, 0, 0},
		{fmt.Errorf("%w: %w", splitter.ErrMetaUnavailable, errors.New("no leader")), codes.Unavailable, nodepb.Reason_REASON_META_UNAVAILABLE, 0, 0},
		{fmt.Errorf("%w: shard 5", engine.ErrShardNotFound), codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND, 0, 0},
	} {
		e := adminErrorOf(a.splitError(tc.err, 5))
		if e == nil || codes.Code(e.GetCode()) != tc.code || e.GetReason() != tc.reason || e.GetShardId() != 5 ||
			e.GetStart() != tc.start || e.GetGeneration() != tc.gen || !e.GetNotApplied() {
			t.Errorf("%v: %v", tc.err, e)
		}
	}
}
