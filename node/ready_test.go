package node

import (
	"slices"
	"testing"
	"time"
)

// A node that has been ready stays ready while a shard is without a leader
// for less than leaderGrace (a transfer, an election), and is not once one
// has been without a leader for longer; a node never ready counts every
// leaderless shard.
func TestReadyGraceForLeaderlessShards(t *testing.T) {
	n := &Node{leaderGrace: 2 * time.Second}
	t0 := time.Unix(1000, 0)
	if long, was := n.leaderlessLong([]uint64{3}, t0); was || !slices.Equal(long, []uint64{3}) {
		t.Fatalf("never ready: %v %v, want [3] false", long, was)
	}
	n.ready.was = true
	for _, step := range []struct {
		at         time.Duration
		leaderless []uint64
		want       []uint64
	}{
		{0, []uint64{3, 4}, nil},
		{time.Second, []uint64{3, 4}, nil},
		{1900 * time.Millisecond, []uint64{3}, nil},    // 4 led again
		{2000 * time.Millisecond, []uint64{3, 4}, nil}, // 4 leaderless anew
		{2100 * time.Millisecond, []uint64{3, 4}, []uint64{3}},
		{4000 * time.Millisecond, []uint64{3, 4}, []uint64{3}},
		{4100 * time.Millisecond, []uint64{3, 4}, []uint64{3, 4}},
		{5 * time.Second, nil, nil},
		{5100 * time.Millisecond, []uint64{3}, nil}, // leaderless anew
	} {
		long, was := n.leaderlessLong(slices.Clone(step.leaderless), t0.Add(step.at))
		if !was || !slices.Equal(long, step.want) {
			t.Errorf("at %v, leaderless %v: %v (was ready %v), want %v", step.at, step.leaderless, long, was, step.want)
		}
	}
}
