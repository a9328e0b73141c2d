package storage

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// FuzzStagedSnapshotWrite feeds arbitrary chunks, as a peer could send, to
// a staged snapshot: they are refused with ErrBadSnapshot or accepted,
// never a panic.
func FuzzStagedSnapshotWrite(f *testing.F) {
	f.Add(chunkOf(DataKey(15, []byte("a")), []byte("v")))
	f.Add([]byte{0x05, 'a'})
	f.Add([]byte{})
	s, err := Open(Config{Dir: "/db", FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	desc := Descriptor{ShardID: 1, Start: 10, Last: 20}
	f.Fuzz(func(t *testing.T, chunk []byte) {
		st, err := s.StageSnapshot(desc)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Abort()
		if err := st.Write(chunk); err != nil && !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

// FuzzUnmarshalDescriptor: descriptors come from the network in snapshot
// headers.
func FuzzUnmarshalDescriptor(f *testing.F) {
	f.Add(Descriptor{ShardID: 1, Start: 2, Last: 3, Generation: 4}.Marshal())
	f.Add(NewDescriptor(1, 2, 3, 4, []uint64{7, 8}, []uint64{9}).Marshal())
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := UnmarshalDescriptor(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if d2, err := UnmarshalDescriptor(d.Marshal()); err != nil || !d2.Equal(d) {
			t.Fatalf("round trip: %+v %+v %v", d, d2, err)
		}
	})
}
