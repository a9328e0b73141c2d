package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
)

// splitRouter routes the writes of the split scenario as its shards split:
// a router.Router whose ring is the shards' ranges as the splits left them
// (install puts each split's descriptors in, as the parent's leader
// returned them) and whose leaders are those the engines announce (every
// node's leader events, followed from before the shards exist). put sends
// a write where the router says and retries what did not apply (a stale
// ring, a NotLeader redirect, a dropped or ambiguous proposal) until it
// applies or its timeout.
//
// Its methods are safe for concurrent use: the clients put while the
// splitter installs splits.
type splitRouter struct {
	c       *cluster
	r       *router.Router
	timeout time.Duration
	// led is signalled (never blocking) after each leader event: a
	// splitter waiting for a child's first leader looks again.
	led    chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup // the leader watchers
	// Retries of the writes, by cause (a write retried twice counts twice).
	retries struct {
		keyNotInShard, notLeader, noLeader, dropped, ambiguous atomic.Uint64
	}
	mu struct {
		sync.Mutex
		gen   uint64                        // of the ring installed last
		descs map[uint64]storage.Descriptor // guarded: the ring's shards
		// leaders are the newest leader each shard announced, also of
		// shards the ring does not have yet (a child leads before its
		// split is installed).
		leaders map[uint64]leaderSeen
	}
}

// leaderSeen is what the engines announced of a shard's leader.
type leaderSeen struct {
	leader, term uint64
	// first is when a leader of the shard was first announced, and
	// firstLeader that leader's node.
	first       time.Time
	firstLeader uint64
}

// newSplitRouter follows the leader events of c's engines (call it before
// the shards are created, so that none is missed) and routes by a ring of
// descs.
func newSplitRouter(c *cluster, descs []storage.Descriptor, timeout time.Duration) (*splitRouter, error) {
	r, err := router.New(router.DefaultConfig())
	if err != nil {
		return nil, err
	}
	s := &splitRouter{c: c, r: r, timeout: timeout, led: make(chan struct{}, 1)}
	s.mu.descs = map[uint64]storage.Descriptor{}
	s.mu.leaders = map[uint64]leaderSeen{}
	for _, d := range descs {
		s.mu.descs[d.ShardID] = d
	}
	if err := s.installLocked(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, id := range c.ids() {
		w := c.engine(id).WatchLeaders()
		s.wg.Add(1)
		go s.follow(ctx, w)
	}
	return s, nil
}

// close stops following the leaders.
func (s *splitRouter) close() {
	s.cancel()
	s.wg.Wait()
}

func (s *splitRouter) follow(ctx context.Context, w *engine.LeaderWatch) {
	defer s.wg.Done()
	defer w.Close()
	for {
		evs, err := w.Next(ctx)
		if err != nil {
			return // cancelled, or the engine closed
		}
		at := time.Now()
		s.mu.Lock()
		for _, ev := range evs {
			s.noteLocked(ev, at)
		}
		s.mu.Unlock()
		select {
		case s.led <- struct{}{}:
		default:
		}
	}
}

// noteLocked records a leader event and passes it to the router, by the
// router's rule: a higher term wins, and within a term the first known
// leader.
func (s *splitRouter) noteLocked(ev engine.LeaderEvent, at time.Time) {
	l := s.mu.leaders[ev.ShardID]
	if ev.Term < l.term || ev.Term == l.term && (l.leader != 0 || ev.Leader == 0) {
		return
	}
	l.leader, l.term = ev.Leader, ev.Term
	if ev.Leader != 0 && l.first.IsZero() {
		l.first, l.firstLeader = at, ev.Leader
	}
	s.mu.leaders[ev.ShardID] = l
	s.r.UpdateLeader(ev.ShardID, ev.Leader, ev.Term) // ignored until the ring has the shard
}

// install puts a split into the ring: the parent's narrowed range and the
// child's, with the child's leader if one was announced already.
func (s *splitRouter) install(res engine.SplitResult) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.descs[res.Parent.ShardID] = res.Parent
	s.mu.descs[res.Child.ShardID] = res.Child
	if err := s.installLocked(); err != nil {
		return err
	}
	if l := s.mu.leaders[res.Child.ShardID]; l.term != 0 {
		s.r.UpdateLeader(res.Child.ShardID, l.leader, l.term)
	}
	return nil
}

// installLocked sets the router's ring to s.mu.descs, one generation on.
func (s *splitRouter) installLocked() error {
	ranges := make([]router.Range, 0, len(s.mu.descs))
	for _, d := range s.mu.descs {
		ranges = append(ranges, router.Range{ShardID: d.ShardID, Start: d.Start, Last: d.Last})
	}
	slices.SortFunc(ranges, func(a, b router.Range) int { return cmp.Compare(a.Start, b.Start) })
	ring, err := router.NewRing(s.mu.gen+1, ranges)
	if err != nil {
		return fmt.Errorf("ring after the splits: %w", err)
	}
	if err := s.r.SetRing(ring); err != nil {
		return err
	}
	s.mu.gen++
	return nil
}

