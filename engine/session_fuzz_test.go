package engine

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/storage"
)

// FuzzSessionCommand feeds arbitrary engine commands, as the log could hold
// them, to the apply path: each is applied or refused with a typed error,
// never a panic, and a well-formed envelope decodes to what encoded it.
func FuzzSessionCommand(f *testing.F) {
	put := PutCommand([]byte("k"), []byte("v"))
	f.Add(appendSessionCommand(nil, Session{ID: 1, Seq: 2, Ack: 1, Register: true}, 5, put))
	f.Add(appendSessionCommand(nil, Session{ID: 1, Seq: 3, Ack: 3}, 6, put))
	f.Add(appendSessionCommand(nil, Session{ID: 9, Seq: 1}, 6, CASCommand([]byte("k"), nil, nil)))
	f.Add(expireCommand(6))
	f.Add([]byte{cmdSession, 1})
	db, err := pebble.Open("/db", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	w := &worker{e: &Engine{}}
	ctx := &ApplyContext{Desc: storage.Descriptor{ShardID: 1, Last: ^uint64(0)}}
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, now, inner, err := decodeSessionCommand(b); err == nil {
			if again := appendSessionCommand(nil, s, now, inner); !bytes.Equal(again, b) {
				t.Fatalf("round trip of %x: %x", b, again)
			}
		}
		ctx.b = db.NewIndexedBatch()
		defer ctx.b.Close()
		_, err := w.applyCommand(1, ctx, NewKV(), b)
		var se *SessionError
		var kns *KeyNotInShardError
		if err != nil && !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrEmptyKey) && !errors.As(err, &se) && !errors.As(err, &kns) {
			t.Fatalf("untyped error: %v", err)
		}
	})
}
