package meta

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/flotilla-db/flotilla/engine"
)

// maxAttempts bounds the compare-and-swap rounds of one write. Every round
// lost means that another writer's change went through.
const maxAttempts = 1000

// maxLogDrops bounds the change entries one write deletes.
const maxLogDrops = 64

// seen is what a write last saw of one key.
type seen struct {
	raw   []byte
	found bool
}

// refresh takes the current value a failed batch reports. The batch failed
// on this key, so the value must differ from what the write expected;
// otherwise the write would loop forever.
func (v *seen) refresh(key []byte, br engine.BatchResult) error {
	if br.Found == v.found && bytes.Equal(br.Current, v.raw) {
		return fmt.Errorf("%w: compare-and-swap of %s failed on the value it expected", ErrCorrupt, key)
	}
	v.raw, v.found = br.Current, br.Found
	return nil
}

// old is the value a compare-and-swap expects: nil for an absent key.
func (v *seen) old() []byte {
	if !v.found {
		return nil
	}
	return v.raw
}

// getSeen reads key.
func getSeen(ctx context.Context, s *Store, key []byte, c Consistency) (seen, error) {
	var v seen
	var err error
	v.raw, v.found, err = s.get(ctx, key, c)
	return v, err
}

// decodeSeen decodes a value seen; the zero T if absent.
func decodeSeen[T any](key []byte, v seen) (T, error) {
	if !v.found {
		var zero T
		return zero, nil
	}
	return decode[T](key, v.raw)
}

// batch proposes a Batch command of ops to the meta shard.
func (s *Store) batch(ctx context.Context, ops ...[]byte) (engine.BatchResult, error) {
	cmd := engine.BatchCommand(ops...)
	if len(cmd) > s.cfg.MaxProposalBytes {
		return engine.BatchResult{}, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(cmd), s.cfg.MaxProposalBytes)
	}
	res, err := s.e.Propose(ctx, ShardID, cmd)
	if errors.Is(err, engine.ErrProposalTooLarge) {
		return engine.BatchResult{}, fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	if err != nil {
		return engine.BatchResult{}, err
	}
	return engine.DecodeBatchResult(res)
}

// swap is a compare-and-swap of one key from what a write last saw of it
// to new (nil: delete the key).
type swap struct {
	key []byte
	v   *seen
	new []byte
}

// swapAll proposes swaps as one batch, all or nothing, and reports whether
// it applied. When it did not, the swap whose condition failed takes the
// value the batch found (seen.refresh), for the caller's next round.
func (s *Store) swapAll(ctx context.Context, swaps ...swap) (bool, error) {
	ops := make([][]byte, len(swaps))
	for i, w := range swaps {
		ops[i] = engine.CASCommand(w.key, w.v.old(), w.new)
	}
	br, err := s.batch(ctx, ops...)
	if err != nil || br.Applied {
		return br.Applied, err
	}
	if br.Failed < 0 || br.Failed >= len(swaps) {
		return false, fmt.Errorf("%w: batch result names op %d of %d", engine.ErrBadRequest, br.Failed, len(swaps))
	}
	w := swaps[br.Failed]
	return false, w.v.refresh(w.key, br)
}

// UpdateNode changes node nodeID's record: fn gets the current record
// (found false: none yet, rec zero) and changes it in place, returning
// whether to write it. The record and the node index (its version, and
// the ID if new) are written together with compare-and-swap; when another
// change won, fn runs again on the new record, so it must have no effects
// of its own. An error of fn is returned as is. The first read is
// linearizable, so fn never decides on a stale record; this node must lead
// the meta shard.
func (s *Store) UpdateNode(ctx context.Context, nodeID uint64, fn func(rec *NodeRecord, found bool) (bool, error)) error {
	if nodeID == 0 {
		return fmt.Errorf("%w: node ID 0", ErrBadRecord)
	}
	key := NodeKey(nodeID)
	rec, err := getSeen(ctx, s, key, Linearizable)
	if err != nil {
		return err
	}
	x, err := getSeen(ctx, s, []byte(KeyNodes), Local)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		r, err := decodeSeen[NodeRecord](key, rec)
		if err != nil {
			return err
		}
		change, err := fn(&r, rec.found)
		if err != nil || !change {
			return err
		}
		if r.NodeID != nodeID {
			return fmt.Errorf("%w: the record of node %d names node %d", ErrBadRecord, nodeID, r.NodeID)
		}
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if rec.found && bytes.Equal(raw, rec.raw) {
			return nil
		}
		idx, err := decodeSeen[NodeIndex]([]byte(KeyNodes), x)
		if err != nil {
			return err
		}
		idx.Version++
		if i, ok := slices.BinarySearch(idx.IDs, nodeID); !ok {
			idx.IDs = slices.Insert(idx.IDs, i, nodeID)
		}
		xraw, err := json.Marshal(idx)
		if err != nil {
			return err
		}
		applied, err := s.swapAll(ctx, swap{key, &rec, raw}, swap{[]byte(KeyNodes), &x, xraw})
		if err != nil || applied {
			return err
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%w: node %d: %d rounds lost", ErrConflict, nodeID, attempt)
		}
	}
}

// CreateCluster writes the cluster record unless there is one already
// (which is kept: no error). This node must lead the meta shard.
func (s *Store) CreateCluster(ctx context.Context, rec ClusterRecord) error {
	if rec.ClusterID == 0 {
		return fmt.Errorf("%w: cluster ID 0", ErrBadRecord)
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	res, err := s.e.Propose(ctx, ShardID, engine.CASCommand([]byte(KeyCluster), nil, raw))
	if err != nil {
		return err
	}
	_, _, _, err = engine.DecodeCASResult(res)
	return err
}

// SetDraining marks node nodeID as draining (decommissioned: placement moves
// its replicas and leaderships off it) or clears the mark, through
// UpdateNode; setting it again is no write. It fails with an error
// matching ErrNotFound for a node without a record and ErrNodeRemoved for
// a removed one. This node must lead the meta shard.
func (s *Store) SetDraining(ctx context.Context, nodeID uint64, draining bool) error {
	return s.UpdateNode(ctx, nodeID, func(rec *NodeRecord, found bool) (bool, error) {
		switch {
		case !found:
			return false, fmt.Errorf("%w: node %d", ErrNotFound, nodeID)
		case rec.Removed:
			return false, fmt.Errorf("%w: node %d: cannot set draining %v", ErrNodeRemoved, nodeID, draining)
		}
		change := rec.Draining != draining
		rec.Draining = draining
		return change, nil
	})
}
