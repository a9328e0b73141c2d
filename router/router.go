package router

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// DefaultMaxKeySize is Config.MaxKeySize in DefaultConfig: 64 KiB.
const DefaultMaxKeySize = 64 << 10

// Config configures a Router. New copies it.
type Config struct {
	// MaxKeySize is the longest key, in bytes, that Lookup accepts; a longer
	// key gets ErrKeyTooLarge. It bounds the whole key, not only its
	// partition prefix. Must be > 0. Default DefaultMaxKeySize (64 KiB).
	MaxKeySize int
	// Rule says which part of a key is hashed to place it in the ring.
	// Default: the zero PartitionRule, which hashes the whole key.
	Rule PartitionRule
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{MaxKeySize: DefaultMaxKeySize}
}

// Validate checks c and returns an error matching ErrBadConfig if a field is
// out of range. It does not modify c.
func (c Config) Validate() error {
	if c.MaxKeySize <= 0 {
		return fmt.Errorf("%w: MaxKeySize %d must be > 0", ErrBadConfig, c.MaxKeySize)
	}
	if err := c.Rule.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return nil
}

// Route is where the requests for one shard go. A Route handed out by the
// Router is a value, but Replicas is shared with the Router and with every
// other copy: callers must not modify it.
type Route struct {
	ShardID  uint64
	Replicas []uint64 // node IDs of the shard's replicas, nil until SetReplicas
	Leader   uint64   // node ID of the leader, 0 if unknown
	// Term is the raft term of the newest leader notification applied, 0 if
	// none. It may be newer than Leader's term when Leader is 0.
	Term uint64
	// Generation is the generation of the ring this route was read from; a
	// request carries it so that the shard can refuse it at apply if the ring
	// has changed since.
	Generation uint64
}

// Router maps keys to shard routes. Create it with New. All methods are safe
// for concurrent use; see the package documentation for the concurrency model.
type Router struct {
	maxKeySize int
	// table is the current routing table. It is replaced only while mu is
	// held; readers Load it without locking.
	table atomic.Pointer[table]
	mu    struct {
		// Mutex serializes writers: every method that changes the table or
		// a route cell holds it across its read-modify-write, so a writer
		// always starts from the newest state. Readers never take it.
		sync.Mutex
		// subs are the open subscriptions, notified by every change.
		subs map[*Subscription]struct{}
	}
	// version counts the changes published (see Version).
	version atomic.Uint64
}

// Version returns a number that every change of the table (a ring, a
// shard's replicas or leader: each RouteChange published) raises: a
// caller that keeps something derived from the routes knows in O(1)
// whether it may have gone stale since it last looked.
func (r *Router) Version() uint64 { return r.version.Load() }

// table is an immutable snapshot of the ring plus one route cell per ring
// range. The ring, rule and routes slice never change after the table is
// published; the cells do: a writer holding Router.mu may Store a new *Route
// into the cell of a shard (never mutating a published Route), which makes a
// single-shard update O(1) instead of a copy of the whole table.
type table struct {
	ring   *Ring // nil before the first SetRing
	rule   PartitionRule
	routes []atomic.Pointer[Route] // routes[i] is the route of ring.ranges[i]; never nil
}

// New returns a Router with no ring: Lookup returns ErrNoRing until SetRing.
func New(cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Router{maxKeySize: cfg.MaxKeySize}
	r.mu.subs = make(map[*Subscription]struct{})
	r.table.Store(&table{rule: cfg.Rule})
	return r, nil
}

// Lookup hashes key with the partition rule and returns the route of the
// shard whose range holds the hash. It is lock-free and does not allocate.
func (r *Router) Lookup(key []byte) (Route, error) {
	if len(key) == 0 {
		return Route{}, ErrEmptyKey
	}
	if len(key) > r.maxKeySize {
		return Route{}, ErrKeyTooLarge
	}
	t := r.table.Load()
	if t.ring == nil {
		return Route{}, ErrNoRing
	}
	return *t.routes[t.ring.search(t.rule.Hash(key))].Load(), nil
}

// LookupHash returns the route of the shard whose range holds hash, a
// position in the ring as computed by Hash. It is lock-free and does not
// allocate.
func (r *Router) LookupHash(hash uint64) (Route, error) {
	t := r.table.Load()
	if t.ring == nil {
		return Route{}, ErrNoRing
	}
	return *t.routes[t.ring.search(hash)].Load(), nil
}

// Hash returns the position of key in the ring under the router's partition
// rule.
func (r *Router) Hash(key []byte) uint64 { return r.table.Load().rule.Hash(key) }

// Rule returns the router's partition rule.
func (r *Router) Rule() PartitionRule { return r.table.Load().rule }

// Ring returns the current ring, nil before the first SetRing.
func (r *Router) Ring() *Ring { return r.table.Load().ring }

// Route returns the route of shardID: ErrNoRing before the first SetRing,
// an error matching ErrUnknownShard if the shard is not in the ring.
func (r *Router) Route(shardID uint64) (Route, error) {
	t := r.table.Load()
	if t.ring == nil {
		return Route{}, ErrNoRing
	}
	i, ok := t.ring.pos[shardID]
	if !ok {
		return Route{}, unknownShard(shardID)
	}
	return *t.routes[i].Load(), nil
}

// Routes returns the routes of all shards in ring order, nil before the
// first SetRing.
func (r *Router) Routes() []Route {
	t := r.table.Load()
	if t.ring == nil {
		return nil
	}
	out := make([]Route, len(t.routes))
	for i := range t.routes {
		out[i] = *t.routes[i].Load()
	}
	return out
}

