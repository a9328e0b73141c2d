package node

import (
	"context"
	"sync"

	"github.com/flotilla-db/flotilla/node/nodepb"
)

// Batch implements nodepb.KVServer. Every operation gets its own result, in
// request order, and costs at most one engine call. Operations run
// concurrently, at most BatchConcurrency at once: those of different shards
// in parallel (each shard's worker batches what it receives into one raft
// round), those of one key one after the other in request order. A batch
// over MaxBatchOps fails as a whole with InvalidArgument; any other failure
// is the failed operation's result.
func (s *ClientService) Batch(ctx context.Context, req *nodepb.BatchRequest) (*nodepb.BatchResponse, error) {
	ops := req.GetOps()
	if len(ops) > s.cfg.MaxBatchOps {
		e := s.badRequest("node: batch of %d operations exceeds the limit of %d", len(ops), s.cfg.MaxBatchOps)
		e.Size, e.Limit = uint64(len(ops)), uint64(s.cfg.MaxBatchOps)
		return nil, StatusError(e)
	}
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	results := make([]*nodepb.OpResult, len(ops))
	sem := make(chan struct{}, s.cfg.BatchConcurrency)
	// last holds, per key, the done channel of the latest operation on it.
	last := make(map[string]chan struct{}, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		done := make(chan struct{})
		var prev chan struct{}
		if key := opKey(op); len(key) > 0 {
			prev = last[string(key)]
			last[string(key)] = done
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			if prev != nil {
				select {
				case <-prev:
				case <-ctx.Done():
					results[i] = errorResult(s.ctxError(ctx, 0))
					return
				}
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = errorResult(s.ctxError(ctx, 0))
				return
			}
			defer func() { <-sem }()
			results[i] = s.runOp(ctx, op)
		}()
	}
	wg.Wait()
	return &nodepb.BatchResponse{Results: results}, nil
}

// opKey returns the key of op, nil if it has none.
func opKey(op *nodepb.Op) []byte {
	switch x := op.GetOp().(type) {
	case *nodepb.Op_Put:
		return x.Put.GetKey()
	case *nodepb.Op_Get:
		return x.Get.GetKey()
	case *nodepb.Op_Delete:
		return x.Delete.GetKey()
	case *nodepb.Op_Cas:
		return x.Cas.GetKey()
	}
	return nil
}

// runOp runs one operation of a batch.
func (s *ClientService) runOp(ctx context.Context, op *nodepb.Op) *nodepb.OpResult {
	switch x := op.GetOp().(type) {
	case *nodepb.Op_Put:
		resp, e := s.put(ctx, x.Put)
		if e != nil {
			return errorResult(e)
		}
		return &nodepb.OpResult{Result: &nodepb.OpResult_Put{Put: resp}}
	case *nodepb.Op_Get:
		resp, e := s.get(ctx, x.Get)
		if e != nil {
			return errorResult(e)
		}
		return &nodepb.OpResult{Result: &nodepb.OpResult_Get{Get: resp}}
	case *nodepb.Op_Delete:
		resp, e := s.delete(ctx, x.Delete)
		if e != nil {
			return errorResult(e)
		}
		return &nodepb.OpResult{Result: &nodepb.OpResult_Delete{Delete: resp}}
	case *nodepb.Op_Cas:
		resp, e := s.cas(ctx, x.Cas)
		if e != nil {
			return errorResult(e)
		}
		return &nodepb.OpResult{Result: &nodepb.OpResult_Cas{Cas: resp}}
	}
	return errorResult(s.badRequest("node: batch operation without a kind"))
}

func errorResult(e *nodepb.Error) *nodepb.OpResult {
	return &nodepb.OpResult{Result: &nodepb.OpResult_Error{Error: e}}
}
