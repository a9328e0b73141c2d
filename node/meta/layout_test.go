package meta

import (
	"errors"
	"math"
	"testing"
)

// TestLayoutOfRing: a cluster record with a Ring (a restored cluster) lays
// out exactly those shards, in any order given, on its members; a ring
// that does not tile the hash space or disagrees with InitialShards is
// refused.
func TestLayoutOfRing(t *testing.T) {
	ring := []InitialRange{
		{ShardID: 70, Start: 1 << 62, Last: math.MaxUint64},
		{ShardID: 5, Start: 0, Last: 1000},
		{ShardID: 9, Start: 1001, Last: 1<<62 - 1},
	}
	c := ClusterRecord{ClusterID: 7, Bootstrap: []uint64{42}, InitialShards: 3, Replication: 3, Ring: ring}
	l, err := NewLayout(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []InitialRange{ring[1], ring[2], ring[0]}
	if len(l.Shards) != len(want) {
		t.Fatalf("%d shards, want %d", len(l.Shards), len(want))
	}
	for i, rec := range l.Shards {
		if w := want[i]; rec.ShardID != w.ShardID || rec.Start != w.Start || rec.Last != w.Last {
			t.Fatalf("shard %d: %+v, want %+v", i, rec, w)
		}
		if ids := rec.NodeIDs(); len(ids) != 1 || ids[0] != 42 || rec.Generation != 1 {
			t.Fatalf("shard %d on %v at generation %d, want node 42 alone at 1", rec.ShardID, ids, rec.Generation)
		}
	}
	for name, bad := range map[string]ClusterRecord{
		"count":   {ClusterID: 7, Bootstrap: []uint64{42}, InitialShards: 2, Replication: 1, Ring: ring},
		"gap":     {ClusterID: 7, Bootstrap: []uint64{42}, InitialShards: 2, Replication: 1, Ring: []InitialRange{ring[0], ring[1]}},
		"overlap": {ClusterID: 7, Bootstrap: []uint64{42}, InitialShards: 3, Replication: 1, Ring: []InitialRange{ring[0], ring[1], {ShardID: 9, Start: 1000, Last: 1<<62 - 1}}},
	} {
		if _, err := NewLayout(bad); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: %v, want ErrBadRecord", name, err)
		}
	}
}
