package backup

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc"
)

// fakeShard is a shard of fakeCluster: its range and the pairs it serves.
type fakeShard struct {
	id, start, last uint64
	pairs           [][2][]byte
	replicas        []uint64 // node IDs, the leader first
}

// fakeCluster serves Status, Shards and Backup streams from memory. fail
// names the nodes whose Backup streams break after their header; header,
// if set, changes the header a shard's stream starts with.
type fakeCluster struct {
	shards []*fakeShard
	fail   map[uint64]bool
	header func(h *nodepb.BackupHeader)
	mu     sync.Mutex
	served map[uint64]uint64 // shard -> the node that served it; guarded by mu
	// refuse counts the Backup calls of shard 12 still to refuse (as a
	// shard frozen for a merge is); guarded by mu.
	refuse int
}

func newFakeCluster(t *testing.T) *fakeCluster {
	third := uint64(math.MaxUint64 / 3)
	c := &fakeCluster{fail: map[uint64]bool{}, served: map[uint64]uint64{}}
	for i, rg := range [][2]uint64{{0, third}, {third + 1, 2 * third}, {2*third + 1, math.MaxUint64}} {
		s := &fakeShard{id: uint64(10 + i), start: rg[0], last: rg[1], replicas: []uint64{uint64(1 + i%3), uint64(1 + (i+1)%3)}}
		// A session record, then data keys in hash order.
		s.pairs = append(s.pairs, [2][]byte{storage.SessionHeaderKey(s.id, 7), storage.SessionHeader{Watermark: 1}.Append(nil)})
		for j := uint64(0); j < 50; j++ {
			k := storage.DataKey(rg[0]+j*1000, []byte(fmt.Sprintf("key-%d-%d", s.id, j)))
			s.pairs = append(s.pairs, [2][]byte{k, []byte(fmt.Sprintf("value-%d-%d", s.id, j))})
		}
		c.shards = append(c.shards, s)
	}
	return c
}

func (c *fakeCluster) Status(context.Context) (*nodepb.StatusResponse, error) {
	resp := &nodepb.StatusResponse{ClusterId: 0xabc}
	for id := uint64(1); id <= 3; id++ {
		resp.Nodes = append(resp.Nodes, &nodepb.NodeStatus{State: "live", Node: &nodepb.NodeRecord{NodeId: id, ClientAddr: fmt.Sprintf("node%d", id)}})
	}
	return resp, nil
}

func (c *fakeCluster) Shards(context.Context) (*nodepb.ShardsResponse, error) {
	resp := &nodepb.ShardsResponse{Shards: []*nodepb.ShardInfo{{ShardId: storage.SystemShardBase, System: true}}}
	for _, s := range c.shards {
		si := &nodepb.ShardInfo{ShardId: s.id, Start: s.start, Last: s.last, Leader: s.replicas[0]}
		for _, n := range s.replicas {
			si.Replicas = append(si.Replicas, &nodepb.Replica{NodeId: n, Role: "voter"})
		}
		resp.Shards = append(resp.Shards, si)
	}
	return resp, nil
}

func (c *fakeCluster) Node(addr string) (nodepb.AdminClient, error) {
	var id uint64
	if _, err := fmt.Sscanf(addr, "node%d", &id); err != nil {
		return nil, err
	}
	return &fakeNode{c: c, id: id}, nil
}

// fakeNode is one node's Admin client; only Backup is served.
type fakeNode struct {
	nodepb.AdminClient
	c  *fakeCluster
	id uint64
}

func (n *fakeNode) Backup(_ context.Context, req *nodepb.BackupRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[nodepb.BackupChunk], error) {
	for _, s := range n.c.shards {
		if s.id != req.GetShardId() {
			continue
		}
		h := &nodepb.BackupHeader{ClusterId: 0xabc, NodeId: n.id, ShardId: s.id, Start: s.start, Last: s.last, Generation: 1,
			AppliedIndex: 100 + s.id, AppliedTerm: 6, Replication: 3, StoreFormat: storage.FormatVersion}
		if n.c.header != nil {
			n.c.header(h)
		}
		msgs := []*nodepb.BackupChunk{{Part: &nodepb.BackupChunk_Header{Header: h}}}
		n.c.mu.Lock()
		refused := s.id == 12 && n.c.refuse > 0
		if refused {
			n.c.refuse--
		}
		n.c.mu.Unlock()
		if refused {
			return nil, fmt.Errorf("shard 12 is frozen for a merge")
		}
		if n.c.fail[n.id] {
			return &fakeStream{msgs: msgs, err: errors.New("connection reset")}, nil
		}
		var chunk []byte
		var keys, bytes uint64
		for i, p := range s.pairs {
			chunk = binary.AppendUvarint(chunk, uint64(len(p[0])))
			chunk = append(chunk, p[0]...)
			chunk = binary.AppendUvarint(chunk, uint64(len(p[1])))
			chunk = append(chunk, p[1]...)
			keys, bytes = keys+1, bytes+uint64(len(p[0])+len(p[1]))
			if i%20 == 19 || i == len(s.pairs)-1 {
				msgs = append(msgs, &nodepb.BackupChunk{Part: &nodepb.BackupChunk_Data{Data: chunk}})
				chunk = nil
			}
		}
		msgs = append(msgs, &nodepb.BackupChunk{Part: &nodepb.BackupChunk_Trailer{Trailer: &nodepb.BackupTrailer{Keys: keys, Bytes: bytes}}})
		n.c.mu.Lock()
		n.c.served[s.id] = n.id
		n.c.mu.Unlock()
		return &fakeStream{msgs: msgs, err: io.EOF}, nil
	}
	return nil, fmt.Errorf("shard %d not found", req.GetShardId())
}

