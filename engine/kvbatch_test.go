package engine

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/storage"
)

// TestKVBatch applies batches to a shard's state directly: all or none, the
// first failed condition reported with its key's value, malformed batches
// refused before anything is written.
func TestKVBatch(t *testing.T) {
	db, err := pebble.Open("/db", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	kv := NewKV()
	b := db.NewIndexedBatch()
	defer b.Close()
	ac := &ApplyContext{Desc: storage.Descriptor{ShardID: 1, Last: ^uint64(0)}, b: b}
	apply := func(cmd []byte) (BatchResult, error) {
		t.Helper()
		res, err := kv.Apply(ac, cmd)
		if err != nil {
			return BatchResult{}, err
		}
		return DecodeBatchResult(res)
	}
	get := func(key string) (string, bool) {
		t.Helper()
		v, found, err := ac.Get([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return string(v), found
	}
	k := func(s string) []byte { return []byte(s) }

	res, err := apply(BatchCommand(PutCommand(k("a"), k("1")), CASCommand(k("b"), nil, k("2"))))
	if err != nil || !res.Applied {
		t.Fatalf("first batch: %+v, %v", res, err)
	}
	// The second CAS fails: nothing is written, not even the Put before it.
	res, err = apply(BatchCommand(PutCommand(k("c"), k("3")), CASCommand(k("a"), k("1"), k("4")), CASCommand(k("b"), k("x"), k("5"))))
	if err != nil || res.Applied || res.Failed != 2 || !res.Found || string(res.Current) != "2" {
		t.Fatalf("failed batch: %+v, %v", res, err)
	}
	if _, found := get("c"); found {
		t.Fatal("a failed batch wrote c")
	}
	if v, _ := get("a"); v != "1" {
		t.Fatalf("a failed batch changed a to %q", v)
	}
	res, err = apply(BatchCommand(CASCommand(k("z"), k("old"), k("new"))))
	if err != nil || res.Applied || res.Failed != 0 || res.Found || len(res.Current) != 0 {
		t.Fatalf("cas of an absent key: %+v, %v", res, err)
	}
	res, err = apply(BatchCommand(CASCommand(k("a"), k("1"), nil), DeleteCommand(k("b")), PutCommand(k("c"), k("3"))))
	if err != nil || !res.Applied {
		t.Fatalf("delete batch: %+v, %v", res, err)
	}
	if _, found := get("a"); found {
		t.Fatal("a CAS with a nil new value left a")
	}
	if _, found := get("b"); found {
		t.Fatal("Delete left b")
	}
	if v, _ := get("c"); v != "3" {
		t.Fatalf("c = %q", v)
	}
	if res, err := apply(BatchCommand()); err != nil || !res.Applied {
		t.Fatalf("empty batch: %+v, %v", res, err)
	}
	for name, cmd := range map[string][]byte{
		"repeated key": BatchCommand(PutCommand(k("d"), k("1")), DeleteCommand(k("d"))),
		"nested batch": BatchCommand(PutCommand(k("d"), k("1")), BatchCommand()),
		"a query":      BatchCommand(PutCommand(k("d"), k("1")), GetQuery(k("d"))),
		"empty key":    BatchCommand(PutCommand(k("d"), k("1")), DeleteCommand(nil)),
		"truncated":    BatchCommand(PutCommand(k("d"), k("1")), PutCommand(k("e"), k("2")))[:8],
		"trailing":     append(BatchCommand(PutCommand(k("d"), k("1"))), 0),
	} {
		if _, err := kv.Apply(ac, cmd); !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrEmptyKey) {
			t.Errorf("%s: %v, want a bad request", name, err)
		}
		if _, found := get("d"); found {
			t.Fatalf("%s: a refused batch wrote d", name)
		}
	}
	// A key outside the shard's range refuses the whole batch.
	narrow := &ApplyContext{Desc: storage.Descriptor{ShardID: 1, Last: 0}, b: b}
	var kns *KeyNotInShardError
	if _, err := kv.Apply(narrow, BatchCommand(PutCommand(k("d"), k("1")))); !errors.As(err, &kns) {
		t.Fatalf("key outside the range: %v", err)
	}
	for _, bad := range [][]byte{nil, {2}, {0}, {0, 1}, {0, 0x80, 0x80}} {
		if _, err := DecodeBatchResult(bad); !errors.Is(err, ErrBadRequest) {
			t.Errorf("DecodeBatchResult(%v) = %v", bad, err)
		}
	}
}
