package node

import (
	"testing"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
)

// TestShardInfoReplicaIDs checks that each replica of a shard's report
// carries its node ID, its replica ID from the descriptor, its role and the
// leader's match, sorted by node ID.
func TestShardInfoReplicaIDs(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   engine.ShardStatus
		want []*nodepb.Replica
	}{{
		name: "node re-added under a fresh replica ID",
		st: engine.ShardStatus{
			ShardID: 5, NodeID: 1, Leader: 1,
			Voters: []uint64{3, 1}, Learners: []uint64{2},
			Desc: storage.Descriptor{ShardID: 5, NextReplicaID: 8, Replicas: []storage.Replica{
				{NodeID: 1, ReplicaID: 1, Role: storage.RoleVoter},
				{NodeID: 3, ReplicaID: 3, Role: storage.RoleVoter},
				{NodeID: 2, ReplicaID: 7, Role: storage.RoleLearner},
			}},
			Progress: []engine.ReplicaProgress{{NodeID: 1, ReplicaID: 1, Match: 40}, {NodeID: 2, ReplicaID: 7, Match: 38}, {NodeID: 3, ReplicaID: 3, Match: 40}},
		},
		want: []*nodepb.Replica{
			{NodeId: 1, ReplicaId: 1, Role: "voter", Match: 40},
			{NodeId: 2, ReplicaId: 7, Role: "learner", Match: 38},
			{NodeId: 3, ReplicaId: 3, Role: "voter", Match: 40},
		},
	}, {
		name: "joint configuration, follower's view",
		st: engine.ShardStatus{
			ShardID: 6, NodeID: 2, Leader: 1,
			Voters: []uint64{1, 2, 4}, Outgoing: []uint64{1, 2, 3},
			Desc: storage.Descriptor{ShardID: 6, NextReplicaID: 10, Replicas: []storage.Replica{
				{NodeID: 1, ReplicaID: 1, Role: storage.RoleVoter},
				{NodeID: 2, ReplicaID: 2, Role: storage.RoleVoter},
				{NodeID: 3, ReplicaID: 3, Role: storage.RoleVoterOutgoing},
				{NodeID: 4, ReplicaID: 9, Role: storage.RoleVoterIncoming},
			}},
		},
		want: []*nodepb.Replica{
			{NodeId: 1, ReplicaId: 1, Role: "voter"},
			{NodeId: 2, ReplicaId: 2, Role: "voter"},
			{NodeId: 3, ReplicaId: 3, Role: "voter (outgoing)"},
			{NodeId: 4, ReplicaId: 9, Role: "voter (incoming)"},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := shardInfo(tc.st).Replicas
			if len(got) != len(tc.want) {
				t.Fatalf("replicas %v, want %v", got, tc.want)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.NodeId != w.NodeId || g.ReplicaId != w.ReplicaId || g.Role != w.Role || g.Match != w.Match {
					t.Errorf("replica %d: %v, want %v", i, g, w)
				}
			}
		})
	}
}
