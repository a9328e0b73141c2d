package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Client talks to a Flotilla cluster. Create it with New; it is safe for
// concurrent use.
type Client struct {
	cfg    Config
	router *router.Router // set by New, never replaced

	maxKey, maxValue int      // effective limits: Config's, lowered to the server's
	maxBatchOps      int      // per request, from the server (0: no limit known)
	sess             *session // nil with Config.DisableSessions

	refreshes   singleflight.Group
	lastRefresh atomic.Int64 // unix nanoseconds of the start of the last refresh

	stats struct {
		redirects, backoffs, refreshes atomic.Uint64
	}

	mu struct {
		sync.Mutex
		addrs  map[uint64]string           // guarded: node ID -> client address
		conns  map[string]*grpc.ClientConn // guarded: address -> connection
		closed bool                        // guarded
	}
}

// Stats counts what a Client did to absorb errors.
type Stats struct {
	Redirects uint64 // retries sent at once to a hinted leader
	Backoffs  uint64 // retries after a backoff
	Refreshes uint64 // route refreshes
}

// New connects to the cluster: it asks the endpoints, in random order, for
// the routes until one answers, retrying with backoff until ctx ends.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Endpoints = slices.Clone(cfg.Endpoints)
	cfg.DialOptions = slices.Clone(cfg.DialOptions)
	c := &Client{cfg: cfg, maxKey: cfg.MaxKeyBytes, maxValue: cfg.MaxValueBytes}
	if !cfg.DisableSessions {
		c.sess = newSession()
	}
	c.mu.addrs = make(map[uint64]string)
	c.mu.conns = make(map[string]*grpc.ClientConn)
	for attempt := 0; ; attempt++ {
		resp, err := c.fetchRoutes(ctx)
		if err == nil {
			if err = c.init(resp); err == nil {
				return c, nil
			}
			c.Close()
			return nil, err
		}
		if werr := c.backoff(ctx, attempt); werr != nil {
			c.Close()
			return nil, fmt.Errorf("client: fetching routes: %w (last error: %v)", werr, err)
		}
	}
}

// init builds the router from the first Routes answer.
func (c *Client) init(resp *nodepb.RoutesResponse) error {
	pr := resp.GetPartitionRule()
	if pr.GetSeparator() > 255 {
		return fmt.Errorf("client: node %d sent partition separator %d", resp.GetNodeId(), pr.GetSeparator())
	}
	rule := router.PartitionRule{Separator: byte(pr.GetSeparator()), UseSeparator: pr.GetUseSeparator(), PrefixLen: int(pr.GetPrefixLen())}
	lim := resp.GetLimits()
	if m := lim.GetMaxKeyBytes(); m > 0 && m < uint64(c.maxKey) {
		c.maxKey = int(m)
	}
	if m := lim.GetMaxValueBytes(); m > 0 && m < uint64(c.maxValue) {
		c.maxValue = int(m)
	}
	if m := lim.GetMaxBatchOps(); m > 0 && m < 1<<30 {
		c.maxBatchOps = int(m)
	}
	r, err := router.New(router.Config{MaxKeySize: c.maxKey, Rule: rule})
	if err != nil {
		return fmt.Errorf("client: routes of node %d: %w", resp.GetNodeId(), err)
	}
	c.router = r
	return c.apply(resp)
}

// apply merges a Routes answer into the cache. An older ring is not
// installed, but its leader hints still apply (they carry terms).
func (c *Client) apply(resp *nodepb.RoutesResponse) error {
	ranges := make([]router.Range, len(resp.GetShards()))
	for i, s := range resp.GetShards() {
		ranges[i] = router.Range{ShardID: s.GetShardId(), Start: s.GetStart(), Last: s.GetLast()}
	}
	ring, err := router.NewRing(resp.GetGeneration(), ranges)
	if err != nil {
		return fmt.Errorf("client: routes of node %d: %w", resp.GetNodeId(), err)
	}
	current := true
	if err := c.router.SetRing(ring); err != nil {
		if !errors.Is(err, router.ErrStaleRing) && !errors.Is(err, router.ErrRingConflict) {
			return err
		}
		current = false
	}
	for _, s := range resp.GetShards() {
		if current && len(s.GetReplicas()) > 0 {
			_ = c.router.SetReplicas(s.GetShardId(), s.GetReplicas()) // malformed: keep ours
		}
		if s.GetLeader() != 0 {
			c.router.UpdateLeader(s.GetShardId(), s.GetLeader(), s.GetTerm())
		}
	}
	c.mu.Lock()
	for _, n := range resp.GetNodes() {
		if n.GetNodeId() != 0 && n.GetAddr() != "" {
			c.mu.addrs[n.GetNodeId()] = n.GetAddr()
		}
	}
	c.mu.Unlock()
	return nil
}

