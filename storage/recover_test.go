package storage

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// TestForceSoleVoter: a replica of a 3-voter shard with an unapplied tail
// that holds a conf change is rewritten into the only voter: a fresh
// replica ID above every ID the shard or the tail names, a descriptor and
// ConfState of itself alone, the whole log committed, the conf change
// replaced by an empty entry of the same term; all of it survives a
// reopen (it is what raft loads).
func TestForceSoleVoter(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs)
	desc := NewDescriptor(3, 0, ^uint64(0), 1, []uint64{10, 20, 30}, nil) // replicas 1, 2, 3
	l, err := s.CreateShard(desc, 2)                                      // node 20's
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	tail := ents(6, InitialIndex+1, InitialIndex+3)
	cc := raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddNode, NodeID: 7}}}
	ccData, err := cc.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tail = append(tail, raftpb.Entry{Index: InitialIndex + 4, Term: 6, Type: raftpb.EntryConfChangeV2, Data: ccData})
	tail = append(tail, ents(6, InitialIndex+5, InitialIndex+5)...)
	if err := l.Append(b, tail); err != nil {
		t.Fatal(err)
	}
	l.SetHardState(b, raftpb.HardState{Term: 6, Vote: 1, Commit: InitialIndex + 1})
	l.SetApplied(b, InitialIndex+1, 6)
	commit(t, b)

	if _, err := s.ForceSoleVoter(s.NewBatch(), 3, 30, 0); !errors.Is(err, ErrNotRecoverable) {
		t.Fatalf("node 30 does not hold replica 2: %v", err)
	}
	if _, err := s.ForceSoleVoter(s.NewBatch(), 4, 20, 0); !errors.Is(err, ErrNotRecoverable) {
		t.Fatalf("no replica of shard 4: %v", err)
	}
	b = s.NewBatch()
	res, err := s.ForceSoleVoter(b, 3, 20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if res.NewReplicaID != 8 || res.LastIndex != InitialIndex+5 || res.LastTerm != 6 || len(res.Neutralized) != 1 || res.Neutralized[0] != InitialIndex+4 {
		t.Fatalf("result %+v", res)
	}
	s.Close()

	s = openMem(t, fs)
	defer s.Close()
	l, err = s.OpenLog(3)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := l.Descriptor()
	if l.ReplicaID() != 8 || len(d.Replicas) != 1 || d.Replicas[0] != (Replica{NodeID: 20, ReplicaID: 8, Role: RoleVoter}) || d.NextReplicaID != 9 || d.ConfIndex != InitialIndex+5 {
		t.Fatalf("replica %d, descriptor %+v", l.ReplicaID(), d)
	}
	hs, cs, _ := l.InitialState()
	if len(cs.Voters) != 1 || cs.Voters[0] != 8 || len(cs.Learners)+len(cs.VotersOutgoing)+len(cs.LearnersNext) != 0 {
		t.Fatalf("conf state %+v", cs)
	}
	if hs.Term != 7 || hs.Vote != 0 || hs.Commit != InitialIndex+5 {
		t.Fatalf("hard state %+v", hs)
	}
	es, err := l.Entries(InitialIndex+1, InitialIndex+6, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Term != 6 {
			t.Fatalf("entry %d changed term: %+v", e.Index, e)
		}
		if e.Index == InitialIndex+4 && (e.Type != raftpb.EntryNormal || len(e.Data) != 0) {
			t.Fatalf("conf change kept: %+v", e)
		}
		if e.Index != InitialIndex+4 && string(e.Data) != string(tail[e.Index-InitialIndex-1].Data) {
			t.Fatalf("entry %d changed: %+v", e.Index, e)
		}
	}
	if next, ok, err := s.Tombstone(3); err != nil || !ok || next != 8 {
		t.Fatalf("tombstone %d %v %v", next, ok, err)
	}
}
