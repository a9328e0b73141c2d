package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Splits. A split of a shard (the parent) at a hash narrows the parent's
// range to the hashes below it and creates a new shard (the child) over the
// rest, on the same replicas. The child's data is already where it has to
// be: user data is ordered by hash, not by shard. What a split writes is
// independent of the shard's size:
//
//   - on the parent's worker, in the batch that applies the split entry:
//     the parent's narrowed descriptor, a copy of the parent's client
//     sessions under the child's ID (CopySessions: a retried write that
//     the parent applied must not apply again in the child), and a split
//     marker (SetSplitMarker) holding the child's descriptor;
//   - on the child's worker, once that batch is visible: the child's
//     initial raft state, with the marker deleted in the same synced batch
//     (CreateSplitChild), or, when this node's replica of the child must
//     not be created (removed since, or re-added under a newer replica ID),
//     the marker deleted alone (DropSplitMarker).
//
// A crash between the two leaves the marker: the engine finishes the split
// when it reopens the store (SplitMarkers), before it serves anything.
//
//	0x01 'm' 's' <childID u64>  split marker: the child's descriptor

const metaSplit = 's'

func splitMarkerKey(childID uint64) []byte { return localMetaKey(metaSplit, childID) }

// SetSplitMarker records in b that child is to be created on this node.
func SetSplitMarker(b *Batch, child Descriptor) {
	b.set(splitMarkerKey(child.ShardID), child.Marshal())
}

