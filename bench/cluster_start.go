package main

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	flnode "github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/placement"
)

var clusterStartScenario = &scenario{
	Name: "cluster-start",
	Summary: "--nodes full nodes (gossip, the meta shard, gRPC on loopback) bootstrap --shards shards of --replicas replicas:" +
		" the time until StartCluster returns and until every shard is led, idle CPU and memory, then a restart of every node" +
		" on its data directory until every shard is led again, and the leader spread after each",
	Variants: []variant{
		{Name: "one-by-one", Desc: "the bootstrap creates the initial shards one by one, a synced write each, and leaders stay where the elections put them (BootstrapBatch 1, NoLeaderHandBack: the nodes before this scenario)",
			Node: func(c *flnode.ClusterConfig) { c.BootstrapBatch, c.NoLeaderHandBack = 1, true }},
		{Name: "batched", Desc: "the initial shards created " + fmt.Sprint(flnode.DefaultBootstrapBatch) + " per engine call, one synced write per worker each; leaders stay where the elections put them (NoLeaderHandBack)",
			Node: func(c *flnode.ClusterConfig) { c.NoLeaderHandBack = true }},
		{Name: "ticking-start", Desc: "batched with the leaderships handed back, but every replica a node reopens ticks from its start and elects on raft's randomized timeouts (engine TickingStart: the nodes before the quiesced start)",
			Node: withEngine(func(ec *engine.Config) { ec.TickingStart = true })},
		{Name: "in-queue", Desc: "the defaults, but each node's per-tick message (coalesced heartbeats, and liveness) waits behind the raft traffic queued for its peer instead of going ahead of it (engine NoPriority: the nodes before SendPriority)",
			Node: withEngine(func(ec *engine.Config) { ec.NoPriority = true })},
		{Name: "no-yield", Desc: "the defaults, but each engine worker keeps its processor for a whole cycle however long, instead of yielding after a millisecond (engine NoYield: the nodes before worker.yield)",
			Node: withEngine(func(ec *engine.Config) { ec.NoYield = true })},
		{Name: "meta-in-bulk", Desc: "the defaults, but the meta shard shares the engine workers and the send queues with the user shards instead of having a worker of its own and its messages ahead of the queue (engine PriorityShards empty: the nodes before it)",
			Node: withEngine(func(ec *engine.Config) { ec.PriorityShards = nil })},
		{Name: "busy-on-message", Desc: "the defaults, but a leader that stepped a message in a worker cycle (its followers' heartbeat responses) is not idle at that cycle's tick and does not quiesce (engine BusyOnMessage: the nodes before idleLeader looked at raft alone)",
			Node: withEngine(func(ec *engine.Config) { ec.BusyOnMessage = true })},
		{Name: "2026-11-30", Desc: "no-yield, meta-in-bulk and busy-on-message together: the nodes as they were before these three changes",
			Node: withEngine(func(ec *engine.Config) { ec.NoYield, ec.PriorityShards, ec.BusyOnMessage = true, nil, true })},
		{Name: "idle-2026-12-01", Desc: "the defaults, but idle shards' sizes measured every 30 s (shardload SizeRefresh = its window), the stale-replica loop's every pass made and merge recovery every 5 s (EveryPass), and the placement driver idle for IdleInterval whatever its steps cost (IdleCostRatio 1): the nodes before these changes",
			Node: func(c *flnode.ClusterConfig) {
				c.ShardLoad.SizeRefresh, c.EveryPass = 30*time.Second, true
				prev := c.Placement
				c.Placement = func(dc *placement.DriverConfig) {
					if prev != nil {
						prev(dc)
					}
					dc.IdleCostRatio = 1
				}
			}},
		{Name: "default", Desc: "the nodes' defaults: batched; a node reopens its replicas quiesced and each shard's designated voter (shard ID mod voters) campaigns, 128 a tick per node; once every shard it hosts is led each node hands its leaderships to their designated nodes"},
	},
	Ratios: []string{"led_s", "restart_led_s"},
	Params: []string{"shards"},
	Columns: []column{
		{"bootstrap_s", "bootstrap", fmtSeconds},
		{"led_s", "all led", fmtSeconds},
		{"balanced_s", "in band", fmtSeconds},
		{"leaders_min", "leaders min", fmtCount},
		{"leaders_max", "max", fmtCount},
		{"leaders_in_band", "band", fmtBand},
		{"restart_led_s", "restart: all led", fmtSeconds},
		{"restart_balanced_s", "in band", fmtSeconds},
		{"restart_leaders_min", "leaders min", fmtCount},
		{"restart_leaders_max", "max", fmtCount},
		{"restart_leaders_in_band", "band", fmtBand},
		{"cpu_per_node_pct", "idle cpu/node", fmtPercent},
		{"rss_per_replica_bytes", "rss/replica", fmtBytes},
	},
	Timing: func(st Settings) string {
		return fmt.Sprintf("idle CPU over %v after %v of settling; every wait bounded by %v", secs(st.Duration), secs(st.Settle), clusterStartTimeout)
	},
	Settle: true,
	Notes: []string{
		"bootstrap: from starting the nodes (StartCluster, all at once, fresh data directories) until every one returned" +
			" (each created its replicas and registered in the meta shard); all led: from the same start until every replica" +
			" on every node knows a leader (engine Stats: ShardsLed = Shards; polled every " + ledPoll.String() + ")",
		"in band: from the start until the user shards each node leads (Admin LocalShards, polled every " + balancePoll.String() +
			" once all are led) are within placement.WithinBand (±max(5% of the mean, 2)) of the mean; blank if not within " +
			leaderBandWait.String() + " after all led; leaders min, max: the fewest and most a node leads then; band: ok or OUT" +
			" (the JSON's timeline has the count of each node)",
		"restart: every node closed, then started again at once on its data directory; all led from that start",
		"idle cpu/node: the process's CPU over the window after the first start settled, divided by the nodes" +
			" (they share the process: their average); rss/replica: resident memory grown from before the start to the" +
			" window, divided by shards x replicas",
	},
	Points: hugePoints,
	Settings: func(o *options, st *Settings) time.Duration {
		st.Transport = "grpc"
		return 0 // the elections take what they take
	},
	Run: runClusterStart,
}

