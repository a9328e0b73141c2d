package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

var idleScenario = &scenario{
	Name:    "idle",
	Summary: "shards created and left idle: the CPU and the inter-node messages a cluster spends doing nothing",
	Variants: []variant{
		{Name: "plain", Desc: "one heartbeat message per follower per shard per heartbeat tick, every shard ticking",
			Engine: func(c *engine.Config) { c.DisableHeartbeatCoalescing, c.DisableQuiescence = true, true }},
		{Name: "coalesced", Desc: "heartbeats coalesced into one message per node pair per tick, every shard ticking",
			Engine: func(c *engine.Config) { c.DisableQuiescence = true }},
		{Name: "quiesced", Desc: "coalesced heartbeats, and idle shards stop ticking (the engine's default)"},
	},
	Params: []string{"shards"},
	Columns: []column{
		{"cpu_per_node_pct", "cpu/node", fmtPercent},
		{"cpu_total_pct", "cpu total", fmtPercent},
		{"msgs_per_s", "msgs/s", fmtCount},
		{"msgs_per_shard_s", "msgs/s/shard", fmtFloat},
		{"bytes_per_s", "bytes/s", fmtBytes},
		{"fsyncs_per_s", "fsyncs/s", fmtCount},
		{"quiesced_pct", "quiesced", fmtPercent},
		{"heap_bytes", "heap", fmtBytes},
	},
	Ratios: []string{"msgs_per_s", "cpu_per_node_pct"},
	Timing: settleTiming,
	Settle: true,
	Notes: []string{
		"cpu/node: the process's CPU (user+system) over the window divided by the number of nodes, in % of one core;" +
			" the nodes share one process, so this is their average, not a per-node measurement",
		"msgs/s: raft messages sent between nodes (transport counters; a coalesced heartbeat message counts one)," +
			" all node pairs together; bytes/s: their encoded size (engine PeerStats)",
		"quiesced: replicas quiesced at the end of the window (engine Stats().ShardsQuiesced) over all replicas",
	},
	Points: hugePoints,
	Run:    runIdle,
}

var scaleScenario = &scenario{
	Name: "scale",
	Summary: "memory per shard replica after creating the shards (--replicas each), and the time a restarted " +
		"node takes until every shard has a leader again",
	Variants: []variant{{Name: "default", Desc: "the engine's defaults"}},
	Params:   []string{"shards"},
	Columns: []column{
		{"heap_per_replica_bytes", "heap/replica", fmtBytes},
		{"rss_per_replica_bytes", "rss/replica", fmtBytes},
		{"create_s", "create+elect", fmtSeconds},
		{"open_s", "restart: open", fmtSeconds},
		{"restart_s", "restart: all led", fmtSeconds},
	},
	Ratios: []string{"heap_per_replica_bytes"},
	Timing: func(st Settings) string { return fmt.Sprintf("%v of settling after the elections", secs(st.Settle)) },
	Settle: true,
	Notes: []string{
		"heap/replica: Go heap in use (after GC) grown by creating the shards, divided by shards x replicas;" +
			" rss/replica the same for the process's resident memory (Pebble's caches and memtables included)",
		"restart: node 1 is closed and reopened; open is engine.New on its store, all led is from the reopen until" +
			" every shard has a leader and every replica on node 1 knows it",
	},
	Points: func(o *options) ([]point, error) {
		var ps []point
		for _, s := range o.shardList([]int{1000, 10000}) {
			ps = append(ps, point{Shards: s})
		}
		return ps, nil
	},
	Run: runScale,
}

