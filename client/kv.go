package client

import (
	"context"
	"math/rand/v2"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
)

// ReadOption changes how a read is served.
type ReadOption uint8

const (
	// Stale reads the replica the request reaches as it is, without the
	// leader's ReadIndex round: faster, possibly stale, never torn.
	Stale ReadOption = iota + 1
	// Replica reads linearizably on a replica of the key's shard the
	// client picks at random, leader or follower: a follower gets the read
	// index from its leader, waits until it has applied it, and answers
	// from its own state. It spreads reads over the replicas, at the cost
	// of a round trip from the follower to the leader. Stale wins over it.
	Replica
	// Lease reads on the leader from its lease, without the quorum round
	// (the leader does one when it holds no lease). Refused by a node not
	// started in lease mode (flotilla start --read-mode lease). Stale and
	// Replica win over it. Without Lease or ReadIndex, the leader serves a
	// read as its node's read mode says.
	Lease
	// ReadIndex reads on the leader with a quorum round (ReadIndex), even
	// on a node in lease mode. Stale, Replica and Lease win over it.
	ReadIndex
)

// getMode returns the mode field of a Get with opts (DEFAULT: the older
// stale and replica fields say, or the node's mode).
func getMode(opts []ReadOption) nodepb.ReadMode {
	switch {
	case isStale(opts) || hasOption(opts, Replica):
		return nodepb.ReadMode_READ_MODE_DEFAULT // the stale and replica fields, which older nodes know
	case hasOption(opts, Lease):
		return nodepb.ReadMode_READ_MODE_LEASE
	case hasOption(opts, ReadIndex):
		return nodepb.ReadMode_READ_MODE_READ_INDEX
	}
	return nodepb.ReadMode_READ_MODE_DEFAULT
}

func hasOption(opts []ReadOption, want ReadOption) bool {
	for _, o := range opts {
		if o == want {
			return true
		}
	}
	return false
}

func isStale(opts []ReadOption) bool { return hasOption(opts, Stale) }

// replicaRoute returns route with a random one of its replicas in place
// of its leader, for the Replica read option.
func replicaRoute(route func() router.Route) func() router.Route {
	return func() router.Route {
		rt := route()
		if len(rt.Replicas) > 0 {
			rt.Leader = rt.Replicas[rand.IntN(len(rt.Replicas))]
		}
		return rt
	}
}

// keyRoute returns a function that routes key with the cached ring.
func (c *Client) keyRoute(key []byte) func() router.Route {
	return func() router.Route {
		rt, _ := c.router.Lookup(key) // key checked by the caller
		return rt
	}
}

// Put sets key to value. It is retried after an unknown outcome (with the
// client's session it applies once; without, writing the same value again
// is harmless); if the call gives up after one, the error is an
// *AmbiguousError.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	if err := c.checkKey(key); err != nil {
		return err
	}
	if err := c.checkValue(value); err != nil {
		return err
	}
	req := &nodepb.PutRequest{Key: key, Value: value}
	return c.write(ctx, "put", classWrite, key, func(ctx context.Context, kv nodepb.KVClient, s *nodepb.Session) error {
		req.Session = s
		_, err := kv.Put(ctx, req)
		return err
	})
}

