package node

import (
	"context"
	"errors"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"google.golang.org/protobuf/proto"
)

// Requests routed with a ring that a split or a merge has made stale.
//
// The service routes a key with the node's router, which follows the meta
// shard's records a moment after a split applies (the records are written
// after the split, and the router polls its local copy of the meta shard).
// Meanwhile it may send a key of the child's range to the parent, which
// refuses it at apply with a *engine.KeyNotInShardError: nothing applied.
// The service then brings the router up to date (OnStaleRoute: the node
// polls its local copy of the meta shard) and,
// if the key's shard is another one now, runs the request there once more.
// Otherwise (the router cannot follow yet: the meta shard has not got both
// halves' records) the refusal goes back to the client as KEY_NOT_IN_SHARD
// with the shard's range now; the client refreshes its routes and retries,
// backing off until some node's router has followed.
//
// A write sent again on the child carries the client's session with
// register set: the client sent it for the parent, where it registered
// its session, and the child knows the session only if the parent knew it
// when it split (the split copies the parent's sessions). Registering is
// safe there: a session the child does not know has had no write applied
// to the child's range, by the parent before the split or by the child.
//
// Merges: a request to a shard frozen for a merge into its left neighbour
// is refused (*engine.ShardMergingError, nothing applied), and one to a
// shard the merge has destroyed here finds no replica
// (engine.ErrShardNotFound). The service brings the router up to date the
// same way and, once the merge is in the records, runs the request on the
// left shard, which has the key now; a write registers its session there,
// which is safe for the same reason: the left shard folded the right
// one's sessions into its own, so a session it does not know had no write
// applied to either range. Until the records have the merge, the refusal
// goes back to the client as SHARD_MERGING (or NOT_LEADER), which it
// retries after a backoff.

// OnStaleRoute sets refresh, which the service calls when a shard refuses
// a key that the router sent it (a split or a merge moved the key and the
// router has not followed): it should bring the router up to date, without
// blocking for long (it runs inside the request). The service then routes
// the key again. nil: none. Safe to call at any time.
func (s *ClientService) OnStaleRoute(refresh func()) {
	if refresh == nil {
		s.refreshRing.Store(nil)
		return
	}
	s.refreshRing.Store(&refresh)
}

// onKeyShard runs op on the shard rt names for key; when that shard
// refuses the key as not its own, is frozen for a merge or has no replica
// here (stale), it updates the router and, if the key's shard is another
// one now, runs op there once more (again set). It returns the shard of
// the last attempt and op's result.
func (s *ClientService) onKeyShard(key []byte, rt router.Route, op func(shardID uint64, again bool) ([]byte, error)) (uint64, []byte, error) {
	res, err := op(rt.ShardID, false)
	if !stale(err) {
		return rt.ShardID, res, err
	}
	if refresh := s.refreshRing.Load(); refresh != nil {
		(*refresh)()
	}
	next, lerr := s.router.Lookup(key)
	if lerr != nil || next.ShardID == rt.ShardID {
		return rt.ShardID, res, err
	}
	s.rerouted.Add(1)
	res, err = op(next.ShardID, true)
	return next.ShardID, res, err
}

// stale reports whether err may come from a route that a split or a
// merge made stale: nothing was applied, and the key may be another
// shard's now.
func stale(err error) bool {
	if errors.Is(err, engine.ErrAmbiguous) {
		return false // it may have applied, whatever its cause
	}
	var kns *engine.KeyNotInShardError
	return errors.As(err, &kns) || errors.Is(err, engine.ErrShardMerging) || errors.Is(err, engine.ErrShardNotFound)
}

// registering returns sess, set to register when a write is sent again on
// another shard than the client chose (see above).
func registering(sess *nodepb.Session, again bool) *nodepb.Session {
	if !again || sess == nil || sess.GetRegister() {
		return sess
	}
	c := proto.Clone(sess).(*nodepb.Session)
	c.Register = true
	return c
}

// proposeOnKeyShard is propose on the shard of key (onKeyShard).
func (s *ClientService) proposeOnKeyShard(ctx context.Context, key []byte, rt router.Route, sess *nodepb.Session, cmd []byte) (uint64, []byte, error) {
	return s.onKeyShard(key, rt, func(shardID uint64, again bool) ([]byte, error) {
		return s.propose(ctx, shardID, registering(sess, again), cmd)
	})
}

// Rerouted counts the requests run again on another shard than the
// router first chose, after a split or a merge.
func (s *ClientService) Rerouted() uint64 { return s.rerouted.Load() }
