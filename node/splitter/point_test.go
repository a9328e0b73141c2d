package splitter

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/storage"
)

// memDB returns an in-memory Pebble with one row at each of hashes.
func memDB(t *testing.T, hashes ...uint64) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b := db.NewBatch()
	for i, h := range hashes {
		if err := b.Set(storage.DataKey(h, fmt.Appendf(nil, "row-%d", i)), []byte("v"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	return db
}

// quiet drops Pebble's log lines.
type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

func TestChoosePoint(t *testing.T) {
	d := storage.Descriptor{ShardID: 1, Start: 10, Last: 1000}
	outside := []uint64{5, 1001, 2000} // rows of other shards
	for _, tc := range []struct {
		name    string
		hashes  []uint64
		maxKeys int
		at      uint64
		point   Point
	}{
		{"no rows", nil, 10, middle(d), PointMiddle},
		{"one row", []uint64{500}, 10, middle(d), PointMiddle},
		{"the median row's hash", []uint64{20, 30, 40, 50, 60}, 10, 40, PointMedian},
		{"rows of one partition stay together", []uint64{20, 40, 40, 40, 60, 70}, 10, 40, PointMedian},
		{"not the first hash: the parent keeps something", []uint64{10, 10, 10, 10, 300}, 10, 300, PointMedian},
		{"every row at the first hash", []uint64{10, 10, 10}, 10, middle(d), PointMiddle},
		{"too many rows to count, nothing on disk", []uint64{20, 30, 40, 50}, 3, middle(d), PointMiddle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := memDB(t, append(tc.hashes, outside...)...)
			at, point, err := choose(db, d, tc.maxKeys)
			if err != nil || at != tc.at || point != tc.point {
				t.Fatalf("choose: %d (%s), %v; want %d (%s)", at, point, err, tc.at, tc.point)
			}
		})
	}
	if at, point, err := choose(nil, d, 10); err != nil || at != middle(d) || point != PointMiddle {
		t.Fatalf("no store: %d (%s), %v", at, point, err)
	}
	full := storage.Descriptor{ShardID: 1, Start: 0, Last: ^uint64(0)}
	if m := middle(full); m != 1<<63 {
		t.Fatalf("middle of the hash space: %#x", m)
	}
	if m := middle(storage.Descriptor{Start: 7, Last: 8}); m != 8 {
		t.Fatalf("middle of two hashes: %d", m)
	}
}

// TestChoosePointEstimate: a shard with more rows than are counted is
// split where the store estimates half of its data on disk to be.
func TestChoosePointEstimate(t *testing.T) {
	d := storage.Descriptor{ShardID: 1, Start: 0, Last: 1 << 40}
	var hashes []uint64
	for i := range uint64(20_000) {
		hashes = append(hashes, 1<<20+i*16) // all in the lowest 2^-20th of the range
	}
	db := memDB(t, hashes...)
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	at, point, err := choose(db, d, 1000)
	if err != nil || point != PointEstimate {
		t.Fatalf("choose: %d (%s), %v", at, point, err)
	}
	lo, hi := hashes[len(hashes)/4], hashes[3*len(hashes)/4]
	if at < lo || at > hi {
		t.Fatalf("estimated point %d, not between the rows' quartiles %d and %d", at, lo, hi)
	}
	t.Logf("estimated split point %d; the median row's hash is %d", at, hashes[len(hashes)/2])
}
