package meta

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
)

// PutIntent records value as shard shardID's intent, replacing the one it
// had; writing the same value again is no write. value is the caller's
// JSON (the placement driver's Intent, encoded by the node), stored as is;
// anything else fails with ErrBadRecord, as does shard ID 0. The record
// and the intent index are written in one batch with compare-and-swap.
// This node must lead the meta shard: the first read is linearizable, and
// on a follower it fails, like a write would, with an
// *engine.NotLeaderError.
func (s *Store) PutIntent(ctx context.Context, shardID uint64, value []byte) error {
	if !json.Valid(value) {
		return fmt.Errorf("%w: the intent of shard %d is not JSON", ErrBadRecord, shardID)
	}
	return s.setIntent(ctx, shardID, value)
}

// DeleteIntent removes shard shardID's intent record and its entry in the
// intent index, in one batch. Idempotent: a shard without an intent is no
// write and no error. This node must lead the meta shard, as for PutIntent.
func (s *Store) DeleteIntent(ctx context.Context, shardID uint64) error {
	return s.setIntent(ctx, shardID, nil)
}

// setIntent makes value (nil: none) shard shardID's intent, with the
// intent index listing the shard exactly when it has one. When another
// write changed either key in between, it reads what that write left and
// tries again.
func (s *Store) setIntent(ctx context.Context, shardID uint64, value []byte) error {
	if shardID == 0 {
		return fmt.Errorf("%w: intent of shard 0", ErrBadRecord)
	}
	key, xkey := IntentKey(shardID), []byte(KeyIntents)
	rec, err := getSeen(ctx, s, key, Linearizable)
	if err != nil {
		return err
	}
	x, err := getSeen(ctx, s, xkey, Local)
	if err != nil {
		return err
	}
	want := value != nil
	for attempt := 1; ; attempt++ {
		var swaps []swap
		if rec.found != want || (want && !bytes.Equal(rec.raw, value)) {
			swaps = append(swaps, swap{key, &rec, value})
		}
		idx, err := decodeSeen[IntentIndex](xkey, x)
		if err != nil {
			return err
		}
		// The index changes only when the shard gains or loses its intent.
		// A record replaced in place leaves it alone: the record's own
		// compare-and-swap proves it still exists, and so that the index
		// lists it, since every write keeps the two in step.
		if i, listed := slices.BinarySearch(idx.ShardIDs, shardID); listed != want {
			if want {
				idx.ShardIDs = slices.Insert(idx.ShardIDs, i, shardID)
			} else {
				idx.ShardIDs = slices.Delete(idx.ShardIDs, i, i+1)
			}
			xraw, err := json.Marshal(idx)
			if err != nil {
				return err
			}
			swaps = append(swaps, swap{xkey, &x, xraw})
		}
		if len(swaps) == 0 {
			return nil
		}
		applied, err := s.swapAll(ctx, swaps...)
		if err != nil || applied {
			return err
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%w: intent of shard %d: %d rounds lost", ErrConflict, shardID, attempt)
		}
	}
}

// Intents returns every intent record, by shard ID: the intent index, read
// with consistency c, and then each record it lists from the local copy
// (at least as new). One read per intent and no scan of the meta shard. A
// shard listed whose record is gone by then had its intent deleted in
// between and is left out; with Linearizable, every intent put before the
// call and not deleted since is in the result.
func (s *Store) Intents(ctx context.Context, c Consistency) (map[uint64][]byte, error) {
	idx, _, _, err := getRecord[IntentIndex](ctx, s, []byte(KeyIntents), c)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64][]byte, len(idx.ShardIDs))
	for _, id := range idx.ShardIDs {
		raw, found, err := s.get(ctx, IntentKey(id), Local)
		if err != nil {
			return nil, err
		}
		if found {
			out[id] = raw
		}
	}
	return out, nil
}
