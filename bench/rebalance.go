package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/placement"
)

var rebalanceScenario = &scenario{
	Name: "rebalance",
	Summary: "full nodes (gossip, placement driver) under writes through the Go client to every shard; --joins nodes join" +
		" after --phase: the time until every node's replicas and leaders are within the placement band, the bytes moved," +
		" writes/s and p99 before, during and after",
	Variants: []variant{
		{Name: "serial", Desc: "the placement driver makes one Actuator call at a time (MaxParallelSteps 1: the driver before parallel steps)",
			Driver: func(c *placement.DriverConfig) { c.MaxParallelSteps = 1 }},
		{Name: "default", Desc: "the nodes' defaults, the placement driver as the --placement-* flags say (the steps of the operations in flight at once)"},
	},
	Params: []string{"shards", "clients"},
	Timing: func(st Settings) string {
		rb := st.Rebalance
		if rb == nil {
			return ""
		}
		return fmt.Sprintf("%v before %d nodes join and %v after the balance (awaited up to %v, polled every %v), after %v of warm-up;"+
			" placement driver: at most %d replica moves a minute, %d snapshots per receiving node, %d operations in flight",
			secs(rb.Phase), rb.Joins, secs(rb.Phase), secs(rb.BalanceTimeout), balancePoll, secs(st.Warmup),
			rb.MovesPerMinute, rb.SnapshotsPerNode, rb.PlacementOps)
	},
	Warmup: true,
	Columns: slices.Concat([]column{
		{"balance_s", "balanced in", fmtSeconds},
		{"snapshot_bytes", "moved", fmtBytes},
		{"snapshots", "snapshots", fmtCount},
		{"replica_spread_before", "repl spread before", fmtCount},
		{"replica_spread_after", "after", fmtCount},
		{"leader_spread_before", "lead spread before", fmtCount},
		{"leader_spread_after", "after", fmtCount},
	}, phaseColumns, []column{
		{"placement_ops", "ops done", fmtCount},
		{"move_p50_s", "move p50", fmtSeconds},
	}),
	Notes: []string{
		"balanced in: from the joins until every node's counts, by its Admin LocalShards (user shards it holds a replica of," +
			" and leads), are within placement.WithinBand (±max(5% of the mean, 2)); polled every " + balancePoll.String(),
		"moved: bytes of the snapshot sstables the receiving nodes staged from the joins to the balance (files under each" +
			" store's snapshots/, counted through engine.Config.FS); snapshots: those sent (engine Stats().SnapshotsSent)",
		"spread: largest minus smallest count over the nodes; before: just before the joins; after: at the balance" +
			" (at the timeout if none)",
		"writes: Puts through the Go client over gRPC, client i writing the keys of shards i, i+clients, ... in turn, each" +
			" bounded by --op-timeout; before: --phase before the joins; during: the joins to the balance; after: --phase after it",
		"ops done: placement operations that succeeded from the joins to the balance (the meta shard's leader's driver," +
			" Admin Placement STATUS); move p50: median time of a rebalance-replica move (Admin Placement MOVES)",
		"failed: the writes that returned an error in any phase: every client error counts",
	},
	Points: func(o *options) ([]point, error) {
		var ps []point
		for _, s := range o.shardList([]int{1000}) {
			clients := o.clientsFor(s)
			if o.clients == 0 && o.clientsPerShard == 0 {
				clients = remoteClients
			}
			ps = append(ps, point{Shards: s, Payload: o.payloadList([]int{128})[0], Clients: clients})
		}
		return ps, nil
	},
	Settings: func(o *options, st *Settings) time.Duration {
		st.Transport = "grpc"
		st.Duration = 0
		st.Rebalance = &RebalanceSettings{
			Phase: o.phase.Seconds(), BalanceTimeout: o.balanceTimeout.Seconds(), Joins: o.joins,
			MovesPerMinute: o.movesPerMinute, SnapshotsPerNode: o.snapshotsPerNode, PlacementOps: o.placementOps,
		}
		return 0 // the balance takes what it takes
	},
	Run: runRebalance,
}

