package engine

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/storage"
)

// FuzzKV feeds arbitrary commands and queries, as a client could send, to
// the key-value state machine: each is applied, answered or refused with a
// typed error, never a panic.
func FuzzKV(f *testing.F) {
	f.Add(PutCommand([]byte("k"), []byte("v")))
	f.Add(CASCommand([]byte("k"), nil, []byte("v")))
	f.Add(DeleteCommand([]byte("k")))
	f.Add(GetQuery([]byte("k")))
	f.Add(ScanQuery(nil, 3))
	f.Add(BatchCommand(PutCommand([]byte("k"), []byte("v")), CASCommand([]byte("j"), []byte("w"), nil)))
	f.Add([]byte{3, 0xff})
	db, err := pebble.Open("/db", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	desc := storage.Descriptor{ShardID: 1, Last: ^uint64(0)}
	kv := NewKV()
	f.Fuzz(func(t *testing.T, b []byte) {
		batch := db.NewIndexedBatch()
		defer batch.Close()
		typed := func(err error) bool {
			var kns *KeyNotInShardError
			return err == nil || errors.Is(err, ErrBadRequest) || errors.Is(err, ErrEmptyKey) || errors.As(err, &kns)
		}
		if _, err := kv.Apply(&ApplyContext{Desc: desc, b: batch}, b); !typed(err) {
			t.Fatalf("apply: untyped error %v", err)
		}
		if _, err := kv.Query(&QueryContext{Desc: desc, r: batch}, b); !typed(err) {
			t.Fatalf("query: untyped error %v", err)
		}
	})
}
