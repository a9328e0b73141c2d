package meta

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/router"
)

// PutShard writes rec unless the stored record is as new or newer (see
// PutShards).
func (s *Store) PutShard(ctx context.Context, rec ShardRecord) error {
	return s.PutShards(ctx, []ShardRecord{rec})
}

// PutShards writes every record of recs that is newer (ShardRecord.Newer)
// than the stored record of its shard, or whose shard has none; an older or
// equal record is left out, which is no error. Of two records of one shard
// in recs the newer counts. A malformed record fails the call with a
// *RecordError before anything is written. This node must lead the meta
// shard.
//
// Records are written in batches that fit Config.MaxProposalBytes, each
// atomic: its records, the ring header (Version + 1, Generation + 1 if a
// shard is new or a range changed) and the change entry of the new
// version. Every write of a shard record goes through such a batch, so the
// header's version is a compare-and-swap guard on all of them at once: a
// batch is built from the header and then the records as read (records
// read after the header are at least as new), and it applies only if the
// header is still the one read, that is if no record changed since. A
// batch that loses that race is rebuilt from a fresh read, so concurrent
// writers never undo each other's records or replace a newer one. An
// error may leave earlier batches written; calling again with the same
// records is safe.
func (s *Store) PutShards(ctx context.Context, recs []ShardRecord) error {
	byID := make(map[uint64]ShardRecord, len(recs))
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			return err
		}
		if prev, ok := byID[r.ShardID]; !ok || r.Newer(prev) {
			byID[r.ShardID] = r
		}
	}
	pending := make([]ShardRecord, 0, len(byID))
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		pending = append(pending, byID[id])
	}
	for round := 1; len(pending) > 0; round++ {
		if round > maxAttempts {
			return fmt.Errorf("%w: %d rounds lost", ErrConflict, maxAttempts)
		}
		// The first round reads the local copy; one that lost reads
		// linearizably, so that a lagging copy cannot make it lose again.
		c := Local
		if round > 1 {
			c = Linearizable
		}
		var err error
		if pending, err = s.putRound(ctx, pending, c); err != nil {
			return err
		}
	}
	return nil
}

// put is a record to write and what it replaces.
type put struct {
	rec    ShardRecord
	found  bool
	stored router.Range
	// into is the stored record of the shard a frozen rec is to be merged
	// into (intoFound: there is one), which may have taken rec's range
	// already (merges.go).
	into      ShardRecord
	intoFound bool
}

// putRound reads the header (with consistency c) and then the stored
// records of pending, and writes those that replace the stored ones in
// batches, each guarded by the header the previous one left. It returns
// the records left when a batch lost to another writer.
func (s *Store) putRound(ctx context.Context, pending []ShardRecord, c Consistency) ([]ShardRecord, error) {
	// Reading the local copy is enough: records only get newer, so a record
	// that is not newer than a stale copy's is not newer than the current
	// one either, and a stale header fails the guard.
	h, err := getSeen(ctx, s, []byte(KeyRing), c)
	if err != nil {
		return nil, err
	}
	header, err := decodeSeen[RingHeader]([]byte(KeyRing), h)
	if err != nil {
		return nil, err
	}
	todo, err := s.replacing(ctx, pending, header.Shards)
	if err != nil {
		return nil, err
	}
	for len(todo) > 0 {
		ops, n, next, err := s.buildBatch(todo, header, h.old())
		if err != nil {
			return nil, err
		}
		br, err := s.batch(ctx, ops...)
		if err != nil {
			return nil, err
		}
		if !br.Applied {
			if err := h.refresh([]byte(KeyRing), br); err != nil {
				return nil, err
			}
			left := make([]ShardRecord, len(todo))
			for i, p := range todo {
				left[i] = p.rec
			}
			return left, nil
		}
		todo, header = todo[n:], next
		if h.raw, err = json.Marshal(next); err != nil {
			return nil, err
		}
		h.found = true
	}
	return nil, nil
}

