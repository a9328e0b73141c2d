package placement

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBadState(t *testing.T) {
	base := func() State {
		return State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(3, []uint64{1, 2, 3}, 3)}
	}
	for name, tc := range map[string]struct {
		change       func(*State)
		node, shard  uint64
		reasonSubstr string
	}{
		"no time":           {func(s *State) { s.Now = time.Time{} }, 0, 0, "Now"},
		"node ID 0":         {func(s *State) { s.Nodes[1].ID = 0 }, 0, 0, "ID 0"},
		"duplicate node":    {func(s *State) { s.Nodes[2].ID = 2 }, 2, 0, "twice"},
		"bad liveness":      {func(s *State) { s.Nodes[0].Liveness = 9 }, 1, 0, "liveness"},
		"dead, no since":    {func(s *State) { s.Nodes[0].Liveness, s.Nodes[0].Since = Dead, time.Time{} }, 1, 0, "Since"},
		"shard ID 0":        {func(s *State) { s.Shards[0].ID = 0 }, 0, 0, "ID 0"},
		"duplicate shard":   {func(s *State) { s.Shards[2].ID = 2 }, 0, 2, "twice"},
		"empty range":       {func(s *State) { s.Shards[0].Start, s.Shards[0].Last = 5, 4 }, 0, 1, "empty range"},
		"no replicas":       {func(s *State) { s.Shards[1].Replicas = nil }, 0, 2, "no replicas"},
		"unknown node":      {func(s *State) { s.Shards[0].Replicas[1].NodeID = 9 }, 9, 1, "not in the state"},
		"replica ID 0":      {func(s *State) { s.Shards[0].Replicas[1].ReplicaID = 0 }, 2, 1, "zero"},
		"duplicate replica": {func(s *State) { s.Shards[0].Replicas[1].ReplicaID = 1 }, 2, 1, "replica ID 1 twice"},
		"two on one node":   {func(s *State) { s.Shards[0].Replicas[1].NodeID = 1 }, 1, 1, "two replicas on one node"},
		"unknown role":      {func(s *State) { s.Shards[0].Replicas[1].Role = 0 }, 2, 1, "role"},
		"two meta shards":   {func(s *State) { s.Shards[0].Meta, s.Shards[1].Meta = true, true }, 0, 2, "second meta"},
	} {
		t.Run(name, func(t *testing.T) {
			st := base()
			tc.change(&st)
			err := st.Validate()
			var bad *BadStateError
			if !errors.As(err, &bad) || !errors.Is(err, ErrBadState) {
				t.Fatalf("err %v, want a *BadStateError", err)
			}
			if bad.NodeID != tc.node || bad.ShardID != tc.shard || !strings.Contains(bad.Reason, tc.reasonSubstr) {
				t.Errorf("%+v, want node %d shard %d, reason with %q", bad, tc.node, tc.shard, tc.reasonSubstr)
			}
		})
	}
}

func TestNoLiveNodes(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(3, []uint64{1, 2, 3}, 3)}
	st.Nodes[0].Liveness = Suspect
	st.Nodes[1].Liveness, st.Nodes[1].Since = Dead, t0
	st.Nodes[2].Removed = true
	if err := st.Validate(); !errors.Is(err, ErrNoLiveNodes) {
		t.Errorf("%v, want ErrNoLiveNodes", err)
	}
	if err := (State{Now: t0}).Validate(); !errors.Is(err, ErrNoLiveNodes) {
		t.Errorf("empty state: %v", err)
	}
}
