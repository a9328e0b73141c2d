package router

import (
	"fmt"
	"math"
	"math/bits"
)

// The ring index: how a hash becomes a position in the ring in a few memory
// reads (the package documentation says why).
//
// The hash space is cut into 2^k equal buckets by the top k bits of the hash.
// index[b] is the position of the range that holds the first hash of bucket
// b, that is the smallest i with lasts[i] >= b<<(64-k). The range holding a
// hash h of bucket b is then at a position in [index[b], index[b+1]]: not
// before index[b], since every earlier range ends before the bucket starts,
// and not after index[b+1], the range holding the first hash of the next
// bucket, which is above h. index[2^k] is the last position, len(lasts)-1,
// whose range ends at MaxUint64.
//
// k is floor(log2(shards)), at least 1: 2^k is in (shards/2, shards], so on an
// even ring a bucket holds one or two range ends and a lookup compares
// against one or two adjacent entries of lasts, and the index takes 2 to 4
// bytes per shard, at most half as much as lasts.

// maxScan is the largest number of candidate positions past index[b] that
// search scans one by one; a bucket with more range ends (a very uneven
// ring) is binary searched, so a lookup costs O(log(ranges in the bucket))
// whatever the shape of the ring.
const maxScan = 8

// indexBits returns k, the number of top hash bits that the index of a ring
// of n ranges uses: floor(log2(n)), at least 1 so that the shift, 64-k, is at
// most 63.
func indexBits(n int) uint {
	return uint(max(1, bits.Len(uint(n))-1))
}

// buildIndex returns the index over lasts (sorted, lasts[len-1] ==
// MaxUint64) and the shift, 64-k, that maps a hash to its bucket. O(len(lasts)
// + 2^k).
func buildIndex(lasts []uint64) (index []uint32, shift uint) {
	n := len(lasts)
	if uint64(n) > math.MaxUint32 {
		// Positions are uint32. A ring this size would hold 100 GB of
		// ranges before getting here.
		panic(fmt.Sprintf("router: ring of %d ranges is too large to index", n))
	}
	k := indexBits(n)
	shift = 64 - k
	buckets := 1 << k
	index = make([]uint32, buckets+1)
	i := 0
	for b := range buckets {
		first := uint64(b) << shift
		for lasts[i] < first { // stops: lasts[n-1] == MaxUint64
			i++
		}
		index[b] = uint32(i)
	}
	index[buckets] = uint32(n - 1)
	return index, shift
}

// search returns the position of the range containing hash: the smallest i
// with lasts[i] >= hash. It reads two adjacent index entries and then
// usually one or two adjacent entries of lasts.
func (rg *Ring) search(hash uint64) int {
	b := hash >> (rg.shift & 63) // shift <= 63: the mask spares a check
	index := rg.index
	hi := int(index[b+1])
	lo := int(index[b])
	lasts := rg.lasts
	if hi-lo > maxScan {
		return searchRange(lasts, lo, hi, hash)
	}
	// lasts[hi] >= hash, so the scan stops at hi at the latest.
	for lasts[lo] < hash {
		lo++
	}
	return lo
}

// searchRange returns the smallest i in [lo, hi] with lasts[i] >= hash,
// given that lasts[hi] >= hash, by binary search.
func searchRange(lasts []uint64, lo, hi int, hash uint64) int {
	// The answer is in [lo, lo+n). Branch-free: the borrow of lasts[m]-hash
	// is 1 when lasts[m] < hash, and selects the upper half with a mask, so
	// a random hash costs no mispredicted branch per step (the compiler
	// keeps a plain if as a branch here).
	for n := hi - lo + 1; n > 1; {
		half := n >> 1
		_, lt := bits.Sub64(lasts[lo+half-1], hash, 0)
		lo += int(uint(half) & -uint(lt))
		n -= half
	}
	return lo
}
