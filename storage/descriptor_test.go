package storage

import (
	"errors"
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// TestDescriptorReplicas: replica IDs follow from the configuration and are
// never reused; roles follow raft's ConfState, joint configurations
// included; the encoding round-trips and refuses what is not a descriptor.
func TestDescriptorReplicas(t *testing.T) {
	d := NewDescriptor(4, 10, 20, 1, []uint64{7, 8, 9}, nil)
	if d.NextReplicaID != 4 || d.Replicas[2] != (Replica{NodeID: 9, ReplicaID: 3, Role: RoleVoter}) {
		t.Fatalf("new: %+v", d)
	}
	// Joint: node 10 joins as replica 4, node 9 (replica 3) leaves.
	cs := raftpb.ConfState{Voters: []uint64{1, 2, 4}, VotersOutgoing: []uint64{1, 2, 3}}
	j, err := d.WithConfState(cs, map[uint64]uint64{4: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := []Replica{{7, 1, RoleVoter}, {8, 2, RoleVoter}, {9, 3, RoleVoterOutgoing}, {10, 4, RoleVoterIncoming}}
	if len(j.Replicas) != 4 || j.NextReplicaID != 5 {
		t.Fatalf("joint: %+v", j)
	}
	for i := range want {
		if j.Replicas[i] != want[i] {
			t.Fatalf("joint replica %d: %+v, want %+v", i, j.Replicas[i], want[i])
		}
	}
	if got := j.ConfState(); len(got.Voters) != 3 || len(got.VotersOutgoing) != 3 {
		t.Fatalf("joint conf state %+v", got)
	}
	// Left joint: replica 3 gone; node 9 can only come back under a new ID.
	l, err := j.WithConfState(raftpb.ConfState{Voters: []uint64{1, 2, 4}}, nil)
	if err != nil || len(l.Replicas) != 3 {
		t.Fatalf("left joint: %+v %v", l, err)
	}
	if _, err := l.WithConfState(raftpb.ConfState{Voters: []uint64{1, 2, 3, 4}}, map[uint64]uint64{3: 9}); err == nil {
		t.Fatal("replica ID 3 reused")
	}
	back, err := l.WithConfState(raftpb.ConfState{Voters: []uint64{1, 2, 4}, Learners: []uint64{5}}, map[uint64]uint64{5: 9})
	if err != nil || back.NextReplicaID != 6 {
		t.Fatalf("re-added: %+v %v", back, err)
	}
	if r, _ := back.ReplicaOfNode(9); r.ReplicaID != 5 || r.Role != RoleLearner {
		t.Fatalf("re-added replica %+v", r)
	}
	b, err := UnmarshalDescriptor(back.Marshal())
	if err != nil || !b.Equal(back) {
		t.Fatalf("round trip %+v %v", b, err)
	}
	for name, bad := range map[string]Descriptor{
		"replica at next ID": {ShardID: 1, NextReplicaID: 2, Replicas: []Replica{{NodeID: 1, ReplicaID: 2, Role: RoleVoter}}},
		"node twice":         {ShardID: 1, NextReplicaID: 5, Replicas: []Replica{{1, 1, RoleVoter}, {1, 2, RoleVoter}}},
		"unknown role":       {ShardID: 1, NextReplicaID: 5, Replicas: []Replica{{1, 1, 9}}},
		"empty range":        {ShardID: 1, Start: 5, Last: 4, NextReplicaID: 1},
	} {
		if _, err := UnmarshalDescriptor(bad.Marshal()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := UnmarshalDescriptor(make([]byte, 32)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a version 1 descriptor: %v", err)
	}
}

func TestDescriptorHasQuorum(t *testing.T) {
	v := func(node uint64, role ReplicaRole) Replica {
		return Replica{NodeID: node, ReplicaID: node, Role: role}
	}
	three := []Replica{v(1, RoleVoter), v(2, RoleVoter), v(3, RoleVoter), v(4, RoleLearner)}
	// Joint: {1,2,3} -> {1,2,4}.
	joint := []Replica{v(1, RoleVoter), v(2, RoleVoter), v(3, RoleVoterOutgoing), v(4, RoleVoterIncoming)}
	for _, tc := range []struct {
		name     string
		replicas []Replica
		live     []uint64
		want     bool
	}{
		{"all live", three, []uint64{1, 2, 3}, true},
		{"two of three", three, []uint64{1, 3}, true},
		{"one of three, learner live", three, []uint64{2, 4}, false},
		{"none", three, nil, false},
		{"joint: both halves", joint, []uint64{1, 2}, true},
		{"joint: incoming only", joint, []uint64{1, 4}, false},
		{"joint: outgoing only", joint, []uint64{2, 3}, false},
		{"no voters", []Replica{v(1, RoleLearner)}, []uint64{1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Descriptor{ShardID: 7, Replicas: tc.replicas}
			got := d.HasQuorum(func(id uint64) bool { return slices.Contains(tc.live, id) })
			if got != tc.want {
				t.Fatalf("HasQuorum with live %v = %v, want %v", tc.live, got, tc.want)
			}
		})
	}
}
