package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flotilla-db/flotilla/storage"
)

// ShardIDRecord is the shard ID allocator (key "shard-ids"): Next is the
// lowest shard ID never handed out. It only grows.
type ShardIDRecord struct {
	Next uint64 `json:"next"`
}

// AllocateShardID hands out a new user shard ID: one that no shard of the
// cluster ever had and that no later call returns, whichever node leads
// the meta shard then. The allocator's record is advanced by a
// compare-and-swap in the meta shard, read linearizably first, so two
// concurrent calls (on one leader, or on a deposed and a new one) never
// get the same ID. Before the first allocation there is no record: the
// first one starts above the highest shard ID of the initial layout
// (ClusterRecord.InitialShards) and of every shard record.
//
// An ID whose allocation returned an error (an ambiguous outcome: the
// record may have advanced) is never handed out either: IDs may be
// skipped, never reused. Errors: ErrShardIDsExhausted (every user shard
// ID was handed out), ErrCorrupt for a record that does not decode,
// ErrConflict after too many lost rounds, and the engine's errors (a
// *engine.NotLeaderError on a node that does not lead the meta shard).
func (s *Store) AllocateShardID(ctx context.Context) (uint64, error) {
	key := []byte(KeyShardIDs)
	cur, err := getSeen(ctx, s, key, Linearizable)
	if err != nil {
		return 0, err
	}
	for attempt := 1; ; attempt++ {
		next, err := s.nextShardID(ctx, key, cur)
		if err != nil {
			return 0, err
		}
		if storage.IsSystemShard(next) {
			return 0, fmt.Errorf("%w: next shard ID %d", ErrShardIDsExhausted, next)
		}
		raw, err := json.Marshal(ShardIDRecord{Next: next + 1})
		if err != nil {
			return 0, err
		}
		applied, err := s.swapAll(ctx, swap{key, &cur, raw})
		if err != nil {
			return 0, err
		}
		if applied {
			return next, nil
		}
		if attempt == maxAttempts {
			return 0, fmt.Errorf("%w: shard ID allocator: %d rounds lost", ErrConflict, attempt)
		}
	}
}

// nextShardID returns the ID the allocator hands out next, given what was
// seen of its record: the record's, or, before the first allocation, the
// first ID above the initial layout and every shard record.
func (s *Store) nextShardID(ctx context.Context, key []byte, cur seen) (uint64, error) {
	if cur.found {
		rec, err := decode[ShardIDRecord](key, cur.raw)
		if err != nil {
			return 0, err
		}
		if rec.Next == 0 {
			return 0, fmt.Errorf("%w: %s: next shard ID 0", ErrCorrupt, key)
		}
		return rec.Next, nil
	}
	return s.shardIDFloor(ctx)
}

// shardIDFloor is the first shard ID above those of the initial layout and
// of every shard record (one scan: it runs until the first allocation
// succeeds, once in a cluster's life). The caller has read linearizably
// before, so the local copy is at least as new as that read.
func (s *Store) shardIDFloor(ctx context.Context) (uint64, error) {
	var highest uint64
	c, err := s.Cluster(ctx, Local)
	switch {
	case err == nil && c.InitialShards > 0:
		highest = uint64(c.InitialShards)
	case err != nil && !errors.Is(err, ErrNotFound):
		return 0, err
	}
	err = s.scanShards(ctx, func(r ShardRecord) { highest = max(highest, r.ShardID) })
	if err != nil {
		return 0, err
	}
	return highest + 1, nil
}
