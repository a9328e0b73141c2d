package client

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc/codes"
)

// OpKind is the kind of a batch operation.
type OpKind uint8

// Kinds of batch operations.
const (
	OpPut OpKind = iota + 1
	OpGet
	OpDelete
	OpCAS
)

// Op is one operation of a batch. Build it with PutOp, GetOp, DeleteOp or
// CASOp.
type Op struct {
	Kind OpKind
	Key  []byte
	// Value is OpPut's value, or OpCAS's desired value (nil: delete).
	Value []byte
	// Expected is OpCAS's expected value (nil: expect the key absent).
	Expected []byte
	// Stale serves an OpGet as the Stale read option does.
	Stale bool
}

// PutOp sets key to value.
func PutOp(key, value []byte) Op { return Op{Kind: OpPut, Key: key, Value: value} }

// GetOp reads key, linearizably unless stale.
func GetOp(key []byte, stale bool) Op { return Op{Kind: OpGet, Key: key, Stale: stale} }

// DeleteOp deletes key.
func DeleteOp(key []byte) Op { return Op{Kind: OpDelete, Key: key} }

// CASOp is CompareAndSwap(key, expected, desired).
func CASOp(key, expected, desired []byte) Op {
	return Op{Kind: OpCAS, Key: key, Expected: expected, Value: desired}
}

// Result is the result of the Op at the same position.
type Result struct {
	// Err is the operation's error, nil if it succeeded.
	Err error
	// Value and Found: OpGet's value, or the value OpCAS found before the
	// swap.
	Value []byte
	Found bool
	// Existed: whether OpDelete's key existed.
	Existed bool
	// Swapped: whether OpCAS swapped.
	Swapped bool
}

// Batch runs ops and returns one result each. It groups the operations by
// shard and sends one request per shard (split at the server's limit on
// operations per request), all at once; the leaders run them in parallel.
// Failed operations are retried as the single-key calls are (by rounds:
// every operation to retry goes in the next round), until they succeed, fail
// for good or ctx ends. Operations on one key run in the order given within
// one request, but a retried one may land after a later one that did not
// need a retry: put operations on the same key in separate batches when
// their order matters. The error is nil when every operation succeeded, else
// it wraps the first failure; each Result has its own.
func (c *Client) Batch(ctx context.Context, ops []Op) ([]Result, error) {
	results := make([]Result, len(ops))
	states := make([]*retrier, len(ops))
	seqs := make([]uint64, len(ops)) // writes' sequence numbers in the session
	defer func() {
		for _, seq := range seqs {
			if seq != 0 {
				c.sess.end(seq)
			}
		}
	}()
	var pending []int
	for i, op := range ops {
		class, name, err := c.checkOp(op)
		if err != nil {
			results[i].Err = err
			continue
		}
		if class != classRead {
			seqs[i] = c.sess.begin()
		}
		states[i] = &retrier{c: c, name: name, class: c.writeClass(class)}
		pending = append(pending, i)
	}
	backoffs := 0
	for len(pending) > 0 {
		if ctxDone(ctx) != nil {
			for _, i := range pending {
				results[i].Err = states[i].ctxErr(ctx)
			}
			break
		}
		reqs := c.groupBatch(ops, states, pending)
		var wg sync.WaitGroup
		for _, req := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.sendBatch(ctx, req, ops, seqs, results)
			}()
		}
		wg.Wait()
		var (
			next          []int
			wait, refresh bool
		)
		for _, req := range reqs {
			for j, i := range req.idx {
				o := req.outcomes[j]
				if o == nil {
					continue // done
				}
				w, err := states[i].decide(ctx, *o, req.nodeID)
				if err != nil {
					results[i].Err = err
					continue
				}
				next = append(next, i)
				wait = wait || w
				refresh = refresh || (w && o.refresh)
			}
		}
		slices.Sort(next) // the next round sends them in the order given
		pending = next
		if len(pending) == 0 || !wait {
			continue
		}
		if refresh {
			c.maybeRefresh(ctx)
		}
		c.stats.backoffs.Add(1)
		if err := c.backoff(ctx, backoffs); err != nil {
			continue // the loop's ctx check ends the pending operations
		}
		backoffs++
	}
	return results, batchError(results)
}

func batchError(results []Result) error {
	failed, first := 0, -1
	for i, r := range results {
		if r.Err != nil {
			failed++
			if first < 0 {
				first = i
			}
		}
	}
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("client: batch: %d of %d operations failed, the first (%d): %w", failed, len(results), first, results[first].Err)
}

// checkOp checks op before any round trip and returns its retry class and
// name.
func (c *Client) checkOp(op Op) (opClass, string, error) {
	if err := c.checkKey(op.Key); err != nil {
		return 0, "", err
	}
	switch op.Kind {
	case OpPut:
		return classWrite, "put", c.checkValue(op.Value)
	case OpGet:
		return classRead, "get", nil
	case OpDelete:
		return classWrite, "delete", nil
	case OpCAS:
		if err := c.checkValue(op.Expected); err != nil {
			return 0, "", err
		}
		return classCAS, "compare-and-swap", c.checkValue(op.Value)
	}
	return 0, "", badRequest(fmt.Sprintf("batch operation of kind %d", op.Kind))
}

