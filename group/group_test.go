package group

import (
	"bytes"
	"errors"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

func TestEntryCodec(t *testing.T) {
	for _, tc := range []struct {
		id  uint64
		cmd []byte
	}{{1, []byte("put")}, {1 << 63, nil}, {42, bytes.Repeat([]byte{7}, 1000)}} {
		id, cmd, err := DecodeEntry(EncodeEntry(tc.id, tc.cmd))
		if err != nil || id != tc.id || !bytes.Equal(cmd, tc.cmd) {
			t.Fatalf("%d: got %d %q %v", tc.id, id, cmd, err)
		}
	}
	if id, cmd, err := DecodeEntry(nil); id != 0 || cmd != nil || err != nil {
		t.Fatal("empty entry is not a no-op")
	}
	for _, bad := range [][]byte{{1, 2}, {2, 0, 0, 0, 0, 0, 0, 0, 1}} {
		if _, _, err := DecodeEntry(bad); !errors.Is(err, ErrBadEntry) {
			t.Fatalf("%x: %v", bad, err)
		}
	}
	if id, extra := ConfChangeID(ConfChangeContext(99, []byte("x"))); id != 99 || string(extra) != "x" {
		t.Fatal("conf change context")
	}
	if id, _ := ConfChangeID([]byte{1}); id != 0 {
		t.Fatal("conf change context")
	}
}

// TestProposalLifecycle drives a single-voter group by hand: a proposal is
// matched at apply by its ID; a read completes once its index applies; a
// follower refuses with NotLeader.
func TestProposalLifecycle(t *testing.T) {
	st := raft.NewMemoryStorage()
	if err := st.ApplySnapshot(raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 1, Term: 1, ConfState: raftpb.ConfState{Voters: []uint64{1}}}}); err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{ReplicaID: 1, NodeOf: func(id uint64) uint64 { return id }, ElectionTicks: 10, HeartbeatTicks: 1, MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16}, 5, st, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proposal{ID: 7, Done: make(chan Result, 1)}
	var nl *NotLeaderError
	if err := g.Propose(p, EncodeEntry(7, []byte("x"))); !errors.As(err, &nl) || nl.ShardID != 5 {
		t.Fatalf("propose as follower: %v", err)
	}
	if err := g.RN.Campaign(); err != nil {
		t.Fatal(err)
	}
	applied := uint64(1)
	drain := func() {
		for g.RN.HasReady() {
			rd := g.RN.Ready()
			g.OnReady(&rd)
			if err := st.Append(rd.Entries); err != nil {
				t.Fatal(err)
			}
			for _, e := range rd.CommittedEntries {
				if id, _, _ := DecodeEntry(e.Data); e.Type == raftpb.EntryNormal {
					if p := g.TakeProposal(id); p != nil {
						p.Complete(Result{Value: []byte("done"), Index: e.Index})
					}
				}
				applied = e.Index
			}
			g.Applied(applied)
			g.RN.Advance(rd)
		}
	}
	drain()
	if !g.IsLeader() {
		t.Fatal("single voter did not become leader")
	}
	if err := g.Propose(p, EncodeEntry(7, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	r := NewRead(8)
	if err := g.ReadIndex(r); err != nil {
		t.Fatal(err)
	}
	drain()
	if res := <-p.Done; string(res.Value) != "done" || res.Index == 0 {
		t.Fatalf("proposal result %+v", res)
	}
	if res := <-r.Done; res.Err != nil || res.Index == 0 {
		t.Fatalf("read result %+v", res)
	}
	if g.Pending() != 0 {
		t.Fatalf("%d still pending", g.Pending())
	}
}

// leaderGroup returns a single-voter group that leads, with a function
// that drives its Readies (conf changes are appended and committed but not
// applied: they stay pending).
func leaderGroup(t *testing.T) (*Group, func()) {
	t.Helper()
	st := raft.NewMemoryStorage()
	if err := st.ApplySnapshot(raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 1, Term: 1, ConfState: raftpb.ConfState{Voters: []uint64{1}}}}); err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{ReplicaID: 1, NodeOf: func(id uint64) uint64 { return id }, ElectionTicks: 10, HeartbeatTicks: 1, MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16}, 5, st, 1)
	if err != nil {
		t.Fatal(err)
	}
	drain := func() {
		for g.RN.HasReady() {
			rd := g.RN.Ready()
			g.OnReady(&rd)
			if err := st.Append(rd.Entries); err != nil {
				t.Fatal(err)
			}
			g.RN.Advance(rd)
		}
	}
	if err := g.RN.Campaign(); err != nil {
		t.Fatal(err)
	}
	drain()
	return g, drain
}