// SetRing installs ring. A ring of a lower generation than the held one is
// refused with a *StaleRingError; a different ring of the same generation
// with an error matching ErrRingConflict; the same ring again is a no-op.
// Shards that stay in the ring keep their replicas, leader and term; new
// shards start with none; routes of shards no longer in the ring are dropped.
// Subscribers get one RingChanged.
//
// SetRing builds a new table, O(number of shards); rings change rarely.
func (r *Router) SetRing(ring *Ring) error {
	if ring == nil {
		return fmt.Errorf("%w: SetRing(nil)", ErrNoRing)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.table.Load()
	if old.ring != nil {
		switch {
		case ring.generation < old.ring.generation:
			return &StaleRingError{Held: old.ring.generation, Offered: ring.generation}
		case ring.generation == old.ring.generation:
			if ring.Equal(old.ring) {
				return nil
			}
			return fmt.Errorf("%w: generation %d", ErrRingConflict, ring.generation)
		}
	}
	t := &table{ring: ring, rule: old.rule, routes: make([]atomic.Pointer[Route], len(ring.ranges))}
	// One block for all the new routes: a cell later points elsewhere when its
	// shard changes, and the block is freed once no cell points into it.
	block := make([]Route, len(ring.ranges))
	for i, rg := range ring.ranges {
		nr := &block[i]
		*nr = Route{ShardID: rg.ShardID, Generation: ring.generation}
		if old.ring != nil {
			if j, ok := old.ring.pos[rg.ShardID]; ok {
				prev := old.routes[j].Load()
				nr.Replicas, nr.Leader, nr.Term = prev.Replicas, prev.Leader, prev.Term
			}
		}
		t.routes[i].Store(nr)
	}
	r.table.Store(t)
	r.publishLocked(RouteChange{Kind: RingChanged, Generation: ring.generation})
	return nil
}

// SetReplicas sets the node IDs of shardID's replicas; replicas is copied. If
// the held leader is not among them it becomes unknown (0), keeping its term.
// It returns ErrNoRing before the first SetRing, an error matching
// ErrUnknownShard if the shard is not in the ring, and one matching
// ErrBadReplicas for a zero or repeated node ID. Subscribers get a
// ReplicasChanged unless nothing changed.
func (r *Router) SetReplicas(shardID uint64, replicas []uint64) error {
	for i, nodeID := range replicas {
		if nodeID == 0 || slices.Contains(replicas[:i], nodeID) {
			return fmt.Errorf("%w: shard %d: node ID %d at %d", ErrBadReplicas, shardID, nodeID, i)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cell, err := r.cellLocked(shardID)
	if err != nil {
		return err
	}
	prev := cell.Load()
	if slices.Equal(prev.Replicas, replicas) {
		return nil
	}
	nr := *prev
	nr.Replicas = slices.Clone(replicas)
	if nr.Leader != 0 && !slices.Contains(nr.Replicas, nr.Leader) {
		nr.Leader = 0
	}
	cell.Store(&nr)
	r.publishLocked(RouteChange{
		Kind: ReplicasChanged, ShardID: shardID, OldLeader: prev.Leader, NewLeader: nr.Leader,
		Term: nr.Term, Generation: nr.Generation, Replicas: nr.Replicas,
	})
	return nil
}

// UpdateLeader applies a leader-change notification for shardID: node leader
// (0 if unknown) leads in term. It reports whether the route changed. A
// notification is ignored (false) if the shard is not in the ring, if its
// term is lower than the held one, or if its term equals the held one and
// the held leader is known (a raft term has at most one leader, so the held
// one stands). A higher term always applies, even with leader 0. Subscribers
// get a LeaderChanged when the route changes.
//
// Its cost does not depend on the number of shards: one map lookup and one
// Route allocation, no table copy.
func (r *Router) UpdateLeader(shardID, leader, term uint64) bool {
	return r.updateLeader(shardID, leader, term, false)
}

// NotLeaderHint applies the leader hint carried by a NotLeader error from
// shardID: node leader leads in term. Same rule and result as UpdateLeader;
// the RouteChange has FromHint set.
func (r *Router) NotLeaderHint(shardID, leader, term uint64) bool {
	return r.updateLeader(shardID, leader, term, true)
}

func (r *Router) updateLeader(shardID, leader, term uint64, fromHint bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	cell, err := r.cellLocked(shardID)
	if err != nil {
		return false
	}
	prev := cell.Load()
	switch {
	case term < prev.Term:
		return false
	case term == prev.Term && (prev.Leader != 0 || leader == 0):
		return false
	}
	nr := *prev
	nr.Leader, nr.Term = leader, term
	cell.Store(&nr)
	r.publishLocked(RouteChange{
		Kind: LeaderChanged, ShardID: shardID, OldLeader: prev.Leader, NewLeader: leader,
		Term: term, Generation: nr.Generation, FromHint: fromHint,
	})
	return true
}

// cellLocked returns the route cell of shardID in the current table. r.mu
// must be held.
func (r *Router) cellLocked(shardID uint64) (*atomic.Pointer[Route], error) {
	t := r.table.Load()
	if t.ring == nil {
		return nil, ErrNoRing
	}
	i, ok := t.ring.pos[shardID]
	if !ok {
		return nil, unknownShard(shardID)
	}
	return &t.routes[i], nil
}
