package placer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/gossip"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
)

// metaRecords is a meta shard's local copy with a ring header and a node
// index only: what Version reads of it.
type metaRecords struct {
	nodemeta.Engine
	header nodemeta.RingHeader
	nodes  nodemeta.NodeIndex
}

func (m *metaRecords) ReadLocal(_ uint64, query []byte) ([]byte, error) {
	var v any
	switch {
	case bytes.Equal(query, engine.GetQuery([]byte(nodemeta.KeyRing))):
		v = m.header
	case bytes.Equal(query, engine.GetQuery([]byte(nodemeta.KeyNodes))):
		v = m.nodes
	default:
		return []byte{0}, nil // not found
	}
	b, err := json.Marshal(v)
	return append([]byte{1}, b...), err
}

// TestVersion: the source's version moves with each thing State reads
// apart from the time and the loads (the shard and node records'
// versions, the meta shard's descriptor and leader, a member's liveness
// or replica and leader counts, the leaders, a step's fresh descriptor),
// and only then; a Cluster without LeadersVersion has none.
func TestVersion(t *testing.T) {
	recs := &metaRecords{}
	store, err := nodemeta.New(recs, nodemeta.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	members := []gossip.Member{
		{Meta: gossip.Meta{NodeID: 1, Instance: 11, Replicas: 5}, State: gossip.Alive},
		{Meta: gossip.Meta{NodeID: 2, Instance: 22, Replicas: 5}, State: gossip.Alive},
	}
	metaDesc := storage.Descriptor{ShardID: storage.SystemShardBase, Generation: 1,
		Replicas: []storage.Replica{{NodeID: 1, ReplicaID: 1, Role: storage.RoleVoter}}}
	metaLeader, leaders := uint64(1), uint64(0)
	c := Cluster{
		Store:          store,
		Members:        func() []gossip.Member { return members },
		Leaders:        func() map[uint64]uint64 { return nil },
		LeadersVersion: func() uint64 { return leaders },
		Meta: func(context.Context) (storage.Descriptor, uint64, error) {
			return metaDesc, metaLeader, nil
		},
	}
	s := newSource(c)
	ctx := context.Background()
	// What leaves the version as it is: a load is left out.
	same := []string{"nothing", "the members' order", "a member's disk"}
	last, err := s.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, change := range []struct {
		what string
		do   func()
	}{
		{"nothing", func() {}},
		{"shard records written", func() { recs.header.Version++ }},
		{"node records written", func() { recs.nodes.Version++ }},
		{"the meta shard's leader", func() { metaLeader = 2 }},
		{"the meta shard's replicas", func() {
			metaDesc.Replicas = append(metaDesc.Replicas, storage.Replica{NodeID: 2, ReplicaID: 2, Role: storage.RoleLearner})
		}},
		{"a member suspected", func() { members[1].State = gossip.Suspect }},
		{"a member's load", func() { members[0].Meta.Leaders++ }},
		{"the members' order", func() { members[0], members[1] = members[1], members[0] }},
		{"a member's disk", func() { members[0].Meta.DiskUsed++ }},
		{"a leader", func() { leaders++ }},
		{"a step's descriptor", func() { s.noteStep(nodemeta.ShardRecord{ShardID: 7, ConfIndex: 3}, 2) }},
	} {
		change.do()
		v, err := s.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if moved, want := v != last, !slices.Contains(same, change.what); moved != want {
			t.Errorf("%s: version moved %v, want %v", change.what, moved, want)
		}
		last = v
	}
	c.LeadersVersion = nil
	if _, err := newSource(c).Version(ctx); !errors.Is(err, errNoVersion) {
		t.Fatalf("no LeadersVersion: %v", err)
	}
}
