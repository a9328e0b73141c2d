package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// sessionWriter is one chaos client's session: each write is proposed under
// its own (session, sequence) and retried, on another node if need be,
// until an answer that is certain or its deadline; an attempt whose outcome
// was unknown is retried under the same sequence, so the write applies at
// most once and the retry returns the first result.
type sessionWriter struct {
	id         uint64
	seq        uint64
	registered map[uint64]bool
}

func newSessionWriter(seed uint64, client int) *sessionWriter {
	return &sessionWriter{id: seed<<16 | uint64(client) + 1, registered: map[uint64]bool{}}
}

// write proposes cmd, a command on key, through the session, on the shard
// that holds key (which a split may change between two attempts: the
// child has the parent's sessions). err is nil, a definite failure
// (nothing applied), or ambiguous (some attempt's outcome unknown).
func (s *sessionWriter) write(ctx context.Context, rt *router, rng *rand.Rand, key string, cmd []byte) (res []byte, node uint64, err error) {
	s.seq++
	sess := engine.Session{ID: s.id, Seq: s.seq, Ack: s.seq}
	unknown := false
	var last error = context.DeadlineExceeded
	for ctx.Err() == nil {
		shard := rt.shardOf([]byte(key))
		var e *engine.Engine
		if shard != 0 {
			e = rt.target(rng, shard)
		}
		if e == nil {
			rt.refresh(ctx)
			last = fmt.Errorf("%w: no shard or node for key %q", engine.ErrShardNotFound, key)
			if !sleepCtx(ctx, time.Millisecond) {
				break
			}
			continue
		}
		sess.Register = !s.registered[shard]
		res, err := e.ProposeSession(ctx, shard, sess, cmd)
		rt.learn(ctx, shard, err)
		switch {
		case err == nil:
			s.registered[shard] = true
			rt.success(shard, e.NodeID())
			return res, e.NodeID(), nil
		case errors.Is(err, engine.ErrSessionNotFound):
			s.registered[shard] = false
		case definiteFailure(err):
		default:
			unknown = true
		}
		last = err
		sleepCtx(ctx, time.Millisecond) // a client's backoff
	}
	if unknown || !definiteFailure(last) {
		return nil, 0, fmt.Errorf("%w: %v", engine.ErrAmbiguous, last)
	}
	return nil, 0, last
}

// sleepCtx waits d, or until ctx ends (false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// applyCounter wraps the KV state machine of every node of a chaos cluster
// and counts how often each node applies each write: with every write
// under its own (session, sequence) and a unique value, a count above one
// is a write applied twice.
type applyCounter struct {
	engine.StateMachine
	node uint64
	mu   *sync.Mutex
	n    map[applyKey]int
}

type applyKey struct {
	node uint64
	cmd  string
}

func (a applyCounter) Apply(s *engine.ApplyContext, cmd []byte) ([]byte, error) {
	res, err := a.StateMachine.Apply(s, cmd)
	// Puts and swaps (unique values: the client and its operation's
	// number); not deletes (the same bytes for every delete of a key).
	if err == nil && len(cmd) > 0 && (cmd[0] == 1 || cmd[0] == 3) {
		a.mu.Lock()
		a.n[applyKey{a.node, string(cmd)}]++
		a.mu.Unlock()
	}
	return res, err
}

// applyCounts are the counters of every node incarnation of one cluster: a
// crash loses the unsynced end of what a node applied, which it then
// applies again, legitimately, in its next incarnation.
type applyCounts struct {
	mu    sync.Mutex
	n     map[applyKey]int
	lives map[uint64]uint64 // node -> incarnations started
}

func (c *applyCounts) wrap(cfg *engine.Config) {
	c.mu.Lock()
	if c.lives == nil {
		c.lives = map[uint64]uint64{}
	}
	c.lives[cfg.NodeID]++
	life := cfg.NodeID<<32 | c.lives[cfg.NodeID]
	c.mu.Unlock()
	cfg.StateMachine = applyCounter{StateMachine: engine.NewKV(), node: life, mu: &c.mu, n: c.n}
}

// check fails t for every write some node applied more than once.
func (c *applyCounts) check(t *testing.T, seed uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bad := 0
	for k, n := range c.n {
		if n > 1 {
			bad++
			if bad <= 5 {
				t.Errorf("seed %d: node %d (incarnation %d) applied %q %d times", seed, k.node>>32, k.node&(1<<32-1), k.cmd, n)
			}
		}
	}
	t.Logf("seed %d: %d (node, write) applies counted; applied twice: %d", seed, len(c.n), bad)
}
