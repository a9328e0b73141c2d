package engine_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

// BenchmarkPropose measures replicated writes (16-byte values) on a 3-node
// in-process cluster whose stores are on disk with fsync on, with 1, 64 and
// 1,000 shards; "async" is the engine's path (durability off the workers),
// "sync-in-worker" the baseline whose workers commit and fsync each pass
// themselves (Config.SyncInWorker), in the same run.
func BenchmarkPropose(b *testing.B) {
	for _, shards := range []int{1, 64, 1000} {
		for _, mode := range []string{"sync-in-worker", "async"} {
			b.Run(fmt.Sprintf("shards=%d/%s", shards, mode), func(b *testing.B) {
				benchPropose(b, shards, mode, false, false)
			})
		}
	}
}

// BenchmarkProposeTransport compares the same batched writes over the
// in-process transport and over gRPC on loopback, in the same run.
func BenchmarkProposeTransport(b *testing.B) {
	for _, shards := range []int{64, 1000} {
		for _, tr := range []string{"mem", "grpc"} {
			b.Run(fmt.Sprintf("shards=%d/%s", shards, tr), func(b *testing.B) {
				benchPropose(b, shards, "async", tr == "grpc", false)
			})
		}
	}
}

// BenchmarkProposeSession compares plain writes with session writes
// (ProposeSession: exactly-once, one more read and two more writes in the
// apply batch per write), in the same run.
func BenchmarkProposeSession(b *testing.B) {
	for _, shards := range []int{1, 64} {
		for _, mode := range []string{"plain", "session"} {
			b.Run(fmt.Sprintf("shards=%d/%s", shards, mode), func(b *testing.B) {
				benchPropose(b, shards, "async", false, mode == "session")
			})
		}
	}
}

func benchPropose(b *testing.B, shards int, mode string, grpc, sessions bool) {
	c := testcluster.New(b, testcluster.Config{Nodes: 3, GRPC: grpc, Dir: b.TempDir(), Engine: func(cfg *engine.Config) {
		cfg.SyncInWorker = mode == "sync-in-worker"
		cfg.StoreCacheBytes = 64 << 20
		if m := os.Getenv("BENCH_MEMTABLE_MB"); m != "" {
			mb, _ := strconv.Atoi(m)
			cfg.MemTableBytes = uint64(mb) << 20
		}
		if w := os.Getenv("BENCH_WORKERS"); w != "" {
			cfg.Workers, _ = strconv.Atoi(w)
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	descs := testcluster.EvenDescriptors(1, shards)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		b.Fatal(err)
	}
	c.RunClock(200 * time.Millisecond)
	ids := make([]uint64, shards)
	for i, d := range descs {
		ids[i] = d.ShardID
	}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		b.Fatal(err)
	}
	leaders := c.Leaders(ctx)
	clients := max(64, shards)
	if v := os.Getenv("BENCH_CLIENTS"); v != "" {
		clients, _ = strconv.Atoi(v)
	}
	type target struct {
		e     *engine.Engine
		shard uint64
		key   []byte
	}
	targets := make([]target, clients)
	for i := range targets {
		d := descs[i%shards]
		targets[i] = target{e: c.Engine(leaders[d.ShardID]), shard: d.ShardID, key: keysOf(d, 1+i/shards)[i/shards]}
	}
	value := []byte("0123456789abcdef")
	syncs0 := totalSyncs(c)
	var next atomic.Int64
	var failed atomic.Int64
	b.ReportAllocs()
	if p := os.Getenv("BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := targets[i]
			cmd := engine.PutCommand(t.key, value)
			s := engine.Session{ID: uint64(i) + 1, Register: true} // one client, one write at a time
			for next.Add(1) <= int64(b.N) {
				var err error
				if sessions {
					s.Seq++
					s.Ack = s.Seq
					_, err = t.e.ProposeSession(ctx, t.shard, s, cmd)
					s.Register = false
				} else {
					_, err = t.e.Propose(ctx, t.shard, cmd)
				}
				if err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d proposals failed", f, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
	b.ReportMetric(float64(totalSyncs(c)-syncs0)/float64(b.N), "fsyncs/write")
	var passes, readies uint64
	for _, id := range c.IDs() {
		st := c.Engine(id).Stats()
		passes += st.Passes
		readies += st.Readies
		b.Logf("node %d: %+v commit/pass %v handle/pass %v", id, st, time.Duration(st.CommitNanos/st.Passes), time.Duration(st.PassNanos/st.Passes))
	}
	b.ReportMetric(float64(readies)/float64(passes), "shards/pass")
	states := map[string]int{}
	for _, id := range c.IDs() {
		sts, _ := c.Engine(id).Statuses(ctx)
		for _, st := range sts {
			for _, p := range st.Progress {
				if p.NodeID != id {
					states[p.State]++
				}
			}
		}
	}
	b.Logf("follower progress states: %v", states)

	b.ReportMetric(float64(passes)/elapsed.Seconds(), "passes/s")
}

func totalSyncs(c *testcluster.Cluster) uint64 {
	var n uint64
	for _, id := range c.IDs() {
		n += c.Engine(id).Stats().FileSyncs
	}
	return n
}
