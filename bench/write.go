package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/storage"
	"golang.org/x/sync/errgroup"
)

var writeScenario = &scenario{
	Name: "write",
	Summary: "closed-loop replicated writes (Put), each client owning one key of one shard, " +
		"swept over shards and payload",
	Variants: []variant{
		{Name: "sync-in-worker", Desc: "the path before asynchronous durability: one synced batch per worker pass, committed by the worker, which waits for the fsync",
			Engine: func(c *engine.Config) { c.SyncInWorker = true }},
		{Name: "async-sync-2ms", Desc: "async, with the write-ahead log's syncs at least 2 ms apart (Config.WALMinSyncInterval): more passes per fsync",
			Engine: func(c *engine.Config) { c.WALMinSyncInterval = 2 * time.Millisecond }},
		{Name: "async", Desc: "the engine's path: raft's asynchronous storage writes; each pass's batch applied at once and synced by Pebble's commit pipeline (fsyncs shared by every worker); only what depends on a write waits for its sync; the worker never waits"},
	},
	Params: []string{"shards", "payload", "clients"},
	Columns: []column{
		{"writes_per_s", "writes/s", fmtCount},
		{"p50_us", "p50", fmtMicros},
		{"p99_us", "p99", fmtMicros},
		{"p999_us", "p99.9", fmtMicros},
		{"cpu_us_per_op", "cpu/write", fmtMicros},
		{"cores_used", "cores", fmtFloat},
		{"allocs_per_op", "allocs/write", fmtFloat},
		{"fsyncs_per_op", "fsyncs/write", fmtFloat},
	},
	Ratios:    []string{"writes_per_s", "fsyncs_per_op"},
	Timing:    loadTiming,
	Warmup:    true,
	Endpoints: true,
	OpenLoop:  true,
	Notes: []string{
		"cpu/write and allocs/write: the whole process (every node and the clients) divided by acknowledged writes",
		"fsyncs/write: file syncs of all nodes' stores (engine Stats().FileSyncs: write-ahead log, sstables, manifest) divided by acknowledged writes",
	},
	Points: func(o *options) ([]point, error) {
		var ps []point
		for _, s := range o.shardList([]int{1, 64, 1000}) {
			for _, pl := range o.payloadList([]int{16, 128, 1024}) {
				ps = append(ps, point{Shards: s, Payload: pl, Clients: o.clientsFor(s)})
			}
		}
		return ps, nil
	},
	Run: runWrite,
}

var readScenario = &scenario{
	Name:    "read",
	Summary: "reads of each client's key, one variant per way to read; mixes: reads only, and 9 reads to 1 write",
	Variants: []variant{
		{Name: "leader", Desc: "linearizable on the shard's leader (engine.Read: ReadIndex, the leader confirms with a quorum)", Read: readLeader},
		{Name: "follower", Desc: "linearizable on a follower (engine.ReadOnReplica: the follower gets the read index from the leader, waits until it has applied it, answers from its own state)", Read: readFollower},
		{Name: "stale", Desc: "a follower's state as it is (engine.ReadLocal): no round trip, possibly stale", Read: readStale},
		{Name: "lease", Desc: "linearizable on the shard's leader from its lease (engine.ReadLease, nodes in ReadMode lease): no quorum round while the lease holds", Read: readLease,
			Engine: func(c *engine.Config) { c.ReadMode = engine.ReadModeLease }},
	},
	Params: []string{"shards", "payload", "clients", "mix"},
	Columns: []column{
		{"ops_per_s", "ops/s", fmtCount},
		{"reads_per_s", "reads/s", fmtCount},
		{"writes_per_s", "writes/s", fmtCount},
		{"read_p50_us", "read p50", fmtMicros},
		{"read_p99_us", "read p99", fmtMicros},
		{"read_p999_us", "read p99.9", fmtMicros},
		{"write_p99_us", "write p99", fmtMicros},
		{"cpu_us_per_op", "cpu/op", fmtMicros},
		{"allocs_per_op", "allocs/op", fmtFloat},
		{"fsyncs_per_op", "fsyncs/op", fmtFloat},
	},
	Ratios:    []string{"ops_per_s"},
	Timing:    loadTiming,
	Warmup:    true,
	Endpoints: true,
	OpenLoop:  true,
	Notes:     []string{"cpu/op and allocs/op: the whole process divided by acknowledged operations"},
	Points: func(o *options) ([]point, error) {
		var ps []point
		for _, s := range o.shardList([]int{1, 64, 1000}) {
			for _, pl := range o.payloadList([]int{128}) {
				for _, mix := range []string{"read", "9:1"} {
					ps = append(ps, point{Shards: s, Payload: pl, Clients: o.clientsFor(s), Mix: mix})
				}
			}
		}
		return ps, nil
	},
	Run: runRead,
}

