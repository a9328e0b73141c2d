package router

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// ringShapes generate the n-1 cut points (range starts other than 0) of a
// random ring of n ranges; they may return duplicates, which randomRing
// drops and replaces.
var ringShapes = []struct {
	name string
	cut  func(rnd *rand.Rand, n int, param uint64) uint64
}{
	// Uniform cuts: range sizes vary by a few times.
	{"uniform", func(rnd *rand.Rand, n int, _ uint64) uint64 { return rnd.Uint64() }},
	// Every cut in a window of 4n hashes at param (0, the top of the space,
	// a bucket boundary or anywhere): one or two huge ranges and a bucket
	// holding nearly all the others, down to one-hash ranges.
	{"dense", func(rnd *rand.Rand, n int, base uint64) uint64 { return base + rnd.Uint64N(4*uint64(n)) }},
	// Log-uniform cuts: range sizes at every scale from 1 to 2^63, dense
	// near 0.
	{"logscale", func(rnd *rand.Rand, n int, _ uint64) uint64 { return rnd.Uint64() >> rnd.IntN(64) }},
	// A few tight clusters, anywhere in the space (wrapping at 2^64).
	{"clusters", func(rnd *rand.Rand, n int, seed uint64) uint64 {
		center := rand.New(rand.NewPCG(seed, uint64(rnd.IntN(8)))).Uint64()
		return center + rnd.Uint64()>>(24+rnd.IntN(40))
	}},
	// Half the cuts uniform, half right next to them: huge ranges next to
	// one-hash ones.
	{"pairs", func(rnd *rand.Rand, n int, _ uint64) uint64 {
		c := rnd.Uint64()
		return c + uint64(rnd.IntN(2))*(1+rnd.Uint64N(3))
	}},
}

// randomRing builds a ring of n ranges, shard IDs 1..n in hash order, with
// cut points from the named shape (or an even ring for "even").
func randomRing(t *testing.T, rnd *rand.Rand, n int, shape string) *Ring {
	t.Helper()
	if shape == "even" {
		return mustEvenRing(t, 1, n)
	}
	i := slices.IndexFunc(ringShapes, func(s struct {
		name string
		cut  func(*rand.Rand, int, uint64) uint64
	}) bool {
		return s.name == shape
	})
	cut := ringShapes[i].cut
	param := rnd.Uint64()
	if shape == "dense" {
		window := 4 * uint64(n)
		switch rnd.IntN(4) {
		case 0:
			param = 0
		case 1:
			param = math.MaxUint64 - window + 1
		case 2: // straddle a bucket boundary
			param = uint64(rnd.IntN(1<<indexBits(n)))<<(64-indexBits(n)) - window/2
		}
	}
	starts := make([]uint64, 1, n)
	seen := make(map[uint64]bool, n)
	seen[0] = true
	for tries := 0; len(starts) < n; tries++ {
		c := cut(rnd, n, param)
		if tries > 100*n { // the shape has run out of distinct cuts
			c = rnd.Uint64()
		}
		if !seen[c] {
			seen[c] = true
			starts = append(starts, c)
		}
	}
	slices.Sort(starts)
	ranges := make([]Range, n)
	for i, s := range starts {
		ranges[i] = Range{ShardID: uint64(i + 1), Start: s, Last: math.MaxUint64}
		if i > 0 {
			ranges[i-1].Last = s - 1
		}
	}
	rg, err := NewRing(1, ranges)
	if err != nil {
		t.Fatalf("%s ring of %d: %v", shape, n, err)
	}
	return rg
}

