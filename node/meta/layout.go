package meta

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/flotilla-db/flotilla/router"
)

// MaxVoters is the most voters the meta shard gets at bootstrap; every
// other node holds a learner.
const MaxVoters = 5

// InitialRing returns the ring of a cluster bootstrapped with shards
// shards: the hash space split evenly, shard IDs 1..shards, generation 1.
func InitialRing(shards int) (*router.Ring, error) {
	ids := make([]uint64, shards)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	return router.EvenRing(1, ids)
}

// Placement returns the nodes that host the initial shard at ring position
// i: replication consecutive nodes of the sorted node IDs, starting at i,
// sorted.
func Placement(nodeIDs []uint64, i, replication int) []uint64 {
	ids := slices.Clone(nodeIDs)
	slices.Sort(ids)
	out := make([]uint64, 0, replication)
	for k := 0; k < replication && k < len(ids); k++ {
		out = append(out, ids[(i+k)%len(ids)])
	}
	slices.Sort(out)
	return out
}

// InitialRecord is the record of a shard created at bootstrap: generation
// 1, conf index 0, and voters numbered 1, 2, ... in the order of nodeIDs.
// The engine must create the shard with the same descriptor: a record
// equal in conf index and generation is never replaced.
func InitialRecord(rg router.Range, nodeIDs []uint64) ShardRecord {
	rec := ShardRecord{ShardID: rg.ShardID, Start: rg.Start, Last: rg.Last, Generation: 1,
		NextReplicaID: uint64(len(nodeIDs)) + 1, Replicas: make([]Replica, len(nodeIDs))}
	for i, id := range nodeIDs {
		rec.Replicas[i] = Replica{NodeID: id, ReplicaID: uint64(i + 1), Role: RoleVoter}
	}
	return rec
}

// Layout is the deterministic initial layout of a bootstrapped cluster:
// every bootstrap member computes it from the cluster record alone.
type Layout struct {
	Shards []ShardRecord // sorted by shard ID
	// MetaVoters are the lowest MaxVoters members, MetaLearners the others.
	MetaVoters, MetaLearners []uint64
}

// NewLayout computes the initial layout of cluster c.
func NewLayout(c ClusterRecord) (Layout, error) {
	members := slices.Clone(c.Bootstrap)
	slices.Sort(members)
	if len(members) == 0 || c.InitialShards <= 0 || c.Replication <= 0 {
		return Layout{}, fmt.Errorf("%w: cluster record: %d members, %d shards, replication %d",
			ErrBadRecord, len(members), c.InitialShards, c.Replication)
	}
	r, err := c.initialRing()
	if err != nil {
		return Layout{}, err
	}
	l := Layout{Shards: make([]ShardRecord, 0, c.InitialShards)}
	repl := min(c.Replication, len(members))
	for i, rg := range r.Ranges() {
		l.Shards = append(l.Shards, InitialRecord(rg, Placement(members, i, repl)))
	}
	n := min(MaxVoters, len(members))
	l.MetaVoters, l.MetaLearners = members[:n], members[n:]
	return l, nil
}

// initialRing returns c's initial ring: its Ring if set (InitialShards
// ranges that tile the hash space), else InitialRing(InitialShards).
func (c ClusterRecord) initialRing() (*router.Ring, error) {
	if len(c.Ring) == 0 {
		return InitialRing(c.InitialShards)
	}
	if len(c.Ring) != c.InitialShards {
		return nil, fmt.Errorf("%w: cluster record: a ring of %d shards, %d initial shards", ErrBadRecord, len(c.Ring), c.InitialShards)
	}
	ranges := make([]router.Range, len(c.Ring))
	for i, rg := range c.Ring {
		ranges[i] = router.Range{ShardID: rg.ShardID, Start: rg.Start, Last: rg.Last}
	}
	slices.SortFunc(ranges, func(a, b router.Range) int { return cmp.Compare(a.Start, b.Start) })
	r, err := router.NewRing(1, ranges)
	if err != nil {
		return nil, fmt.Errorf("%w: cluster record: %w", ErrBadRecord, err)
	}
	return r, nil
}

// Bootstrap writes the records of a new cluster: the cluster record and
// the initial layout's shard records, in batches. Records that exist are
// kept, so every bootstrap member may run it, and rerun it after an error.
// The cluster record is written without its Ring (a restored cluster's,
// which may be large): the shard records hold the ranges. This node must
// lead the meta shard.
func (s *Store) Bootstrap(ctx context.Context, c ClusterRecord) error {
	l, err := NewLayout(c)
	if err != nil {
		return err
	}
	c.Ring = nil
	if err := s.CreateCluster(ctx, c); err != nil {
		return err
	}
	return s.PutShards(ctx, l.Shards)
}
