package meta

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// TestPutShardMonotonic: a record is replaced only by a newer one; an older
// or equal one changes nothing and is no error.
func TestPutShardMonotonic(t *testing.T) {
	s, _ := newStore(t, Config{})
	ctx := context.Background()
	if _, err := s.Shard(ctx, 1, Local); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent record: %v", err)
	}
	v5 := record(1, 5, 1, 2, 3)
	if err := s.PutShard(ctx, v5); err != nil {
		t.Fatal(err)
	}
	got, err := s.Shard(ctx, 1, Linearizable)
	if err != nil || !got.Equal(v5) || got.Version != 1 {
		t.Fatalf("after the first write: %+v, %v", got, err)
	}
	older := record(1, 4, 7, 8, 9)
	equal := record(1, 5, 4, 5, 6)
	for _, r := range []ShardRecord{older, equal} {
		if err := s.PutShard(ctx, r); err != nil {
			t.Fatalf("an older or equal record: %v", err)
		}
	}
	h, err := s.Header(ctx, Linearizable)
	if err != nil || h.Version != 1 || h.Shards != 1 || h.Generation != 1 {
		t.Fatalf("header after no-op writes: %+v, %v", h, err)
	}
	// A newer one, by conf index then by generation.
	v6 := record(1, 6, 1, 2, 4)
	v6.NextReplicaID = 5
	v6.Replicas[2].ReplicaID = 4
	split := v6.Clone()
	split.Generation, split.Last = 2, split.Start+10
	for i, r := range []ShardRecord{v6, split} {
		if err := s.PutShard(ctx, r); err != nil {
			t.Fatal(err)
		}
		got, err := s.Shard(ctx, 1, Linearizable)
		if err != nil || !got.Equal(r) || got.Version != uint64(i+2) {
			t.Fatalf("write %d: %+v, %v", i, got, err)
		}
	}
	// Only the range change raised the ring generation.
	if h, _ := s.Header(ctx, Linearizable); h.Version != 3 || h.Generation != 2 || h.Shards != 1 {
		t.Fatalf("header: %+v", h)
	}
}

// TestPutShardBadInput: malformed records are refused with a *RecordError
// and nothing is written, not even the good records of the same call.
func TestPutShardBadInput(t *testing.T) {
	s, _ := newStore(t, Config{})
	ctx := context.Background()
	empty := record(2, 1, 1)
	empty.Start, empty.Last = 5, 4
	dupNode := record(3, 1, 1, 2)
	dupNode.Replicas[1].NodeID = 1
	highReplica := record(4, 1, 1, 2)
	highReplica.Replicas[1].ReplicaID = highReplica.NextReplicaID
	for name, r := range map[string]ShardRecord{"empty range": empty, "duplicate node": dupNode, "replica ID >= next": highReplica} {
		err := s.PutShards(ctx, []ShardRecord{record(1, 1, 1), r})
		var re *RecordError
		if !errors.As(err, &re) || re.ShardID != r.ShardID {
			t.Errorf("%s: %v, want a *RecordError of shard %d", name, err, r.ShardID)
		}
	}
	recs, h, err := s.Shards(ctx, Linearizable)
	if err != nil || len(recs) != 0 || h.Version != 0 {
		t.Fatalf("bad input wrote: %d records, header %+v, %v", len(recs), h, err)
	}
}

