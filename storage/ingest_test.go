package storage

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestIngestData streams a shard's sessions and data into a store where the
// shard has no replica (a restore), ingests them without raft state, then
// creates the shard over them: the replica serves exactly the source's
// records, and nothing outside the shard's spans came along. A shard with
// a replica here is refused.
func TestIngestData(t *testing.T) {
	src := openMem(t, vfs.NewMem())
	defer src.Close()
	desc := Descriptor{ShardID: 4, Start: 1000, Last: 1999}
	putSessions(t, src, 4, 20, "src")
	putSessions(t, src, 5, 3, "other") // another shard's: not sent
	for i := 0; i < 500; i++ {
		h := uint64(900 + i%1200) // some outside the range
		if err := src.DB().Set(DataKey(h, []byte(fmt.Sprintf("k%05d", i))), []byte("v"), nil); err != nil {
			t.Fatal(err)
		}
	}
	dst := openMem(t, vfs.NewMem())
	defer dst.Close()
	st, _, _ := transferSnapshot(t, src, dst, desc, 1024)
	if err := dst.IngestData(st); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.CreateShard(withReplicas(desc, []uint64{1}, nil), 1); err != nil {
		t.Fatal(err)
	}
	ss, se := SessionSpan(4)
	ds, de := desc.DataSpan()
	for _, sp := range []span{{ss, se}, {ds, de}} {
		if got, want := spanContents(t, dst, sp.start, sp.end), spanContents(t, src, sp.start, sp.end); len(want) == 0 || !slices.Equal(got, want) {
			t.Fatalf("%s..: %d records, want the source's %d", DescribeKey(sp.start), len(got), len(want))
		}
	}
	if n := len(spanContents(t, dst, []byte{prefixLocal, localSession}, []byte{prefixData + 1})); n != 20*3+len(spanContents(t, src, ds, de)) {
		t.Fatalf("%d session and data records in the store, more than the shard's", n)
	}
	again, _, _ := transferSnapshot(t, src, dst, desc, 1024)
	if err := dst.IngestData(again); !errors.Is(err, ErrShardExists) {
		t.Fatalf("ingest under a replica: %v, want ErrShardExists", err)
	}
}
