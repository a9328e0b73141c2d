package node

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// ClientService serves nodepb.KV, the key-value API for applications, from
// the node's engine. Create it with NewClientService and register it on a
// gRPC server with Register. Its methods are safe for concurrent use.
type ClientService struct {
	nodepb.UnimplementedKVServer

	cfg    ClientServiceConfig
	engine *engine.Engine
	router *router.Router
	addrOf func(nodeID uint64) string
	nodeID uint64
	// refreshRing, if set (OnStaleRoute), brings the router up to date
	// with the meta shard: client_reroute.go.
	refreshRing atomic.Pointer[func()]
	rerouted    atomic.Uint64

	// done is canceled by Close; leader feeds end with it.
	done   context.Context
	cancel context.CancelFunc
	mu     struct {
		sync.Mutex
		closed bool // guarded; no feed starts once set
	}
	feeds sync.WaitGroup
}

// NewClientService returns a service answering from e, routing with r. r is
// the caller's, who keeps its ring and replicas up to date (StartLeaderFeed
// adds this engine's leader changes). addrOf returns the client address of a
// node, "" if unknown; it is called on every NotLeader error and Routes
// call, concurrently, so it must be fast and must not block. It may be nil.
func NewClientService(cfg ClientServiceConfig, e *engine.Engine, r *router.Router, addrOf func(nodeID uint64) string) (*ClientService, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if addrOf == nil {
		addrOf = func(uint64) string { return "" }
	}
	s := &ClientService{
		cfg:    cfg.withDefaults(),
		engine: e,
		router: r,
		addrOf: addrOf,
		nodeID: e.NodeID(),
	}
	s.done, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Register registers the service on a gRPC server. The server's
// MaxRecvMsgSize must admit the largest request (a value of MaxValueBytes
// plus its key; a Batch of them).
func (s *ClientService) Register(reg grpc.ServiceRegistrar) { nodepb.RegisterKVServer(reg, s) }

// Close stops the leader feeds and waits for them. It does not touch the
// engine, the router or the gRPC server, which are the caller's; requests
// still running end by their own deadlines.
func (s *ClientService) Close() {
	s.mu.Lock()
	s.mu.closed = true
	s.mu.Unlock()
	s.cancel()
	s.feeds.Wait()
}

// StartLeaderFeed seeds the router with the leader and replicas of every
// shard this node hosts, then starts a goroutine that applies the engine's
// leader-change events to the router until ctx ends, the engine closes or
// Close is called. Replicas are set only for shards the router has none for:
// the ring's owner (the meta shard) is authoritative for them.
func (s *ClientService) StartLeaderFeed(ctx context.Context) error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return ErrClientServiceClosed
	}
	s.feeds.Add(1)
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.done, cancel)
	watch := s.engine.WatchLeaders() // before reading the state: no event lost
	end := func() {
		watch.Close()
		stop()
		cancel()
		s.feeds.Done()
	}
	sts, err := s.engine.Statuses(ctx)
	if err != nil {
		end()
		return err
	}
	for _, st := range sts {
		if rt, err := s.router.Route(st.ShardID); err == nil && rt.Replicas == nil && len(st.Voters) > 0 {
			_ = s.router.SetReplicas(st.ShardID, append(slices.Clone(st.Voters), st.Learners...))
		}
		if st.Leader != 0 {
			s.router.UpdateLeader(st.ShardID, st.Leader, st.Term)
		}
	}
	go func() {
		defer end()
		for {
			evs, err := watch.Next(ctx)
			if err != nil {
				return // ctx ended, Close, or the engine closed
			}
			for _, ev := range evs {
				s.router.UpdateLeader(ev.ShardID, ev.Leader, ev.Term)
			}
		}
	}()
	return nil
}

func (s *ClientService) addr(nodeID uint64) string {
	if nodeID == 0 {
		return ""
	}
	return s.addrOf(nodeID)
}

// requestContext bounds a request by MaxRequestTimeout.
func (s *ClientService) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.MaxRequestTimeout)
}

// lookup routes key.
func (s *ClientService) lookup(key []byte) (router.Route, *nodepb.Error) {
	if e := s.checkKey(key); e != nil {
		return router.Route{}, e
	}
	rt, err := s.router.Lookup(key)
	if err != nil {
		return router.Route{}, s.routerError(err, 0)
	}
	return rt, nil
}

