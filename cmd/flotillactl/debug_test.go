package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-db/flotilla/storage"
)

// makeStore creates a closed store in dir with node 5 of cluster 0xab and
// one shard.
func makeStore(t *testing.T, dir string) {
	t.Helper()
	s, err := storage.Open(storage.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.EnsureIdent(storage.Ident{ClusterID: 0xab, NodeID: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateShard(storage.NewDescriptor(3, 0, ^uint64(0), 1, []uint64{5}, nil), 1); err != nil {
		t.Fatal(err)
	}
}

const identityJSON = `{"node_id": 5, "instance": 99, "cluster_id": 171, "bootstrapped": true}`

func writeIdentity(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, identityFileName), []byte(identityJSON), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDebugDumpDataDir(t *testing.T) {
	dir := t.TempDir()
	writeIdentity(t, dir)
	makeStore(t, filepath.Join(dir, "store"))
	stdout, stderr, code := runCmd(t, "debug", "dump", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(stdout, "\n")
	wantIdent := "identity " + filepath.Join(dir, identityFileName) + ": node 5, cluster 00000000000000ab (171), instance 99, bootstrap member"
	if len(lines) < 5 || lines[0] != wantIdent || lines[1] != "store "+filepath.Join(dir, "store")+":" ||
		!strings.HasPrefix(lines[2], "cluster 171, node 5, 1 shards") || !strings.HasPrefix(lines[3], "SHARD") || !strings.HasPrefix(lines[4], "3 ") {
		t.Errorf("dump:\n%s", stdout)
	}

	stdout, _, code = runCmd(t, "--output", "json", "--data-dir", dir, "debug", "dump")
	var doc struct {
		NodeID   uint64              `json:"node_id"`
		Identity identity            `json:"identity"`
		StoreDir string              `json:"store_dir"`
		Shards   []storage.ShardDump `json:"shards"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); code != 0 || err != nil {
		t.Fatalf("exit %d, %v:\n%s", code, err, stdout)
	}
	if doc.NodeID != 5 || doc.Identity != (identity{NodeID: 5, Instance: 99, ClusterID: 171, Bootstrapped: true}) ||
		doc.StoreDir != filepath.Join(dir, "store") || len(doc.Shards) != 1 || doc.Shards[0].ShardID != 3 {
		t.Errorf("dump JSON: %+v", doc)
	}
}

func TestDebugDumpStoreDir(t *testing.T) {
	dir := t.TempDir()
	makeStore(t, dir)
	stdout, stderr, code := runCmd(t, "debug", "dump", "--data-dir", dir)
	if code != 0 || !strings.HasPrefix(stdout, "cluster 171, node 5, 1 shards, 0 tombstones map[]\nSHARD") {
		t.Errorf("exit %d, stdout:\n%s\nstderr %s", code, stdout, stderr)
	}
}

func TestDebugDumpIdentityOnly(t *testing.T) {
	dir := t.TempDir()
	writeIdentity(t, dir)
	stdout, stderr, code := runCmd(t, "debug", "dump", "--data-dir", dir)
	if code != 0 || !strings.Contains(stdout, "node 5, cluster 00000000000000ab") || !strings.Contains(stdout, "no store yet") {
		t.Errorf("exit %d, stdout:\n%s\nstderr %s", code, stdout, stderr)
	}
}

func TestDebugDumpNotAStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	_, stderr, code := runCmd(t, "debug", "dump", "--data-dir", dir)
	if code != exitFailure || !strings.HasPrefix(stderr, "flotillactl: cannot open the store in "+dir) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