// fakeStream returns msgs, then err.
type fakeStream struct {
	grpc.ClientStream
	msgs []*nodepb.BackupChunk
	err  error
}

func (s *fakeStream) Recv() (*nodepb.BackupChunk, error) {
	if len(s.msgs) == 0 {
		return nil, s.err
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func quietConfig(dir string) Config {
	cfg := DefaultConfig(dir)
	cfg.Parallel = 2
	return cfg
}

// TestTakeVerifyRestore: a backup of three shards, one of whose leaders
// breaks its stream (another replica serves it), verifies, and restores
// into a store that holds exactly the shards' pairs, with an identity that
// bootstraps a new cluster of the backup's ring.
func TestTakeVerifyRestore(t *testing.T) {
	ctx := context.Background()
	cl := newFakeCluster(t)
	cl.fail[2] = true // leads shard 11: its second replica, node 3, serves it
	dir := filepath.Join(t.TempDir(), "b")
	m, err := Take(ctx, quietConfig(dir), cl)
	if err != nil {
		t.Fatal(err)
	}
	if cl.served[11] != 3 || len(m.Shards) != 3 || m.ClusterID != 0xabc || m.Replication != 3 {
		t.Fatalf("shard 11 served by node %d; manifest: %d shards, cluster %x, replication %d", cl.served[11], len(m.Shards), m.ClusterID, m.Replication)
	}
	if keys, _, _ := m.Totals(); keys != 3*51 {
		t.Fatalf("%d pairs, want %d", keys, 3*51)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Fatalf("%d entries in the backup, want 3 files and the manifest (no temporary file)", len(entries))
	}
	if _, err := Verify(dir); err != nil {
		t.Fatal(err)
	}

	data := filepath.Join(t.TempDir(), "data")
	r, err := Restore(ctx, RestoreConfig{Backup: dir, DataDir: data, NodeID: 77})
	if err != nil {
		t.Fatal(err)
	}
	if r.NodeID != 77 || r.ClusterID == 0 || r.ClusterID == m.ClusterID {
		t.Fatalf("restored as node %d of cluster %x", r.NodeID, r.ClusterID)
	}
	var id node.Identity
	raw, err := os.ReadFile(filepath.Join(data, node.IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &id); err != nil {
		t.Fatal(err)
	}
	if id.Cluster == nil || len(id.Cluster.Ring) != 3 || id.Cluster.RestoredFrom != 0xabc || id.Cluster.Replication != 3 ||
		len(id.Cluster.Bootstrap) != 1 || id.Cluster.Bootstrap[0] != 77 || id.Bootstrapped {
		t.Fatalf("identity %+v, cluster %+v", id, id.Cluster)
	}
	st, err := storage.Open(storage.DefaultConfig(node.StoreDir(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	it, err := st.DB().NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	want := map[string]string{}
	for _, s := range cl.shards {
		for _, p := range s.pairs {
			want[string(p[0])] = string(p[1])
		}
	}
	got := 0
	for it.First(); it.Valid(); it.Next() {
		k := string(it.Key())
		if _, ok := storage.DecodeSessionKey(it.Key()); !ok && it.Key()[0] != 0x02 {
			continue // the store's own records
		}
		if v, ok := want[k]; !ok || v != string(it.Value()) {
			t.Fatalf("restored %s = %q, want %q (known: %v)", storage.DescribeKey(it.Key()), it.Value(), v, ok)
		}
		got++
	}
	if got != len(want) {
		t.Fatalf("%d pairs restored, want %d", got, len(want))
	}
	if _, err := Restore(ctx, RestoreConfig{Backup: dir, DataDir: data}); !errors.Is(err, node.ErrDataDirNotEmpty) {
		t.Fatalf("restore into the used data directory: %v, want ErrDataDirNotEmpty", err)
	}
}

// TestTakeRetriesRounds: a shard whose replicas all refuse at first (frozen
// for a merge) is read in a later round.
func TestTakeRetriesRounds(t *testing.T) {
	cl := newFakeCluster(t)
	cl.refuse = 3 // both replicas in round 1, the first in round 2
	m, err := Take(context.Background(), quietConfig(filepath.Join(t.TempDir(), "b")), cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Shards) != 3 || cl.refuse != 0 || cl.served[12] != m.Shards[2].Node {
		t.Fatalf("%d shards; %d refusals left; shard 12 from node %d", len(m.Shards), cl.refuse, m.Shards[2].Node)
	}
}

// TestTakeRefusals: a directory that is not empty is refused and left as
// it was; a shard no replica serves, and a ring that changed meanwhile
// (a shard that serves a narrower range than listed), fail the backup, and
// the failed backup removes the directory it made.
func TestTakeRefusals(t *testing.T) {
	ctx := context.Background()
	busy := t.TempDir()
	if err := os.WriteFile(filepath.Join(busy, "mine"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Take(ctx, quietConfig(busy), newFakeCluster(t)); !errors.Is(err, ErrDirNotEmpty) {
		t.Fatalf("non-empty directory: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(busy, "mine")); err != nil || string(b) != "x" {
		t.Fatalf("the refused directory changed: %q %v", b, err)
	}
	for name, c := range map[string]struct {
		change func(*fakeCluster)
		want   error
	}{
		"no replica serves": {func(c *fakeCluster) { c.fail[1], c.fail[2] = true, true }, ErrShardUnavailable},
		"ring changed": {func(c *fakeCluster) {
			c.header = func(h *nodepb.BackupHeader) {
				if h.ShardId == 11 {
					h.Last -= 100 // split meanwhile
				}
			}
		}, ErrRingChanged},
	} {
		cl := newFakeCluster(t)
		c.change(cl)
		dir := filepath.Join(t.TempDir(), "b")
		if _, err := Take(ctx, quietConfig(dir), cl); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the failed backup left %s: %v", name, dir, err)
		}
	}
}

// TestVerifyDamage: each kind of damage is refused with the error of its
// kind, naming the file; every bad file is named.
func TestVerifyDamage(t *testing.T) {
	src := filepath.Join(t.TempDir(), "b")
	m, err := Take(context.Background(), quietConfig(src), newFakeCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	f0, f1 := m.Shards[0].File, m.Shards[1].File
	for name, c := range map[string]struct {
		damage func(dir string) error
		want   error
		names  []string
	}{
		"no manifest":  {func(dir string) error { return os.Remove(filepath.Join(dir, ManifestFile)) }, ErrIncomplete, []string{ManifestFile}},
		"file missing": {func(dir string) error { return os.Remove(filepath.Join(dir, f1)) }, ErrIncomplete, []string{f1}},
		"file cut short": {func(dir string) error {
			p := filepath.Join(dir, f0)
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			return os.Truncate(p, st.Size()-3)
		}, ErrCorrupt, []string{f0}},
		"two files flipped": {func(dir string) error {
			for _, f := range []string{f0, f1} {
				if err := flip(filepath.Join(dir, f), 40); err != nil {
					return err
				}
			}
			return nil
		}, ErrCorrupt, []string{f0, f1}},
		"manifest ranges": {func(dir string) error {
			p := filepath.Join(dir, ManifestFile)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			var mm Manifest
			if err := json.Unmarshal(b, &mm); err != nil {
				return err
			}
			mm.Shards[1].Start++
			b, _ = json.Marshal(mm)
			return os.WriteFile(p, b, 0o644)
		}, ErrCorrupt, []string{ManifestFile}},
		"store format": {func(dir string) error {
			p := filepath.Join(dir, ManifestFile)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(p, []byte(strings.Replace(string(b), `"store_format": 2`, `"store_format": 9`, 1)), 0o644)
		}, ErrFormat, []string{ManifestFile}},
	} {
		dir := filepath.Join(t.TempDir(), "copy")
		if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
		if err := c.damage(dir); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(dir)
		var fe *FileError
		if !errors.Is(err, c.want) || !errors.As(err, &fe) {
			t.Errorf("%s: %v, want a *FileError matching %v", name, err, c.want)
			continue
		}
		for _, n := range c.names {
			if !strings.Contains(err.Error(), filepath.Join(dir, n)) {
				t.Errorf("%s: %v does not name %s", name, err, n)
			}
		}
		data := filepath.Join(t.TempDir(), "data")
		if _, err := Restore(context.Background(), RestoreConfig{Backup: dir, DataDir: data}); !errors.Is(err, c.want) {
			t.Errorf("%s: restore: %v, want %v", name, err, c.want)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a refused restore left %s: %v", name, data, err)
		}
	}
}

func flip(path string, at int) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	b[min(at, len(b)-1)] ^= 0xff
	return os.WriteFile(path, b, 0o644)
}