// TestPutShardConcurrent: writers of different shards and of one shard
// race; every record lands, and of one shard's the newest wins.
func TestPutShardConcurrent(t *testing.T) {
	s, _ := newStore(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const shards, hot = 40, 1000
	concurrently(t, 2*shards, func(i uint64) error {
		if i < shards {
			return s.PutShard(ctx, record(i+1, 1, 1, 2, 3))
		}
		// One shard, conf indexes in every order.
		return s.PutShard(ctx, record(hot, (i*17)%shards+1, 1, 2, 3))
	})
	recs, h, err := s.Shards(ctx, Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != shards+1 || h.Shards != shards+1 {
		t.Fatalf("%d records, header counts %d; want %d", len(recs), h.Shards, shards+1)
	}
	for i, r := range recs[:shards] {
		if r.ShardID != uint64(i+1) || !r.Equal(record(r.ShardID, 1, 1, 2, 3)) {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	if hotRec := recs[shards]; hotRec.ShardID != hot || hotRec.ConfIndex != shards {
		t.Fatalf("the hot shard's record is at conf index %d, want %d", hotRec.ConfIndex, shards)
	}
	// Every version has its change entry, and they name every write.
	named := map[uint64]bool{}
	for v := h.LogStart; v <= h.Version; v++ {
		c, _, found, err := getRecord[RingChange](ctx, s, ChangeKey(v), Local)
		if err != nil || !found || c.Version != v {
			t.Fatalf("change entry %d: %+v, %v, %v", v, c, found, err)
		}
		for _, id := range c.ShardIDs {
			named[id] = true
		}
	}
	if len(named) != shards+1 {
		t.Fatalf("the change entries name %d shards", len(named))
	}
}

// TestPutShardsBatches writes more records than fit one proposal: they go
// in several batches, and writing them again changes nothing.
func TestPutShardsBatches(t *testing.T) {
	s, _ := newStore(t, Config{MaxProposalBytes: 16 << 10})
	ctx := context.Background()
	c := ClusterRecord{ClusterID: 9, Bootstrap: []uint64{1, 2, 3}, InitialShards: 500, Replication: 3}
	if err := s.Bootstrap(ctx, c); err != nil {
		t.Fatal(err)
	}
	recs, h, err := s.Shards(ctx, Linearizable)
	if err != nil || len(recs) != 500 || h.Shards != 500 {
		t.Fatalf("%d records, header %+v, %v", len(recs), h, err)
	}
	if h.Version < 5 {
		t.Fatalf("500 records in %d batches of 16 KiB", h.Version)
	}
	if _, err := BuildRing(h.Generation, recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(ctx, c); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Header(ctx, Linearizable); !reflect.DeepEqual(again, h) {
		t.Fatalf("bootstrapping again wrote: %+v -> %+v", h, again)
	}
	got, err := s.Cluster(ctx, Linearizable)
	if err != nil || got.ClusterID != 9 || got.InitialShards != 500 {
		t.Fatalf("cluster record %+v, %v", got, err)
	}
}

// TestUpdateNode: node records and their index, written by racing
// updaters.
func TestUpdateNode(t *testing.T) {
	s, _ := newStore(t, Config{})
	ctx := context.Background()
	concurrently(t, 20, func(i uint64) error {
		id := i%5 + 1 // four updaters per node
		return s.UpdateNode(ctx, id, func(r *NodeRecord, found bool) (bool, error) {
			if !found {
				*r = NodeRecord{NodeID: id, Instance: 100 + id, RaftAddr: fmt.Sprint("raft-", id)}
			}
			r.ClientAddr += "x" // every update leaves its mark
			return true, nil
		})
	})
	nodes, x, err := s.Nodes(ctx, Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(x.IDs, []uint64{1, 2, 3, 4, 5}) || x.Version != 20 || len(nodes) != 5 {
		t.Fatalf("index %+v, %d records", x, len(nodes))
	}
	for _, n := range nodes {
		if n.ClientAddr != "xxxx" || n.Instance != 100+n.NodeID {
			t.Fatalf("node %d: %+v (an update was lost)", n.NodeID, n)
		}
	}
	refused := errors.New("refused")
	if err := s.UpdateNode(ctx, 1, func(*NodeRecord, bool) (bool, error) { return false, refused }); err != refused {
		t.Fatalf("fn's error: %v", err)
	}
	if err := s.UpdateNode(ctx, 6, func(r *NodeRecord, _ bool) (bool, error) { r.NodeID = 7; return true, nil }); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("a record of another node: %v", err)
	}
	if n, err := s.Node(ctx, 3, Local); err != nil || n.RaftAddr != "raft-3" {
		t.Fatalf("node 3: %+v, %v", n, err)
	}
}

// TestSetDraining: the mark is set and cleared through the node record
// (one write each; setting it again writes nothing), and refused for an
// unknown node and for a removed one.
func TestSetDraining(t *testing.T) {
	s, _ := newStore(t, Config{})
	ctx := context.Background()
	for _, id := range []uint64{1, 2} {
		if err := s.UpdateNode(ctx, id, func(r *NodeRecord, _ bool) (bool, error) {
			*r = NodeRecord{NodeID: id, RaftAddr: fmt.Sprint("raft-", id), Removed: id == 2}
			return true, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	x, _ := s.NodeIndex(ctx, Linearizable)
	for i, draining := range []bool{true, true, false, false} {
		if err := s.SetDraining(ctx, 1, draining); err != nil {
			t.Fatalf("set %d (%v): %v", i, draining, err)
		}
		n, err := s.Node(ctx, 1, Linearizable)
		if err != nil || n.Draining != draining || n.RaftAddr != "raft-1" {
			t.Fatalf("set %d (%v): %+v, %v", i, draining, n, err)
		}
	}
	if after, _ := s.NodeIndex(ctx, Linearizable); after.Version != x.Version+2 {
		t.Fatalf("node index version %d -> %d: want two writes", x.Version, after.Version)
	}
	if err := s.SetDraining(ctx, 3, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an unknown node: %v", err)
	}
	if _, err := s.Node(ctx, 3, Linearizable); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetDraining created a record: %v", err)
	}
	for _, draining := range []bool{true, false} {
		if err := s.SetDraining(ctx, 2, draining); !errors.Is(err, ErrNodeRemoved) {
			t.Fatalf("a removed node (draining %v): %v", draining, err)
		}
	}
	if n, _ := s.Node(ctx, 2, Linearizable); n.Draining || !n.Removed {
		t.Fatalf("removed node: %+v", n)
	}
}

// TestPutShardStaleCopy: a write that read a lagging local copy (absent
// records, an absent header) loses the header's compare-and-swap, reads
// again linearizably and does the right thing: a newer record lands, an
// older one does not.
func TestPutShardStaleCopy(t *testing.T) {
	s, e := newStore(t, Config{})
	ctx := context.Background()
	if err := s.PutShards(ctx, []ShardRecord{record(1, 5, 1), record(2, 5, 1)}); err != nil {
		t.Fatal(err)
	}
	stale, err := New(&staleEngine{Engine: e, absent: map[string]bool{
		string(engine.GetQuery(ShardKey(1))): true, string(engine.GetQuery(ShardKey(2))): true, string(engine.GetQuery([]byte(KeyRing))): true,
	}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.PutShards(ctx, []ShardRecord{record(1, 4, 2), record(2, 6, 3)}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Shard(ctx, 1, Linearizable); r.ConfIndex != 5 || r.Replicas[0].NodeID != 1 {
		t.Fatalf("an older record replaced a newer one: %+v", r)
	}
	if r, _ := s.Shard(ctx, 2, Linearizable); r.ConfIndex != 6 || r.Replicas[0].NodeID != 3 {
		t.Fatalf("the newer record was not written: %+v", r)
	}
	if h, _ := s.Header(ctx, Linearizable); h.Version != 2 || h.Shards != 2 {
		t.Fatalf("header %+v", h)
	}
}