// RebalanceSettings are the rebalance scenario's options.
type RebalanceSettings struct {
	Phase          float64 `json:"phase_s"`
	BalanceTimeout float64 `json:"balance_timeout_s"`
	Joins          int     `json:"joins"`
	// The placement driver's limits (placement.DriverConfig).
	MovesPerMinute   int `json:"moves_per_minute"`
	SnapshotsPerNode int `json:"snapshots_per_node"`
	PlacementOps     int `json:"placement_ops_in_flight"`
}

// balancePoll is how often the rebalance is looked at.
const balancePoll = 500 * time.Millisecond

// timelineEvery: one sample in this many goes into the row's timeline.
const timelineEvery = 10

func rebalanceFlags(fs *flag.FlagSet, o *options) {
	d := placement.DefaultDriverConfig()
	fs.DurationVar(&o.phase, "phase", 10*time.Second, "rebalance: measured load before the joins, and after the balance;"+
		" split: before the first split, and after the last")
	fs.DurationVar(&o.balanceTimeout, "balance-timeout", 10*time.Minute, "rebalance: how long after the joins the balance is awaited")
	fs.IntVar(&o.joins, "joins", 2, "rebalance: nodes that join the cluster of --nodes")
	fs.IntVar(&o.movesPerMinute, "placement-moves-per-minute", d.MovesPerMinute, "rebalance: replica moves the placement driver starts per minute, at most")
	fs.IntVar(&o.snapshotsPerNode, "placement-snapshots-per-node", d.Placement.MaxSnapshotsPerNode, "rebalance: replicas a node receives at once, at most")
	fs.IntVar(&o.placementOps, "placement-max-ops", d.MaxConcurrentOps, "rebalance: placement operations in flight, at most")
	fs.StringVar(&o.nodeLog, "node-log", "", "rebalance: write the nodes' logs (and the bench's samples) to this file (default: discarded)")
}

// checkRebalance refuses what rebalance does not support.
func (o *options) checkRebalance(s *scenario) error {
	if s.Name != "rebalance" {
		return nil
	}
	var errs []error
	if o.set["duration"] {
		errs = append(errs, errors.New("rebalance measures --phase before the joins and after the balance, and the time between: no --duration"))
	}
	if o.set["transport"] {
		errs = append(errs, errors.New("rebalance runs full nodes, which talk gRPC: no --transport"))
	}
	if o.phase <= 0 || o.balanceTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--phase %v and --balance-timeout %v must be positive", o.phase, o.balanceTimeout))
	}
	if o.joins < 1 {
		errs = append(errs, fmt.Errorf("--joins %d < 1", o.joins))
	}
	if o.replicas > o.nodes {
		errs = append(errs, fmt.Errorf("--replicas %d > --nodes %d: the cluster bootstraps with every replica", o.replicas, o.nodes))
	}
	if o.movesPerMinute < 1 || o.snapshotsPerNode < 1 || o.placementOps < 1 { // 0 would take the driver's default
		errs = append(errs, fmt.Errorf("--placement-moves-per-minute %d, --placement-snapshots-per-node %d and --placement-max-ops %d must be at least 1",
			o.movesPerMinute, o.snapshotsPerNode, o.placementOps))
	}
	return errors.Join(errs...)
}

// rotatingWrites is the load's operation: client i writes the keys of ws
// i, i+clients, i+2·clients, ... in turn (ws[j] holds a key of shard j mod
// shards: every shard is written).
func rotatingWrites(ws []*remoteWriter, clients int) opFunc {
	return func(ctx context.Context, client int, seq uint64) (opKind, error) {
		n := uint64((len(ws) - client + clients - 1) / clients)
		return opWrite, ws[client+clients*int(seq%n)].write(ctx, client, seq)
	}
}