// startCluster starts o.nodes nodes configured for v with their stores in
// dir, creates shards shards of o.replicas replicas and waits until each
// has a leader.
func startCluster(ctx context.Context, o *options, v variant, dir string, shards int) (*cluster, []storage.Descriptor, error) {
	c, err := newCluster(o.clusterConfig(v, dir))
	if err != nil {
		return nil, nil, err
	}
	descs := descriptors(shards)
	if err := c.createShards(ctx, descs); err != nil {
		c.close()
		return nil, nil, err
	}
	if err := c.waitLeaders(ctx, descs, pollInterval(shards)); err != nil {
		c.close()
		return nil, nil, err
	}
	return c, descs, nil
}

// writers returns the clients of a point: client i owns the (i/shards)-th
// key of shard i%shards, as engine/bench_test.go does, and starts with the
// shard's current leader.
func writers(ctx context.Context, o *options, c *cluster, descs []storage.Descriptor, clients, payload int) []*writer {
	leaders := c.leaders(ctx)
	ws := make([]*writer, clients)
	for i := range ws {
		d := descs[i%len(descs)]
		ws[i] = newWriter(c, d.ShardID, keyOf(d, i/len(descs)), max(payload, 1), o.opTimeout)
		ws[i].leader = leaders[d.ShardID]
	}
	return ws
}

// measureLoad runs spec's warm-up (if o.warmup, the same load: closed, or
// open at the same rate) and then spec measured: the row has the counts,
// the rates and latencies of every kind, the process's CPU and allocations
// per operation, the fsyncs per operation if syncs (a cluster's counter)
// is set, and for an open load what it was asked and did.
func measureLoad(ctx context.Context, o *options, syncs func() uint64, spec loadSpec) Row {
	warmUp(ctx, o, spec)
	spec.duration = o.duration
	var syncs0, syncs1 uint64
	if syncs != nil {
		syncs0 = syncs()
	}
	stopProfile := o.startProfile()
	u0 := readUsage()
	t := runLoad(ctx, spec)
	u1 := readUsage()
	stopProfile()
	if syncs != nil {
		syncs1 = syncs()
	}
	r := loadRow(t, u0, u1)
	if syncs != nil {
		r.Metrics["fsyncs_per_op"] = perOp(float64(syncs1-syncs0), r.Ops)
	}
	if spec.rate > 0 {
		r.Open = &OpenLoop{
			TargetRate: spec.rate, AchievedRate: r.Metrics["ops_per_s"],
			Scheduled: t.scheduled(), Late: t.late, LateBehind: t.lateBehind, Missed: t.missed,
			LateAfter: lateAfter.Seconds(), MaxLag: t.maxLag.Seconds(),
		}
	}
	return r
}

// warmUp runs spec for --warmup, not measured (not reported to its hooks),
// and returns what it did.
func warmUp(ctx context.Context, o *options, spec loadSpec) *tally {
	if o.warmup <= 0 {
		return &tally{}
	}
	w := spec
	w.duration, w.seqBase, w.done, w.timed, w.acked, w.stop = o.warmup, 1<<31, nil, nil, nil, nil
	return runLoad(ctx, w)
}

