package engine

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
)

// StateMachine is the replicated state of every shard of a node. One value
// serves all shards: it keeps its state in the shard's key range through the
// contexts it is handed, never in memory of its own, so that an idle shard
// costs it nothing and snapshots, removal and restarts need nothing from it.
type StateMachine interface {
	// Apply applies one committed command of a shard. It must be
	// deterministic: every replica applies the same commands in the same order
	// to the same state. Its writes become durable atomically with the
	// applied index. A returned error rejects the command (it is handed to the
	// proposer); Apply must then not have written anything, so it validates
	// before it writes. It is called from the shard's worker and must not
	// block. A command proposed with ProposeSession reaches Apply without
	// its session envelope, and only the first time it is committed: the
	// engine answers its retries (session.go).
	Apply(s *ApplyContext, cmd []byte) (result []byte, err error)
	// Query reads a shard's committed state. It may be called concurrently,
	// from the reader's goroutine.
	Query(s *QueryContext, query []byte) ([]byte, error)
}

// ApplyContext is a shard's state as Apply sees it: reads see the writes of
// the commands applied before in the same batch.
type ApplyContext struct {
	Desc  storage.Descriptor
	Index uint64 // the entry being applied
	rule  router.PartitionRule
	b     *pebble.Batch // indexed
	key   []byte
	sess  sessionScratch // the engine's session commands (session.go)
}

func (c *ApplyContext) dataKey(key []byte) ([]byte, error) {
	h := c.rule.Hash(key)
	if !c.Desc.Contains(h) {
		return nil, &KeyNotInShardError{ShardID: c.Desc.ShardID, Hash: h, Generation: c.Desc.Generation, Start: c.Desc.Start, Last: c.Desc.Last}
	}
	c.key = c.Desc.AppendDataKey(c.key[:0], h, key)
	return c.key, nil
}

// Check returns a *KeyNotInShardError if key does not belong to the shard.
func (c *ApplyContext) Check(key []byte) error {
	_, err := c.dataKey(key)
	return err
}

// Get returns a copy of key's value.
func (c *ApplyContext) Get(key []byte) (value []byte, found bool, err error) {
	k, err := c.dataKey(key)
	if err != nil {
		return nil, false, err
	}
	return getCopy(c.b, k)
}

// Set writes key.
func (c *ApplyContext) Set(key, value []byte) error {
	k, err := c.dataKey(key)
	if err != nil {
		return err
	}
	return c.b.Set(k, value, nil)
}

// Delete deletes key.
func (c *ApplyContext) Delete(key []byte) error {
	k, err := c.dataKey(key)
	if err != nil {
		return err
	}
	return c.b.Delete(k, nil)
}

func getCopy(r pebble.Reader, k []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("engine: read %s: %w", storage.DescribeKey(k), err)
	}
	out := append([]byte{}, v...)
	closer.Close()
	return out, true, nil
}

// QueryContext is a shard's committed state as Query sees it.
type QueryContext struct {
	Desc storage.Descriptor
	rule router.PartitionRule
	r    pebble.Reader
}

// Get returns a copy of key's value.
func (c *QueryContext) Get(key []byte) (value []byte, found bool, err error) {
	h := c.rule.Hash(key)
	if !c.Desc.Contains(h) {
		return nil, false, &KeyNotInShardError{ShardID: c.Desc.ShardID, Hash: h, Generation: c.Desc.Generation, Start: c.Desc.Start, Last: c.Desc.Last}
	}
	return getCopy(c.r, c.Desc.DataKey(h, key))
}

// Scan calls fn for the shard's keys in hash order, starting after the
// storage position after (nil: from the start), until fn returns false. It
// returns the storage position of the last key visited, to resume from.
func (c *QueryContext) Scan(after []byte, fn func(key, value []byte) bool) (last []byte, err error) {
	start, end := c.Desc.DataSpan()
	it, err := c.r.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	valid := it.First()
	if after != nil {
		valid = it.SeekGE(after)
		if valid && string(it.Key()) == string(after) {
			valid = it.Next()
		}
	}
	for ; valid; valid = it.Next() {
		_, key, ok := c.Desc.DecodeDataKey(it.Key())
		if !ok {
			return last, fmt.Errorf("%w: %s", storage.ErrCorrupt, storage.DescribeKey(it.Key()))
		}
		last = append(last[:0], it.Key()...)
		if !fn(key, it.Value()) {
			break
		}
	}
	return last, it.Error()
}

// QueryStore answers query from shardID's replica in a store that no
// engine has open, for offline tools: the recovery from the loss of a
// majority (package node/recovery) reads the meta shard's node records
// before its node starts. sm and rule are the ones the node's engine runs
// with (Config.StateMachine, Config.PartitionRule). It fails with
// ErrShardNotFound if the store holds no initialized replica of shardID.
func QueryStore(s *storage.Store, sm StateMachine, rule router.PartitionRule, shardID uint64, query []byte) ([]byte, error) {
	l, err := s.OpenLog(shardID)
	if err != nil {
		return nil, err
	}
	desc, ok := l.Descriptor()
	if !ok {
		return nil, fmt.Errorf("%w: shard %d", ErrShardNotFound, shardID)
	}
	return sm.Query(&QueryContext{Desc: desc, rule: rule, r: s.DB()}, query)
}