// replacing returns the records of pending that replace the stored ones,
// read from the local copy: one read each, or one scan of all records when
// pending holds so many of the shards' records that it is cheaper (a
// scanned record costs about a fourth of a read). A record of a merged
// shard (one with a tombstone) replaces nothing: it is dropped.
func (s *Store) replacing(ctx context.Context, pending []ShardRecord, shards int) ([]put, error) {
	stored := make(map[uint64]ShardRecord, len(pending))
	merged := map[uint64]bool{}
	if len(pending) >= 64 && len(pending) >= shards/4 {
		at := make(map[uint64]bool, len(pending))
		for _, r := range pending {
			at[r.ShardID] = true
			if r.Frozen() {
				at[r.MergeInto] = true
			}
		}
		err := s.scan(ctx, "", Local, func(key, value []byte) error {
			if id, ok := ParseMergedKey(key); ok && at[id] {
				merged[id] = true
				return nil
			}
			id, ok := ParseShardKey(key)
			if !ok || !at[id] {
				return nil
			}
			r, err := decode[ShardRecord](key, value)
			stored[id] = r
			return err
		})
		if err != nil {
			return nil, err
		}
	} else {
		read := func(id uint64) error {
			if _, ok := stored[id]; ok {
				return nil
			}
			r, _, found, err := getRecord[ShardRecord](ctx, s, ShardKey(id), Local)
			if found {
				stored[id] = r
			}
			return err
		}
		for _, r := range pending {
			if err := read(r.ShardID); err != nil {
				return nil, err
			}
			if _, found := stored[r.ShardID]; !found {
				_, found, err := s.get(ctx, MergedKey(r.ShardID), Local)
				if err != nil {
					return nil, err
				}
				merged[r.ShardID] = found
			}
			if r.Frozen() {
				if err := read(r.MergeInto); err != nil {
					return nil, err
				}
			}
		}
	}
	var todo []put
	for _, r := range pending {
		cur, found := stored[r.ShardID]
		if merged[r.ShardID] || (found && !r.Newer(cur)) {
			continue
		}
		p := put{rec: r, found: found, stored: cur.Range()}
		if r.Frozen() {
			p.into, p.intoFound = stored[r.MergeInto]
		}
		todo = append(todo, p)
	}
	return todo, nil
}

// batchOverhead bounds a batch's bytes besides its records: the command's
// framing, the header's compare-and-swap (old and new value), the change
// entry's key and framing, and the deletes of old change entries.
const batchOverhead = 1024 + maxLogDrops*(len(ChangePrefix)+20+2*binary.MaxVarintLen32+1)

// buildBatch returns the ops of the next batch: a Put of each record of a
// prefix of todo (n records, as many as fit one proposal) stamped with the
// next version, the retirement of the shards those records show merged
// (retireMerged), the compare-and-swap of the header from h (raw value
// old, nil if absent) to next, the change entry of the version and the
// deletes of entries no longer kept.
func (s *Store) buildBatch(todo []put, h RingHeader, old []byte) (ops [][]byte, n int, next RingHeader, err error) {
	next = h
	next.Version++
	change := RingChange{Version: next.Version}
	reshaped := false
	size := batchOverhead
	for ; n < len(todo); n++ {
		p := todo[n]
		rec := p.rec
		rec.Version = next.Version
		raw, err := json.Marshal(rec)
		if err != nil {
			return nil, 0, RingHeader{}, err
		}
		op := engine.PutCommand(ShardKey(rec.ShardID), raw)
		// The op, its framing, and the ID in the change entry.
		cost := len(op) + binary.MaxVarintLen32 + 21
		if n > 0 && size+cost > s.cfg.MaxProposalBytes {
			break
		}
		size += cost
		ops = append(ops, op)
		change.ShardIDs = append(change.ShardIDs, rec.ShardID)
		if !p.found {
			next.Shards++
		}
		reshaped = reshaped || !p.found || rec.Range() != p.stored
	}
	retire, retired, err := retireMerged(todo[:n], &next, &change)
	if err != nil {
		return nil, 0, RingHeader{}, err
	}
	// A retired shard's record is not put as well (a batch names a key
	// once): ops[i] puts todo[i].
	for i := n - 1; i >= 0; i-- {
		if retired[todo[i].rec.ShardID] {
			ops = slices.Delete(ops, i, i+1)
		}
	}
	ops = append(ops, retire...)
	reshaped = reshaped || len(retire) > 0
	if reshaped {
		next.Generation++
	}
	if next.LogStart == 0 {
		next.LogStart = next.Version
	}
	var drops [][]byte
	for next.Version-next.LogStart >= uint64(s.cfg.ChangeLogVersions) && len(drops) < maxLogDrops {
		drops = append(drops, engine.DeleteCommand(ChangeKey(next.LogStart)))
		next.LogStart++
	}
	hraw, err := json.Marshal(next)
	if err != nil {
		return nil, 0, RingHeader{}, err
	}
	craw, err := json.Marshal(change)
	if err != nil {
		return nil, 0, RingHeader{}, err
	}
	ops = append(ops, engine.CASCommand([]byte(KeyRing), old, hraw), engine.PutCommand(ChangeKey(next.Version), craw))
	return append(ops, drops...), n, next, nil
}
