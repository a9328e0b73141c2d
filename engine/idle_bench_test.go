package engine_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

// BenchmarkIdle measures what idle shards cost: 3 nodes over loopback gRPC,
// every shard with 3 replicas, no writes. "coalesced+quiesced" is the
// engine's default; "per-shard-heartbeats" the baseline (coalescing and
// quiescence off), in the same run. Reported: raft messages per second
// between all nodes, and CPU per node as a percentage of one core (the
// process's CPU divided by the nodes, which share it). Ticks are 100 ms.
// FLOTILLA_IDLE_SHARDS sets the shard count (default 10000).
func BenchmarkIdle(b *testing.B) {
	shards := 10000
	if v := os.Getenv("FLOTILLA_IDLE_SHARDS"); v != "" {
		shards, _ = strconv.Atoi(v)
	}
	for _, mode := range []string{"coalesced+quiesced", "per-shard-heartbeats"} {
		b.Run(fmt.Sprintf("shards=%d/%s", shards, mode), func(b *testing.B) {
			benchIdle(b, shards, mode != "coalesced+quiesced")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchIdle(b *testing.B, shards int, baseline bool) {
	c := testcluster.New(b, testcluster.Config{Nodes: 3, GRPC: true, Dir: b.TempDir(), Engine: func(cfg *engine.Config) {
		cfg.DisableHeartbeatCoalescing = baseline
		cfg.DisableQuiescence = baseline
		cfg.StoreCacheBytes = 32 << 20
		cfg.MemTableBytes = 16 << 20
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	descs := testcluster.EvenDescriptors(1, shards)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		b.Fatal(err)
	}
	c.RunClock(100 * time.Millisecond)
	ids := make([]uint64, shards)
	for i, d := range descs {
		ids[i] = d.ShardID
	}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		b.Fatal(err)
	}
	if !baseline {
		if err := c.WaitFor(ctx, "quiesced", quiescedEverywhere(c, uint64(shards))); err != nil {
			b.Fatal(err)
		}
	}
	const window = 5 * time.Second
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msgs0, cpu0, t0 := sentMessages(c), cpuTime(), time.Now()
		timer := time.NewTimer(window)
		<-timer.C // the measurement window: idle time is what is measured
		msgs, cpu, el := sentMessages(c)-msgs0, cpuTime()-cpu0, time.Since(t0)
		b.ReportMetric(float64(msgs)/el.Seconds(), "msgs/s")
		b.ReportMetric(100*cpu.Seconds()/el.Seconds()/3, "%cpu/node")
	}
	var q uint64
	for _, id := range c.IDs() {
		q += c.Engine(id).Stats().ShardsQuiesced
	}
	b.ReportMetric(float64(q)/3, "quiesced/node")
}