// SplitMarkers returns the descriptors of the children whose creation a
// split left pending, in child ID order.
func (s *Store) SplitMarkers() ([]Descriptor, error) {
	var out []Descriptor
	err := s.scanLocalMeta(metaSplit, func(id uint64, v []byte) error {
		d, err := UnmarshalDescriptor(v)
		if err != nil || d.ShardID != id {
			return fmt.Errorf("%w: split marker of shard %d: %v", ErrCorrupt, id, err)
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// CopySessions copies every client session record of shard from to shard
// to, reading through r (the apply batch, so that sessions written earlier
// in the same pass are copied too) and writing into w.
func CopySessions(r pebble.Reader, w pebble.Writer, from, to uint64) (n int, err error) {
	lo, hi := SessionSpan(from)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var key []byte
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if !bytes.HasPrefix(k, lo) {
			return n, fmt.Errorf("%w: session key %x outside shard %d's span", ErrCorrupt, k, from)
		}
		key = appendSessionPrefix(key[:0], to)
		key = append(key, k[len(lo):]...)
		if err := w.Set(key, it.Value(), nil); err != nil {
			return n, err
		}
		n++
	}
	return n, it.Error()
}

// SplitInitialIndex is where a split child's log starts: one past the
// bootstrap index of a new shard, so that its first candidate's vote
// requests create its replica on a node whose parent replica jumped over
// the split with a snapshot (the engine lets only a candidate beyond the
// bootstrap index create replicas).
const SplitInitialIndex = InitialIndex + 1

// CreateSplitChild creates this node's replica replicaID of child, as a
// split of its parent left it: like CreateShard (an uninitialized replica
// with the same ID is bootstrapped in place, keeping its term and vote),
// at SplitInitialIndex, with the split marker deleted in the same synced
// batch.
func (s *Store) CreateSplitChild(child Descriptor, replicaID uint64) (*Log, error) {
	return s.createShard(child, replicaID, SplitInitialIndex, func(b *Batch) {
		if err := b.b.Delete(splitMarkerKey(child.ShardID), nil); err != nil {
			panic(fmt.Sprintf("storage: batch delete: %v", err)) // only fails on a closed batch
		}
	})
}

// DropSplitMarker deletes child's split marker without creating the child;
// clearData also deletes the child's client sessions and the user data of
// its range, which no replica here owns (the caller checked that no
// initialized replica of the child holds them). Synced.
func (s *Store) DropSplitMarker(child Descriptor, clearData bool) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Delete(splitMarkerKey(child.ShardID), nil); err != nil {
		return err
	}
	if clearData {
		ss, se := SessionSpan(child.ShardID)
		ds, de := child.DataSpan()
		if err := b.DeleteRange(ss, se, nil); err != nil {
			return err
		}
		if err := b.DeleteRange(ds, de, nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// Merges. A merge folds a frozen right shard (R) into its left neighbour
// (L): in the batch that applies the merge on L, L's widened descriptor,
// R's client sessions folded into L's (FoldSessions) and a merge marker
// (SetMergeMarker); once that batch is visible, R's replica is destroyed
// without its data, which is L's now, and the marker deleted in the same
// batch (DestroyMerged). A crash in between leaves the marker: the engine
// destroys R's replica before it reopens its shards (MergeMarkers).
//
//	0x01 'm' 'g' <rightID u64>  merge marker: R's next replica ID (u64)

const metaMerge = 'g'

func mergeMarkerKey(shardID uint64) []byte { return localMetaKey(metaMerge, shardID) }

// SetMergeMarker records in b that the replica of shardID here, merged into
// its left neighbour, is to be destroyed, with a tombstone at
// nextReplicaID.
func SetMergeMarker(b *Batch, shardID, nextReplicaID uint64) {
	b.set(mergeMarkerKey(shardID), binary.BigEndian.AppendUint64(nil, nextReplicaID))
}

// MergeMarkers returns the merged shards whose replicas are still to be
// destroyed, with their next replica IDs.
func (s *Store) MergeMarkers() (map[uint64]uint64, error) {
	out := map[uint64]uint64{}
	err := s.scanLocalMeta(metaMerge, func(id uint64, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: merge marker of shard %d: %d bytes", ErrCorrupt, id, len(v))
		}
		out[id] = binary.BigEndian.Uint64(v)
		return nil
	})
	return out, err
}

// DestroyMerged deletes the raft state and client sessions of shardID's
// replica here, merged into its left neighbour, but not the user data of
// its range (its neighbour's now); leaves a tombstone at nextReplicaID
// (or the one it had, if higher) and deletes the merge marker. Synced.
func (s *Store) DestroyMerged(shardID, nextReplicaID uint64) error {
	b := s.db.NewBatch()
	defer b.Close()
	rs, re := raftSpan(shardID)
	ss, se := SessionSpan(shardID)
	if old, ok, err := s.Tombstone(shardID); err != nil {
		return err
	} else if ok && old > nextReplicaID {
		nextReplicaID = old
	}
	err := errors.Join(b.DeleteRange(rs, re, nil), b.DeleteRange(ss, se, nil),
		b.Set(tombstoneKey(shardID), binary.BigEndian.AppendUint64(nil, nextReplicaID), nil),
		b.Delete(mergeMarkerKey(shardID), nil))
	if err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// FoldSessions folds the client sessions of shard from into those of shard
// to, reading through r (the apply batch) and writing into w: a session to
// lacks is copied; one both have keeps the higher watermark and the later
// last use, and the results of both at or above that watermark (a request
// applies in one shard only: their results do not collide).
func FoldSessions(r pebble.Reader, w pebble.Writer, from, to uint64) error {
	type session struct {
		header  []byte
		results map[uint64][]byte
	}
	lo, hi := SessionSpan(from)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	sessions := map[uint64]*session{}
	var order []uint64
	for it.First(); it.Valid(); it.Next() {
		sk, ok := DecodeSessionKey(it.Key())
		if !ok || sk.ShardID != from {
			_ = it.Close()
			return fmt.Errorf("%w: session key %x of shard %d", ErrCorrupt, it.Key(), from)
		}
		s := sessions[sk.SessionID]
		if s == nil {
			s = &session{results: map[uint64][]byte{}}
			sessions[sk.SessionID] = s
			order = append(order, sk.SessionID)
		}
		if sk.Result {
			s.results[sk.Seq] = bytes.Clone(it.Value())
		} else {
			s.header = bytes.Clone(it.Value())
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	for _, id := range order {
		s := sessions[id]
		hf, err := UnmarshalSessionHeader(s.header, nil)
		if err != nil {
			return err
		}
		merged := hf
		var kept []uint64
		v, closer, err := r.Get(SessionHeaderKey(to, id))
		switch {
		case errors.Is(err, pebble.ErrNotFound):
		case err != nil:
			return err
		default:
			theirs, err := UnmarshalSessionHeader(v, nil)
			_ = closer.Close()
			if err != nil {
				return err
			}
			merged.Watermark = max(hf.Watermark, theirs.Watermark)
			merged.LastUsed = max(hf.LastUsed, theirs.LastUsed)
			for _, seq := range theirs.Results {
				if seq >= merged.Watermark {
					kept = append(kept, seq)
				} else if err := w.Delete(SessionResultKey(to, id, seq), nil); err != nil {
					return err
				}
			}
		}
		for _, seq := range hf.Results {
			if seq < merged.Watermark {
				continue
			}
			if err := w.Set(SessionResultKey(to, id, seq), s.results[seq], nil); err != nil {
				return err
			}
			kept = append(kept, seq)
		}
		slices.Sort(kept)
		merged.Results = slices.Compact(kept)
		if err := w.Set(SessionHeaderKey(to, id), merged.Append(nil), nil); err != nil {
			return err
		}
	}
	return nil
}
