package recovery

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3/raftpb"
)

const cluster = 0xc1

// newStore makes node 1's store: shards 5 and 6 on nodes 1, 2, 3 (shard
// 6's log one entry longer), an uninitialized replica of shard 7, and the
// meta shard with the node records of nodes 1 to 3 (node n's addresses
// "n<n>-raft", "n<n>-client", "n<n>-gossip").
func newStore(t *testing.T) vfs.FS {
	t.Helper()
	fs := vfs.NewMem()
	s, err := storage.Open(storage.Config{Dir: "/store", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.EnsureIdent(storage.Ident{ClusterID: cluster, NodeID: 1}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{5, 6} {
		l, err := s.CreateShard(storage.NewDescriptor(id, id<<32, id<<32+1000, 1, []uint64{1, 2, 3}, nil), 1)
		if err != nil {
			t.Fatal(err)
		}
		if id == 6 {
			b := s.NewBatch()
			if err := l.Append(b, []raftpb.Entry{{Index: storage.InitialIndex + 1, Term: storage.InitialTerm}}); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(true); err != nil {
				t.Fatal(err)
			}
		}
	}
	l, err := s.OpenLog(7)
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	l.SetReplicaID(b, 4)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	meta := storage.Descriptor{ShardID: nodemeta.ShardID, Start: 0, Last: ^uint64(0), Generation: 1}
	meta = storage.NewDescriptor(meta.ShardID, meta.Start, meta.Last, 1, []uint64{1, 2, 3}, nil)
	if _, err := s.CreateShard(meta, 1); err != nil {
		t.Fatal(err)
	}
	rule := engine.DefaultConfig(1, 1, "x").PartitionRule
	put := func(key []byte, v any) {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.DB().Set(meta.DataKey(rule.Hash(key), key), raw, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	put([]byte(nodemeta.KeyNodes), nodemeta.NodeIndex{Version: 3, IDs: []uint64{1, 2, 3}})
	for _, n := range []string{"1", "2", "3"} {
		id := uint64(n[0] - '0')
		put(nodemeta.NodeKey(id), nodemeta.NodeRecord{NodeID: id, Instance: 9, RaftAddr: "n" + n + "-raft", ClientAddr: "n" + n + "-client", GossipAddr: "n" + n + "-gossip"})
	}
	return fs
}

func config(fs vfs.FS, answer ...string) Config {
	return Config{StoreDir: "/store", FS: fs, NodeID: 1, ClusterID: cluster, Probe: func(_ context.Context, addr string) bool {
		for _, a := range answer {
			if strings.HasPrefix(addr, a) {
				return true
			}
		}
		return false
	}}
}

// TestRefusesLiveQuorum: with node 2 answering, nodes 1 and 2 are a quorum
// of every shard: refused, nothing written; with Force, recovered.
func TestRefusesLiveQuorum(t *testing.T) {
	fs := newStore(t)
	_, err := ForceNewCluster(context.Background(), config(fs, "n2-"))
	var qe *QuorumAliveError
	if !errors.As(err, &qe) || qe.ShardID != 5 || len(qe.Live) != 2 || qe.Live[1] != 2 {
		t.Fatalf("err %v, want a QuorumAliveError for shard 5 naming nodes 1 and 2", err)
	}
	info, err := Collect(config(fs))
	if err != nil {
		t.Fatal(err)
	}
	for _, si := range info.Shards {
		if si.Initialized && si.ReplicaID != 1 {
			t.Fatalf("refused, yet shard %d has replica %d", si.ShardID, si.ReplicaID)
		}
	}
	cfg := config(fs, "n2-")
	cfg.Force = true
	rep, err := ForceNewCluster(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Gone) != 2 || !rep.MetaKept || rep.Shards[0].Outcome != Kept {
		t.Fatalf("report %+v", rep)
	}
}

// TestMostUpToDateWins: node 2 survives too and its replica of shard 5 is
// more up to date (a higher last term): node 1 yields shard 5 (its replica
// removed, a tombstone at node 2's next replica ID), keeps shard 6 (its log
// is longer) under a replica ID above node 2's next one, loses shard 7
// (uninitialized on both), and counts only node 3 as gone.
func TestMostUpToDateWins(t *testing.T) {
	fs := newStore(t)
	cfg := config(fs)
	cfg.Peers = []Info{{NodeID: 2, ClusterID: cluster, Shards: []ShardInfo{
		{ShardID: 5, ReplicaID: 2, Initialized: true, LastIndex: storage.InitialIndex, LastTerm: storage.InitialTerm + 1, NextReplicaID: 9},
		{ShardID: 6, ReplicaID: 2, Initialized: true, LastIndex: storage.InitialIndex, LastTerm: storage.InitialTerm, NextReplicaID: 12},
	}}}
	rep, err := ForceNewCluster(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]ShardReport{}
	for _, sr := range rep.Shards {
		got[sr.ShardID] = sr
	}
	if sr := got[5]; sr.Outcome != Yielded || sr.Winner != 2 {
		t.Fatalf("shard 5: %s", sr)
	}
	if sr := got[6]; sr.Outcome != Kept || sr.Kept.NewReplicaID != 12 || sr.LastIndex != storage.InitialIndex+1 {
		t.Fatalf("shard 6: %s", sr)
	}
	if sr := got[7]; sr.Outcome != Lost {
		t.Fatalf("shard 7: %s", sr)
	}
	if len(rep.Gone) != 1 || rep.Gone[0] != 3 {
		t.Fatalf("gone %v, want [3]", rep.Gone)
	}
	s, err := storage.Open(storage.Config{Dir: "/store", FS: fs, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if next, ok, err := s.Tombstone(5); err != nil || !ok || next != 9 {
		t.Fatalf("shard 5 tombstone %d %v %v, want 9", next, ok, err)
	}
	if ri, err := s.ReplicaInfo(5); err != nil || ri.ReplicaID != 0 || ri.Initialized {
		t.Fatalf("shard 5 still here: %+v %v", ri, err)
	}
}

// TestBadConfig: a survivor of another cluster, this node named as a peer,
// or a data directory of another node are refused before anything is
// written.
func TestBadConfig(t *testing.T) {
	fs := newStore(t)
	for name, mod := range map[string]func(*Config){
		"other cluster": func(c *Config) { c.Peers = []Info{{NodeID: 2, ClusterID: 7}} },
		"self as peer":  func(c *Config) { c.Peers = []Info{{NodeID: 1, ClusterID: cluster}} },
	} {
		cfg := config(fs)
		mod(&cfg)
		if _, err := ForceNewCluster(context.Background(), cfg); !errors.Is(err, ErrBadPeer) {
			t.Errorf("%s: %v, want ErrBadPeer", name, err)
		}
	}
	cfg := config(fs)
	cfg.NodeID = 2
	if _, err := ForceNewCluster(context.Background(), cfg); !errors.Is(err, ErrNotMember) {
		t.Errorf("another node's store: %v, want ErrNotMember", err)
	}
	info, err := Collect(config(fs))
	if err != nil || len(info.Shards) != 4 || info.Shards[0].ReplicaID != 1 {
		t.Fatalf("store changed: %+v %v", info, err)
	}
}
