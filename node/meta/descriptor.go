package meta

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/storage"
)

// RoleOf returns the record's name of a descriptor's replica role ("" for
// an unknown one, which Validate refuses).
func RoleOf(r storage.ReplicaRole) Role {
	switch r {
	case storage.RoleVoter:
		return RoleVoter
	case storage.RoleLearner:
		return RoleLearner
	case storage.RoleVoterIncoming:
		return RoleVoterIncoming
	case storage.RoleVoterOutgoing:
		return RoleVoterOutgoing
	case storage.RoleVoterDemoting:
		return RoleVoterDemoting
	}
	return ""
}

// StorageRole returns the descriptor's replica role of r (0 for an unknown
// role).
func (r Role) StorageRole() storage.ReplicaRole {
	switch r {
	case RoleVoter:
		return storage.RoleVoter
	case RoleLearner:
		return storage.RoleLearner
	case RoleVoterIncoming:
		return storage.RoleVoterIncoming
	case RoleVoterOutgoing:
		return storage.RoleVoterOutgoing
	case RoleVoterDemoting:
		return storage.RoleVoterDemoting
	}
	return 0
}

// JointConfig reports whether d's configuration is joint (a replica move
// is under way): splits and merges wait until it has left it.
func JointConfig(d storage.Descriptor) bool {
	for _, r := range d.Replicas {
		if r.Role != storage.RoleVoter && r.Role != storage.RoleLearner {
			return true
		}
	}
	return false
}

// RecordOf returns the record of a shard's replicated descriptor: what the
// meta shard keeps of it (Version unset: the store stamps it).
func RecordOf(d storage.Descriptor) ShardRecord {
	r := ShardRecord{ShardID: d.ShardID, Start: d.Start, Last: d.Last, Generation: d.Generation,
		ConfIndex: d.ConfIndex, NextReplicaID: d.NextReplicaID, Replicas: make([]Replica, len(d.Replicas)),
		MergeInto: d.MergeInto, MergeIntoGeneration: d.MergeIntoGeneration}
	for i, rp := range d.Replicas {
		r.Replicas[i] = Replica{NodeID: rp.NodeID, ReplicaID: rp.ReplicaID, Role: RoleOf(rp.Role)}
	}
	return r
}

// Descriptor returns the descriptor r is a copy of, replicas sorted by
// replica ID as a descriptor keeps them.
func (r ShardRecord) Descriptor() storage.Descriptor {
	d := storage.Descriptor{ShardID: r.ShardID, Start: r.Start, Last: r.Last, Generation: r.Generation,
		ConfIndex: r.ConfIndex, NextReplicaID: r.NextReplicaID, Replicas: make([]storage.Replica, len(r.Replicas)),
		MergeInto: r.MergeInto, MergeIntoGeneration: r.MergeIntoGeneration}
	for i, rp := range r.Replicas {
		d.Replicas[i] = storage.Replica{NodeID: rp.NodeID, ReplicaID: rp.ReplicaID, Role: rp.Role.StorageRole()}
	}
	slices.SortFunc(d.Replicas, func(a, b storage.Replica) int { return cmp.Compare(a.ReplicaID, b.ReplicaID) })
	return d
}

// Spec returns the spec a member of a shard's initial configuration
// creates its replica with, so that the engine's descriptor is r exactly:
// the engine numbers a new shard's replicas 1, 2, ... in the order of its
// voters, then its learners (storage.NewDescriptor), so Spec lists them in
// r's replica ID order. It fails with a *RecordError if no spec yields r
// (a conf index, replica IDs that are not 1..n with the voters first, or
// roles of a joint configuration).
func (r ShardRecord) Spec() (engine.ShardSpec, error) {
	d := r.Descriptor()
	spec := engine.ShardSpec{Desc: storage.Descriptor{ShardID: r.ShardID, Start: r.Start, Last: r.Last, Generation: r.Generation}}
	for _, rp := range d.Replicas {
		switch rp.Role {
		case storage.RoleVoter:
			spec.Voters = append(spec.Voters, rp.NodeID)
		case storage.RoleLearner:
			spec.Learners = append(spec.Learners, rp.NodeID)
		}
	}
	got := storage.NewDescriptor(r.ShardID, r.Start, r.Last, r.Generation, spec.Voters, spec.Learners)
	if !RecordOf(got).Equal(r) {
		return engine.ShardSpec{}, &RecordError{ShardID: r.ShardID,
			Reason: fmt.Sprintf("not an initial configuration: a new shard's replicas are numbered 1..n, voters first, at conf index 0 (conf index %d, replicas %v)", r.ConfIndex, r.Replicas)}
	}
	return spec, nil
}
