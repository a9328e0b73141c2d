package storage

import "go.etcd.io/raft/v3/raftpb"

// ShardDump is what a store holds of one shard's replica, for inspection.
type ShardDump struct {
	ShardID     uint64
	ReplicaID   uint64
	Initialized bool
	Desc        Descriptor
	HardState   raftpb.HardState
	ConfState   raftpb.ConfState
	Applied     uint64
	AppliedTerm uint64
	// The log holds entries FirstIndex..LastIndex; the entry before
	// FirstIndex (TruncatedIndex, TruncatedTerm) was truncated.
	TruncatedIndex uint64
	TruncatedTerm  uint64
	FirstIndex     uint64
	LastIndex      uint64
}

// Dump describes every shard with state in the store, in shard ID order.
func (s *Store) Dump() ([]ShardDump, error) {
	ids, err := s.ShardIDs()
	if err != nil {
		return nil, err
	}
	out := make([]ShardDump, 0, len(ids))
	for _, id := range ids {
		l, err := s.OpenLog(id)
		if err != nil {
			return nil, err
		}
		d := ShardDump{
			ShardID: id, ReplicaID: l.replicaID, HardState: l.hs, ConfState: l.cs,
			Applied: l.applied, AppliedTerm: l.appliedTerm,
			TruncatedIndex: l.truncIndex, TruncatedTerm: l.truncTerm,
			FirstIndex: l.truncIndex + 1, LastIndex: l.last,
		}
		d.Desc, d.Initialized = l.Descriptor()
		out = append(out, d)
	}
	return out, nil
}