// fetchRoutes asks the known nodes, then the endpoints, in random order,
// for the routes; the first answer wins.
func (c *Client) fetchRoutes(ctx context.Context) (*nodepb.RoutesResponse, error) {
	c.mu.Lock()
	addrs := make([]string, 0, len(c.mu.addrs)+len(c.cfg.Endpoints))
	for _, a := range c.mu.addrs {
		addrs = append(addrs, a)
	}
	c.mu.Unlock()
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	eps := slices.Clone(c.cfg.Endpoints)
	rand.Shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
	var errs []error
	seen := make(map[string]bool, len(addrs)+len(eps))
	for _, addr := range append(addrs, eps...) {
		if seen[addr] {
			continue
		}
		seen[addr] = true
		kv, err := c.kv(addr)
		if err != nil {
			return nil, err
		}
		actx, cancel := context.WithTimeout(ctx, c.cfg.RoutesTimeout)
		resp, err := kv.Routes(actx, &nodepb.RoutesRequest{})
		cancel()
		if err == nil {
			c.stats.refreshes.Add(1)
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// Refresh fetches the routes from some node now.
func (c *Client) Refresh(ctx context.Context) error {
	_, err, _ := c.refreshes.Do("routes", func() (any, error) {
		c.lastRefresh.Store(time.Now().UnixNano()) // rate-limits failed attempts too
		resp, err := c.fetchRoutes(ctx)
		if err != nil {
			return nil, err
		}
		return nil, c.apply(resp)
	})
	return err
}

// maybeRefresh refreshes the routes unless that was done less than
// RefreshInterval ago. Failures are left to the retry loop.
func (c *Client) maybeRefresh(ctx context.Context) {
	if time.Since(time.Unix(0, c.lastRefresh.Load())) < c.cfg.RefreshInterval {
		return
	}
	_ = c.Refresh(ctx)
}

// Close closes the connections. Calls in flight fail; later calls return
// ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	conns := c.mu.conns
	c.mu.conns, c.mu.closed = map[string]*grpc.ClientConn{}, true
	c.mu.Unlock()
	var errs []error
	for _, conn := range conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Redirects: c.stats.redirects.Load(),
		Backoffs:  c.stats.backoffs.Load(),
		Refreshes: c.stats.refreshes.Load(),
	}
}

// Generation returns the generation of the cached ring.
func (c *Client) Generation() uint64 { return c.router.Ring().Generation() }

// Shards returns the shard IDs of the cached ring in hash order.
func (c *Client) Shards() []uint64 { return c.router.Ring().Shards() }

// ShardOf returns the shard of key in the cached ring.
func (c *Client) ShardOf(key []byte) (uint64, error) {
	if err := c.checkKey(key); err != nil {
		return 0, err
	}
	rt, err := c.router.Lookup(key)
	return rt.ShardID, err
}

// kv returns the service stub on the connection to addr, opening it if
// needed. The connection is lazy: nothing is dialed until a call.
func (c *Client) kv(addr string) (nodepb.KVClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil, ErrClosed
	}
	if conn, ok := c.mu.conns[addr]; ok {
		return nodepb.NewKVClient(conn), nil
	}
	opts := c.cfg.DialOptions
	if opts == nil {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	opts = append(slices.Clip(opts), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.cfg.MaxMessageBytes)))
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: connect %s: %w", addr, err)
	}
	c.mu.conns[addr] = conn
	return nodepb.NewKVClient(conn), nil
}

func (c *Client) addr(nodeID uint64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.addrs[nodeID]
}

func (c *Client) setAddr(nodeID uint64, addr string) {
	c.mu.Lock()
	c.mu.addrs[nodeID] = addr
	c.mu.Unlock()
}

// target picks the node to send a request of rt's shard to: the hinted
// node if any (a NotLeader hint just received, which the route may not
// reflect if its term was not newer), else the shard's leader, or when the
// leader is unknown, has no known address or is to be avoided, a random
// replica with a known address, else any known node or endpoint (nodeID 0
// when the node is not known).
func (c *Client) target(rt router.Route, avoid, hint uint64) (nodeID uint64, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hint != 0 {
		if a := c.mu.addrs[hint]; a != "" {
			return hint, a
		}
	}
	if rt.Leader != 0 && rt.Leader != avoid {
		if a := c.mu.addrs[rt.Leader]; a != "" {
			return rt.Leader, a
		}
	}
	var ids []uint64
	for _, id := range rt.Replicas {
		if id != avoid && c.mu.addrs[id] != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		for id, a := range c.mu.addrs {
			if id != avoid && a != "" {
				ids = append(ids, id)
			}
		}
	}
	if len(ids) > 0 {
		id := ids[rand.IntN(len(ids))]
		return id, c.mu.addrs[id]
	}
	return 0, c.cfg.Endpoints[rand.IntN(len(c.cfg.Endpoints))]
}

// backoff waits before retry number n (from 0): BackoffMin doubled n
// times, at most BackoffMax, drawn in [d/2, d].
func (c *Client) backoff(ctx context.Context, n int) error {
	d := c.cfg.BackoffMax
	if n < 30 && c.cfg.BackoffMin<<n < d {
		d = c.cfg.BackoffMin << n
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > c.maxKey:
		return fmt.Errorf("%w: %d bytes > %d", ErrKeyTooLarge, len(key), c.maxKey)
	}
	return nil
}

func (c *Client) checkValue(value []byte) error {
	if len(value) > c.maxValue {
		return fmt.Errorf("%w: %d bytes > %d", ErrValueTooLarge, len(value), c.maxValue)
	}
	return nil
}