// TestConfChangeDroppedByRaftCompletes: a conf change that raft replaces
// with an empty entry (another one pending that this group did not know
// of) completes with ErrConfChangeInProgress at the next Ready, instead of
// waiting forever; one proposed while a change of its own is pending is
// refused up front.
func TestConfChangeDroppedByRaftCompletes(t *testing.T) {
	g, drain := leaderGroup(t)
	cc := raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 2}}}
	// Pending behind the group's back: raft will drop the next one.
	if err := g.RN.ProposeConfChange(cc); err != nil {
		t.Fatal(err)
	}
	p := &Proposal{ID: 9, Done: make(chan Result, 1)}
	cc.Context = ConfChangeContext(9, nil)
	// Applied through the new leader's empty entry (index 2).
	if err := g.ProposeConfChange(p, cc, 2, raftpb.ConfState{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	drain()
	select {
	case res := <-p.Done:
		if !errors.Is(res.Err, ErrConfChangeInProgress) {
			t.Fatalf("dropped conf change completed with %v", res.Err)
		}
	default:
		t.Fatal("the conf change raft dropped never completes")
	}
	// Now the group knows of the pending change (it saw its entry).
	p2 := &Proposal{ID: 10, Done: make(chan Result, 1)}
	if err := g.ProposeConfChange(p2, cc, 2, raftpb.ConfState{Voters: []uint64{1}}); !errors.Is(err, ErrConfChangeInProgress) {
		t.Fatalf("second conf change: %v", err)
	}
	if err := g.ProposeConfChange(p2, cc, 1<<20, raftpb.ConfState{Voters: []uint64{1}, VotersOutgoing: []uint64{1}}); !errors.Is(err, ErrConfChangeInProgress) {
		t.Fatalf("conf change while joint: %v", err)
	}
}

// TestUnknownOutcomesAreAmbiguous: a proposal whose entry was appended and
// then lost track of (a snapshot covered it, or the replica closed) fails
// with an ambiguous error that still names its cause; one never appended
// fails with the plain cause.
func TestUnknownOutcomesAreAmbiguous(t *testing.T) {
	g, drain := leaderGroup(t)
	appended := &Proposal{ID: 1, Done: make(chan Result, 1)}
	if err := g.Propose(appended, EncodeEntry(1, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	drain()
	g.SnapshotApplied(1 << 20)
	if res := <-appended.Done; !errors.Is(res.Err, ErrAmbiguous) {
		t.Fatalf("covered by a snapshot: %v", res.Err)
	}
	closing := errors.New("closing")
	p1 := &Proposal{ID: 2, Done: make(chan Result, 1)}
	if err := g.Propose(p1, EncodeEntry(2, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	drain()
	g.FailAll(closing)
	if res := <-p1.Done; !errors.Is(res.Err, ErrAmbiguous) || !errors.Is(res.Err, closing) {
		t.Fatalf("appended, then closed: %v", res.Err)
	}
	p2 := &Proposal{ID: 3, Done: make(chan Result, 1)}
	g.track(p2) // never appended
	g.FailAll(closing)
	if res := <-p2.Done; errors.Is(res.Err, ErrAmbiguous) || !errors.Is(res.Err, closing) {
		t.Fatalf("never appended, then closed: %v", res.Err)
	}
}
