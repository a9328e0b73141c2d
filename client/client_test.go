package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc/codes"
)

func TestClientKV(t *testing.T) {
	h := newHarness(t, 8)
	ctx := ctxT(t, 60*time.Second)
	cl := h.client(client.Config{Endpoints: h.endpoints()[:1]}) // learns the others from Routes

	t.Run("put-get-delete", func(t *testing.T) {
		if err := cl.Put(ctx, []byte("a"), []byte("1")); err != nil {
			t.Fatal(err)
		}
		v, found, err := cl.Get(ctx, []byte("a"))
		if err != nil || !found || string(v) != "1" {
			t.Fatalf("get: %q %v %v", v, found, err)
		}
		if err := cl.Put(ctx, []byte("empty"), nil); err != nil {
			t.Fatal(err)
		}
		if v, found, err := cl.Get(ctx, []byte("empty")); err != nil || !found || v == nil || len(v) != 0 {
			t.Fatalf("get empty value: %q %v %v", v, found, err)
		}
		if existed, err := cl.Delete(ctx, []byte("a")); err != nil || !existed {
			t.Fatalf("delete: %v %v", existed, err)
		}
		if existed, err := cl.Delete(ctx, []byte("a")); err != nil || existed {
			t.Fatalf("delete again: %v %v", existed, err)
		}
		if _, found, err := cl.Get(ctx, []byte("a"), client.Stale); err != nil || found {
			t.Fatalf("stale get deleted: %v %v", found, err)
		}
	})

	t.Run("compare-and-swap", func(t *testing.T) {
		key := []byte("cas")
		steps := []struct {
			expected, desired []byte
			swapped, found    bool
			current           string
		}{
			{nil, []byte("1"), true, false, ""},
			{nil, []byte("2"), false, true, "1"},
			{[]byte("0"), []byte("2"), false, true, "1"},
			{[]byte("1"), []byte{}, true, true, "1"},
			{[]byte{}, nil, true, true, ""},
			{[]byte{}, nil, false, false, ""},
		}
		for i, s := range steps {
			r, err := cl.CompareAndSwap(ctx, key, s.expected, s.desired)
			if err != nil || r.Swapped != s.swapped || r.Found != s.found || string(r.Current) != s.current {
				t.Fatalf("step %d: %+v %v", i, r, err)
			}
		}
	})

	t.Run("scan", func(t *testing.T) {
		want := map[string]string{}
		for i := range 40 {
			k, v := fmt.Sprintf("scan-%02d", i), fmt.Sprint(i)
			want[k] = v
			if err := cl.Put(ctx, []byte(k), []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]string{}
		shards := cl.Shards()
		if len(shards) != 8 {
			t.Fatalf("shards %v", shards)
		}
		for _, shard := range shards {
			req := client.ScanRequest{ShardID: shard, Limit: 3}
			for {
				res, err := cl.Scan(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				for _, kv := range res.Pairs {
					if s, _ := cl.ShardOf(kv.Key); s != shard {
						t.Fatalf("key %q of shard %d in shard %d", kv.Key, s, shard)
					}
					if strings.HasPrefix(string(kv.Key), "scan-") {
						got[string(kv.Key)] = string(kv.Value)
					}
				}
				if res.Cursor == nil {
					break
				}
				req.Cursor = res.Cursor
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("scanned %v, want %v", got, want)
		}
		res, err := cl.Scan(ctx, client.ScanRequest{Key: []byte("scan-01"), Stale: true})
		if s, _ := cl.ShardOf([]byte("scan-01")); err != nil || res.ShardID != s {
			t.Fatalf("scan by key: %+v %v", res, err)
		}
	})

	t.Run("batch", func(t *testing.T) {
		var ops []client.Op
		for i := range 30 {
			ops = append(ops, client.PutOp([]byte(fmt.Sprintf("batch-%d", i)), []byte(fmt.Sprint(i))))
		}
		ops = append(ops, client.CASOp([]byte("batch-cas"), nil, []byte("x")), client.DeleteOp([]byte("batch-0")))
		res, err := cl.Batch(ctx, ops)
		if err != nil {
			t.Fatal(err)
		}
		if !res[30].Swapped || !res[31].Existed {
			t.Fatalf("cas %+v delete %+v", res[30], res[31])
		}
		ops = ops[:0]
		for i := range 30 {
			ops = append(ops, client.GetOp([]byte(fmt.Sprintf("batch-%d", i)), false))
		}
		ops = append(ops, client.GetOp(nil, false), client.PutOp([]byte("k"), bytes.Repeat([]byte("v"), 1<<20+1)))
		res, err = cl.Batch(ctx, ops)
		if !errors.Is(err, client.ErrEmptyKey) {
			t.Fatalf("batch error %v, want the first failure, ErrEmptyKey", err)
		}
		for i := range 30 {
			if want := fmt.Sprint(i); res[i].Err != nil || res[i].Found != (i != 0) || (i != 0 && string(res[i].Value) != want) {
				t.Fatalf("get %d: %+v", i, res[i])
			}
		}
		if !errors.Is(res[30].Err, client.ErrEmptyKey) || !errors.Is(res[31].Err, client.ErrValueTooLarge) {
			t.Fatalf("bad ops: %v, %v", res[30].Err, res[31].Err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		bigKey := bytes.Repeat([]byte("k"), 64<<10+1)
		bigValue := bytes.Repeat([]byte("v"), 1<<20+1)
		_, _, getErr := cl.Get(ctx, nil)
		_, delErr := cl.Delete(ctx, bigKey)
		_, casErr := cl.CompareAndSwap(ctx, []byte("k"), bigValue, nil)
		_, scanErr := cl.Scan(ctx, client.ScanRequest{ShardID: 999})
		_, scan2Err := cl.Scan(ctx, client.ScanRequest{ShardID: 1, Key: []byte("k")})
		for _, c := range []struct {
			err, want error
		}{
			{cl.Put(ctx, nil, []byte("v")), client.ErrEmptyKey},
			{cl.Put(ctx, bigKey, nil), client.ErrKeyTooLarge},
			{cl.Put(ctx, []byte("k"), bigValue), client.ErrValueTooLarge},
			{getErr, client.ErrEmptyKey},
			{delErr, client.ErrKeyTooLarge},
			{casErr, client.ErrValueTooLarge},
			{scanErr, client.ErrShardNotFound}, // from the server: NotFound
			{scan2Err, client.ErrBadRequest},
		} {
			if !errors.Is(c.err, c.want) {
				t.Errorf("error %v, want %v", c.err, c.want)
			}
		}
		var se *client.Error
		if !errors.As(scanErr, &se) || se.Code != codes.NotFound {
			t.Errorf("scan of an unknown shard: %v", scanErr)
		}
	})
}

// TestClientLeaderTransfers is the client's promise: writers keep writing
// while every shard's leadership moves again and again, no write fails at
// the caller (the client follows NotLeader hints and retries dropped
// proposals), and afterwards every acknowledged write reads back with its
// last value.
func TestClientLeaderTransfers(t *testing.T) {
	h := newHarness(t, 8)
	ctx := ctxT(t, 120*time.Second)
	cl := h.client(client.Config{})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := newRand(seed)

	const (
		writers       = 4
		keysPerWriter = 8
		maxWrites     = 5000 // per writer; the transfers end the run long before
		rounds        = 4    // transfers of every shard
		// writes acknowledged between two transfers
		writesPerTransfer = 24
		opTimeout         = 20 * time.Second
	)
	var (
		stop   = make(chan struct{})
		writes atomic.Int64
		g      group
	)
	acked := make([]map[string]string, writers+1) // per writer, the last acknowledged value of each key
	for w := range writers {
		acked[w] = map[string]string{}
		g.Go(func() error {
			for n := 0; n < maxWrites && !stopped(stop); n++ {
				key, val := fmt.Sprintf("w%d-k%d", w, n%keysPerWriter), fmt.Sprintf("v%d", n)
				wctx, cancel := context.WithTimeout(ctx, opTimeout)
				err := cl.Put(wctx, []byte(key), []byte(val))
				cancel()
				if err != nil {
					return fmt.Errorf("writer %d: put %s=%s: %w", w, key, val, err)
				}
				acked[w][key] = val
				writes.Add(1)
			}
			return nil
		})
	}
	// One writer writes through Batch: a put to each of its keys per call.
	acked[writers] = map[string]string{}
	g.Go(func() error {
		for n := 0; n < maxWrites && !stopped(stop); n++ {
			var ops []client.Op
			for k := range keysPerWriter {
				ops = append(ops, client.PutOp([]byte(fmt.Sprintf("b-k%d", k)), []byte(fmt.Sprintf("v%d", n))))
			}
			wctx, cancel := context.WithTimeout(ctx, opTimeout)
			_, err := cl.Batch(wctx, ops)
			cancel()
			if err != nil {
				return fmt.Errorf("batch writer: call %d: %w", n, err)
			}
			for _, op := range ops {
				acked[writers][string(op.Key)] = string(op.Value)
			}
			writes.Add(int64(len(ops)))
		}
		return nil
	})
	// A counter incremented by compare-and-swap: never retried blindly, so
	// each success adds exactly one.
	var counter int
	g.Go(func() error {
		key := []byte("counter")
		for n := 0; n < maxWrites && !stopped(stop); n++ {
			var expected []byte
			if counter > 0 {
				expected = []byte(fmt.Sprint(counter))
			}
			wctx, cancel := context.WithTimeout(ctx, opTimeout)
			r, err := cl.CompareAndSwap(wctx, key, expected, []byte(fmt.Sprint(counter+1)))
			cancel()
			if err != nil {
				return fmt.Errorf("counter: cas %d->%d: %w", counter, counter+1, err)
			}
			if !r.Swapped {
				return fmt.Errorf("counter: cas %d->%d did not swap, found %q", counter, counter+1, r.Current)
			}
			counter++
		}
		return nil
	})

	transfers, refused := 0, 0
	for round := range rounds {
		for _, shard := range h.ids {
			// Let the writers make progress between two transfers, so that
			// every transfer lands among writes.
			target := writes.Load() + writesPerTransfer
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := h.c.WaitFor(wctx, "writes between transfers", func() bool { return writes.Load() >= target })
			cancel()
			if err != nil {
				close(stop)
				t.Fatalf("%v (writer error: %v)", err, g.Wait())
			}
			leader := h.c.Leader(ctx, shard)
			if leader == 0 {
				refused++
				continue
			}
			others := slices.DeleteFunc(h.c.IDs(), func(id uint64) bool { return id == leader })
			to := others[rng.IntN(len(others))]
			tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = h.c.Engine(leader).TransferLeader(tctx, shard, to)
			cancel()
			if err != nil {
				refused++
				t.Logf("round %d: shard %d: transfer %d -> %d: %v", round, shard, leader, to, err)
				continue
			}
			transfers++
		}
	}
	close(stop)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	st := cl.Stats()
	t.Logf("%d transfers (%d refused), %d writes, %d CAS increments; client: %d redirects, %d backoffs, %d route refreshes",
		transfers, refused, writes.Load(), counter, st.Redirects, st.Backoffs, st.Refreshes)
	if transfers < rounds*len(h.ids)/2 {
		t.Fatalf("only %d of %d transfers happened", transfers, rounds*len(h.ids))
	}
	if writes.Load() < int64(transfers*writesPerTransfer) || counter == 0 {
		t.Fatal("no write happened during the transfers")
	}
	if st.Redirects+st.Backoffs == 0 {
		t.Fatal("no write was retried: the leadership changes were not exercised")
	}

	// Every acknowledged write is there, with its last value: one by one,
	// and in one batch.
	var ops []client.Op
	var want []string
	for _, m := range acked {
		for k, v := range m {
			got, found, err := cl.Get(ctx, []byte(k))
			if err != nil || !found || string(got) != v {
				t.Fatalf("key %s: %q found %v err %v, want %q", k, got, found, err, v)
			}
			ops, want = append(ops, client.GetOp([]byte(k), false)), append(want, v)
		}
	}
	res, err := cl.Batch(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.Found || string(r.Value) != want[i] {
			t.Fatalf("batch get %s: %+v, want %q", ops[i].Key, r, want[i])
		}
	}
	if v, _, err := cl.Get(ctx, []byte("counter")); err != nil || string(v) != fmt.Sprint(counter) {
		t.Fatalf("counter %q (%v), want %d", v, err, counter)
	}
}

func stopped(stop chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// TestClientOutcomes checks, against a scripted server, what the client
// without sessions does with each kind of failure (TestClientSessionOutcomes:
// with them).
func TestClientOutcomes(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	block := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	var casCalls, getCalls atomic.Int32
	f := newFake(t, &fakeKV{
		put: func(ctx context.Context, _ *nodepb.PutRequest) (*nodepb.PutResponse, error) {
			return nil, block(ctx)
		},
		cas: func(ctx context.Context, req *nodepb.CompareAndSwapRequest) (*nodepb.CompareAndSwapResponse, error) {
			switch string(req.GetKey()) {
			case "dropped": // dropped twice (certainly not applied), then applied
				if casCalls.Add(1) <= 2 {
					return nil, node.StatusError(&nodepb.Error{Reason: nodepb.Reason_REASON_PROPOSAL_DROPPED,
						Code: uint32(codes.Unavailable), NotApplied: true})
				}
				return &nodepb.CompareAndSwapResponse{Swapped: true}, nil
			case "closed": // the node stopped mid-proposal: unknown
				return nil, node.StatusError(&nodepb.Error{Reason: nodepb.Reason_REASON_CLOSED, Code: uint32(codes.Unavailable)})
			}
			return nil, block(ctx)
		},
		get: func(ctx context.Context, _ *nodepb.GetRequest) (*nodepb.GetResponse, error) {
			if getCalls.Add(1) <= 3 { // no leader known, then found
				return nil, node.StatusError(&nodepb.Error{Reason: nodepb.Reason_REASON_NOT_LEADER,
					Code: uint32(codes.Unavailable), ShardId: 1, Term: 2, NotApplied: false})
			}
			return &nodepb.GetResponse{Found: true, Value: []byte("v")}, nil
		},
	})
	cl, err := client.New(ctx, client.Config{Endpoints: []string{f.addr}, BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond,
		DisableSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	// A CAS in flight at the deadline: ambiguous, and the deadline says why.
	_, err = cl.CompareAndSwap(short(), []byte("k"), nil, []byte("v"))
	var amb *client.AmbiguousError
	if !errors.As(err, &amb) || !errors.Is(err, client.ErrAmbiguous) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cas at the deadline: %v", err)
	}
	// A CAS whose node closed mid-proposal: ambiguous at once, not retried.
	_, err = cl.CompareAndSwap(ctx, []byte("closed"), nil, []byte("v"))
	if !errors.Is(err, client.ErrAmbiguous) {
		t.Fatalf("cas on a closing node: %v", err)
	}
	// Certainly-not-applied failures are retried, even for a CAS.
	if r, err := cl.CompareAndSwap(ctx, []byte("dropped"), nil, []byte("v")); err != nil || !r.Swapped || casCalls.Load() != 3 {
		t.Fatalf("cas after drops: %+v %v (%d calls)", r, err, casCalls.Load())
	}
	// A put in flight at the deadline: ambiguous too (it was retried, and may
	// have applied).
	if err := cl.Put(short(), []byte("k"), []byte("v")); !errors.Is(err, client.ErrAmbiguous) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put at the deadline: %v", err)
	}
	// NotLeader without a hint: back off, refresh, retry.
	before := cl.Stats()
	if v, found, err := cl.Get(ctx, []byte("k")); err != nil || !found || string(v) != "v" {
		t.Fatalf("get after NotLeader: %q %v %v", v, found, err)
	}
	if after := cl.Stats(); after.Backoffs-before.Backoffs < 3 || after.Refreshes == before.Refreshes {
		t.Fatalf("get after NotLeader: stats %+v -> %+v", before, after)
	}
	// A read that times out is a plain context error, not ambiguous.
	if _, err := cl.Scan(short(), client.ScanRequest{ShardID: 1}); errors.Is(err, client.ErrAmbiguous) {
		t.Fatalf("scan: %v", err)
	}
	// A refused call (Unimplemented) is not retried.
	_, err = cl.Delete(ctx, []byte("k"))
	var se *client.Error
	if !errors.As(err, &se) || se.Code != codes.Unimplemented || errors.Is(err, client.ErrAmbiguous) {
		t.Fatalf("delete: %v", err)
	}
	cl.Close()
	if err := cl.Put(ctx, []byte("k"), nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("put after close: %v", err)
	}
}

func TestClientNewUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := client.New(ctx, client.Config{Endpoints: []string{addr}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("new: %v", err)
	}
}

func TestClientConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  client.Config
		ok   bool
	}{
		{"endpoint", client.Config{Endpoints: []string{"x:1"}}, true},
		{"no endpoint", client.Config{}, false},
		{"empty endpoint", client.Config{Endpoints: []string{""}}, false},
		{"negative", client.Config{Endpoints: []string{"x:1"}, MaxKeyBytes: -1}, false},
		{"backoff", client.Config{Endpoints: []string{"x:1"}, BackoffMin: time.Second, BackoffMax: time.Millisecond}, false},
	} {
		err := c.cfg.Validate()
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, client.ErrBadConfig)) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