// Get returns key's value, and whether it exists. The read is linearizable
// unless the Stale option is given; on the shard's leader unless the
// Replica option is, by the leader's lease with Lease, by a ReadIndex with
// ReadIndex, and as the leader's node is configured otherwise.
func (c *Client) Get(ctx context.Context, key []byte, opts ...ReadOption) (value []byte, found bool, err error) {
	if err := c.checkKey(key); err != nil {
		return nil, false, err
	}
	req := &nodepb.GetRequest{Key: key, Stale: isStale(opts), Replica: hasOption(opts, Replica), Mode: getMode(opts)}
	route := c.keyRoute(key)
	if req.Replica && !req.Stale {
		route = replicaRoute(route)
	}
	var resp *nodepb.GetResponse
	err = c.do(ctx, "get", classRead, route, func(ctx context.Context, kv nodepb.KVClient) (err error) {
		resp, err = kv.Get(ctx, req)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if !resp.GetFound() {
		return nil, false, nil
	}
	return nonNil(resp.GetValue()), true, nil
}

// nonNil returns b, or an empty non-nil slice: a found value is never nil.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Delete deletes key and reports whether it existed. Retried like Put;
// existed is what the delete found when it applied (without sessions:
// what the last attempt found).
func (c *Client) Delete(ctx context.Context, key []byte) (existed bool, err error) {
	if err := c.checkKey(key); err != nil {
		return false, err
	}
	req := &nodepb.DeleteRequest{Key: key}
	var resp *nodepb.DeleteResponse
	err = c.write(ctx, "delete", classWrite, key, func(ctx context.Context, kv nodepb.KVClient, s *nodepb.Session) (err error) {
		req.Session = s
		resp, err = kv.Delete(ctx, req)
		return err
	})
	return resp.GetExisted(), err
}

// CASResult is the result of a compare-and-swap.
type CASResult struct {
	Swapped bool
	// Current is the value found before the swap (nil if the key was absent,
	// Found false).
	Current []byte
	Found   bool
}

// CompareAndSwap sets key to desired if its value is expected. A nil
// expected expects the key absent (an empty non-nil one expects an empty
// value); a nil desired deletes the key. With the client's session it is
// retried like Put, and the result is that of its one application, even
// when an earlier attempt's response was lost. Without sessions it is never
// retried once an attempt may have applied: such an outcome is an
// *AmbiguousError.
func (c *Client) CompareAndSwap(ctx context.Context, key, expected, desired []byte) (CASResult, error) {
	if err := c.checkKey(key); err != nil {
		return CASResult{}, err
	}
	if err := c.checkValue(expected); err != nil {
		return CASResult{}, err
	}
	if err := c.checkValue(desired); err != nil {
		return CASResult{}, err
	}
	req := casRequest(key, expected, desired)
	var resp *nodepb.CompareAndSwapResponse
	err := c.write(ctx, "compare-and-swap", classCAS, key, func(ctx context.Context, kv nodepb.KVClient, s *nodepb.Session) (err error) {
		req.Session = s
		resp, err = kv.CompareAndSwap(ctx, req)
		return err
	})
	if err != nil {
		return CASResult{}, err
	}
	return casResult(resp), nil
}

func casRequest(key, expected, desired []byte) *nodepb.CompareAndSwapRequest {
	return &nodepb.CompareAndSwapRequest{
		Key: key, Expected: expected, ExpectAbsent: expected == nil,
		NewValue: desired, Delete: desired == nil,
	}
}

func casResult(resp *nodepb.CompareAndSwapResponse) CASResult {
	r := CASResult{Swapped: resp.GetSwapped(), Found: resp.GetFound()}
	if r.Found {
		r.Current = nonNil(resp.GetCurrent())
	}
	return r
}

// ScanRequest selects the keys of one shard to scan.
type ScanRequest struct {
	// The shard: ShardID, or the shard of Key. Exactly one is set.
	ShardID uint64
	Key     []byte
	// Limit bounds the pairs returned (0: the server's default). The server
	// may return fewer, with a Cursor to continue.
	Limit int
	// Cursor resumes a previous scan of the same shard (nil: from the start).
	Cursor []byte
	// Stale reads the replica as it is, as with the Stale read option.
	Stale bool
}

// KeyValue is one pair of a scan.
type KeyValue struct {
	Key, Value []byte
}

// ScanResult is one page of a scan.
type ScanResult struct {
	ShardID uint64
	// Pairs are in the shard's hash order.
	Pairs []KeyValue
	// Cursor continues the scan; nil when the shard is exhausted.
	Cursor []byte
}

// Scan reads one page of a shard's keys, in hash order (the keys of one
// partition are together). Scanning every shard of Shards() visits every
// key.
func (c *Client) Scan(ctx context.Context, req ScanRequest) (ScanResult, error) {
	var route func() router.Route
	switch {
	case (req.ShardID != 0) == (len(req.Key) > 0):
		return ScanResult{}, badRequest("scan needs exactly one of ShardID and Key")
	case req.ShardID != 0:
		route = func() router.Route {
			rt, err := c.router.Route(req.ShardID)
			if err != nil { // not in our ring: any node answers, NotFound if the shard is unknown
				return router.Route{ShardID: req.ShardID}
			}
			return rt
		}
	default:
		if err := c.checkKey(req.Key); err != nil {
			return ScanResult{}, err
		}
		route = c.keyRoute(req.Key)
	}
	if req.Limit < 0 || req.Limit > 1<<31-1 {
		return ScanResult{}, badRequest("scan limit out of range")
	}
	preq := &nodepb.ScanRequest{ShardId: req.ShardID, Key: req.Key, Limit: uint32(req.Limit), Cursor: req.Cursor, Stale: req.Stale}
	var resp *nodepb.ScanResponse
	err := c.do(ctx, "scan", classRead, route, func(ctx context.Context, kv nodepb.KVClient) (err error) {
		resp, err = kv.Scan(ctx, preq)
		return err
	})
	if err != nil {
		return ScanResult{}, err
	}
	res := ScanResult{ShardID: resp.GetShardId(), Pairs: make([]KeyValue, len(resp.GetPairs()))}
	for i, kv := range resp.GetPairs() {
		res.Pairs[i] = KeyValue{Key: kv.GetKey(), Value: nonNil(kv.GetValue())}
	}
	if len(resp.GetCursor()) > 0 {
		res.Cursor = resp.GetCursor()
	}
	return res, nil
}
