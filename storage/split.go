package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"

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

func splitMarkerKey(childID uint64) []byte {
	k := make([]byte, 3+8)
	k[0], k[1], k[2] = prefixLocal, localMeta, metaSplit
	binary.BigEndian.PutUint64(k[3:], childID)
	return k
}

// SetSplitMarker records in b that child is to be created on this node.
func SetSplitMarker(b *Batch, child Descriptor) {
	b.set(splitMarkerKey(child.ShardID), child.Marshal())
}

// SplitMarkers returns the descriptors of the children whose creation a
// split left pending, in child ID order.
func (s *Store) SplitMarkers() ([]Descriptor, error) {
	lo := []byte{prefixLocal, localMeta, metaSplit}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: []byte{prefixLocal, localMeta, metaSplit + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Descriptor
	for it.First(); it.Valid(); it.Next() {
		d, err := UnmarshalDescriptor(it.Value())
		if err != nil || len(it.Key()) != 11 || d.ShardID != binary.BigEndian.Uint64(it.Key()[3:]) {
			return nil, fmt.Errorf("%w: split marker %x: %v", ErrCorrupt, it.Key(), err)
		}
		out = append(out, d)
	}
	return out, it.Error()
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

// CreateSplitChild creates this node's replica replicaID of child, as a
// split of its parent left it: like CreateShard (an uninitialized replica
// with the same ID is bootstrapped in place, keeping its term and vote),
// with the split marker deleted in the same synced batch.
func (s *Store) CreateSplitChild(child Descriptor, replicaID uint64) (*Log, error) {
	return s.createShard(child, replicaID, func(b *Batch) {
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
