package router

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

var benchShards = []int{1_000, 100_000}

// benchKeys returns n random 16-to-31-byte keys, fixed seed: benchmarks
// compare runs, so they do not vary the input.
func benchKeys(n int) [][]byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "user:%016x:%d", rnd.Uint64(), rnd.IntN(1000))
	}
	return keys
}

func benchRouter(b *testing.B, shards int) *Router {
	b.Helper()
	r := newTestRouter(b, DefaultConfig(), mustEvenRing(b, 1, shards))
	for i, shardID := range r.Ring().Shards() {
		if err := r.SetReplicas(shardID, []uint64{1, 2, 3}); err != nil {
			b.Fatal(err)
		}
		r.UpdateLeader(shardID, uint64(1+i%3), 1)
	}
	return r
}

// BenchmarkLookup: one Router.Lookup (hash, indexed search, route load).
//
//   - hotkey: the key is in the cache, as a request key just parsed would be,
//     but its bytes change every time so that it lands at a uniformly random
//     place in the ring: the ring and routes are as cold as the shard count
//     makes them. The worst case.
//   - keys64k: 64Ki distinct keys read from a 4 MB array, which adds the
//     keys' own cache misses.
//   - hot1k: 1,024 distinct keys (a skewed workload, a few hot partitions):
//     the code path with the touched ring and routes in the cache.
func BenchmarkLookup(b *testing.B) {
	for _, n := range benchShards {
		b.Run(fmt.Sprintf("hotkey/shards=%d", n), func(b *testing.B) {
			r := benchRouter(b, n)
			key := []byte("user:00:00000000:orders")
			b.ReportAllocs()
			var x uint64
			for b.Loop() {
				x += 0x9e3779b97f4a7c15
				binary.LittleEndian.PutUint64(key[8:], x) // aligned with xxhash's 8-byte reads
				rt, err := r.Lookup(key)
				if err != nil || rt.ShardID == 0 {
					b.Fatal(rt, err)
				}
			}
		})
		for _, nkeys := range []int{1 << 16, 1 << 10} {
			name := map[int]string{1 << 16: "keys64k", 1 << 10: "hot1k"}[nkeys]
			b.Run(fmt.Sprintf("%s/shards=%d", name, n), func(b *testing.B) {
				r := benchRouter(b, n)
				keys := benchKeys(nkeys)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					rt, err := r.Lookup(keys[i&(len(keys)-1)])
					if err != nil || rt.ShardID == 0 {
						b.Fatal(rt, err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkLookupSearch compares, on one table and in one run, Lookup's
// indexed search with a binary search over the whole ring (what Lookup did
// before the index), each followed by the route load, as hotkey above.
func BenchmarkLookupSearch(b *testing.B) {
	for _, n := range benchShards {
		r := benchRouter(b, n)
		for _, search := range []string{"index", "binary"} {
			b.Run(fmt.Sprintf("%s/shards=%d", search, n), func(b *testing.B) {
				key := []byte("user:00:00000000:orders")
				b.ReportAllocs()
				var x uint64
				for b.Loop() {
					x += 0x9e3779b97f4a7c15
					binary.LittleEndian.PutUint64(key[8:], x)
					t := r.table.Load()
					h := t.rule.Hash(key)
					var i int
					if search == "index" {
						i = t.ring.search(h)
					} else {
						i = searchRange(t.ring.lasts, 0, len(t.ring.lasts)-1, h)
					}
					if rt := *t.routes[i].Load(); rt.ShardID == 0 {
						b.Fatal(rt)
					}
				}
			})
		}
	}
}

// BenchmarkLookupParallel: Lookup from all Ps at once (uniformly random
// positions, as hotkey above); readers share nothing they write.
func BenchmarkLookupParallel(b *testing.B) {
	for _, n := range benchShards {
		b.Run(fmt.Sprintf("shards=%d", n), func(b *testing.B) {
			r := benchRouter(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				key := []byte("user:00:00000000:orders")
				x := rand.Uint64()
				for pb.Next() {
					x += 0x9e3779b97f4a7c15
					binary.LittleEndian.PutUint64(key[8:], x)
					if _, err := r.Lookup(key); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkUpdateLeader: the cost of applying one leader change (a higher
// term, so it always applies) to a random shard, with no subscriber and with
// one that is drained every 4,096 changes.
func BenchmarkUpdateLeader(b *testing.B) {
	for _, n := range benchShards {
		for _, subs := range []int{0, 1} {
			b.Run(fmt.Sprintf("shards=%d/subs=%d", n, subs), func(b *testing.B) {
				r := benchRouter(b, n)
				shards := r.Ring().Shards()
				var s *Subscription
				if subs > 0 {
					s = r.Subscribe()
					defer s.Close()
				}
				rnd := rand.New(rand.NewPCG(3, 4))
				b.ReportAllocs()
				term := uint64(1)
				for b.Loop() {
					term++
					if !r.UpdateLeader(shards[rnd.IntN(len(shards))], 1+term%3, term) {
						b.Fatal("not applied")
					}
					if s != nil && term%4096 == 0 {
						if _, err := s.Next(b.Context()); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkSetRing: the cost of installing a new ring generation, which
// rebuilds the whole table; what every leader change would cost if the
// table were copied whole.
func BenchmarkSetRing(b *testing.B) {
	for _, n := range benchShards {
		b.Run(fmt.Sprintf("shards=%d", n), func(b *testing.B) {
			r := benchRouter(b, n)
			ids := r.Ring().Shards()
			gen := uint64(1)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				gen++
				ring, err := EvenRing(gen, ids)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := r.SetRing(ring); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