// Put implements nodepb.KVServer.
func (s *ClientService) Put(ctx context.Context, req *nodepb.PutRequest) (*nodepb.PutResponse, error) {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	resp, e := s.put(ctx, req)
	if e != nil {
		return nil, StatusError(e)
	}
	return resp, nil
}

func (s *ClientService) put(ctx context.Context, req *nodepb.PutRequest) (*nodepb.PutResponse, *nodepb.Error) {
	rt, e := s.lookup(req.GetKey())
	if e != nil {
		return nil, e
	}
	if e := s.checkValue("value", req.GetValue()); e != nil {
		return nil, e
	}
	shardID, _, err := s.proposeOnKeyShard(ctx, req.GetKey(), rt, req.GetSession(), engine.PutCommand(req.GetKey(), req.GetValue()))
	if err != nil {
		return nil, s.engineError(err, shardID, true)
	}
	return &nodepb.PutResponse{ShardId: shardID}, nil
}

// Get implements nodepb.KVServer.
func (s *ClientService) Get(ctx context.Context, req *nodepb.GetRequest) (*nodepb.GetResponse, error) {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	resp, e := s.get(ctx, req)
	if e != nil {
		return nil, StatusError(e)
	}
	return resp, nil
}

func (s *ClientService) get(ctx context.Context, req *nodepb.GetRequest) (*nodepb.GetResponse, *nodepb.Error) {
	rt, e := s.lookup(req.GetKey())
	if e != nil {
		return nil, e
	}
	shardID, res, err := s.onKeyShard(req.GetKey(), rt, func(shardID uint64, _ bool) ([]byte, error) {
		q := engine.GetQuery(req.GetKey())
		switch getMode(req) {
		case nodepb.ReadMode_READ_MODE_STALE:
			return s.query(ctx, shardID, q, true)
		case nodepb.ReadMode_READ_MODE_REPLICA:
			return s.engine.ReadOnReplica(ctx, shardID, q)
		case nodepb.ReadMode_READ_MODE_READ_INDEX:
			return s.engine.Read(ctx, shardID, q)
		case nodepb.ReadMode_READ_MODE_LEASE:
			return s.engine.ReadLease(ctx, shardID, q)
		}
		return s.query(ctx, shardID, q, false)
	})
	if err != nil {
		return nil, s.engineError(err, shardID, false)
	}
	value, found, err := engine.DecodeGetResult(res)
	if err != nil {
		return nil, s.engineError(err, shardID, false)
	}
	return &nodepb.GetResponse{ShardId: shardID, Found: found, Value: value}, nil
}

// getMode returns how req is to be served: its mode, or the one its older
// fields (stale, replica) say; READ_MODE_DEFAULT: the node's read mode on
// the leader.
func getMode(req *nodepb.GetRequest) nodepb.ReadMode {
	switch {
	case req.GetMode() != nodepb.ReadMode_READ_MODE_DEFAULT:
		return req.GetMode()
	case req.GetStale():
		return nodepb.ReadMode_READ_MODE_STALE
	case req.GetReplica():
		return nodepb.ReadMode_READ_MODE_REPLICA
	}
	return nodepb.ReadMode_READ_MODE_DEFAULT
}

// query runs a query linearizably on the leader as the node's read mode
// says (ReadIndex, or the leader's lease), or on the local replica if
// stale.
func (s *ClientService) query(ctx context.Context, shardID uint64, q []byte, stale bool) ([]byte, error) {
	if stale {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return s.engine.ReadLocal(shardID, q)
	}
	return s.engine.ReadLeader(ctx, shardID, q)
}

// Delete implements nodepb.KVServer.
func (s *ClientService) Delete(ctx context.Context, req *nodepb.DeleteRequest) (*nodepb.DeleteResponse, error) {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	resp, e := s.delete(ctx, req)
	if e != nil {
		return nil, StatusError(e)
	}
	return resp, nil
}

