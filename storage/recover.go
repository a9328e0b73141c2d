package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
)

// Recovery from the loss of a majority (package node/recovery drives it):
// a replica whose other voters are gone for good is rewritten, offline,
// into the only voter of its shard. See ForceSoleVoter.

// ErrNotRecoverable: a replica cannot be made the only voter of its shard
// (it is uninitialized, so it holds no data, or its descriptor does not
// name this node under its replica ID).
var ErrNotRecoverable = errors.New("storage: replica cannot be recovered")

// ReplicaInfo is what recovery needs to know of this node's replica of a
// shard: how far its log goes, to pick the most up-to-date survivor.
type ReplicaInfo struct {
	ShardID     uint64
	ReplicaID   uint64
	Initialized bool
	Desc        Descriptor
	// LastIndex and LastTerm: the last entry of the log (the truncation
	// point when the log is empty).
	LastIndex, LastTerm uint64
	Applied             uint64
	Commit              uint64
}

// UpToDate reports whether i's log is at least as up to date as o's, by
// raft's rule: a higher last term, or the same and a last index as high.
func (i ReplicaInfo) UpToDate(o ReplicaInfo) bool {
	return i.LastTerm > o.LastTerm || (i.LastTerm == o.LastTerm && i.LastIndex >= o.LastIndex)
}

// ReplicaInfo returns what recovery needs to know of shardID's replica.
func (s *Store) ReplicaInfo(shardID uint64) (ReplicaInfo, error) {
	l, err := s.OpenLog(shardID)
	if err != nil {
		return ReplicaInfo{}, err
	}
	term, err := l.Term(l.last)
	if err != nil {
		return ReplicaInfo{}, fmt.Errorf("storage: shard %d: term of last index %d: %w", shardID, l.last, err)
	}
	info := ReplicaInfo{ShardID: shardID, ReplicaID: l.replicaID, LastIndex: l.last, LastTerm: term, Applied: l.applied, Commit: l.hs.Commit}
	info.Desc, info.Initialized = l.Descriptor()
	return info, nil
}

// SoleVoter is what ForceSoleVoter did to one replica.
type SoleVoter struct {
	ShardID uint64
	// Before is the descriptor the replica had; After the one it has now.
	Before, After Descriptor
	// OldReplicaID and NewReplicaID: the replica's ID before and after.
	OldReplicaID, NewReplicaID uint64
	// LastIndex and LastTerm: the replica's last log entry, which is now
	// committed: every entry up to it applies at the next start.
	LastIndex, LastTerm uint64
	// Applied was the applied index.
	Applied uint64
	// Neutralized lists the indexes of the conf changes of the unapplied
	// tail, replaced by empty entries.
	Neutralized []uint64
}

