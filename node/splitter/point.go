package splitter

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/flotilla-db/flotilla/storage"
)

// Point says how a split point was chosen.
type Point string

// How a split point is chosen.
const (
	// PointGiven: by the caller.
	PointGiven Point = "given"
	// PointMedian: the median hash of the shard's rows, counted.
	PointMedian Point = "median"
	// PointEstimate: where the store estimates half of the shard's data
	// on disk to be (a shard with more rows than Config.MaxScanKeys).
	PointEstimate Point = "estimate"
	// PointMiddle: the middle of the range (a shard with too little data
	// to split by, or whose data cannot be looked at).
	PointMiddle Point = "middle"
)

// middle is the split point that halves d's range: the parent keeps
// [Start, Start+(Last-Start)/2], the child the rest. d's range holds at
// least two hashes.
func middle(d storage.Descriptor) uint64 { return d.Start + (d.Last-d.Start)/2 + 1 }

// inside reports whether at is a split point of d: Start < at <= Last.
func inside(d storage.Descriptor, at uint64) bool { return d.Start < at && at <= d.Last }

// choose returns the split point of d: the median hash of its rows when
// there are at most maxKeys of them, else where the store estimates half
// of its data on disk to be, else (no store, too few rows or distinct
// hashes, nothing on disk yet) the middle of the range. d's range holds
// at least two hashes.
//
// A row's hash is its partition's (router.PartitionRule), so every row of
// a partition has the same hash and a split point, which is a hash, never
// divides a partition: all its rows go to the same side.
func choose(db *pebble.DB, d storage.Descriptor, maxKeys int) (uint64, Point, error) {
	if db == nil {
		return middle(d), PointMiddle, nil
	}
	at, counted, err := median(db, d, maxKeys)
	switch {
	case err != nil:
		return 0, "", err
	case counted && inside(d, at):
		return at, PointMedian, nil
	case counted:
		return middle(d), PointMiddle, nil
	}
	at, err = estimate(db, d)
	if err != nil {
		return 0, "", err
	}
	if inside(d, at) {
		return at, PointEstimate, nil
	}
	return middle(d), PointMiddle, nil
}

// median returns the median hash of d's rows: the hash of the middle row
// in hash order, or, when that is d's first hash (the parent would keep
// nothing), the next hash above it that a row has. counted is false when
// d holds more than maxKeys rows; at is 0 when it holds fewer than two or
// no row's hash is above Start.
func median(db *pebble.DB, d storage.Descriptor, maxKeys int) (at uint64, counted bool, err error) {
	start, end := d.DataSpan()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return 0, false, err
	}
	defer it.Close()
	var hashes []uint64
	for ok := it.First(); ok; ok = it.Next() {
		if len(hashes) == maxKeys {
			return 0, false, nil
		}
		h, _, ok := d.DecodeDataKey(it.Key())
		if !ok {
			return 0, false, fmt.Errorf("splitter: shard %d: malformed data key %x", d.ShardID, it.Key())
		}
		hashes = append(hashes, h)
	}
	if err := it.Error(); err != nil {
		return 0, false, err
	}
	if len(hashes) < 2 {
		return 0, true, nil // nothing to halve
	}
	for _, h := range hashes[len(hashes)/2:] {
		if h > d.Start {
			return h, true, nil
		}
	}
	return 0, true, nil
}

// estimate returns the hash below which the store estimates half of d's
// data on disk to be (a binary search over Pebble's estimates, which read
// index blocks, not data), 0 when the estimate is empty (the data is
// still in memtables).
func estimate(db *pebble.DB, d storage.Descriptor) (uint64, error) {
	usage := func(last uint64) (uint64, error) {
		start, end := storage.DataSpan(d.Start, last)
		return db.EstimateDiskUsage(start, end)
	}
	total, err := usage(d.Last)
	if err != nil || total == 0 {
		return 0, err
	}
	// The smallest at in (Start, Last] with usage([Start, at-1]) >= total/2.
	lo, hi := d.Start+1, d.Last
	for lo < hi {
		mid := lo + (hi-lo)/2
		u, err := usage(mid - 1)
		if err != nil {
			return 0, err
		}
		if u >= total/2 {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo, nil
}