func (s *ClientService) delete(ctx context.Context, req *nodepb.DeleteRequest) (*nodepb.DeleteResponse, *nodepb.Error) {
	rt, e := s.lookup(req.GetKey())
	if e != nil {
		return nil, e
	}
	shardID, res, err := s.proposeOnKeyShard(ctx, req.GetKey(), rt, req.GetSession(), engine.DeleteCommand(req.GetKey()))
	if err != nil {
		return nil, s.engineError(err, shardID, true)
	}
	existed, err := engine.DecodeDeleteResult(res)
	if err != nil {
		return nil, s.engineError(err, shardID, false)
	}
	return &nodepb.DeleteResponse{ShardId: shardID, Existed: existed}, nil
}

// CompareAndSwap implements nodepb.KVServer.
func (s *ClientService) CompareAndSwap(ctx context.Context, req *nodepb.CompareAndSwapRequest) (*nodepb.CompareAndSwapResponse, error) {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	resp, e := s.cas(ctx, req)
	if e != nil {
		return nil, StatusError(e)
	}
	return resp, nil
}

func (s *ClientService) cas(ctx context.Context, req *nodepb.CompareAndSwapRequest) (*nodepb.CompareAndSwapResponse, *nodepb.Error) {
	rt, e := s.lookup(req.GetKey())
	if e != nil {
		return nil, e
	}
	if e := s.checkValue("expected value", req.GetExpected()); e != nil {
		return nil, e
	}
	if e := s.checkValue("new value", req.GetNewValue()); e != nil {
		return nil, e
	}
	if req.GetExpectAbsent() && len(req.GetExpected()) > 0 {
		return nil, s.badRequest("node: compare-and-swap expects the key absent and a value")
	}
	if req.GetDelete() && len(req.GetNewValue()) > 0 {
		return nil, s.badRequest("node: compare-and-swap deletes and sets a value")
	}
	// engine.CASCommand: a nil old value expects the key absent, a nil new
	// value deletes it.
	var old, new []byte
	if !req.GetExpectAbsent() {
		old = nonNil(req.GetExpected())
	}
	if !req.GetDelete() {
		new = nonNil(req.GetNewValue())
	}
	shardID, res, err := s.proposeOnKeyShard(ctx, req.GetKey(), rt, req.GetSession(), engine.CASCommand(req.GetKey(), old, new))
	if err != nil {
		return nil, s.engineError(err, shardID, true)
	}
	swapped, cur, found, err := engine.DecodeCASResult(res)
	if err != nil {
		return nil, s.engineError(err, shardID, false)
	}
	return &nodepb.CompareAndSwapResponse{ShardId: shardID, Swapped: swapped, Found: found, Current: cur}, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Scan implements nodepb.KVServer.
func (s *ClientService) Scan(ctx context.Context, req *nodepb.ScanRequest) (*nodepb.ScanResponse, error) {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	resp, e := s.scan(ctx, req)
	if e != nil {
		return nil, StatusError(e)
	}
	return resp, nil
}

func (s *ClientService) scan(ctx context.Context, req *nodepb.ScanRequest) (*nodepb.ScanResponse, *nodepb.Error) {
	var (
		rt  router.Route
		err error
		e   *nodepb.Error
	)
	switch byID := req.GetShardId() != 0; {
	case byID == (len(req.GetKey()) > 0):
		return nil, s.badRequest("node: scan needs exactly one of shard_id and key")
	case byID:
		if rt, err = s.router.Route(req.GetShardId()); err != nil {
			return nil, s.routerError(err, req.GetShardId())
		}
	default:
		if rt, e = s.lookup(req.GetKey()); e != nil {
			return nil, e
		}
	}
	limit := int(min(req.GetLimit(), uint32(s.cfg.MaxScanLimit)))
	if limit == 0 {
		limit = s.cfg.DefaultScanLimit
	}
	cursor := req.GetCursor()
	if len(cursor) > 0 {
		if e := s.checkCursor(rt.ShardID, cursor); e != nil {
			return nil, e
		}
	} else {
		cursor = nil
	}
	res, err := s.query(ctx, rt.ShardID, engine.ScanQuery(cursor, limit), req.GetStale())
	if err != nil {
		return nil, s.engineError(err, rt.ShardID, false)
	}
	sr, err := engine.DecodeScanResult(res)
	if err != nil {
		return nil, s.engineError(err, rt.ShardID, false)
	}
	resp := &nodepb.ScanResponse{ShardId: rt.ShardID, Cursor: sr.Next, Pairs: make([]*nodepb.KeyValue, 0, len(sr.Pairs))}
	size := 0
	for i, kv := range sr.Pairs {
		if i > 0 && size >= s.cfg.MaxScanBytes {
			// Cut the reply; resume after the last pair kept, whose storage
			// position is its data key (router and engine share the rule).
			last := sr.Pairs[i-1].Key
			resp.Cursor = storage.DataKey(s.router.Hash(last), last)
			break
		}
		size += len(kv.Key) + len(kv.Value)
		resp.Pairs = append(resp.Pairs, &nodepb.KeyValue{Key: kv.Key, Value: kv.Value})
	}
	return resp, nil
}

// checkCursor refuses a cursor that is not a position in shardID's range.
func (s *ClientService) checkCursor(shardID uint64, cursor []byte) *nodepb.Error {
	hash, key, ok := storage.DecodeDataKey(cursor)
	if !ok || len(key) > s.cfg.MaxKeyBytes {
		return s.badRequest("node: malformed scan cursor")
	}
	ring := s.router.Ring()
	if ring == nil {
		return s.routerError(router.ErrNoRing, shardID)
	}
	if rg, ok := ring.Range(shardID); !ok || !rg.Contains(hash) {
		return s.badRequest("node: scan cursor outside shard %d", shardID)
	}
	return nil
}

// Routes implements nodepb.KVServer.
func (s *ClientService) Routes(ctx context.Context, _ *nodepb.RoutesRequest) (*nodepb.RoutesResponse, error) {
	// The ring and the routes are read from the router separately: retry
	// until both are of one generation (a ring change in between is rare).
	for range 16 {
		if err := ctx.Err(); err != nil {
			return nil, StatusError(s.ctxError(ctx, 0))
		}
		ring := s.router.Ring()
		if ring == nil {
			return nil, StatusError(s.routerError(router.ErrNoRing, 0))
		}
		if resp, ok := s.routes(ring, s.router.Routes()); ok {
			return resp, nil
		}
	}
	return nil, StatusError(s.newError(codes.Unavailable, nodepb.Reason_REASON_NO_RING, 0, "node: ring changing, retry"))
}

// routes builds a Routes reply from a ring and routes of the same
// generation; false if they differ.
func (s *ClientService) routes(ring *router.Ring, routes []router.Route) (*nodepb.RoutesResponse, bool) {
	ranges := ring.Ranges()
	if len(routes) != len(ranges) {
		return nil, false
	}
	rule := s.router.Rule()
	resp := &nodepb.RoutesResponse{
		NodeId:     s.nodeID,
		Generation: ring.Generation(),
		Shards:     make([]*nodepb.ShardRoute, len(ranges)),
		PartitionRule: &nodepb.PartitionRule{
			Separator: uint32(rule.Separator), UseSeparator: rule.UseSeparator, PrefixLen: uint32(rule.PrefixLen),
		},
		Limits: &nodepb.Limits{
			MaxKeyBytes: uint64(s.cfg.MaxKeyBytes), MaxValueBytes: uint64(s.cfg.MaxValueBytes),
			MaxBatchOps: uint64(s.cfg.MaxBatchOps), MaxScanLimit: uint64(s.cfg.MaxScanLimit),
		},
	}
	nodes := map[uint64]struct{}{s.nodeID: {}}
	for i, rg := range ranges {
		rt := routes[i]
		if rt.ShardID != rg.ShardID || rt.Generation != ring.Generation() {
			return nil, false
		}
		resp.Shards[i] = &nodepb.ShardRoute{
			ShardId: rg.ShardID, Start: rg.Start, Last: rg.Last,
			Replicas: slices.Clone(rt.Replicas), Leader: rt.Leader, Term: rt.Term,
		}
		for _, id := range rt.Replicas {
			nodes[id] = struct{}{}
		}
		if rt.Leader != 0 {
			nodes[rt.Leader] = struct{}{}
		}
	}
	ids := make([]uint64, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if addr := s.addr(id); addr != "" {
			resp.Nodes = append(resp.Nodes, &nodepb.NodeAddress{NodeId: id, Addr: addr})
		}
	}
	return resp, true
}