// ForceSoleVoter adds to b the rewrite of this node's (nodeID's) replica
// of shardID into the only voter of its shard, for the recovery from the
// loss of a majority of its voters. The raft library is not touched; its
// state on disk is made into one it loads as is:
//
//   - The replica takes a fresh replica ID, at least minReplicaID and above
//     every ID the shard ever had (its NextReplicaID, and every ID the
//     conf changes of its log name): messages of the shard's former
//     members are addressed to replica IDs below it, which the engine
//     drops (a removed incarnation), so they cannot disturb the new
//     configuration even if they come back with their old state. The
//     descriptor's NextReplicaID goes above it, so replicas added later
//     get fresh IDs too.
//   - The descriptor lists this replica alone, a voter (no learners, no
//     joint state); its ConfIndex becomes the last log index, so that the
//     meta shard's record of it (never replaced by an older one) takes it.
//     The ConfState, which raft loads at the start, says the same.
//   - The log is kept whole and committed: HardState.Commit becomes the
//     last index, so everything this replica has, applied or not, applies
//     at the next start (the survivor's data wins: entries no quorum had
//     acknowledged become committed). Conf changes in the unapplied tail
//     are replaced by empty normal entries of the same index and term:
//     applied, they would bring the lost voters back.
//   - The term goes up by one and the vote is cleared: the new replica ID
//     has voted for no one.
//
// Nothing is written if it fails: ErrNotRecoverable for an uninitialized
// replica or one its descriptor does not name on nodeID.
func (s *Store) ForceSoleVoter(b *Batch, shardID, nodeID, minReplicaID uint64) (SoleVoter, error) {
	l, err := s.OpenLog(shardID)
	if err != nil {
		return SoleVoter{}, err
	}
	desc, ok := l.Descriptor()
	if !ok {
		return SoleVoter{}, fmt.Errorf("%w: shard %d: replica %d is uninitialized (it holds no data)", ErrNotRecoverable, shardID, l.replicaID)
	}
	if rep, ok := desc.ReplicaOfNode(nodeID); !ok || rep.ReplicaID != l.replicaID {
		return SoleVoter{}, fmt.Errorf("%w: shard %d: the descriptor %v does not name replica %d on node %d", ErrNotRecoverable, shardID, desc.Replicas, l.replicaID, nodeID)
	}
	res := SoleVoter{ShardID: shardID, Before: desc.Clone(), OldReplicaID: l.replicaID, LastIndex: l.last, Applied: l.applied}
	if res.LastTerm, err = l.Term(l.last); err != nil {
		return SoleVoter{}, fmt.Errorf("storage: shard %d: term of last index %d: %w", shardID, l.last, err)
	}
	next := max(desc.NextReplicaID, minReplicaID)
	// The unapplied tail: its conf changes go, and the IDs they name are
	// used up.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(shardID, l.applied+1), UpperBound: logKey(shardID, l.last+1)})
	if err != nil {
		return SoleVoter{}, err
	}
	var rewrites []raftpb.Entry
	for it.First(); it.Valid(); it.Next() {
		var e raftpb.Entry
		if err := e.Unmarshal(it.Value()); err != nil {
			_ = it.Close()
			return SoleVoter{}, fmt.Errorf("%w: %s: %v", ErrCorrupt, DescribeKey(it.Key()), err)
		}
		if e.Type != raftpb.EntryConfChange && e.Type != raftpb.EntryConfChangeV2 {
			continue
		}
		for _, id := range confChangeReplicaIDs(e) {
			next = max(next, id+1)
		}
		rewrites = append(rewrites, raftpb.Entry{Term: e.Term, Index: e.Index, Type: raftpb.EntryNormal})
		res.Neutralized = append(res.Neutralized, e.Index)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return SoleVoter{}, err
	}
	for _, e := range rewrites {
		v, err := e.Marshal()
		if err != nil {
			return SoleVoter{}, err
		}
		b.set(logKey(shardID, e.Index), v)
	}
	res.NewReplicaID = next
	after := desc.Clone()
	after.Replicas = []Replica{{NodeID: nodeID, ReplicaID: next, Role: RoleVoter}}
	after.NextReplicaID = next + 1
	after.ConfIndex = max(desc.ConfIndex, l.last)
	res.After = after
	hs := l.hs
	hs.Term, hs.Vote, hs.Commit = hs.Term+1, 0, l.last
	l.SetReplicaID(b, next)
	l.SetDescriptor(b, after)
	l.SetConfState(b, after.ConfState())
	l.SetHardState(b, hs)
	// A tombstone up to the new ID: nothing recreates a replica of an
	// older incarnation here.
	b.set(tombstoneKey(shardID), binary.BigEndian.AppendUint64(nil, next))
	b.sync = true
	return res, nil
}

// confChangeReplicaIDs returns the replica IDs a conf change entry names
// (none if it does not decode: it is replaced all the same).
func confChangeReplicaIDs(e raftpb.Entry) []uint64 {
	var cc raftpb.ConfChangeV2
	if e.Type == raftpb.EntryConfChange {
		var v1 raftpb.ConfChange
		if v1.Unmarshal(e.Data) != nil {
			return nil
		}
		cc = v1.AsV2()
	} else if cc.Unmarshal(e.Data) != nil {
		return nil
	}
	ids := make([]uint64, 0, len(cc.Changes))
	for _, c := range cc.Changes {
		ids = append(ids, c.NodeID)
	}
	return ids
}