// hugePoints are the shard counts 1,000 and 10,000, and 100,000 with
// --huge, unless --shards says otherwise.
func hugePoints(o *options) ([]point, error) {
	def := []int{1000, 10000}
	if o.huge {
		def = append(def, 100000)
	}
	var ps []point
	for _, s := range o.shardList(def) {
		ps = append(ps, point{Shards: s})
	}
	return ps, nil
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func runIdle(ctx context.Context, o *options, v variant, p point, dir string) (Row, error) {
	c, _, err := startCluster(ctx, o, v, dir, p.Shards)
	if err != nil {
		return Row{}, err
	}
	defer c.close()
	// Let the traffic of the elections (and of the leaders' first entries)
	// die down before the window.
	if err := pause(ctx, o.settle); err != nil {
		return Row{}, err
	}
	u0, msgs0, bytes0, syncs0 := readUsage(), c.messagesSent(), c.bytesSent(), c.syncs()
	if err := pause(ctx, o.duration); err != nil {
		return Row{}, err
	}
	u1, msgs1, bytes1, syncs1 := readUsage(), c.messagesSent(), c.bytesSent(), c.syncs()
	secs := u1.at.Sub(u0.at).Seconds()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	cpuPct := 100 * (u1.cpu - u0.cpu).Seconds() / secs
	r := Row{Seconds: secs, Metrics: map[string]float64{
		"cpu_total_pct":    cpuPct,
		"cpu_per_node_pct": cpuPct / float64(o.nodes),
		"msgs_per_s":       rate(msgs1-msgs0, secs),
		"msgs_per_shard_s": rate(msgs1-msgs0, secs) / float64(p.Shards),
		"bytes_per_s":      rate(bytes1-bytes0, secs),
		"fsyncs_per_s":     rate(syncs1-syncs0, secs),
		"quiesced_pct":     100 * float64(c.quiesced()) / float64(p.Shards*min(o.replicas, o.nodes)),
		"heap_bytes":       float64(ms.HeapInuse),
	}}
	return r, nil
}

// heapInUse returns the Go heap in use after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC() // the first one's finalizers free more
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// rss returns the process's resident set in bytes, 0 where /proc is not.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

func runScale(ctx context.Context, o *options, v variant, p point, dir string) (Row, error) {
	c, err := newCluster(o.clusterConfig(v, dir))
	if err != nil {
		return Row{}, err
	}
	defer c.close()
	heap0, rss0 := heapInUse(), rss()
	t0 := time.Now()
	descs := descriptors(p.Shards)
	if err := c.createShards(ctx, descs); err != nil {
		return Row{}, err
	}
	poll := pollInterval(p.Shards)
	if err := c.waitLeaders(ctx, descs, poll); err != nil {
		return Row{}, err
	}
	created := time.Since(t0)
	if err := pause(ctx, o.settle); err != nil {
		return Row{}, err
	}
	heap1, rss1 := heapInUse(), rss()
	replicas := float64(p.Shards * min(o.replicas, o.nodes))

	// Restart node 1.
	const victim = 1
	if err := c.stop(victim); err != nil {
		return Row{}, err
	}
	t1 := time.Now()
	if err := c.start(victim); err != nil {
		return Row{}, fmt.Errorf("restart node %d: %w", victim, err)
	}
	opened := time.Since(t1)
	if err := c.waitLeaders(ctx, descs, poll); err != nil {
		return Row{}, err
	}
	if err := waitKnowsLeaders(ctx, c, victim, c.replicasOn(descs, victim), poll); err != nil {
		return Row{}, err
	}
	restarted := time.Since(t1)
	return Row{Metrics: map[string]float64{
		"heap_per_replica_bytes": (float64(heap1) - float64(heap0)) / replicas,
		"rss_per_replica_bytes":  (float64(rss1) - float64(rss0)) / replicas,
		"create_s":               created.Seconds(),
		"open_s":                 opened.Seconds(),
		"restart_s":              restarted.Seconds(),
	}}, nil
}

// waitKnowsLeaders waits until node id hosts shards replicas and each knows
// a leader.
func waitKnowsLeaders(ctx context.Context, c *cluster, id uint64, shards int, poll time.Duration) error {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		if e := c.engine(id); e != nil {
			sts, err := e.Statuses(ctx)
			known := 0
			for _, st := range sts {
				if st.Leader != 0 {
					known++
				}
			}
			if err == nil && known == shards {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for node %d to know every leader: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}
