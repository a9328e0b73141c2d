package router

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Range is the part [Start, Last] of the hash space owned by one shard. Both
// ends are inclusive, so the top of the space (Last = math.MaxUint64) needs no
// special case.
type Range struct {
	ShardID uint64
	Start   uint64 // first hash in the range
	Last    uint64 // last hash in the range, >= Start
}

// Contains reports whether hash falls in r.
func (r Range) Contains(hash uint64) bool { return r.Start <= hash && hash <= r.Last }

// Ring is the hash space [0, 2^64) split into contiguous ranges, one per
// shard, at one generation. A Ring is immutable once built and safe for
// concurrent use.
type Ring struct {
	// lasts, index and shift are what search reads, first so that they
	// share a cache line.
	//
	// lasts[i] == ranges[i].Last, kept apart so that search reads 8 bytes
	// per entry instead of 24.
	lasts []uint64
	// index maps the top bits of a hash to the first position to search
	// (index.go); shift is 64 minus the number of bits.
	index []uint32
	shift uint

	generation uint64
	ranges     []Range
	// pos maps a shard ID to its index in ranges.
	pos map[uint64]int
}

// NewRing validates ranges and builds a Ring of the given generation. The
// ranges must be sorted by Start, cover [0, 2^64) with no gap and no overlap,
// and name distinct non-zero shard IDs; otherwise NewRing returns a *RingError
// wrapping one of the ErrRing* sentinels. ranges is copied.
func NewRing(generation uint64, ranges []Range) (*Ring, error) {
	if len(ranges) == 0 {
		return nil, &RingError{Err: ErrRingEmpty, Index: -1, Detail: "no ranges"}
	}
	rg := &Ring{
		generation: generation,
		ranges:     slices.Clone(ranges),
		lasts:      make([]uint64, len(ranges)),
		pos:        make(map[uint64]int, len(ranges)),
	}
	for i, r := range rg.ranges {
		bad := func(err error, format string, args ...any) error {
			return &RingError{Err: err, Index: i, ShardID: r.ShardID, Detail: fmt.Sprintf(format, args...)}
		}
		if r.ShardID == 0 {
			return nil, bad(ErrRingZeroShard, "shard ID 0 is reserved")
		}
		if r.ShardID >= 1<<63 {
			return nil, bad(ErrRingZeroShard, "shard IDs from 1<<63 up are reserved for system shards")
		}
		if j, dup := rg.pos[r.ShardID]; dup {
			return nil, bad(ErrRingDuplicateShard, "shard %d also owns range %d", r.ShardID, j)
		}
		if r.Start > r.Last {
			return nil, bad(ErrRingBadRange, "start %#x > last %#x", r.Start, r.Last)
		}
		if i == 0 {
			if r.Start != 0 {
				return nil, bad(ErrRingGap, "hashes [0, %#x) uncovered", r.Start)
			}
		} else {
			prev := rg.ranges[i-1]
			switch {
			case r.Start < prev.Start:
				return nil, bad(ErrRingUnsorted, "start %#x < previous start %#x", r.Start, prev.Start)
			case r.Start <= prev.Last:
				return nil, bad(ErrRingOverlap, "start %#x <= previous last %#x", r.Start, prev.Last)
			case r.Start != prev.Last+1: // prev.Last < r.Start, so no overflow
				return nil, bad(ErrRingGap, "hashes [%#x, %#x) uncovered", prev.Last+1, r.Start)
			}
		}
		rg.pos[r.ShardID] = i
		rg.lasts[i] = r.Last
	}
	if last := rg.ranges[len(rg.ranges)-1]; last.Last != math.MaxUint64 {
		i := len(rg.ranges) - 1
		return nil, &RingError{Err: ErrRingGap, Index: i, ShardID: last.ShardID,
			Detail: fmt.Sprintf("hashes [%#x, 2^64) uncovered", last.Last+1)}
	}
	rg.index, rg.shift = buildIndex(rg.lasts)
	return rg, nil
}

// EvenRing builds a Ring that splits the hash space evenly among shardIDs, in
// the given order: range i is [floor(i*2^64/n), floor((i+1)*2^64/n) - 1], so
// range sizes differ by at most one and the ranges cover the whole space. It
// returns a *RingError for no shards, a zero or a duplicate shard ID.
func EvenRing(generation uint64, shardIDs []uint64) (*Ring, error) {
	n := uint64(len(shardIDs))
	if n == 0 {
		return nil, &RingError{Err: ErrRingEmpty, Index: -1, Detail: "no shards"}
	}
	ranges := make([]Range, n)
	for i := range n {
		// floor(i * 2^64 / n): the 128-bit dividend is (hi=i, lo=0) and i < n,
		// so the quotient fits in 64 bits.
		start, _ := bits.Div64(i, 0, n)
		ranges[i] = Range{ShardID: shardIDs[i], Start: start}
		if i > 0 {
			ranges[i-1].Last = start - 1
		}
	}
	ranges[n-1].Last = math.MaxUint64
	return NewRing(generation, ranges)
}

// Generation returns the ring's generation.
func (rg *Ring) Generation() uint64 { return rg.generation }

// Len returns the number of shards (ranges) in the ring.
func (rg *Ring) Len() int { return len(rg.ranges) }

// Lookup returns the shard whose range contains hash.
func (rg *Ring) Lookup(hash uint64) (shardID uint64) {
	return rg.ranges[rg.search(hash)].ShardID
}

// Shards returns the ring's shard IDs in hash order.
func (rg *Ring) Shards() []uint64 {
	ids := make([]uint64, len(rg.ranges))
	for i, r := range rg.ranges {
		ids[i] = r.ShardID
	}
	return ids
}

// Ranges returns a copy of the ring's ranges in hash order.
func (rg *Ring) Ranges() []Range { return slices.Clone(rg.ranges) }

// Range returns the range of shardID and whether the shard is in the ring.
func (rg *Ring) Range(shardID uint64) (Range, bool) {
	i, ok := rg.pos[shardID]
	if !ok {
		return Range{}, false
	}
	return rg.ranges[i], true
}

// Equal reports whether rg and other have the same generation and ranges.
func (rg *Ring) Equal(other *Ring) bool {
	return rg.generation == other.generation && slices.Equal(rg.ranges, other.ranges)
}

// String returns a short description of the ring.
func (rg *Ring) String() string {
	return fmt.Sprintf("ring{gen %d, %d shards}", rg.generation, len(rg.ranges))
}