// TestIndexedSearch checks the indexed search against a plain binary search
// over the range ends, on rings of 1 to 200,000 ranges of every shape, at
// the extremes of the space, at both ends of ranges, at both ends of index
// buckets, next to cut points and at random hashes.
func TestIndexedSearch(t *testing.T) {
	rnd := newRand(t)
	counts := []int{}
	for n := 1; n <= 70; n++ {
		counts = append(counts, n)
	}
	for k := 7; k <= 17; k++ {
		counts = append(counts, 1<<k-1, 1<<k, 1<<k+1)
	}
	counts = append(counts, 1000, 100_000, 200_000)
	for range 4 {
		counts = append(counts, 1+rnd.IntN(200_000))
	}
	shapes := []string{"even"}
	for _, s := range ringShapes {
		shapes = append(shapes, s.name)
	}
	var scanned, bisected int // lookups by each path, to check both ran
	for _, n := range counts {
		// Every shape for small rings; two random ones for large rings,
		// which take long to build.
		ringShapes := shapes
		if n > 5000 {
			ringShapes = []string{shapes[rnd.IntN(len(shapes))], shapes[rnd.IntN(len(shapes))]}
		}
		for _, shape := range ringShapes {
			rg := randomRing(t, rnd, n, shape)
			checkIndex(t, rg)
			probes := []uint64{0, 1, math.MaxUint64 - 1, math.MaxUint64}
			for j := range min(n, 1000) {
				r := rg.ranges[j]
				if n > 1000 {
					r = rg.ranges[rnd.IntN(n)]
				}
				inside := rnd.Uint64() // somewhere in r
				if size := r.Last - r.Start + 1; size != 0 {
					inside = r.Start + rnd.Uint64N(size)
				}
				probes = append(probes, r.Start, r.Last, inside)
			}
			buckets := len(rg.index) - 1
			for range min(buckets, 500) {
				first := uint64(rnd.IntN(buckets)) << rg.shift
				probes = append(probes, first, first-1, first|(1<<rg.shift-1))
			}
			for range 2000 {
				probes = append(probes, rnd.Uint64())
			}
			for _, h := range probes {
				want, _ := slices.BinarySearch(rg.lasts, h)
				got := rg.search(h)
				if got != want || !rg.ranges[got].Contains(h) {
					t.Fatalf("%s ring of %d ranges: search(%#x) = %d, binary search says %d (range %+v)",
						shape, n, h, got, want, rg.ranges[want])
				}
				b := h >> rg.shift
				if rg.index[b+1]-rg.index[b] > maxScan {
					bisected++
				} else {
					scanned++
				}
			}
		}
	}
	t.Logf("%d lookups scanned, %d binary searched a crowded bucket", scanned, bisected)
	if scanned == 0 || bisected == 0 {
		t.Fatal("a search path was not exercised")
	}
}

// checkIndex checks the size of rg's index (2^k buckets with 2^k in
// (n/2, n], at least 2) and its definition: index[b] is the range holding
// the first hash of bucket b.
func checkIndex(t *testing.T, rg *Ring) {
	t.Helper()
	n := len(rg.ranges)
	buckets := len(rg.index) - 1
	if buckets != 1<<(64-rg.shift) || buckets > max(2, n) || 2*buckets <= n {
		t.Fatalf("ring of %d ranges: %d buckets, shift %d", n, buckets, rg.shift)
	}
	for b, pos := range rg.index[:buckets] {
		if first := uint64(b) << rg.shift; !rg.ranges[pos].Contains(first) {
			t.Fatalf("ring of %d ranges: index[%d] = %d, range %+v does not hold %#x", n, b, pos, rg.ranges[pos], first)
		}
	}
	if int(rg.index[buckets]) != n-1 {
		t.Fatalf("ring of %d ranges: index[%d] = %d", n, buckets, rg.index[buckets])
	}
}

// TestIndexSize documents the index's memory: 4 bytes per bucket, 2 to 4
// bytes per range.
func TestIndexSize(t *testing.T) {
	for _, tc := range []struct{ shards, buckets int }{
		{1, 2}, {2, 2}, {3, 2}, {4, 4}, {1000, 512}, {1024, 1024}, {100_000, 65536}, {200_000, 131072},
	} {
		t.Run(fmt.Sprint(tc.shards), func(t *testing.T) {
			rg := mustEvenRing(t, 1, tc.shards)
			if got := len(rg.index) - 1; got != tc.buckets {
				t.Fatalf("%d buckets, want %d", got, tc.buckets)
			}
		})
	}
}