func runRebalance(ctx context.Context, o *options, v variant, p point, dir string) (Row, error) {
	fc, err := startFullCluster(ctx, o, v, dir, p.Shards)
	if err != nil {
		return Row{}, err
	}
	defer fc.close()
	rc, err := dialRemote(ctx, fc.clientAddrs(), o.opTimeout)
	if err != nil {
		return Row{}, err
	}
	defer rc.close()
	if len(rc.shards) != p.Shards {
		return Row{}, fmt.Errorf("the client's ring has %d shards, want %d", len(rc.shards), p.Shards)
	}
	ws, err := remoteWriters(o, rc, max(p.Clients, p.Shards), p.Payload)
	if err != nil {
		return Row{}, err
	}
	spec := loadSpec{clients: p.Clients, duration: o.phase, grace: o.opTimeout, done: o.hooks.done, op: rotatingWrites(ws, p.Clients)}
	warm := warmUp(ctx, o, spec)

	w := &rebalanceWatch{fc: fc, stats: map[uint64]placement.Stats{}}
	u0 := readUsage()
	before := runLoad(ctx, spec)
	if err := w.sample(ctx); err != nil {
		return Row{}, fmt.Errorf("before the joins: %w", err)
	}
	repBefore, leadBefore := w.replicas, w.leaders
	w.start, w.base = time.Now(), maps.Clone(w.stats)
	snaps0, bytes0 := fc.snapshotsSent(), fc.snapBytes.Load()

	// During: the load runs while the nodes join, until the balance.
	stop, loaded := make(chan struct{}), make(chan struct{})
	dspec := spec
	dspec.duration, dspec.seqBase, dspec.stop = o.balanceTimeout, 1<<29, stop
	var during *tally
	stopProfile := o.startProfile()
	go func() {
		defer close(loaded)
		during = runLoad(ctx, dspec)
	}()
	balancedAt, balErr := w.await(ctx, o.joins, w.start.Add(o.balanceTimeout))
	close(stop)
	<-loaded
	stopProfile()
	snaps1, bytes1, atBalance := fc.snapshotsSent(), fc.snapBytes.Load(), maps.Clone(w.stats)
	repAfter, leadAfter := w.replicas, w.leaders

	after := runAfter(ctx, spec, balErr == nil)
	u1 := readUsage()

	r := phasedRow(warm, before, during, after, u0, u1)
	m := r.Metrics
	m["replica_spread_before"], m["leader_spread_before"] = spreadOf(repBefore), spreadOf(leadBefore)
	m["replica_spread_after"], m["leader_spread_after"] = spreadOf(repAfter), spreadOf(leadAfter)
	m["snapshots"], m["snapshot_bytes"] = float64(snaps1-snaps0), float64(bytes1-bytes0)
	m["snapshots_total"], m["snapshot_bytes_total"] = float64(fc.snapshotsSent()-snaps0), float64(fc.snapBytes.Load()-bytes0)
	opsMetrics(m, w.base, atBalance, "")
	if balErr == nil {
		m["balance_s"] = balancedAt.Sub(w.start).Seconds()
		if err := w.sample(ctx); err == nil { // at the end of the after phase
			m["replica_spread_end"], m["leader_spread_end"] = spreadOf(w.replicas), spreadOf(w.leaders)
			opsMetrics(m, atBalance, w.stats, "after_")
		}
	}
	end := balancedAt
	if balErr != nil {
		end = time.Now()
	}
	if leader, moves, err := fc.placementMoves(ctx); err == nil {
		moveMetrics(m, moves, w.start, end)
		m["moves_from_node"] = float64(leader)
	} else {
		r.Errors = append(r.Errors, err.Error())
	}
	m["drivers_seen"] = float64(len(w.stats))
	r.Timeline = w.timeline
	return r, balErr
}

// phaseColumns show phasedRow's writes/s and p99 before, during and after.
var phaseColumns = []column{
	{"writes_per_s_before", "writes/s before", fmtCount},
	{"writes_per_s_during", "during", fmtCount},
	{"writes_per_s_after", "after", fmtCount},
	{"before_write_p99_us", "p99 before", fmtMicros},
	{"during_write_p99_us", "during", fmtMicros},
	{"after_write_p99_us", "after", fmtMicros},
}