// withEngine returns a variant's Node function that changes the nodes'
// engine configuration with adjust, after what the run set.
func withEngine(adjust func(*engine.Config)) func(*flnode.ClusterConfig) {
	return func(c *flnode.ClusterConfig) {
		prev := c.Engine
		c.Engine = func(ec *engine.Config) {
			if prev != nil {
				prev(ec)
			}
			adjust(ec)
		}
	}
}

// clusterStartTimeout bounds each start of the cluster-start scenario,
// until every shard is led.
const clusterStartTimeout = 15 * time.Minute

// ledPoll is how often cluster-start looks whether every shard is led.
const ledPoll = 100 * time.Millisecond

func runClusterStart(ctx context.Context, o *options, v variant, p point, dir string) (Row, error) {
	row := Row{Metrics: map[string]float64{}}
	replicas := p.Shards * min(o.replicas, o.nodes)
	fc, err := newFullCluster(o, v, dir)
	if err != nil {
		return Row{}, err
	}
	defer fc.close()
	bootstrap := func(i int, cfg *flnode.ClusterConfig) {
		cfg.BootstrapExpect, cfg.InitialShards, cfg.Replication = o.nodes, p.Shards, o.replicas
		if i == 0 {
			cfg.GossipAddr, cfg.Join = fc.seed, nil
		}
	}
	// start starts every node and waits until every replica is led; it
	// sets the metrics prefix+"bootstrap_s", "led_s" and the leader counts.
	start := func(what, prefix string) error {
		sctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
		defer cancel()
		name := o.runName
		o.runName += "-" + what
		stop := o.startProfile()
		defer func() { stop(); o.runName = name }()
		t0 := time.Now()
		if err := fc.add(sctx, o.nodes, bootstrap); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		row.Metrics[prefix+"bootstrap_s"] = time.Since(t0).Seconds()
		if err := fc.waitLed(sctx, replicas, t0, &row.Timeline, what); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		row.Metrics[prefix+"led_s"] = time.Since(t0).Seconds()
		stop()
		leaders, balanced, err := fc.waitLeadersInBand(sctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if balanced {
			row.Metrics[prefix+"balanced_s"] = time.Since(t0).Seconds()
		}
		row.Timeline = append(row.Timeline, fmt.Sprintf("%s: leaders per node %s", what, perNode(leaders)))
		lo, hi := minMax(leaders)
		row.Metrics[prefix+"leaders_min"], row.Metrics[prefix+"leaders_max"] = float64(lo), float64(hi)
		row.Metrics[prefix+"leaders_in_band"] = 0
		if placement.WithinBand(leaders, placement.Config{}) == nil {
			row.Metrics[prefix+"leaders_in_band"] = 1
		}
		return nil
	}

	// What an earlier variant of the run left in the heap goes back to the
	// OS first: its pages would count against this one's growth.
	debug.FreeOSMemory()
	rss0 := rss()
	if err := start("start", ""); err != nil {
		return row, err
	}
	if err := pause(ctx, o.settle); err != nil {
		return row, err
	}
	rss1 := rss()
	u0 := readUsage()
	name := o.runName
	o.runName += "-idle"
	stop := o.startProfile() // --cpuprofile: the idle window too
	err = pause(ctx, o.duration)
	stop()
	o.runName = name
	if err != nil {
		return row, err
	}
	u1 := readUsage()
	row.Seconds = u1.at.Sub(u0.at).Seconds()
	row.Metrics["cpu_per_node_pct"] = 100 * (u1.cpu - u0.cpu).Seconds() / row.Seconds / float64(o.nodes)
	row.Metrics["rss_per_replica_bytes"] = (float64(rss1) - float64(rss0)) / float64(replicas)
	row.Metrics["heap_bytes"] = float64(heapInUse())

	t := time.Now()
	fc.stopNodes()
	row.Metrics["close_s"] = time.Since(t).Seconds()
	if err := start("restart", "restart_"); err != nil {
		return row, err
	}
	return row, nil
}

// leaderBandWait bounds the wait, once every shard is led, until the
// leaders per node are within the placement band.
const leaderBandWait = 20 * time.Second

// waitLeadersInBand polls the leaders per node until they are within the
// placement band, for up to leaderBandWait; it returns the last counts and
// whether they are.
func (fc *fullCluster) waitLeadersInBand(ctx context.Context) (map[uint64]int, bool, error) {
	wctx, cancel := context.WithTimeout(ctx, leaderBandWait)
	defer cancel()
	t := time.NewTicker(balancePoll)
	defer t.Stop()
	var leaders map[uint64]int
	for wctx.Err() == nil {
		if _, l, err := fc.counts(wctx); err == nil {
			leaders = l
			if placement.WithinBand(leaders, placement.Config{}) == nil {
				return leaders, true, nil
			}
		}
		select {
		case <-wctx.Done():
		case <-t.C:
		}
	}
	if leaders == nil {
		_, l, err := fc.counts(ctx)
		if err != nil {
			return nil, false, err
		}
		leaders = l
	}
	return leaders, false, nil
}

// waitLed waits until the nodes host at least replicas replicas between
// them and every one knows its shard's leader (engine Stats, cheap at any
// number of shards); every second it adds a sample to timeline.
func (fc *fullCluster) waitLed(ctx context.Context, replicas int, t0 time.Time, timeline *[]string, what string) error {
	t := time.NewTicker(ledPoll)
	defer t.Stop()
	lastSample := t0
	for {
		hosted, led, snaps, quiesced := 0, uint64(0), uint64(0), uint64(0)
		for _, n := range fc.nodes {
			s := n.Engine.Stats()
			hosted += s.Shards
			led += min(s.ShardsLed, uint64(s.Shards))
			snaps += s.SnapshotsRecv
			quiesced += s.ShardsQuiesced
		}
		if hosted >= replicas && led == uint64(hosted) {
			*timeline = append(*timeline, fmt.Sprintf("%s %6.1fs: every replica led (%d), %d snapshots received, %d quiesced", what, time.Since(t0).Seconds(), hosted, snaps, quiesced))
			return nil
		}
		if time.Since(lastSample) >= time.Second {
			lastSample = time.Now()
			*timeline = append(*timeline, fmt.Sprintf("%s %6.1fs: %d of %d replicas know a leader, %d snapshots received, %d quiesced", what, time.Since(t0).Seconds(), led, hosted, snaps, quiesced))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting until every shard is led: %d of %d replicas know a leader: %w", led, hosted, ctx.Err())
		case <-t.C:
		}
	}
}

// perNode shows counts in node order: "1: 3334, 2: 3333, 3: 3333".
func perNode(counts map[uint64]int) string {
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d: %d", id, counts[id]))
	}
	return strings.Join(parts, ", ")
}

func minMax(counts map[uint64]int) (lo, hi int) {
	first := true
	for _, c := range counts {
		if first {
			lo, hi, first = c, c, false
		}
		lo, hi = min(lo, c), max(hi, c)
	}
	return lo, hi
}

func fmtBand(v float64) string {
	if v == 1 {
		return "ok"
	}
	return "OUT"
}
