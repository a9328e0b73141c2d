package node_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errorOf returns the code and nodepb.Error detail of a call's error.
func errorOf(t *testing.T, err error) (codes.Code, *nodepb.Error) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a status: %v", err)
	}
	for _, d := range st.Details() {
		if e, ok := d.(*nodepb.Error); ok {
			if codes.Code(e.GetCode()) != st.Code() {
				t.Fatalf("detail code %d, status code %s", e.GetCode(), st.Code())
			}
			return st.Code(), e
		}
	}
	t.Fatalf("no nodepb.Error detail in %v", err)
	return 0, nil
}

func wantError(t *testing.T, what string, err error, code codes.Code, reason nodepb.Reason) *nodepb.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %s %s", what, code, reason)
	}
	c, e := errorOf(t, err)
	if c != code || e.GetReason() != reason {
		t.Fatalf("%s: %s %s (%v), want %s %s", what, c, e.GetReason(), err, code, reason)
	}
	return e
}

func TestClientServiceRPCs(t *testing.T) {
	h := newHarness(t, 8, node.DefaultClientServiceConfig())
	ctx := ctxT(t, 60*time.Second)

	t.Run("put-get-delete", func(t *testing.T) {
		key := []byte("alpha")
		l := h.leaderOf(ctx, key)
		kv := h.kv(l)
		if _, err := kv.Put(ctx, &nodepb.PutRequest{Key: key, Value: []byte("1")}); err != nil {
			t.Fatal(err)
		}
		g, err := kv.Get(ctx, &nodepb.GetRequest{Key: key})
		if err != nil || !g.GetFound() || string(g.GetValue()) != "1" || g.GetShardId() != h.shardOf(key) {
			t.Fatalf("get: %v %v", g, err)
		}
		if g, err := kv.Get(ctx, &nodepb.GetRequest{Key: key, Mode: nodepb.ReadMode_READ_MODE_READ_INDEX}); err != nil || string(g.GetValue()) != "1" {
			t.Fatalf("get by ReadIndex: %v %v", g, err)
		}
		// The nodes do not run in lease mode: a lease read is refused.
		if _, err := kv.Get(ctx, &nodepb.GetRequest{Key: key, Mode: nodepb.ReadMode_READ_MODE_LEASE}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("lease read on a node in ReadIndex mode: %v, want InvalidArgument", err)
		}
		// A stale read on a follower sees the write once it applied there.
		f := h.kv(h.follower(l))
		if err := h.c.WaitFor(ctx, "follower applies", func() bool {
			g, err := f.Get(ctx, &nodepb.GetRequest{Key: key, Stale: true})
			return err == nil && g.GetFound() && string(g.GetValue()) == "1"
		}); err != nil {
			t.Fatal(err)
		}
		d, err := kv.Delete(ctx, &nodepb.DeleteRequest{Key: key})
		if err != nil || !d.GetExisted() {
			t.Fatalf("delete: %v %v", d, err)
		}
		d, err = kv.Delete(ctx, &nodepb.DeleteRequest{Key: key})
		if err != nil || d.GetExisted() {
			t.Fatalf("delete again: %v %v", d, err)
		}
		g, err = kv.Get(ctx, &nodepb.GetRequest{Key: key})
		if err != nil || g.GetFound() {
			t.Fatalf("get deleted: %v %v", g, err)
		}
	})

	t.Run("compare-and-swap", func(t *testing.T) {
		key := []byte("beta")
		kv := h.kv(h.leaderOf(ctx, key))
		steps := []struct {
			req              *nodepb.CompareAndSwapRequest
			swapped, found   bool
			current, present string // present: value after, "-" if absent
		}{
			{&nodepb.CompareAndSwapRequest{Key: key, ExpectAbsent: true, NewValue: []byte("a")}, true, false, "", "a"},
			{&nodepb.CompareAndSwapRequest{Key: key, ExpectAbsent: true, NewValue: []byte("b")}, false, true, "a", "a"},
			{&nodepb.CompareAndSwapRequest{Key: key, Expected: []byte("x"), NewValue: []byte("b")}, false, true, "a", "a"},
			{&nodepb.CompareAndSwapRequest{Key: key, Expected: []byte("a")}, true, true, "a", ""}, // set to empty
			{&nodepb.CompareAndSwapRequest{Key: key, Expected: nil, Delete: true}, true, true, "", "-"},
			{&nodepb.CompareAndSwapRequest{Key: key, Expected: nil, Delete: true}, false, false, "", "-"},
		}
		for i, s := range steps {
			r, err := kv.CompareAndSwap(ctx, s.req)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if r.GetSwapped() != s.swapped || r.GetFound() != s.found || string(r.GetCurrent()) != s.current {
				t.Fatalf("step %d: %v, want swapped %v found %v current %q", i, r, s.swapped, s.found, s.current)
			}
			g, err := kv.Get(ctx, &nodepb.GetRequest{Key: key})
			if err != nil {
				t.Fatal(err)
			}
			if got := map[bool]string{false: "-", true: string(g.GetValue())}[g.GetFound()]; got != s.present {
				t.Fatalf("step %d: value %q, want %q", i, got, s.present)
			}
		}
	})

	t.Run("scan", func(t *testing.T) {
		want := map[string]string{}
		for i := range 60 {
			k, v := fmt.Sprintf("scan-%02d", i), fmt.Sprint(i)
			want[k] = v
			if _, err := h.kv(h.leaderOf(ctx, []byte(k))).Put(ctx, &nodepb.PutRequest{Key: []byte(k), Value: []byte(v)}); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]string{}
		for _, d := range h.descs {
			kv := h.kv(h.c.Leader(ctx, d.ShardID))
			var cursor []byte
			for pages := 0; ; pages++ {
				if pages > 100 {
					t.Fatal("scan does not end")
				}
				r, err := kv.Scan(ctx, &nodepb.ScanRequest{ShardId: d.ShardID, Limit: 4, Cursor: cursor})
				if err != nil {
					t.Fatalf("scan shard %d: %v", d.ShardID, err)
				}
				if len(r.GetPairs()) > 4 || r.GetShardId() != d.ShardID {
					t.Fatalf("scan shard %d: %d pairs, shard %d", d.ShardID, len(r.GetPairs()), r.GetShardId())
				}
				for _, p := range r.GetPairs() {
					if h.shardOf(p.GetKey()) != d.ShardID {
						t.Fatalf("key %q of shard %d in a scan of %d", p.GetKey(), h.shardOf(p.GetKey()), d.ShardID)
					}
					if strings.HasPrefix(string(p.GetKey()), "scan-") {
						got[string(p.GetKey())] = string(p.GetValue())
					}
				}
				if cursor = r.GetCursor(); len(cursor) == 0 {
					break
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("scanned %v, want %v", got, want)
		}
		// By key: the shard of the key.
		key := []byte("scan-07")
		r, err := h.kv(h.leaderOf(ctx, key)).Scan(ctx, &nodepb.ScanRequest{Key: key, Stale: true})
		if err != nil || r.GetShardId() != h.shardOf(key) {
			t.Fatalf("scan by key: %v %v", r, err)
		}
		if !slices.ContainsFunc(r.GetPairs(), func(p *nodepb.KeyValue) bool { return bytes.Equal(p.GetKey(), key) }) {
			t.Fatalf("scan by key misses %q", key)
		}
	})

	t.Run("batch", func(t *testing.T) {
		// Keys of shards node l leads, plus one of a shard it does not lead.
		l := h.leaderOf(ctx, []byte("anchor"))
		var mine []string
		var other string
		for i := 0; len(mine) < 6 || other == ""; i++ {
			k := fmt.Sprintf("batch-%d", i)
			if h.c.Leader(ctx, h.shardOf([]byte(k))) == l {
				mine = append(mine, k)
			} else if other == "" {
				other = k
			}
		}
		ops := []*nodepb.Op{}
		for _, k := range mine {
			ops = append(ops, &nodepb.Op{Op: &nodepb.Op_Put{Put: &nodepb.PutRequest{Key: []byte(k), Value: []byte("1")}}})
		}
		same := []byte(mine[0]) // same key, in order: put 2, get, cas 2->3, delete, get
		ops = append(ops,
			&nodepb.Op{Op: &nodepb.Op_Put{Put: &nodepb.PutRequest{Key: same, Value: []byte("2")}}},
			&nodepb.Op{Op: &nodepb.Op_Get{Get: &nodepb.GetRequest{Key: same}}},
			&nodepb.Op{Op: &nodepb.Op_Cas{Cas: &nodepb.CompareAndSwapRequest{Key: same, Expected: []byte("2"), NewValue: []byte("3")}}},
			&nodepb.Op{Op: &nodepb.Op_Delete{Delete: &nodepb.DeleteRequest{Key: same}}},
			&nodepb.Op{Op: &nodepb.Op_Get{Get: &nodepb.GetRequest{Key: same}}},
			&nodepb.Op{Op: &nodepb.Op_Put{Put: &nodepb.PutRequest{Key: []byte(other), Value: []byte("x")}}},
			&nodepb.Op{},
		)
		resp, err := h.kv(l).Batch(ctx, &nodepb.BatchRequest{Ops: ops})
		if err != nil {
			t.Fatal(err)
		}
		res := resp.GetResults()
		if len(res) != len(ops) {
			t.Fatalf("%d results for %d ops", len(res), len(ops))
		}
		for i := range mine {
			if res[i].GetPut() == nil {
				t.Fatalf("op %d: %v", i, res[i])
			}
		}
		n := len(mine)
		if res[n].GetPut() == nil || string(res[n+1].GetGet().GetValue()) != "2" || !res[n+2].GetCas().GetSwapped() ||
			!res[n+3].GetDelete().GetExisted() || res[n+4].GetGet() == nil || res[n+4].GetGet().GetFound() {
			t.Fatalf("same-key ops out of order: %v", res[n:n+5])
		}
		if e := res[n+5].GetError(); e.GetReason() != nodepb.Reason_REASON_NOT_LEADER || e.GetLeaderId() == 0 || e.GetLeaderId() == l || !e.GetNotApplied() {
			t.Fatalf("op on a shard not led: %v", res[n+5])
		}
		if e := res[n+6].GetError(); e.GetReason() != nodepb.Reason_REASON_BAD_REQUEST || codes.Code(e.GetCode()) != codes.InvalidArgument {
			t.Fatalf("empty op: %v", res[n+6])
		}
	})

	t.Run("routes", func(t *testing.T) {
		h.waitRoutersAgree(ctx)
		leaders := h.c.Leaders(ctx)
		for _, id := range h.c.IDs() {
			r, err := h.kv(id).Routes(ctx, &nodepb.RoutesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if r.GetNodeId() != id || r.GetGeneration() != 1 || len(r.GetShards()) != len(h.descs) || len(r.GetNodes()) != 3 {
				t.Fatalf("routes of %d: %v", id, r)
			}
			for i, s := range r.GetShards() {
				d := h.descs[i]
				if s.GetShardId() != d.ShardID || s.GetStart() != d.Start || s.GetLast() != d.Last ||
					!slices.Equal(s.GetReplicas(), h.c.IDs()) || s.GetLeader() == 0 || s.GetTerm() == 0 {
					t.Fatalf("route %d of node %d: %v", i, id, s)
				}
				if s.GetLeader() != leaders[d.ShardID] {
					t.Logf("node %d: shard %d leader %d, cluster says %d (changed since)", id, d.ShardID, s.GetLeader(), leaders[d.ShardID])
				}
			}
			for _, n := range r.GetNodes() {
				if h.addrs[n.GetNodeId()] != n.GetAddr() {
					t.Fatalf("node %d address %q, want %q", n.GetNodeId(), n.GetAddr(), h.addrs[n.GetNodeId()])
				}
			}
			if l := r.GetLimits(); l.GetMaxKeyBytes() != 64<<10 || l.GetMaxValueBytes() != 1<<20 {
				t.Fatalf("limits %v", l)
			}
		}
	})
}

func TestClientServiceBadInput(t *testing.T) {
	cfg := node.DefaultClientServiceConfig()
	cfg.MaxBatchOps = 10
	cfg.MaxScanBytes = 16 // a page-N pair is 16 or 17 bytes: one per page
	h := newHarness(t, 4, cfg)
	ctx := ctxT(t, 30*time.Second)
	kv := h.kv(1)
	bigKey := bytes.Repeat([]byte("k"), 64<<10+1)
	bigValue := bytes.Repeat([]byte("v"), 1<<20+1)
	calls := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason nodepb.Reason
	}{
		{"put empty key", func() error { _, err := kv.Put(ctx, &nodepb.PutRequest{Value: []byte("v")}); return err }, codes.InvalidArgument, nodepb.Reason_REASON_EMPTY_KEY},
		{"get empty key", func() error { _, err := kv.Get(ctx, &nodepb.GetRequest{}); return err }, codes.InvalidArgument, nodepb.Reason_REASON_EMPTY_KEY},
		{"delete empty key", func() error { _, err := kv.Delete(ctx, &nodepb.DeleteRequest{}); return err }, codes.InvalidArgument, nodepb.Reason_REASON_EMPTY_KEY},
		{"cas empty key", func() error { _, err := kv.CompareAndSwap(ctx, &nodepb.CompareAndSwapRequest{}); return err }, codes.InvalidArgument, nodepb.Reason_REASON_EMPTY_KEY},
		{"put key too large", func() error { _, err := kv.Put(ctx, &nodepb.PutRequest{Key: bigKey}); return err }, codes.InvalidArgument, nodepb.Reason_REASON_KEY_TOO_LARGE},
		{"get key too large", func() error { _, err := kv.Get(ctx, &nodepb.GetRequest{Key: bigKey}); return err }, codes.InvalidArgument, nodepb.Reason_REASON_KEY_TOO_LARGE},
		{"put value too large", func() error {
			_, err := kv.Put(ctx, &nodepb.PutRequest{Key: []byte("k"), Value: bigValue})
			return err
		}, codes.InvalidArgument, nodepb.Reason_REASON_VALUE_TOO_LARGE},
		{"cas expected too large", func() error {
			_, err := kv.CompareAndSwap(ctx, &nodepb.CompareAndSwapRequest{Key: []byte("k"), Expected: bigValue})
			return err
		}, codes.InvalidArgument, nodepb.Reason_REASON_VALUE_TOO_LARGE},
		{"cas absent and expected", func() error {
			_, err := kv.CompareAndSwap(ctx, &nodepb.CompareAndSwapRequest{Key: []byte("k"), ExpectAbsent: true, Expected: []byte("x")})
			return err
		}, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
		{"scan unknown shard", func() error { _, err := kv.Scan(ctx, &nodepb.ScanRequest{ShardId: 999}); return err }, codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND},
		{"scan no selector", func() error { _, err := kv.Scan(ctx, &nodepb.ScanRequest{}); return err }, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
		{"scan two selectors", func() error {
			_, err := kv.Scan(ctx, &nodepb.ScanRequest{ShardId: 1, Key: []byte("k")})
			return err
		}, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
		{"scan empty key", func() error { _, err := kv.Scan(ctx, &nodepb.ScanRequest{ShardId: 0, Key: nil}); return err }, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
		{"scan bad cursor", func() error {
			_, err := kv.Scan(ctx, &nodepb.ScanRequest{ShardId: 1, Cursor: []byte{9, 9}, Stale: true})
			return err
		}, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
		{"scan cursor of another shard", func() error {
			_, err := kv.Scan(ctx, &nodepb.ScanRequest{ShardId: 1, Cursor: append([]byte{2}, bytes.Repeat([]byte{0xff}, 9)...), Stale: true})
			return err
		}, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
		{"batch too large", func() error {
			_, err := kv.Batch(ctx, &nodepb.BatchRequest{Ops: make([]*nodepb.Op, 11)})
			return err
		}, codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST},
	}
	for _, c := range calls {
		e := wantError(t, c.name, c.call(), c.code, c.reason)
		if !e.GetNotApplied() {
			t.Errorf("%s: not_applied unset", c.name)
		}
		if strings.Contains(c.name, "too large") && (e.GetLimit() == 0 || e.GetSize() <= e.GetLimit()) {
			t.Errorf("%s: limit %d size %d", c.name, e.GetLimit(), e.GetSize())
		}
	}
	// MaxScanBytes cuts a page: every key is still visited once.
	put := map[string]bool{}
	for i := range 12 {
		k := fmt.Sprintf("page-%d", i)
		put[k] = true
		if _, err := h.kv(h.leaderOf(ctx, []byte(k))).Put(ctx, &nodepb.PutRequest{Key: []byte(k), Value: []byte("0123456789")}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, d := range h.descs {
		var cursor []byte
		for {
			r, err := h.kv(h.c.Leader(ctx, d.ShardID)).Scan(ctx, &nodepb.ScanRequest{ShardId: d.ShardID, Cursor: cursor, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.GetPairs()) > 2 {
				t.Fatalf("a page of %d pairs over MaxScanBytes", len(r.GetPairs()))
			}
			for _, p := range r.GetPairs() {
				if seen[string(p.GetKey())] {
					t.Fatalf("key %q twice", p.GetKey())
				}
				seen[string(p.GetKey())] = true
			}
			if cursor = r.GetCursor(); len(cursor) == 0 {
				break
			}
		}
	}
	for k := range put {
		if !seen[k] {
			t.Fatalf("scan missed %q", k)
		}
	}
	// Malformed batch ops each get their own error; nil ops do not crash.
	resp, err := kv.Batch(ctx, &nodepb.BatchRequest{Ops: []*nodepb.Op{
		{}, {Op: &nodepb.Op_Put{}}, {Op: &nodepb.Op_Get{Get: &nodepb.GetRequest{Key: bigKey}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []nodepb.Reason{nodepb.Reason_REASON_BAD_REQUEST, nodepb.Reason_REASON_EMPTY_KEY, nodepb.Reason_REASON_KEY_TOO_LARGE} {
		if r := resp.GetResults()[i].GetError().GetReason(); r != want {
			t.Errorf("batch op %d: %v, want %v", i, resp.GetResults()[i], want)
		}
	}
	// Handlers called directly with nil requests answer, never panic.
	svc := h.svcs[1]
	for name, call := range map[string]func() error{
		"put":    func() error { _, err := svc.Put(ctx, nil); return err },
		"get":    func() error { _, err := svc.Get(ctx, nil); return err },
		"delete": func() error { _, err := svc.Delete(ctx, nil); return err },
		"cas":    func() error { _, err := svc.CompareAndSwap(ctx, nil); return err },
		"scan":   func() error { _, err := svc.Scan(ctx, nil); return err },
		"batch":  func() error { _, err := svc.Batch(ctx, &nodepb.BatchRequest{Ops: []*nodepb.Op{nil}}); return err },
		"routes": func() error { _, err := svc.Routes(ctx, nil); return err },
	} {
		err := call()
		if name == "batch" || name == "routes" {
			if err != nil {
				t.Errorf("%s(nil): %v", name, err)
			}
			continue
		}
		if c, _ := errorOf(t, err); c != codes.InvalidArgument {
			t.Errorf("%s(nil): %v", name, err)
		}
	}
}

func TestClientServiceNotLeader(t *testing.T) {
	h := newHarness(t, 4, node.DefaultClientServiceConfig())
	ctx := ctxT(t, 30*time.Second)
	key := []byte("gamma")
	shard := h.shardOf(key)
	// Leadership may move on its own (an election under load): retry until
	// the answer and the cluster agree.
	var last string
	err := h.c.WaitFor(ctx, "a NotLeader hint naming the leader", func() bool {
		l := h.c.Leader(ctx, shard)
		st, err := h.c.Engine(l).Status(ctx, shard)
		if err != nil {
			return false
		}
		f := h.follower(l)
		_, perr := h.kv(f).Put(ctx, &nodepb.PutRequest{Key: key, Value: []byte("v")})
		_, gerr := h.kv(f).Get(ctx, &nodepb.GetRequest{Key: key})
		for _, err := range []error{perr, gerr} {
			if err == nil {
				last = "no error"
				return false
			}
			c, e := errorOf(t, err)
			last = fmt.Sprintf("%s %v", c, e)
			if c != codes.Unavailable || e.GetReason() != nodepb.Reason_REASON_NOT_LEADER || e.GetShardId() != shard ||
				e.GetLeaderId() != l || e.GetLeaderAddr() != h.addrs[l] || e.GetTerm() != st.Term || e.GetGeneration() != 1 {
				return false
			}
		}
		if !errorNotApplied(t, perr) {
			t.Fatalf("NotLeader of a put without not_applied: %v", perr)
		}
		// A stale read is served by the follower.
		_, err = h.kv(f).Get(ctx, &nodepb.GetRequest{Key: key, Stale: true})
		return err == nil
	})
	if err != nil {
		t.Fatalf("%v; last answer: %s", err, last)
	}
}

func errorNotApplied(t *testing.T, err error) bool {
	_, e := errorOf(t, err)
	return e.GetNotApplied()
}

// TestClientServiceStaleRing routes with a ring that disagrees with the
// shards' ranges: the engine refuses the key and the service says
// FailedPrecondition with the shard and its generation.
func TestClientServiceStaleRing(t *testing.T) {
	h := newHarness(t, 4, node.DefaultClientServiceConfig())
	ctx := ctxT(t, 30*time.Second)
	// The same shards in reverse order: most keys land in a shard whose range
	// does not hold them.
	bogus, err := router.EvenRing(2, []uint64{4, 3, 2, 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetRing(bogus); err != nil {
		t.Fatal(err)
	}
	var key []byte
	for i := 0; key == nil; i++ {
		k := []byte(fmt.Sprintf("stale-%d", i))
		if bogus.Lookup(router.PartitionRule{}.Hash(k)) != h.shardOf(k) {
			key = k
		}
	}
	wrong := bogus.Lookup(router.PartitionRule{}.Hash(key))
	var leader uint64
	if err := h.c.WaitFor(ctx, "a leader", func() bool { leader = h.c.Leader(ctx, wrong); return leader != 0 }); err != nil {
		t.Fatal(err)
	}
	svc, err := node.NewClientService(node.DefaultClientServiceConfig(), h.c.Engine(leader), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	_, err = svc.Get(ctx, &nodepb.GetRequest{Key: key, Stale: true})
	e := wantError(t, "stale get", err, codes.FailedPrecondition, nodepb.Reason_REASON_KEY_NOT_IN_SHARD)
	if e.GetShardId() != wrong || e.GetGeneration() != h.descs[0].Generation {
		t.Fatalf("stale get: %v", e)
	}
	_, err = svc.Put(ctx, &nodepb.PutRequest{Key: key, Value: []byte("v")})
	if c, e := errorOf(t, err); !(c == codes.FailedPrecondition && e.GetReason() == nodepb.Reason_REASON_KEY_NOT_IN_SHARD && e.GetNotApplied()) &&
		e.GetReason() != nodepb.Reason_REASON_NOT_LEADER { // leadership may have moved meanwhile
		t.Fatalf("stale put: %v", err)
	}
}

func TestClientServiceDeadline(t *testing.T) {
	h := newHarness(t, 2, node.DefaultClientServiceConfig())
	ctx := ctxT(t, 30*time.Second)
	done, cancel := context.WithCancel(ctx)
	cancel()
	key := []byte("delta")
	_, err := h.svcs[h.leaderOf(ctx, key)].Get(done, &nodepb.GetRequest{Key: key})
	wantError(t, "canceled get", err, codes.Canceled, nodepb.Reason_REASON_DEADLINE)
	// Closing the service twice, or starting a feed after Close, is safe.
	svc := h.svcs[1]
	svc.Close()
	svc.Close()
	if err := svc.StartLeaderFeed(ctx); err != node.ErrClientServiceClosed {
		t.Fatalf("feed after close: %v", err)
	}
}

func TestClientServiceConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(*node.ClientServiceConfig)
		ok   bool
	}{
		{"default", func(*node.ClientServiceConfig) {}, true},
		{"zero", func(c *node.ClientServiceConfig) { *c = node.ClientServiceConfig{} }, true},
		{"negative key", func(c *node.ClientServiceConfig) { c.MaxKeyBytes = -1 }, false},
		{"negative timeout", func(c *node.ClientServiceConfig) { c.MaxRequestTimeout = -time.Second }, false},
		{"default over max scan", func(c *node.ClientServiceConfig) { c.DefaultScanLimit, c.MaxScanLimit = 10, 5 }, false},
	} {
		cfg := node.DefaultClientServiceConfig()
		c.mod(&cfg)
		before := cfg
		err := cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
		if cfg != before {
			t.Errorf("%s: Validate changed the config", c.name)
		}
	}
}