// runAfter runs spec as the phase after something (its seq numbers from
// 1<<30 on) if ok, and returns what it did; nil if not ok.
func runAfter(ctx context.Context, spec loadSpec, ok bool) *tally {
	if !ok {
		return nil
	}
	spec.seqBase = 1 << 30
	return runLoad(ctx, spec)
}

// phasedRow is the row of a load in three phases (before, during and
// after something; after is nil if it did not run) after a warm-up: the
// whole load's figures, and each phase's writes/s and write latencies.
func phasedRow(warm, before, during, after *tally, u0, u1 usage) Row {
	total := &tally{}
	for _, t := range []*tally{before, during, after} {
		if t != nil {
			total.merge(t)
			total.elapsed += t.elapsed
		}
	}
	r := loadRow(total, u0, u1)
	m := r.Metrics
	phaseMetrics(m, "before", before)
	phaseMetrics(m, "during", during)
	phaseMetrics(m, "after", after)
	m["warmup_failed"] = float64(warm.failures())
	for _, e := range warm.errors() {
		r.Errors = append(r.Errors, "warm-up: "+e)
	}
	return r
}

// phaseMetrics sets the writes/s and write latencies of a phase's load
// ("writes_per_s_<name>", "<name>_write_p99_us", ...), nothing if t is nil.
func phaseMetrics(m map[string]float64, name string, t *tally) {
	if t == nil {
		return
	}
	m["writes_per_s_"+name] = rate(t.acked[opWrite], t.elapsed.Seconds())
	m["failed_"+name] = float64(t.failures())
	latencyMetrics(m, name+"_write_", t.lat[opWrite])
}

// spreadOf returns the largest minus the smallest count.
func spreadOf(counts map[uint64]int) float64 {
	if len(counts) == 0 {
		return 0
	}
	vs := slices.Collect(maps.Values(counts))
	return float64(slices.Max(vs) - slices.Min(vs))
}

// opsMetrics sets the placement operations the drivers finished between
// from and to (each driver's counters, by node): prefix+"placement_ops"
// (succeeded), "..._failed", "..._dropped", and the succeeded by kind
// (prefix+"ops_rebalance_replica", ...).
func opsMetrics(m map[string]float64, from, to map[uint64]placement.Stats, prefix string) {
	var ok, failed, dropped uint64
	for id, st := range to {
		b := from[id] // zero if this driver was not seen before
		for k, n := range st.Succeeded {
			d := n - b.Succeeded[k]
			ok += d
			m[prefix+"ops_"+strings.ReplaceAll(k.String(), "-", "_")] += float64(d)
		}
		for k, n := range st.Failed {
			failed += n - b.Failed[k]
		}
		for k, n := range st.Dropped {
			dropped += n - b.Dropped[k]
		}
	}
	m[prefix+"placement_ops"], m[prefix+"placement_ops_failed"], m[prefix+"placement_ops_dropped"] = float64(ok), float64(failed), float64(dropped)
}

// moveMetrics sets the times of the operations that finished between
// start and end (of the driver that answered MOVES): the p50, p90 and max
// of a succeeded rebalance-replica move and the p50 of a leadership
// transfer, and the longest time in which no operation finished (a stall).
func moveMetrics(m map[string]float64, moves []placement.Move, start, end time.Time) {
	var replica, leader []time.Duration
	var finished []time.Time
	for _, mv := range moves {
		if mv.Outcome == placement.Running || mv.Started.Before(start) || mv.Finished.After(end) {
			continue
		}
		finished = append(finished, mv.Finished)
		switch {
		case mv.Outcome != placement.Succeeded:
		case mv.Op.Kind == placement.RebalanceReplica:
			replica = append(replica, mv.Finished.Sub(mv.Started))
		case mv.Op.Kind == placement.TransferLeader:
			leader = append(leader, mv.Finished.Sub(mv.Started))
		}
	}
	m["moves_recorded"] = float64(len(finished))
	if len(replica) > 0 {
		ps := percentiles(replica, 0.5, 0.9, 1)
		m["move_p50_s"], m["move_p90_s"], m["move_max_s"] = ps[0].Seconds(), ps[1].Seconds(), ps[2].Seconds()
	}
	if len(leader) > 0 {
		m["transfer_p50_s"] = percentiles(leader, 0.5)[0].Seconds()
	}
	slices.SortFunc(finished, func(a, b time.Time) int { return a.Compare(b) })
	gap, prev := time.Duration(0), start
	for _, f := range append(finished, end) {
		gap, prev = max(gap, f.Sub(prev)), f
	}
	m["longest_gap_s"] = gap.Seconds()
}

