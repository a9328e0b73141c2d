package node

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
)

// The meta shard is the cluster's authority on what it is made of: the
// cluster record, one record per node (IDs are never reused: a removed
// node's record stays, marked removed) and the ring record (every shard's
// range, generation and replicas). It is a system shard (storage's
// SystemShardBase), so it is not part of the ring and its data lives in a
// key space of its own; it runs the same KV state machine as user shards,
// and every change to a record is a compare-and-swap on it, so that
// concurrent admins never lose each other's updates. Voters sit on up to
// five nodes, every other node holds a learner: each node's router reads its
// own local copy.
//
// Leadership is not in the meta shard: it changes too often and is spread by
// gossip (see cluster.go).
const MetaShardID = nodemeta.ShardID

// MaxMetaVoters is the most voters the meta shard gets at bootstrap.
const MaxMetaVoters = nodemeta.MaxVoters

const (
	metaKeyCluster = "cluster"
	metaKeyRing    = "ring"
	metaNodePrefix = "node/"
)

// MetaDescriptor is the meta shard's descriptor: the whole hash space of its
// own key space.
func MetaDescriptor() storage.Descriptor {
	return storage.Descriptor{ShardID: MetaShardID, Start: 0, Last: ^uint64(0), Generation: 1}
}

// ClusterRecord and NodeRecord are the meta shard's records of the cluster
// and of a node (package node/meta owns them).
type (
	ClusterRecord = nodemeta.ClusterRecord
	NodeRecord    = nodemeta.NodeRecord
)

// ShardRecord is one shard of the ring record.
type ShardRecord struct {
	ShardID    uint64   `json:"shard_id"`
	Start      uint64   `json:"start"`
	Last       uint64   `json:"last"`
	Generation uint64   `json:"generation"`
	Voters     []uint64 `json:"voters"`
	Learners   []uint64 `json:"learners,omitempty"`
}

// Descriptor returns the shard's storage descriptor.
func (s ShardRecord) Descriptor() storage.Descriptor {
	return storage.Descriptor{ShardID: s.ShardID, Start: s.Start, Last: s.Last, Generation: s.Generation}
}

// RingRecord is the meta shard's record of the ring.
type RingRecord struct {
	Generation uint64        `json:"generation"`
	Shards     []ShardRecord `json:"shards"`
}

// Layout is the deterministic initial layout of a bootstrapped cluster: every
// bootstrap member computes it from the cluster record alone.
func Layout(c ClusterRecord) (ring RingRecord, metaVoters, metaLearners []uint64, err error) {
	members := slices.Clone(c.Bootstrap)
	slices.Sort(members)
	if len(members) == 0 || c.InitialShards <= 0 || c.Replication <= 0 {
		return RingRecord{}, nil, nil, fmt.Errorf("node: bad cluster record: %d members, %d shards, replication %d", len(members), c.InitialShards, c.Replication)
	}
	r, err := nodemeta.InitialRing(c.InitialShards)
	if err != nil {
		return RingRecord{}, nil, nil, err
	}
	ring.Generation = r.Generation()
	repl := min(c.Replication, len(members))
	for i, rg := range r.Ranges() {
		ring.Shards = append(ring.Shards, ShardRecord{
			ShardID: rg.ShardID, Start: rg.Start, Last: rg.Last, Generation: r.Generation(),
			Voters: nodemeta.Placement(members, i, repl),
		})
	}
	n := min(MaxMetaVoters, len(members))
	return ring, members[:n], members[n:], nil
}

// ErrMetaConflict: a compare-and-swap on a meta record lost to a concurrent
// change too many times.
var ErrMetaConflict = errors.New("node: meta record changed concurrently")

// meta reads and changes the meta shard's records through one engine.
type meta struct{ e *engine.Engine }

func (m meta) get(ctx context.Context, key string, linearizable bool) ([]byte, bool, error) {
	var res []byte
	var err error
	if linearizable {
		res, err = m.e.Read(ctx, MetaShardID, engine.GetQuery([]byte(key)))
	} else {
		res, err = m.e.ReadLocal(MetaShardID, engine.GetQuery([]byte(key)))
	}
	if err != nil {
		return nil, false, err
	}
	return engine.DecodeGetResult(res)
}

// getJSON reads key into v; found is false if the key is absent.
func (m meta) getJSON(ctx context.Context, key string, linearizable bool, v any) (raw []byte, found bool, err error) {
	raw, found, err = m.get(ctx, key, linearizable)
	if err != nil || !found {
		return nil, found, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, false, fmt.Errorf("node: meta record %q: %w", key, err)
	}
	return raw, true, nil
}

// update reads key linearizably, lets fn change the decoded value (found
// tells whether it existed; fn returns false to leave it alone) and writes
// it back with compare-and-swap, retrying when another change won.
func update[T any](ctx context.Context, m meta, key string, fn func(v *T, found bool) (bool, error)) error {
	for attempt := 0; attempt < 16; attempt++ {
		var v T
		raw, found, err := m.getJSON(ctx, key, true, &v)
		if err != nil {
			return err
		}
		change, err := fn(&v, found)
		if err != nil || !change {
			return err
		}
		next, err := json.Marshal(&v)
		if err != nil {
			return err
		}
		if bytes.Equal(next, raw) {
			return nil
		}
		res, err := m.e.Propose(ctx, MetaShardID, engine.CASCommand([]byte(key), raw, next))
		if err != nil {
			return err
		}
		swapped, _, _, err := engine.DecodeCASResult(res)
		if err != nil {
			return err
		}
		if swapped {
			return nil
		}
	}
	return fmt.Errorf("%w: %q", ErrMetaConflict, key)
}

// createIfAbsent writes v under key unless the key exists.
func createIfAbsent[T any](ctx context.Context, m meta, key string, v T) error {
	return update(ctx, m, key, func(cur *T, found bool) (bool, error) {
		if found {
			return false, nil
		}
		*cur = v
		return true, nil
	})
}

// nodes returns every node record of the local copy of the meta shard.
func (m meta) nodes() ([]NodeRecord, error) {
	var out []NodeRecord
	var after []byte
	for {
		res, err := m.e.ReadLocal(MetaShardID, engine.ScanQuery(after, 256))
		if err != nil {
			return nil, err
		}
		sr, err := engine.DecodeScanResult(res)
		if err != nil {
			return nil, err
		}
		for _, kv := range sr.Pairs {
			if !bytes.HasPrefix(kv.Key, []byte(metaNodePrefix)) {
				continue
			}
			var r NodeRecord
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				return nil, fmt.Errorf("node: meta record %q: %w", kv.Key, err)
			}
			out = append(out, r)
		}
		if sr.Next == nil {
			break
		}
		after = sr.Next
	}
	slices.SortFunc(out, func(a, b NodeRecord) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return out, nil
}

func nodeKey(id uint64) string { return fmt.Sprintf("%s%d", metaNodePrefix, id) }