// loadRow is the row of a measured load.
func loadRow(t *tally, u0, u1 usage) Row {
	ops, secs := t.ops(), t.elapsed.Seconds()
	r := Row{
		Metrics: map[string]float64{},
		Ops:     ops, Failed: t.failures(), Attempts: t.started, Seconds: secs, Errors: t.errors(),
	}
	m := r.Metrics
	m["ops_per_s"] = rate(ops, secs)
	latencyMetrics(m, "", append(append([]time.Duration(nil), t.lat[opWrite]...), t.lat[opRead]...))
	for k, name := range map[opKind]string{opWrite: "write", opRead: "read"} {
		if t.acked[k]+t.failed[k] > 0 { // the load has operations of this kind
			m[name+"s_per_s"] = rate(t.acked[k], secs)
			latencyMetrics(m, name+"_", t.lat[k])
		}
	}
	m["cpu_us_per_op"] = perOp(us(u1.cpu-u0.cpu), ops)
	if secs > 0 {
		m["cores_used"] = (u1.cpu - u0.cpu).Seconds() / secs
	}
	m["allocs_per_op"] = perOp(float64(u1.mallocs-u0.mallocs), ops)
	return r
}

func runWrite(ctx context.Context, o *options, v variant, p point, dir string) (Row, error) {
	if o.remote != nil {
		return runRemote(ctx, o, p)
	}
	c, descs, err := startCluster(ctx, o, v, dir, p.Shards)
	if err != nil {
		return Row{}, err
	}
	defer c.close()
	ws := writers(ctx, o, c, descs, p.Clients, p.Payload)
	spec := loadSpec{
		clients: len(ws), rate: p.Rate, grace: o.opTimeout, done: o.hooks.done,
		op: func(ctx context.Context, client int, seq uint64) (opKind, error) {
			return opWrite, ws[client].write(ctx, client, seq)
		},
	}
	return measureLoad(ctx, o, c.syncs, spec), nil
}

func runRead(ctx context.Context, o *options, v variant, p point, dir string) (Row, error) {
	if o.remote != nil {
		return runRemote(ctx, o, p)
	}
	c, descs, err := startCluster(ctx, o, v, dir, p.Shards)
	if err != nil {
		return Row{}, err
	}
	defer c.close()
	ws := writers(ctx, o, c, descs, p.Clients, p.Payload)
	// Every key holds a value before the reads start.
	var g errgroup.Group
	g.SetLimit(64)
	for i, w := range ws {
		g.Go(func() error {
			pctx, cancel := context.WithTimeout(ctx, o.opTimeout)
			defer cancel()
			return w.write(pctx, i, 1<<31-1)
		})
	}
	if err := g.Wait(); err != nil {
		return Row{}, fmt.Errorf("preload: %w", err)
	}
	writeEvery := uint64(0) // reads only
	if p.Mix == "9:1" {
		writeEvery = 10
	}
	spec := loadSpec{
		clients: len(ws), rate: p.Rate, grace: o.opTimeout, done: o.hooks.done,
		op: func(ctx context.Context, client int, seq uint64) (opKind, error) {
			// Clients are offset so that writes are spread over time.
			if writeEvery > 0 && (seq+uint64(client))%writeEvery == 0 {
				return opWrite, ws[client].write(ctx, client, seq)
			}
			return opRead, ws[client].readAs(ctx, v.Read, client)
		},
	}
	return measureLoad(ctx, o, c.syncs, spec), nil
}

// startProfile starts a CPU profile of the run under way if --cpuprofile is
// set, and returns what stops it. A profile that cannot be written is
// reported on stderr and the run goes on.
func (o *options) startProfile() (stop func()) {
	if o.cpuProfile == "" {
		return func() {}
	}
	name := o.cpuProfile + "-" + o.runName + ".pprof"
	f, err := os.Create(name)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: cpu profile: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cpu profile: %v\n", err)
		}
	}
}
