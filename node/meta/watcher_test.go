package meta

import (
	"context"
	"testing"
)

// TestWatcher follows the records: a first full read, nothing on an idle
// poll, the changed records only after a write, a new ring after a split,
// and a full read again after falling behind the change log.
func TestWatcher(t *testing.T) {
	s, _ := newStore(t, Config{ChangeLogVersions: 4})
	ctx := context.Background()
	w := NewWatcher(s)
	if _, changed, err := w.Poll(ctx); err != nil || changed {
		t.Fatalf("poll before any record: %v, %v", changed, err)
	}
	if err := s.Bootstrap(ctx, ClusterRecord{ClusterID: 1, Bootstrap: []uint64{1, 2, 3}, InitialShards: 8, Replication: 3}); err != nil {
		t.Fatal(err)
	}
	u, changed, err := w.Poll(ctx)
	if err != nil || !changed || !u.Full || len(u.Shards) != 8 || u.Ring == nil || u.RingErr != nil {
		t.Fatalf("first poll: %+v, %v, %v", u, changed, err)
	}
	if u.Ring.Generation() != u.Generation || len(u.Ring.Ranges()) != 8 {
		t.Fatalf("ring generation %d, %d ranges", u.Ring.Generation(), len(u.Ring.Ranges()))
	}
	gen := u.Generation
	if _, changed, err := w.Poll(ctx); err != nil || changed {
		t.Fatalf("idle poll: %v, %v", changed, err)
	}

	// A replica change: that record only, no new ring.
	r3, err := s.Shard(ctx, 3, Local)
	if err != nil {
		t.Fatal(err)
	}
	r3.ConfIndex, r3.NextReplicaID = 10, r3.NextReplicaID+1
	r3.Replicas = append(r3.Replicas, Replica{NodeID: 9, ReplicaID: r3.NextReplicaID - 1, Role: RoleLearner})
	if err := s.PutShard(ctx, r3); err != nil {
		t.Fatal(err)
	}
	u, changed, err = w.Poll(ctx)
	if err != nil || !changed || u.Full || len(u.Shards) != 1 || !u.Shards[0].Equal(r3) || u.Ring != nil {
		t.Fatalf("after a replica change: %+v, %v, %v", u, changed, err)
	}
	if ids := u.Shards[0].NodeIDs(); len(ids) != 4 || ids[3] != 9 {
		t.Fatalf("replicas %v", u.Shards[0].NodeIDs())
	}

	// A split of shard 5 into 5 and 100, written by two writers: the
	// first poll may see half of it, the ring follows once it tiles.
	r5, _ := s.Shard(ctx, 5, Local)
	left, right := r5.Clone(), r5.Clone()
	mid := r5.Start + (r5.Last-r5.Start)/2
	left.Generation, left.Last = 2, mid
	right.ShardID, right.Generation, right.Start = 100, 2, mid+1
	if err := s.PutShard(ctx, left); err != nil {
		t.Fatal(err)
	}
	u, _, err = w.Poll(ctx)
	if err != nil || u.Ring != nil || u.RingErr == nil {
		t.Fatalf("halfway through a split: ring %v, error %v, %v", u.Ring, u.RingErr, err)
	}
	if err := s.PutShard(ctx, right); err != nil {
		t.Fatal(err)
	}
	u, _, err = w.Poll(ctx)
	if err != nil || u.Ring == nil || u.Generation <= gen || len(u.Ring.Ranges()) != 9 {
		t.Fatalf("after the split: %+v, %v", u, err)
	}
	// Both halves come with the ring, though the left one was handed out
	// before.
	if len(u.Shards) != 2 || !u.Shards[0].Equal(left) || !u.Shards[1].Equal(right) {
		t.Fatalf("records with the new ring: %+v", u.Shards)
	}
	if rt := u.Ring.Lookup(mid + 1); rt != 100 {
		t.Fatalf("hash %#x goes to shard %d", mid+1, rt)
	}

	// Fall behind the change log (4 versions): a full read.
	for i := range uint64(6) {
		r := r3.Clone()
		r.ConfIndex += i + 1
		if err := s.PutShard(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	u, _, err = w.Poll(ctx)
	if err != nil || !u.Full || len(u.Shards) != 9 || u.Ring != nil {
		t.Fatalf("behind the change log: full %v, %d records, ring %v, %v", u.Full, len(u.Shards), u.Ring, err)
	}
	if h, _ := s.Header(ctx, Local); h.Version-h.LogStart+1 != 4 {
		t.Fatalf("header %+v keeps %d entries", h, h.Version-h.LogStart+1)
	}
}

// TestWatcherNodes: node records are polled through their index.
func TestWatcherNodes(t *testing.T) {
	s, _ := newStore(t, Config{})
	ctx := context.Background()
	w := NewWatcher(s)
	if nodes, changed, err := w.PollNodes(ctx); err != nil || !changed || len(nodes) != 0 {
		t.Fatalf("first poll: %v, %v, %v", nodes, changed, err)
	}
	add := func(id uint64) {
		t.Helper()
		err := s.UpdateNode(ctx, id, func(r *NodeRecord, _ bool) (bool, error) {
			*r = NodeRecord{NodeID: id, RaftAddr: "r"}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	add(4)
	add(2)
	nodes, changed, err := w.PollNodes(ctx)
	if err != nil || !changed || len(nodes) != 2 || nodes[0].NodeID != 2 || nodes[1].NodeID != 4 {
		t.Fatalf("after two joins: %v, %v, %v", nodes, changed, err)
	}
	if _, changed, _ := w.PollNodes(ctx); changed {
		t.Fatal("idle poll changed")
	}
}
