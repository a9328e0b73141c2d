package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// sessionLog records the sessions a fake server received, in order.
type sessionLog struct {
	mu   sync.Mutex
	seen []*nodepb.Session // guarded
}

func (l *sessionLog) add(s *nodepb.Session) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s != nil {
		s = proto.Clone(s).(*nodepb.Session)
	}
	l.seen = append(l.seen, s)
	return len(l.seen)
}

func (l *sessionLog) all() []*nodepb.Session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*nodepb.Session(nil), l.seen...)
}

func statusOf(reason nodepb.Reason, code codes.Code, notApplied bool) error {
	return node.StatusError(&nodepb.Error{Reason: reason, Code: uint32(code), ShardId: 1, NotApplied: notApplied})
}

// TestClientSessionOutcomes checks, against a scripted server, the sessions
// the client sends: one sequence number per write kept by its retries,
// registration until a shard answered and again after it forgot the
// session, and the acknowledgement of the writes still running.
func TestClientSessionOutcomes(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	var (
		casLog, putLog, batchLog sessionLog
		arrived                  = make(chan *nodepb.Session, 1) // the put of key "block" arrived
		blocked                  = make(chan struct{})           // and waits for this
	)
	f := newFake(t, &fakeKV{
		cas: func(ctx context.Context, req *nodepb.CompareAndSwapRequest) (*nodepb.CompareAndSwapResponse, error) {
			n := casLog.add(req.GetSession())
			switch {
			case string(req.GetKey()) == "dup":
				return nil, statusOf(nodepb.Reason_REASON_DUPLICATE_REQUEST, codes.AlreadyExists, false)
			case n == 1: // the node stopped mid-proposal: unknown outcome
				return nil, statusOf(nodepb.Reason_REASON_CLOSED, codes.Unavailable, false)
			}
			return &nodepb.CompareAndSwapResponse{ShardId: 1, Swapped: true}, nil
		},
		put: func(ctx context.Context, req *nodepb.PutRequest) (*nodepb.PutResponse, error) {
			if string(req.GetKey()) == "block" {
				arrived <- req.GetSession()
				select {
				case <-blocked:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			} else if putLog.add(req.GetSession()) == 1 { // the shard forgot the session
				return nil, statusOf(nodepb.Reason_REASON_SESSION_NOT_FOUND, codes.FailedPrecondition, true)
			}
			return &nodepb.PutResponse{ShardId: 1}, nil
		},
		bat: func(ctx context.Context, req *nodepb.BatchRequest) (*nodepb.BatchResponse, error) {
			resp := &nodepb.BatchResponse{}
			for _, op := range req.GetOps() {
				switch x := op.GetOp().(type) {
				case *nodepb.Op_Put:
					batchLog.add(x.Put.GetSession())
					resp.Results = append(resp.Results, &nodepb.OpResult{Result: &nodepb.OpResult_Put{Put: &nodepb.PutResponse{}}})
				case *nodepb.Op_Get:
					resp.Results = append(resp.Results, &nodepb.OpResult{Result: &nodepb.OpResult_Get{Get: &nodepb.GetResponse{}}})
				case *nodepb.Op_Cas:
					batchLog.add(x.Cas.GetSession())
					resp.Results = append(resp.Results, &nodepb.OpResult{Result: &nodepb.OpResult_Cas{Cas: &nodepb.CompareAndSwapResponse{Swapped: true}}})
				}
			}
			return resp, nil
		},
	})
	cl, err := client.New(ctx, client.Config{Endpoints: []string{f.addr}, BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// A CAS whose first attempt had an unknown outcome is retried with the
	// same session and sequence number, registering until answered.
	if r, err := cl.CompareAndSwap(ctx, []byte("k"), nil, []byte("v")); err != nil || !r.Swapped {
		t.Fatalf("cas: %+v %v", r, err)
	}
	seen := casLog.all()
	if len(seen) != 2 || seen[0].GetId() == 0 || !proto.Equal(seen[0], seen[1]) || !seen[0].GetRegister() || seen[0].GetAck() != seen[0].GetSeq() {
		t.Fatalf("cas attempts carried %v", seen)
	}
	id, seq := seen[0].GetId(), seen[0].GetSeq()

	// The shard answered: the next write does not register; it forgets the
	// session: the write is sent again at once, registering.
	before := cl.Stats()
	if err := cl.Put(ctx, []byte("p"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	want := []*nodepb.Session{
		{Id: id, Seq: seq + 1, Ack: seq + 1},
		{Id: id, Seq: seq + 1, Ack: seq + 1, Register: true},
	}
	if seen := putLog.all(); len(seen) != 2 || !proto.Equal(seen[0], want[0]) || !proto.Equal(seen[1], want[1]) {
		t.Fatalf("put attempts carried %v, want %v", seen, want)
	}
	if after := cl.Stats(); after.Backoffs != before.Backoffs {
		t.Fatalf("the re-registration backed off: %+v -> %+v", before, after)
	}

	// While a write runs, later writes acknowledge no further than it.
	putDone := make(chan error, 1)
	go func() { putDone <- cl.Put(ctx, []byte("block"), nil) }()
	running := <-arrived
	if _, err := cl.CompareAndSwap(ctx, []byte("k"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if s := casLog.all(); running.GetSeq() != seq+2 || s[len(s)-1].GetSeq() != seq+3 || s[len(s)-1].GetAck() != seq+2 {
		t.Fatalf("write %v running, then %v", running, s[len(s)-1])
	}
	close(blocked)
	if err := <-putDone; err != nil {
		t.Fatal(err)
	}

	// A batch's writes carry the session, each its own sequence number.
	if _, err := cl.Batch(ctx, []client.Op{client.PutOp([]byte("a"), nil), client.GetOp([]byte("a"), false), client.CASOp([]byte("b"), nil, nil)}); err != nil {
		t.Fatal(err)
	}
	if s := batchLog.all(); len(s) != 2 || s[0].GetId() != id || s[1].GetSeq() != s[0].GetSeq()+1 || s[1].GetAck() != s[0].GetSeq() {
		t.Fatalf("batch carried %v", s)
	}

	// A duplicate is refused for good.
	if _, err := cl.CompareAndSwap(ctx, []byte("dup"), nil, nil); !errors.Is(err, client.ErrDuplicateRequest) {
		t.Fatalf("duplicate: %v", err)
	}

	// Without sessions, none is sent.
	plain, err := client.New(ctx, client.Config{Endpoints: []string{f.addr}, DisableSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	n := len(casLog.all())
	if _, err := plain.CompareAndSwap(ctx, []byte("k"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if s := casLog.all(); len(s) != n+1 || s[n] != nil {
		t.Fatalf("a client without sessions sent %v", s[n:])
	}
}

// loseFirstResponses is a client interceptor that lets the first attempt
// of every compare-and-swap (by session and sequence number) reach the
// server, then drops the response and reports a broken connection.
func loseFirstResponses() grpc.UnaryClientInterceptor {
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
	)
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		cas, ok := req.(*nodepb.CompareAndSwapRequest)
		if !ok {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		id := fmt.Sprint(cas.GetSession().GetId(), "/", cas.GetSession().GetSeq())
		mu.Lock()
		first := !seen[id]
		seen[id] = true
		mu.Unlock()
		err := invoker(ctx, method, req, reply, cc, opts...)
		if first && err == nil {
			return status.Error(codes.Unavailable, "test: response lost")
		}
		return err
	}
}

// TestClientSessionLostResponse increments a counter by compare-and-swap
// on a real cluster while every CAS's first response is lost after the
// CAS applied: each retry reports the swap of the first attempt, and the
// counter advances once per increment. Without sessions, the same loss is
// an ambiguous outcome.
func TestClientSessionLostResponse(t *testing.T) {
	h := newHarness(t, 4)
	ctx := ctxT(t, 60*time.Second)
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(loseFirstResponses()),
	}
	cl := h.client(client.Config{DialOptions: dial, BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond})
	key := []byte("counter")
	shard, err := cl.ShardOf(key)
	if err != nil {
		t.Fatal(err)
	}
	replays := func() (n uint64) {
		for _, id := range h.c.IDs() {
			n += h.c.Engine(id).Stats().SessionReplays
		}
		return n
	}
	const increments = 5
	for i := range increments {
		var expected []byte
		if i > 0 {
			expected = []byte(fmt.Sprint(i))
		}
		r, err := cl.CompareAndSwap(ctx, key, expected, []byte(fmt.Sprint(i+1)))
		if err != nil || !r.Swapped {
			t.Fatalf("increment %d: %+v %v", i+1, r, err)
		}
	}
	if v, _, err := cl.Get(ctx, key); err != nil || string(v) != fmt.Sprint(increments) {
		t.Fatalf("counter %q (%v), want %d", v, err, increments)
	}
	// Each retry was answered from the stored result, on every replica.
	if err := h.c.WaitFor(ctx, "replays on every replica", func() bool { return replays() >= increments*3 }); err != nil {
		t.Fatalf("%v: %d replays of shard %d", err, replays(), shard)
	}

	plain := h.client(client.Config{DialOptions: dial, DisableSessions: true})
	_, err = plain.CompareAndSwap(ctx, []byte("plain"), nil, []byte("1"))
	if !errors.Is(err, client.ErrAmbiguous) {
		t.Fatalf("lost response without sessions: %v", err)
	}
}