// rebalanceWatch follows a rebalance from outside, as an operator would:
// the nodes' replica and leader counts (Admin LocalShards) and the
// placement drivers' counters (Admin Placement STATUS, which the meta
// shard's leader answers).
type rebalanceWatch struct {
	fc                *fullCluster
	start             time.Time                  // the joins
	replicas, leaders map[uint64]int             // by node, at the last sample
	stats             map[uint64]placement.Stats // each driver's counters as last seen, by node
	base              map[uint64]placement.Stats // stats at start
	last              placement.Stats            // the counters of the last sample
	timeline          []string
}

// sample reads the counts and the counters of the meta shard leader's
// driver.
func (w *rebalanceWatch) sample(ctx context.Context) error {
	replicas, leaders, err := w.fc.counts(ctx)
	if err != nil {
		return err
	}
	id, st, err := w.fc.placementStats(ctx)
	if err != nil {
		return err
	}
	w.replicas, w.leaders, w.stats[id], w.last = replicas, leaders, st, st
	return nil
}

func (w *rebalanceWatch) balanced() error {
	if err := placement.WithinBand(w.replicas, placement.Config{}); err != nil {
		return fmt.Errorf("replicas: %w", err)
	}
	if err := placement.WithinBand(w.leaders, placement.Config{}); err != nil {
		return fmt.Errorf("leaders: %w", err)
	}
	return nil
}

// await starts joins nodes, then samples every balancePoll until the
// counts are balanced or the deadline passes; it returns when the
// balanced sample began.
func (w *rebalanceWatch) await(ctx context.Context, joins int, deadline time.Time) (time.Time, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := w.fc.join(ctx, joins); err != nil {
		return time.Time{}, fmt.Errorf("%d nodes joining: %w", joins, err)
	}
	t := time.NewTicker(balancePoll)
	defer t.Stop()
	for i := 0; ; i++ {
		at := time.Now()
		err := w.sample(ctx)
		if err == nil {
			err = w.balanced()
		}
		if i%timelineEvery == 0 || err == nil {
			w.note(at, err)
		}
		if err == nil {
			return at, nil
		}
		select {
		case <-ctx.Done():
			w.note(time.Now(), err)
			return time.Time{}, fmt.Errorf("not balanced %v after the joins (%v): %w",
				time.Since(w.start).Round(time.Second), err, ctx.Err())
		case <-t.C:
		}
	}
}

// note adds a sample to the timeline (and the nodes' log): the counts of
// each node in the order they started, the operations done since the
// joins, those in flight and the plans the driver made (one per step).
func (w *rebalanceWatch) note(at time.Time, err error) {
	m := map[string]float64{}
	opsMetrics(m, w.base, w.stats, "")
	s := fmt.Sprintf("%7.1fs replicas %s leaders %s; placement ops done %v (failed %v, dropped %v), in flight %d, plans %d",
		at.Sub(w.start).Seconds(), w.order(w.replicas), w.order(w.leaders), m["placement_ops"],
		m["placement_ops_failed"], m["placement_ops_dropped"], w.last.InFlight, w.last.Plans)
	if err != nil {
		s += "; " + err.Error()
	}
	w.timeline = append(w.timeline, s)
	w.fc.log.Info("bench: rebalance", "sample", s)
}

// order lists counts in the order the nodes started, "a/b/c".
func (w *rebalanceWatch) order(counts map[uint64]int) string {
	parts := make([]string, 0, len(w.fc.nodes))
	for _, n := range w.fc.nodes {
		if c, ok := counts[n.NodeID()]; ok {
			parts = append(parts, fmt.Sprint(c))
		}
	}
	return strings.Join(parts, "/")
}
