package gossip

import (
	"fmt"
	"testing"
	"time"
)

// TestPushPullLeaderState: the push/pull leader state is encoded again
// only when the leaders this node knows changed (its own, or taken from
// others), and always holds them all; a state taken before is counted as
// duplicates without being taken again, also after this node moved past
// it, while a new state is taken.
func TestPushPullLeaderState(t *testing.T) {
	t.Parallel()
	n := startNode(t, 1, nil)
	decoded := func(b []byte) map[uint64]LeaderUpdate {
		t.Helper()
		us, err := decodeLeaders(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		m := map[uint64]LeaderUpdate{}
		for _, u := range us {
			m[u.ShardID] = u
		}
		return m
	}
	if s := n.leaderState(); s != nil {
		t.Fatalf("state with no leaders known: %d bytes", len(s))
	}
	n.BroadcastLeaders([]LeaderUpdate{{ShardID: 1, Leader: 1, Term: 1}})
	s1 := n.leaderState()
	if got := decoded(s1); len(got) != 1 || got[1].Term != 1 {
		t.Fatalf("state %+v", got)
	}
	if s := n.leaderState(); &s[0] != &s1[0] {
		t.Fatal("state encoded again with no leader changed")
	}

	// Another node's state: taken, and its leaders in the next state.
	other, _ := packLeaders([]LeaderUpdate{{ShardID: 1, Leader: 2, Term: 2}, {ShardID: 2, Leader: 3, Term: 1}}, 1<<30)
	n.mergeLeaderState(other)
	s2 := n.leaderState()
	if got := decoded(s2); len(got) != 2 || got[1] != (LeaderUpdate{1, 2, 2}) || got[2] != (LeaderUpdate{2, 3, 1}) {
		t.Fatalf("state after taking another's: %+v", got)
	}
	waitFor(t, 5*time.Second, "OnLeaders with the other node's leaders", func() error {
		if got := n.receivedLeaders(); len(got) != 2 {
			return fmt.Errorf("%+v", got)
		}
		return nil
	})
	st := n.Stats()
	if st.LeaderUpdatesReceived != 2 {
		t.Fatalf("stats %+v", st)
	}

	// The same state again, after a newer leader of shard 2: duplicates,
	// and the newer leader stays.
	n.BroadcastLeaders([]LeaderUpdate{{ShardID: 2, Leader: 1, Term: 5}})
	n.mergeLeaderState(other)
	if st2 := n.Stats(); st2.LeaderUpdatesReceived != 2 || st2.LeaderUpdatesDuplicate != st.LeaderUpdatesDuplicate+2 {
		t.Fatalf("the same state again: stats %+v, before %+v", st2, st)
	}
	if got := decoded(n.leaderState()); got[2] != (LeaderUpdate{2, 1, 5}) {
		t.Fatalf("state after a newer own leader and an old state again: %+v", got)
	}

	// This node's own state sent back: duplicates. A new state: taken.
	n.mergeLeaderState(n.leaderState())
	newer, _ := packLeaders([]LeaderUpdate{{ShardID: 3, Leader: 2, Term: 1}}, 1<<30)
	n.mergeLeaderState(newer)
	if got := decoded(n.leaderState()); len(got) != 3 || got[3] != (LeaderUpdate{3, 2, 1}) {
		t.Fatalf("state after a new one: %+v", got)
	}
	if st3 := n.Stats(); st3.LeaderUpdatesReceived != 3 {
		t.Fatalf("stats %+v", st3)
	}
}
