package placer

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/node/gossip"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/placement"
)

func TestIntentRoundTripAndBadIntents(t *testing.T) {
	in := placement.Intent{
		Op: placement.Op{Kind: placement.RebalanceReplica, ShardID: 7, Add: []uint64{4},
			Remove: placement.Replica{NodeID: 2, ReplicaID: 3, Role: placement.Voter}, Leader: 4, Reason: "why"},
		Learners: []uint64{9}, Started: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
	}
	raw, err := encodeIntent(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeIntent(7, raw)
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip: %+v, %v (want %+v)\n%s", got, err, in, raw)
	}
	for name, bad := range map[string]string{
		"not JSON":      `{`,
		"other shard":   `{"v":1,"kind":"repair","shard_id":8}`,
		"newer version": `{"v":2,"kind":"repair","shard_id":7}`,
		"unknown kind":  `{"v":1,"kind":"teleport","shard_id":7}`,
		"unknown role":  `{"v":1,"kind":"repair","shard_id":7,"remove":{"node_id":1,"replica_id":1,"role":"boss"}}`,
	} {
		if _, err := decodeIntent(7, []byte(bad)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestLivenessFromGossip: a node gossip does not list is dead, one whose
// metadata does not decode or that another data directory claims is
// unknown, and a dead node's clock starts when the source first sees it
// dead, again after reset.
func TestLivenessFromGossip(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	members := []gossip.Member{
		{Meta: gossip.Meta{NodeID: 1, Instance: 11, Replicas: 5, DiskUsed: 10, DiskCapacity: 100, WriteRate: 7}, State: gossip.Alive},
		{Meta: gossip.Meta{NodeID: 2}, State: gossip.Alive, MetaErr: errors.New("bad")},
		{Meta: gossip.Meta{NodeID: 3, Instance: 99}, State: gossip.Alive},
		{Meta: gossip.Meta{NodeID: 4, Instance: 44}, State: gossip.Suspect},
	}
	s := newSource(Cluster{Members: func() []gossip.Member { return members }, Now: func() time.Time { return now }})
	s.nodes = []nodemeta.NodeRecord{{NodeID: 1, Instance: 11}, {NodeID: 2, Instance: 22}, {NodeID: 3, Instance: 33},
		{NodeID: 4, Instance: 44}, {NodeID: 5, Instance: 55, Draining: true}}
	want := map[uint64]placement.Liveness{1: placement.Live, 2: placement.Unknown, 3: placement.Unknown, 4: placement.Suspect, 5: placement.Dead}
	check := func(since time.Time) {
		t.Helper()
		for _, n := range s.liveness(now) {
			if n.Liveness != want[n.ID] {
				t.Errorf("node %d: %v, want %v", n.ID, n.Liveness, want[n.ID])
			}
			if n.ID == 1 && (n.Replicas != 5 || n.DiskUsed != 10 || n.DiskCapacity != 100 || n.WriteRate != 7) {
				t.Errorf("node 1's load: %+v", n)
			}
			if n.ID == 5 && (!n.Draining || !n.Since.Equal(since)) {
				t.Errorf("node 5: %+v, want draining, dead since %v", n, since)
			}
		}
	}
	first := now
	check(first)
	now = now.Add(time.Minute)
	check(first) // still dead since it was first seen so
	s.reset()
	check(now) // a new term of leadership starts the clock again
}
