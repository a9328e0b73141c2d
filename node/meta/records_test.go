package meta

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	good := record(7, 3, 1, 2, 3)
	if err := good.Validate(); err != nil {
		t.Fatalf("good record: %v", err)
	}
	for name, change := range map[string]func(r *ShardRecord){
		"shard ID 0":          func(r *ShardRecord) { r.ShardID = 0 },
		"system shard":        func(r *ShardRecord) { r.ShardID = ShardID },
		"empty range":         func(r *ShardRecord) { r.Start, r.Last = 10, 9 },
		"generation 0":        func(r *ShardRecord) { r.Generation = 0 },
		"no replicas":         func(r *ShardRecord) { r.Replicas = nil },
		"duplicate node":      func(r *ShardRecord) { r.Replicas[1].NodeID = 1 },
		"duplicate replica":   func(r *ShardRecord) { r.Replicas[2].ReplicaID = 1 },
		"replica ID too high": func(r *ShardRecord) { r.Replicas[0].ReplicaID = r.NextReplicaID },
		"node ID 0":           func(r *ShardRecord) { r.Replicas[0].NodeID = 0 },
		"replica ID 0":        func(r *ShardRecord) { r.Replicas[0].ReplicaID = 0 },
		"unknown role":        func(r *ShardRecord) { r.Replicas[0].Role = "boss" },
	} {
		r := good.Clone()
		change(&r)
		err := r.Validate()
		var re *RecordError
		if !errors.As(err, &re) || !errors.Is(err, ErrBadRecord) || re.ShardID != r.ShardID {
			t.Errorf("%s: %v, want a *RecordError", name, err)
		}
	}
	if good.Replicas[1].NodeID != 2 {
		t.Fatal("Clone shares the replicas")
	}
}

func TestNewer(t *testing.T) {
	at := func(confIndex, gen uint64) ShardRecord {
		r := record(1, confIndex, 1)
		r.Generation = gen
		return r
	}
	for _, tc := range []struct {
		a, b  ShardRecord
		newer bool
	}{
		{at(5, 1), at(4, 9), true},
		{at(5, 2), at(5, 1), true},
		{at(5, 1), at(5, 1), false},
		{at(4, 9), at(5, 1), false},
		{at(5, 1), at(5, 2), false},
	} {
		if got := tc.a.Newer(tc.b); got != tc.newer {
			t.Errorf("(%d,%d).Newer(%d,%d) = %v", tc.a.ConfIndex, tc.a.Generation, tc.b.ConfIndex, tc.b.Generation, got)
		}
	}
}

// TestNodeRecordDraining: Draining round-trips through JSON, is left out
// when false, and a record written before it existed decodes as not
// draining.
func TestNodeRecordDraining(t *testing.T) {
	joined := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, r := range []NodeRecord{
		{NodeID: 3, Instance: 7, RaftAddr: "r:1", Joined: joined, Draining: true},
		{NodeID: 3, Instance: 7, RaftAddr: "r:1", Joined: joined, Draining: true, Removed: true},
		{NodeID: 3, Instance: 7, RaftAddr: "r:1", Joined: joined},
	} {
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decode[NodeRecord](NodeKey(3), raw)
		if err != nil || got != r {
			t.Fatalf("%s decodes to %+v, %v", raw, got, err)
		}
		var fields map[string]any
		if err := json.Unmarshal(raw, &fields); err != nil {
			t.Fatal(err)
		}
		if v, ok := fields["draining"]; ok != r.Draining || (ok && v != true) {
			t.Fatalf("%s: draining field %v, %v", raw, v, ok)
		}
	}
	old := `{"node_id":4,"instance":9,"raft_addr":"r:4","client_addr":"c:4","gossip_addr":"g:4","joined":"2024-05-01T12:00:00Z"}`
	got, err := decode[NodeRecord](NodeKey(4), []byte(old))
	if err != nil || got.Draining || got.NodeID != 4 || got.GossipAddr != "g:4" {
		t.Fatalf("a record without draining: %+v, %v", got, err)
	}
}

func TestKeys(t *testing.T) {
	ids := []uint64{1, 9, 10, 99, 100, 1 << 40, math.MaxUint64 >> 1}
	var keys []string
	for _, id := range ids {
		k := ShardKey(id)
		keys = append(keys, string(k))
		if got, ok := ParseShardKey(k); !ok || got != id {
			t.Errorf("ParseShardKey(%q) = %d, %v", k, got, ok)
		}
	}
	if !slices.IsSorted(keys) {
		t.Errorf("shard keys do not sort by ID: %q", keys)
	}
	if string(NodeKey(5)) != "node/00000000000000000005" || string(ChangeKey(12)) != "ring/change/00000000000000000012" ||
		string(IntentKey(7)) != "intent/00000000000000000007" {
		t.Errorf("keys: %s %s %s", NodeKey(5), ChangeKey(12), IntentKey(7))
	}
	for _, bad := range []string{"shard/12", "node/00000000000000000005", "shard/0000000000000000000x"} {
		if _, ok := ParseShardKey([]byte(bad)); ok {
			t.Errorf("ParseShardKey(%q) accepted", bad)
		}
	}
}

func TestNewLayout(t *testing.T) {
	l, err := NewLayout(ClusterRecord{ClusterID: 1, Bootstrap: []uint64{30, 10, 20, 40, 50, 60}, InitialShards: 12, Replication: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(l.MetaVoters, []uint64{10, 20, 30, 40, 50}) || !slices.Equal(l.MetaLearners, []uint64{60}) {
		t.Fatalf("meta voters %v, learners %v", l.MetaVoters, l.MetaLearners)
	}
	if len(l.Shards) != 12 {
		t.Fatalf("%d shards", len(l.Shards))
	}
	for i, s := range l.Shards {
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		if s.ShardID != uint64(i+1) || len(s.Replicas) != 3 || s.NextReplicaID != 4 || s.ConfIndex != 0 || s.Generation != 1 {
			t.Fatalf("shard %d: %+v", i, s)
		}
		if want := Placement([]uint64{10, 20, 30, 40, 50, 60}, i, 3); !slices.Equal(s.NodeIDs(), want) {
			t.Fatalf("shard %d on %v, want %v", s.ShardID, s.NodeIDs(), want)
		}
	}
	if _, err := BuildRing(1, l.Shards); err != nil {
		t.Fatalf("the layout does not tile: %v", err)
	}
	if _, err := NewLayout(ClusterRecord{ClusterID: 1, InitialShards: 4, Replication: 3}); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("no members: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{MaxProposalBytes: 100}, {ScanPage: -1}, {ChangeLogVersions: -1}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