// batchReq is one request of a batch round: operations of one shard, sent
// to one node.
type batchReq struct {
	shardID, nodeID uint64
	addr            string
	idx             []int      // positions in the batch
	outcomes        []*outcome // per operation, nil if it succeeded
}

// groupBatch groups the pending operations by shard, in order, and splits
// each group at the server's limit.
func (c *Client) groupBatch(ops []Op, states []*retrier, pending []int) []*batchReq {
	byShard := make(map[uint64]*batchReq)
	var order []*batchReq
	for _, i := range pending {
		rt, _ := c.router.Lookup(ops[i].Key) // checked by checkOp
		g := byShard[rt.ShardID]
		if g == nil {
			g = &batchReq{shardID: rt.ShardID}
			g.nodeID, g.addr = c.target(rt, states[i].avoid, states[i].hint)
			byShard[rt.ShardID] = g
			order = append(order, g)
		}
		g.idx = append(g.idx, i)
	}
	if c.maxBatchOps <= 0 {
		return order
	}
	var out []*batchReq
	for _, g := range order {
		for len(g.idx) > c.maxBatchOps {
			part := *g
			part.idx = g.idx[:c.maxBatchOps:c.maxBatchOps]
			out = append(out, &part)
			g.idx = g.idx[c.maxBatchOps:]
		}
		out = append(out, g)
	}
	return out
}

// sendBatch sends one request and fills results (successes) and
// req.outcomes (failures). Writes carry the session with their sequence
// number, seqs[i].
func (c *Client) sendBatch(ctx context.Context, req *batchReq, ops []Op, seqs []uint64, results []Result) {
	req.outcomes = make([]*outcome, len(req.idx))
	fail := func(o outcome) {
		for j := range req.outcomes {
			req.outcomes[j] = &o
		}
	}
	preq := &nodepb.BatchRequest{Ops: make([]*nodepb.Op, len(req.idx))}
	for j, i := range req.idx {
		var s *nodepb.Session
		if ops[i].Kind != OpGet {
			s = c.sess.request(req.shardID, seqs[i])
		}
		preq.Ops[j] = toProto(ops[i], s)
	}
	kv, err := c.kv(req.addr)
	if err != nil {
		fail(c.judge(ctx, err, req.nodeID))
		return
	}
	resp, err := kv.Batch(ctx, preq)
	if err != nil {
		fail(c.judge(ctx, err, req.nodeID))
		return
	}
	if len(resp.GetResults()) != len(req.idx) {
		fail(outcome{verdict: verdictFail, unknown: true, err: &Error{Code: codes.Internal,
			Message: fmt.Sprintf("batch of %d operations answered with %d results", len(req.idx), len(resp.GetResults()))}})
		return
	}
	for j, i := range req.idx {
		if o := fillResult(ctx, c, req.nodeID, ops[i].Kind, resp.GetResults()[j], &results[i]); o != nil {
			req.outcomes[j] = o
		} else if ops[i].Kind != OpGet {
			c.sess.setRegistered(req.shardID, true)
		}
	}
}

// toProto builds the request of op; s is a write's session (nil: none).
func toProto(op Op, s *nodepb.Session) *nodepb.Op {
	switch op.Kind {
	case OpPut:
		return &nodepb.Op{Op: &nodepb.Op_Put{Put: &nodepb.PutRequest{Key: op.Key, Value: op.Value, Session: s}}}
	case OpGet:
		return &nodepb.Op{Op: &nodepb.Op_Get{Get: &nodepb.GetRequest{Key: op.Key, Stale: op.Stale}}}
	case OpDelete:
		return &nodepb.Op{Op: &nodepb.Op_Delete{Delete: &nodepb.DeleteRequest{Key: op.Key, Session: s}}}
	default: // OpCAS; checkOp refused the others
		req := casRequest(op.Key, op.Expected, op.Value)
		req.Session = s
		return &nodepb.Op{Op: &nodepb.Op_Cas{Cas: req}}
	}
}

// fillResult sets r from a successful result, or returns the outcome of a
// failed one.
func fillResult(ctx context.Context, c *Client, nodeID uint64, kind OpKind, pr *nodepb.OpResult, r *Result) *outcome {
	switch x := pr.GetResult().(type) {
	case *nodepb.OpResult_Error:
		d := x.Error
		o := c.judgeDetail(ctx, &Error{Code: codes.Code(d.GetCode()), Message: d.GetMessage(), Detail: d}, nodeID)
		if o.verdict != verdictFail && ctxDone(ctx) != nil {
			o.verdict = verdictCtx
		}
		return &o
	case *nodepb.OpResult_Put:
		if kind == OpPut {
			return nil
		}
	case *nodepb.OpResult_Get:
		if kind == OpGet {
			r.Found = x.Get.GetFound()
			if r.Found {
				r.Value = nonNil(x.Get.GetValue())
			}
			return nil
		}
	case *nodepb.OpResult_Delete:
		if kind == OpDelete {
			r.Existed = x.Delete.GetExisted()
			return nil
		}
	case *nodepb.OpResult_Cas:
		if kind == OpCAS {
			cr := casResult(x.Cas)
			r.Swapped, r.Found, r.Value = cr.Swapped, cr.Found, cr.Current
			return nil
		}
	}
	return &outcome{verdict: verdictFail, unknown: true, err: &Error{Code: codes.Internal,
		Message: fmt.Sprintf("batch result %T for an operation of kind %d", pr.GetResult(), kind)}}
}
