package client

import (
	"context"
	"math/rand/v2"
	"sync"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
)

// session is a client's session, which makes its writes exactly-once
// (package engine's session.go; nodepb.Session): one random ID per client,
// a sequence number per write, kept by all the write's attempts, and the
// acknowledgement watermark sent with each attempt: the lowest sequence
// number of a write still running, below which the client will never send
// again. A shard learns of the session from the first write sent to it,
// which registers it, and again after it forgot it (SESSION_NOT_FOUND:
// expired after the client was idle).
//
// A nil *session is the client without sessions: its methods do nothing.
type session struct {
	id uint64
	mu struct {
		sync.Mutex
		next       uint64              // guarded: the next sequence number
		low        uint64              // guarded: the lowest one still running (next if none)
		running    map[uint64]struct{} // guarded: begun and not ended
		registered map[uint64]bool     // guarded: shards that have answered a write
	}
}

func newSession() *session {
	s := &session{}
	for s.id == 0 {
		s.id = rand.Uint64()
	}
	s.mu.next, s.mu.low = 1, 1
	s.mu.running = make(map[uint64]struct{})
	s.mu.registered = make(map[uint64]bool)
	return s
}

// begin allocates the sequence number of a new write.
func (s *session) begin() uint64 {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.mu.next
	s.mu.next++
	s.mu.running[seq] = struct{}{}
	return seq
}

// end records that write seq is over: it is never sent again.
func (s *session) end(seq uint64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.mu.running, seq)
	for s.mu.low < s.mu.next {
		if _, ok := s.mu.running[s.mu.low]; ok {
			break
		}
		s.mu.low++
	}
}

// request returns the session to send with an attempt of write seq to
// shardID.
func (s *session) request(shardID, seq uint64) *nodepb.Session {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &nodepb.Session{Id: s.id, Seq: seq, Ack: s.mu.low, Register: !s.mu.registered[shardID]}
}

// setRegistered records whether shardID holds the session.
func (s *session) setRegistered(shardID uint64, ok bool) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.mu.registered[shardID] = true
	} else {
		delete(s.mu.registered, shardID)
	}
}

// writeClass is how a write of class may be retried: with a session, every
// write is retried after an unknown outcome, since it applies once.
func (c *Client) writeClass(class opClass) opClass {
	if c.sess != nil {
		return classWrite
	}
	return class
}

// write runs a write of key until it succeeds, fails for good or ctx ends,
// under one sequence number of the client's session: attempt sends the
// request with the session it is given (nil without sessions).
func (c *Client) write(ctx context.Context, name string, class opClass, key []byte,
	attempt func(ctx context.Context, kv nodepb.KVClient, s *nodepb.Session) error) error {
	seq := c.sess.begin()
	defer c.sess.end(seq)
	lookup := c.keyRoute(key)
	var shardID uint64 // of the attempt under way
	route := func() router.Route {
		rt := lookup()
		shardID = rt.ShardID
		return rt
	}
	return c.do(ctx, name, c.writeClass(class), route, func(ctx context.Context, kv nodepb.KVClient) error {
		err := attempt(ctx, kv, c.sess.request(shardID, seq))
		if err == nil {
			c.sess.setRegistered(shardID, true)
		}
		return err
	})
}