// descs returns the ring's shards in ring order.
func (s *splitRouter) descs() []storage.Descriptor {
	s.mu.Lock()
	defer s.mu.Unlock()
	ds := slices.Collect(maps.Values(s.mu.descs))
	slices.SortFunc(ds, func(a, b storage.Descriptor) int { return cmp.Compare(a.Start, b.Start) })
	return ds
}

// desc returns the ring's range of shardID.
func (s *splitRouter) desc(shardID uint64) storage.Descriptor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.descs[shardID]
}

// leader returns what the engines announced of shardID's leader.
func (s *splitRouter) leader(shardID uint64) leaderSeen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.leaders[shardID]
}

// waitLed waits until a leader of shardID has been announced and returns
// what was seen.
func (s *splitRouter) waitLed(ctx context.Context, shardID uint64) (leaderSeen, error) {
	for {
		if l := s.leader(shardID); !l.first.IsZero() {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return leaderSeen{}, fmt.Errorf("shard %d: no leader announced: %w", shardID, ctx.Err())
		case <-s.led:
		}
	}
}

// put proposes cmd, a write of a key whose hash is hash, to the leader of
// the shard the ring puts hash in, until it applies. It retries what did
// not apply: a key the shard no longer owns (the ring is behind a split:
// it waits for the splitter to install it), a NotLeader redirect (it
// follows the hint), no leader known yet, a proposal dropped, a replica not
// there yet; and an ambiguous outcome (a Put applied twice leaves what
// once does). From the first retry on it gives up after the timeout; any
// other error fails it at once.
func (s *splitRouter) put(ctx context.Context, hash uint64, cmd []byte) error {
	backoff := time.Millisecond
	var giveUp time.Time // set at the first wait
	for {
		rt, err := s.r.LookupHash(hash)
		if err != nil {
			return err
		}
		var e *engine.Engine
		if rt.Leader != 0 {
			e = s.c.engine(rt.Leader)
		}
		last := errNoLeader
		if e == nil {
			s.retries.noLeader.Add(1)
		} else {
			_, err := e.Propose(ctx, rt.ShardID, cmd)
			if err == nil {
				return nil
			}
			last = err
			var kns *engine.KeyNotInShardError
			switch nl := notLeader(err); {
			case nl != nil:
				s.retries.notLeader.Add(1)
				if s.r.NotLeaderHint(rt.ShardID, nl.Leader, nl.Term) && nl.Leader != 0 {
					continue // a fresher leader: at once
				}
			case errors.As(err, &kns):
				s.retries.keyNotInShard.Add(1)
			case errors.Is(err, engine.ErrProposalDropped), errors.Is(err, engine.ErrShardNotFound),
				errors.Is(err, engine.ErrNotInitialized):
				s.retries.dropped.Add(1)
			case errors.Is(err, engine.ErrAmbiguous) && ctx.Err() == nil:
				s.retries.ambiguous.Add(1)
			default:
				return err
			}
		}
		if giveUp.IsZero() {
			giveUp = time.Now().Add(s.timeout)
		} else if time.Now().After(giveUp) {
			return fmt.Errorf("shard %d: still failing after %v: %w", rt.ShardID, s.timeout, last)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("shard %d: %w (last: %v)", rt.ShardID, ctx.Err(), last)
		case <-t.C:
		}
		backoff = min(2*backoff, 20*time.Millisecond)
	}
}

// retryMetrics sets the retries of the writes by cause.
func (s *splitRouter) retryMetrics(m map[string]float64) {
	m["retries_key_not_in_shard"] = float64(s.retries.keyNotInShard.Load())
	m["retries_not_leader"] = float64(s.retries.notLeader.Load())
	m["retries_no_leader"] = float64(s.retries.noLeader.Load())
	m["retries_dropped"] = float64(s.retries.dropped.Load())
	m["retries_ambiguous"] = float64(s.retries.ambiguous.Load())
}

// splitWriters returns the load's operation: client i puts payload-byte
// values to its keys "c<i>-<k>", k = seq mod keysPerClient, so that every
// shard the splits make is written.
func splitWriters(s *splitRouter, clients, payload int) opFunc {
	type key struct {
		hash uint64
		cmd  []byte // PutCommand(key, value), the value stamped before each write
	}
	var rule router.PartitionRule // the engine's default: the whole key
	keys := make([][]key, clients)
	for i := range keys {
		keys[i] = make([]key, keysPerClient)
		for k := range keys[i] {
			name := fmt.Appendf(nil, "c%d-%d", i, k)
			keys[i][k] = key{hash: rule.Hash(name), cmd: engine.PutCommand(name, make([]byte, payload))}
		}
	}
	return func(ctx context.Context, client int, seq uint64) (opKind, error) {
		k := &keys[client][seq%keysPerClient]
		stampValue(k.cmd[len(k.cmd)-payload:], client, seq)
		return opWrite, s.put(ctx, k.hash, k.cmd)
	}
}

// keysPerClient is how many keys each client of the split load writes in
// turn.
const keysPerClient = 1024
