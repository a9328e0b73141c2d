package meta

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/storage"
)

func TestRecordOfDescriptor(t *testing.T) {
	d := storage.Descriptor{ShardID: 4, Start: 10, Last: 20, Generation: 3, NextReplicaID: 9, ConfIndex: 17,
		Replicas: []storage.Replica{
			{NodeID: 5, ReplicaID: 1, Role: storage.RoleVoter},
			{NodeID: 2, ReplicaID: 3, Role: storage.RoleLearner},
			{NodeID: 7, ReplicaID: 4, Role: storage.RoleVoterIncoming},
			{NodeID: 1, ReplicaID: 6, Role: storage.RoleVoterOutgoing},
			{NodeID: 3, ReplicaID: 8, Role: storage.RoleVoterDemoting},
		}}
	r := RecordOf(d)
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []Role{RoleVoter, RoleLearner, RoleVoterIncoming, RoleVoterOutgoing, RoleVoterDemoting}
	for i, rp := range r.Replicas {
		if rp.Role != want[i] || rp.NodeID != d.Replicas[i].NodeID || rp.ReplicaID != d.Replicas[i].ReplicaID {
			t.Errorf("replica %d: %+v, want %v of %+v", i, rp, want[i], d.Replicas[i])
		}
	}
	if back := r.Descriptor(); !back.Equal(d) {
		t.Fatalf("round trip: %+v, want %+v", back, d)
	}
	if RoleOf(0) != "" || Role("boss").StorageRole() != 0 {
		t.Fatal("unknown roles convert")
	}
	if _, err := r.Spec(); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("spec of a joint configuration at conf index 17: %v", err)
	}
}

// TestInitialRecordsAreTheEngines: every shard of the initial layout,
// created from its Spec, gets from the engine the very descriptor the
// bootstrap record holds; a record equal in conf index and generation is
// never replaced, so they must agree.
func TestInitialRecordsAreTheEngines(t *testing.T) {
	l, err := NewLayout(ClusterRecord{ClusterID: 1, Bootstrap: []uint64{9, 4, 6, 1, 3}, InitialShards: 10, Replication: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, spec := range specs(t, l) {
		rec := l.Shards[i]
		d := storage.NewDescriptor(rec.ShardID, spec.Desc.Start, spec.Desc.Last, spec.Desc.Generation, spec.Voters, spec.Learners)
		if !RecordOf(d).Equal(rec) {
			t.Fatalf("shard %d: the engine's descriptor %+v, the record %+v", rec.ShardID, d, rec)
		}
	}
	// A shard that one engine creates from the spec of a one-node layout.
	_, e := newStore(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err = NewLayout(ClusterRecord{ClusterID: 1, Bootstrap: []uint64{1}, InitialShards: 2, Replication: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, spec := range specs(t, l) {
		rec := l.Shards[i]
		if err := e.CreateShard(ctx, spec); err != nil {
			t.Fatal(err)
		}
		st, err := e.Status(ctx, rec.ShardID)
		if err != nil {
			t.Fatal(err)
		}
		if got := RecordOf(st.Desc); !got.Equal(rec) {
			t.Fatalf("shard %d: the engine's descriptor as a record %+v, the bootstrap record %+v", rec.ShardID, got, rec)
		}
	}
}

// specs returns the Spec of each shard of l.
func specs(t *testing.T, l Layout) []engine.ShardSpec {
	t.Helper()
	out := make([]engine.ShardSpec, len(l.Shards))
	for i, rec := range l.Shards {
		var err error
		if out[i], err = rec.Spec(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
