// Command bench is Flotilla's benchmark harness: it runs a
// named scenario against an in-process cluster (N engines in this process,
// stores on the real disk with real fsyncs, each node with its own ticker,
// talking over the in-process memtransport or over gRPC on loopback),
// prints one table row per configuration on stdout, and optionally writes
// the same numbers as JSON (with the environment: Go version, GOMAXPROCS,
// NumCPU, commit) and a chart.
//
//	go run ./bench SCENARIO [flags]
//	go run ./bench            # usage
//
// Every optimisation is measured against its baseline in the same
// invocation: a scenario has a list of named engine-config variants, the
// first of which is the baseline, and for every point of the sweep the
// variants run one after the other, each on a fresh cluster; the table's
// "vs <baseline>" columns are the ratios. A new optimisation is one more
// entry in the scenario's variant list (a name and the engine config field
// that turns it on; see variant in scenario.go); one marked pending is
// listed, not run, until the engine has that field.
//
// # Scenarios
//
// write: closed-loop replicated writes. Each client owns one key of one
// shard (client i: shard i mod shards) and puts a --payload-byte value as
// soon as its previous write is acknowledged. Sweeps --shards (default
// 1,64,1000) x --payload (default 16,128,1024). Reports writes/s,
// p50/p99/p99.9 latency, CPU time per write (process CPU from getrusage,
// every node and the clients, divided by writes), allocations per write
// (runtime.MemStats), cores used (process CPU over the window) and fsyncs
// per write (file syncs of all stores, engine Stats().FileSyncs). Variants:
// sync-in-worker (baseline, Config.SyncInWorker: each worker commits and
// fsyncs its pass's batch itself) and async (the engine's path: durability
// off the workers). --cpuprofile writes a CPU profile of each run's
// measured window.
//
// read: linearizable reads (engine.Read: ReadIndex, then the local state)
// of each client's key, preloaded; mixes "read" (reads only) and "9:1" (9
// reads to 1 write). Sweeps --shards (default 1,64,1000) x --payload
// (default 128) x mix. Reports ops/s, reads/s, writes/s, read latency
// percentiles, CPU and allocations per operation.
//
// idle: creates --shards (default 1,000 and 10,000; --huge adds 100,000),
// waits for leaders and --settle, then measures over --duration the CPU per
// node (process CPU divided by the number of nodes: the nodes share the
// process, so this is their average), the raft messages per second sent
// between nodes (transport counters) and their bytes, and the share of
// replicas quiesced. Variants: plain (baseline: Config.DisableHeartbeatCoalescing,
// one heartbeat message per shard and follower, every shard ticking),
// coalesced (Config.DisableQuiescence: one heartbeat message per node pair
// per tick) and quiesced (the engine's defaults: idle shards stop ticking).
//
// scale: memory per shard replica (Go heap in use after GC, and resident
// memory, grown by creating --shards (default 1,000 and 10,000) of
// --replicas replicas each, divided by the replicas), the time to create
// them and elect their leaders, and a restart of node 1: the time to reopen
// its store and until every shard has a leader and node 1 knows them all.
//
// failover: clients write to every shard (default 1,000 shards); after a
// third of --duration the node that leads the most shards is closed. Reports
// the leaders lost, the time until every shard has a leader again on a
// running node, the writes that failed after the kill (a failed write is
// never counted as done), writes/s before the kill and after the recovery.
//
// rebalance: --nodes full nodes (package node's StartCluster: gossip, the
// meta shard, the placement driver; gRPC on loopback) bootstrap --shards
// shards (default 1,000) of --replicas replicas; --clients (default 64)
// write through the Go client, client i to the keys of shards i,
// i+clients, ... in turn. After --phase (default 10s) --joins nodes
// (default 2) join, and the run waits (up to --balance-timeout, polling
// every 500ms) until every node's replica and leader counts (Admin
// LocalShards) are within placement.WithinBand; then --phase more. Reports
// the time to the balance, the snapshot bytes the joiners received (the
// staged sstables, counted through engine.Config.FS) and the snapshots
// sent, the replica and leader spread (largest minus smallest count)
// before the joins and at the balance, writes/s and p99 before, during and
// after, the failed writes (any client error), and the placement
// operations that succeeded (Admin Placement STATUS) with the time a
// replica move took (MOVES). The JSON has more (p50/p99.9/max of each
// phase, operations by kind, the longest time without an operation
// finishing) and a timeline of the counts; --node-log keeps the nodes'
// logs, --cpuprofile profiles the process from the joins to the balance. A
// run that does not balance in time reports what it measured and fails.
//
// cluster-start: --nodes full nodes (as rebalance's) bootstrap a cluster of
// --shards shards (default 1,000 and 10,000; --huge adds 100,000) of
// --replicas replicas. Reports the time until every StartCluster returned
// and until every replica on every node knows a leader (engine Stats), the
// fewest and most leaders per node (Admin LocalShards) and whether they are
// within placement.WithinBand; after --settle, the idle CPU per node over
// --duration and the resident memory per replica; then every node is
// closed and started again on its data directory: the same times and
// leader counts. --cpuprofile profiles each start until every shard is led
// (PREFIX-<point>-<variant>-start.pprof and -restart.pprof); --node-log
// keeps the nodes' logs (their start progress lines).
//
// split: one shard over the whole hash ring on --nodes engines (the
// in-process cluster, over gRPC unless --transport says otherwise), under
// closed-loop writes from --clients (default 64) of --payload bytes
// (default 16), client i writing its keys c<i>-0..1023 in turn, is split
// round after round until there are --shards (default 64): each round
// splits every shard at the middle of its range on its leader (the
// generation from the leader's Status, child IDs from a counter), one after
// the other, --split-every apart (default 100ms). The clients route by a
// router.Router whose ring the bench sets from each split's result (the
// parent's and the child's descriptors as the parent's leader applied them)
// and whose leaders are those the engines announce (leader events); a write
// retries a *KeyNotInShardError (stale ring), a *NotLeaderError, a dropped
// or ambiguous proposal for up to --op-timeout, and fails only if it still
// does. The first split of each round runs with the load paused and the
// replicas settled (each has applied its leader's whole log, the WALs
// quiet): its bytes are the Pebble WAL bytes in (Metrics().WAL.BytesIn,
// the batches committed) of all nodes from before it until the replicas
// settled again. Reports the splits' times (from the Split call to the
// child's first announced leader, and to the child's first acknowledged
// write), the bytes per split, writes/s and p99 for --phase (default 10s)
// before the first split, during the splits (the paused ones excluded) and
// --phase after the last, and the shards each node leads at the end. Then,
// unless --split-data is 0, the size comparison: a fresh cluster with two
// shards (the ring's halves), --split-data (default 1GiB) written into the
// second (batches of 15 Puts of 64 KiB random values, 4 in flight, through
// the engine's synced path), then both split with no load, the empty one
// first, as the probes are: the bytes and times of both and their ratio. The
// run fails if the full shard's split wrote over 1 KiB more than the empty
// one's. The size comparison's stores are removed when it ends (unless
// --keep).
//
// router: router.Lookup throughput from --clients goroutines (default 4)
// with 1,000 and 100,000 shards, keys at uniformly random ring positions:
// lookups/s, wall ns per lookup per goroutine, CPU ns and allocations per
// lookup. No cluster.
//
// # Open loop (--rate, --rate-of-peak)
//
// write and read run a closed loop by default: each client starts its next
// operation when the previous one returns. --rate N runs an open loop
// instead: operations are due on a fixed schedule, N per second over all
// clients spread evenly (client i's k-th operation is due (k*clients+i)/N
// seconds after the start), each client runs one at a time (at most
// --clients in flight), and the latency counts from the due time, so that
// an operation waiting behind a slow one carries the wait (no coordinated
// omission). If the system cannot keep up, the table shows it: writes/s
// (ops/s) is the achieved rate, "late" counts the operations that started
// more than 1ms after they were due, "missed" those due in the window that
// could not start before its end. --rate-of-peak F runs each point and
// variant closed first, then open at F x the closed run's ops/s (each on a
// fresh in-process cluster), and shows both rows and the open run's p99
// over the closed run's ("p99 vs closed"): e.g. --rate-of-peak 0.5 for the
// target "p99 at most 20ms at half the peak rate". The JSON carries the
// settings (rate_per_s, rate_of_peak, late_after_s) and, per open row,
// open_loop: the target and achieved rates, the operations scheduled, late
// and missed, the largest start delay and the p99 ratio.
//
// # A real cluster (--endpoints)
//
// --endpoints ADDR,... runs write and read against a running cluster
// (flotilla start, flotilla demo) through the Go client (package client)
// instead of the in-process cluster. The cluster's shards are used, however
// many it has (the --shards sweep does not apply; the table's shards column
// is the cluster's count); --clients defaults to 64, and client i writes
// (and reads) one key of shard i mod shards, found with client.ShardOf.
// Every operation is bounded by --op-timeout; the client's own retries
// happen within it; an operation that fails is counted in "failed", never
// as done. The engine variants (sync-each-shard, the idle variants) need to
// configure the engine: against a real cluster the one variant is
// "cluster", its own configuration, and idle, scale and failover refuse
// --endpoints. The nodes' CPU, allocations and fsyncs are not measured; the
// number of nodes and replicas comes from the Admin service (Status,
// Shards) when it answers.
//
// Shards are spread evenly over the hash space; a shard's replicas are
// --replicas consecutive nodes (all of them with the default 3 nodes). A
// client sends to the leader it knows, follows NotLeader hints, and retries
// what surely did not apply (a redirect, a dropped proposal) for up to
// --op-timeout; any other error fails the operation: it is counted in the
// "failed" column and never in the throughput or the latencies.
//
// # Flags
//
// Common to every scenario (a flag given as -x or --x):
//
//	--nodes N            nodes in the cluster (default 3)
//	--replicas N         replicas per shard, at most --nodes (default 3); a shard's replicas are consecutive nodes
//	--duration D         measured window of each run (default 5s)
//	--warmup D           load before the window, not measured (default 500ms)
//	--clients N          clients per run (write, read, failover: default max(64, shards), 64 with --endpoints; router: goroutines, default 4)
//	--clients-per-shard K  clients = K x shards instead
//	--shards LIST        shard counts to sweep, e.g. 1,64,1000 (default per scenario)
//	--payload LIST       value sizes in bytes to sweep (write, read, failover)
//	--variants LIST      variants to run (the baseline always runs), default all
//	--no-baseline        skip the baseline (where it cannot run; no ratios)
//	--json FILE          write the report as JSON
//	--chart FILE         plot the sweep (.png or .svg): the first ratio metric (else the first column) against shards
//	--dir DIR            where the stores go: a new directory under DIR (default: the temp dir), removed unless --keep
//	--keep               keep each run's data
//	--transport mem|grpc in-process transport, or gRPC on loopback (default mem)
//	--gomaxprocs N       set GOMAXPROCS (default 0: leave it; the table header shows the value used)
//	--workers N          engine workers per node (default 0: GOMAXPROCS)
//	--tick D             raft tick of every node (default 100ms; election after 10 ticks)
//	--op-timeout D       how long an operation retries while its shard has no leader, and the grace
//	                     for operations in flight at the end of the window (default 10s)
//	--settle D           idle, scale: wait after the leaders are elected (default 2s)
//	--huge               idle, cluster-start: add 100,000 shards to the default sweep
//	--quiet              no progress on stderr
//	--endpoints LIST     write, read: client addresses (host:port,...) of a running cluster, loaded through the Go client
//	--rate N             write, read: open loop, N operations per second over all clients (default 0: closed loop)
//	--rate-of-peak F     write, read: each point closed, then open at F x its ops/s (e.g. 0.5); excludes --rate
//	--phase D            rebalance: the measured load before the joins, and after the balance; split: before the
//	                     first split, and after the last (default 10s)
//	--balance-timeout D  rebalance: how long after the joins the balance is awaited (default 10m)
//	--joins N            rebalance: nodes that join (default 2)
//	--placement-moves-per-minute N, --placement-snapshots-per-node N, --placement-max-ops N
//	                     rebalance: the placement driver's limits (defaults: the driver's, 30, 2 and 16), as flotilla start's flags
//	--node-log FILE      rebalance: the nodes' logs and the bench's samples (default: discarded)
//	--split-data SIZE    split: data written into one shard, split beside an empty one (default 1GiB; B, KiB, MiB, GiB; 0: skip)
//	--split-every D      split: the load's time between two splits (default 100ms)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// options are the parsed flags of one invocation.
type options struct {
	scenario        string
	nodes           int
	replicas        int
	duration        time.Duration
	warmup          time.Duration
	settle          time.Duration
	clients         int
	clientsPerShard int
	shards          []int
	payloads        []int
	variants        []string
	jsonPath        string
	chartPath       string
	dir             string
	keep            bool
	transport       string
	gomaxprocs      int
	workers         int
	tick            time.Duration
	opTimeout       time.Duration
	huge            bool
	noBaseline      bool
	quiet           bool
	endpoints       []string
	rate            float64
	rateOfPeak      float64
	// rebalance (see rebalanceFlags)
	phase, balanceTimeout                          time.Duration
	joins                                          int
	movesPerMinute, snapshotsPerNode, placementOps int
	nodeLog                                        string
	cpuProfile                                     string          // --cpuprofile prefix
	runName                                        string          // the run under way, for profile file names
	set                                            map[string]bool // the flags given
	remote                                         *remoteCluster  // set by runScenario with --endpoints
	hooks                                          hooks

	// split (see splitFlags)
	splitData  int64
	splitEvery time.Duration
}

// hooks let tests look inside a run.
type hooks struct {
	run    func(v variant, p point)                             // before each run
	engine func(*engine.Config)                                 // after the variant's
	done   func(client int, seq uint64, kind opKind, err error) // after every measured operation
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the invocation args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		return 2
	}
	s := findScenario(args[0])
	if s == nil {
		fmt.Fprintf(stderr, "bench: unknown scenario %q\n\n", args[0])
		printUsage(stderr)
		return 2
	}
	o, err := parseFlags(s.Name, args[1:], stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	rep, err := runScenario(ctx, s, o)
	if rep != nil && len(rep.Rows) > 0 {
		if terr := writeTable(stdout, s, rep); terr != nil {
			err = errors.Join(err, terr)
		}
		if o.jsonPath != "" {
			err = errors.Join(err, writeJSON(o.jsonPath, rep))
		}
		if o.chartPath != "" {
			err = errors.Join(err, writeChart(o.chartPath, s, rep))
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: go run ./bench SCENARIO [flags]\n\nscenarios:\n")
	for _, s := range scenarios {
		fmt.Fprintf(w, "  %-9s %s\n", s.Name, s.Summary)
		for i, v := range s.Variants {
			tag := ""
			if i == 0 && len(s.Variants) > 1 {
				tag = " (baseline)"
			}
			if v.Pending != "" {
				tag += " (pending)"
			}
			fmt.Fprintf(w, "  %9s   variant %s%s: %s\n", "", v.Name, tag, v.Desc)
		}
	}
	fmt.Fprintf(w, "\nflags:\n")
	newFlagSet("SCENARIO", &options{}, w).PrintDefaults()
	fmt.Fprintf(w, "\nexamples:\n")
	fmt.Fprintf(w, "  go run ./bench write --shards 1,64 --payload 16 --duration 3s --json write.json --chart write.png\n")
	fmt.Fprintf(w, "  go run ./bench write --shards 64 --payload 128 --rate-of-peak 0.5   # p99 at half the peak rate\n")
	fmt.Fprintf(w, "  go run ./bench write --rate 5000 --shards 64 --payload 128           # open loop at 5,000 writes/s\n")
	fmt.Fprintf(w, "  go run ./bench write --endpoints 127.0.0.1:7001,127.0.0.1:7002 --payload 128   # a running cluster\n")
}

func newFlagSet(name string, o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&o.nodes, "nodes", 3, "nodes in the cluster")
	fs.IntVar(&o.replicas, "replicas", 3, "replicas per shard (at most --nodes)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured window of each run")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "load before the window, not measured")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "idle, scale: wait after the leaders are elected")
	fs.IntVar(&o.clients, "clients", 0, "clients per run (0: max(64, shards), 64 with --endpoints; router: goroutines, 0: 4)")
	fs.IntVar(&o.clientsPerShard, "clients-per-shard", 0, "clients = this x shards (when --clients is 0)")
	fs.Func("shards", "shard counts to sweep, comma-separated (default per scenario)", intList(&o.shards))
	fs.Func("payload", "value sizes in bytes to sweep, comma-separated (default per scenario)", intList(&o.payloads))
	fs.Func("variants", "variants to run, comma-separated (the baseline always runs)", func(s string) error {
		o.variants = strings.Split(s, ",")
		return nil
	})
	fs.StringVar(&o.jsonPath, "json", "", "write the report as JSON to this file")
	fs.StringVar(&o.chartPath, "chart", "", "plot the sweep to this .png or .svg file")
	fs.StringVar(&o.dir, "dir", "", "directory for the stores (default: a temp dir, removed after)")
	fs.BoolVar(&o.keep, "keep", false, "keep each run's data")
	fs.StringVar(&o.transport, "transport", "mem", "mem (in-process) or grpc (loopback)")
	fs.IntVar(&o.gomaxprocs, "gomaxprocs", 0, "set GOMAXPROCS (0: leave it)")
	fs.IntVar(&o.workers, "workers", 0, "engine workers per node (0: GOMAXPROCS)")
	fs.DurationVar(&o.tick, "tick", 100*time.Millisecond, "raft tick of every node")
	fs.DurationVar(&o.opTimeout, "op-timeout", 10*time.Second, "how long an operation retries while its shard has no leader; also the grace for operations in flight at the end")
	fs.BoolVar(&o.huge, "huge", false, "idle, cluster-start: add 100,000 shards to the default sweep")
	fs.BoolVar(&o.noBaseline, "no-baseline", false, "skip the baseline variant, for points it cannot run at (idle at 100,000 shards: per-shard heartbeats saturate the machine); no ratios then")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress on stderr")
	fs.Func("endpoints", "write, read: client addresses (host:port,...) of a running cluster to load through the Go client,"+
		" instead of the in-process cluster", func(s string) error {
		o.endpoints = nil
		for _, f := range strings.Split(s, ",") {
			o.endpoints = append(o.endpoints, strings.TrimSpace(f))
		}
		return checkEndpoints(o.endpoints)
	})
	fs.Float64Var(&o.rate, "rate", 0, "write, read: open loop at this many operations per second over all clients (0: closed loop)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of each run's measured window to PREFIX-<point>-<variant>.pprof")
	fs.Float64Var(&o.rateOfPeak, "rate-of-peak", 0, "write, read: run each point closed-loop, then open-loop at this fraction of its ops/s (e.g. 0.5)")
	rebalanceFlags(fs, o)
	splitFlags(fs, o)
	return fs
}

func intList(dst *[]int) func(string) error {
	return func(s string) error {
		*dst = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				return fmt.Errorf("%q is not a positive integer", f)
			}
			*dst = append(*dst, n)
		}
		return nil
	}
}

func parseFlags(scenario string, args []string, out io.Writer) (*options, error) {
	o := &options{scenario: scenario}
	fs := newFlagSet(scenario, o, out)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (flags go after the scenario)", fs.Args())
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	err := o.validate()
	if s := findScenario(scenario); s != nil {
		err = errors.Join(err, o.checkScenario(s))
	}
	return o, err
}

func (o *options) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(o.nodes >= 1, "--nodes %d < 1", o.nodes)
	check(o.replicas >= 1, "--replicas %d < 1", o.replicas)
	check(o.duration > 0, "--duration must be positive")
	check(o.warmup >= 0 && o.settle >= 0, "--warmup and --settle must not be negative")
	check(o.clients >= 0 && o.clientsPerShard >= 0, "--clients and --clients-per-shard must not be negative")
	check(o.transport == "mem" || o.transport == "grpc", "--transport %q: mem or grpc", o.transport)
	check(o.gomaxprocs >= 0 && o.workers >= 0, "--gomaxprocs and --workers must not be negative")
	check(o.tick > 0 && o.opTimeout > 0, "--tick and --op-timeout must be positive")
	check(o.rate >= 0 && !math.IsInf(o.rate, 0), "--rate %v: want a number of operations per second, 0 for a closed loop", o.rate)
	check(o.rateOfPeak >= 0 && !math.IsInf(o.rateOfPeak, 0), "--rate-of-peak %v: want a fraction of the peak, e.g. 0.5", o.rateOfPeak)
	check(o.rate == 0 || o.rateOfPeak == 0, "--rate and --rate-of-peak exclude each other")
	return errors.Join(errs...)
}

// checkScenario refuses the flags that s does not support.
func (o *options) checkScenario(s *scenario) error {
	var errs []error
	switch {
	case len(o.endpoints) == 0 || s.Endpoints:
	case s.Timing == nil:
		errs = append(errs, fmt.Errorf("scenario %s runs no cluster; --endpoints supports write and read", s.Name))
	default:
		errs = append(errs, fmt.Errorf("scenario %s needs the in-process cluster; --endpoints supports write and read", s.Name))
	}
	if (o.rate > 0 || o.rateOfPeak > 0) && !s.OpenLoop {
		errs = append(errs, fmt.Errorf("scenario %s has no open-loop mode; --rate and --rate-of-peak support write and read", s.Name))
	}
	if len(o.endpoints) > 0 && len(o.variants) > 0 && !slices.Equal(o.variants, []string{clusterVariant.Name}) {
		errs = append(errs, fmt.Errorf("--variants %s: with --endpoints the only variant is %q (%s); the engine variants need the in-process cluster",
			strings.Join(o.variants, ","), clusterVariant.Name, clusterVariant.Desc))
	}
	errs = append(errs, o.checkScenarioFlags(s), o.checkRebalance(s), o.checkSplit(s))
	return errors.Join(errs...)
}

// scenarioFlags are the flags that only some scenarios take, with those
// scenarios.
var scenarioFlags = map[string][]string{
	"phase":                        {"rebalance", "split"},
	"balance-timeout":              {"rebalance"},
	"joins":                        {"rebalance"},
	"placement-moves-per-minute":   {"rebalance"},
	"placement-snapshots-per-node": {"rebalance"},
	"placement-max-ops":            {"rebalance"},
	"node-log":                     {"rebalance", "cluster-start"},
	"split-data":                   {"split"},
	"split-every":                  {"split"},
}

// checkScenarioFlags refuses the flags given that s does not take.
func (o *options) checkScenarioFlags(s *scenario) error {
	var errs []error
	for _, f := range slices.Sorted(maps.Keys(scenarioFlags)) {
		if only := scenarioFlags[f]; o.set[f] && !slices.Contains(only, s.Name) {
			errs = append(errs, fmt.Errorf("--%s: %s only", f, strings.Join(only, " and ")))
		}
	}
	return errors.Join(errs...)
}

func (o *options) shardList(def []int) []int {
	if o.remote != nil { // the cluster's shards, whatever --shards says
		return []int{len(o.remote.shards)}
	}
	if len(o.shards) > 0 {
		return o.shards
	}
	return def
}

func (o *options) payloadList(def []int) []int {
	if len(o.payloads) > 0 {
		return o.payloads
	}
	return def
}

func (o *options) clusterConfig(v variant, dir string) clusterConfig {
	return clusterConfig{
		Nodes: o.nodes, Replicas: o.replicas, Dir: dir, Transport: o.transport, TickInterval: o.tick, Workers: o.workers,
		Engine: []func(*engine.Config){v.Engine, o.hooks.engine},
	}
}

// runScenario runs every point of s's sweep with every selected variant,
// baseline first, and returns the report (with the rows of the runs done
// so far if one fails). With --rate-of-peak, every (point, variant) runs
// twice: closed, then open at the fraction of the closed run's ops/s.
func runScenario(ctx context.Context, s *scenario, o *options) (*Report, error) {
	if err := o.checkScenario(s); err != nil {
		return nil, err
	}
	if o.gomaxprocs > 0 {
		runtime.GOMAXPROCS(o.gomaxprocs)
	}
	start := time.Now()
	variants, pending, err := s.selectVariants(o.variants)
	if err == nil && o.noBaseline && len(variants) > 1 {
		variants = variants[1:]
	}
	var notes []string
	if len(o.endpoints) > 0 {
		variants, pending, err = []variant{clusterVariant}, nil, nil
		rc, err := dialRemote(ctx, o.endpoints, o.opTimeout)
		if err != nil {
			return nil, err
		}
		defer rc.close()
		o.remote = rc
		defer func() { o.remote = nil }()
		notes = remoteNotes(o, rc)
		if o.set["shards"] && !o.quiet {
			fmt.Fprintf(os.Stderr, "bench: note: --shards does not apply with --endpoints: the cluster has %d shards\n", len(rc.shards))
		}
	}
	if err != nil {
		return nil, err
	}
	points, err := s.Points(o)
	if err != nil {
		return nil, err
	}
	root, cleanup := "", func() {}
	if o.remote == nil {
		if root, cleanup, err = dataDir(o.dir, o.keep); err != nil {
			return nil, err
		}
	}
	defer cleanup()
	rep := &Report{
		Scenario: s.Name,
		Env:      readEnv(start),
		Settings: Settings{
			Nodes: o.nodes, Replicas: min(o.replicas, o.nodes), Transport: o.transport, Duration: o.duration.Seconds(),
			TickInterval: o.tick.Seconds(), Workers: o.workers, OpTimeout: o.opTimeout.Seconds(), DataDir: root,
			Rate: o.rate, RateOfPeak: o.rateOfPeak,
		},
		Notes: notes,
	}
	if o.remote != nil {
		st := &rep.Settings
		st.Endpoints, st.Nodes, st.Replicas = o.endpoints, o.remote.nodes, o.remote.replicas
		st.Transport, st.TickInterval, st.Workers = "client", 0, 0
	}
	if o.rate > 0 || o.rateOfPeak > 0 {
		rep.Settings.LateAfter = lateAfter.Seconds()
	}
	expect := o.duration // of one run, set-up not included
	if s.Warmup {
		rep.Settings.Warmup = o.warmup.Seconds()
		expect += o.warmup
	}
	if s.Settle {
		rep.Settings.Settle = o.settle.Seconds()
		expect += o.settle
	}
	if s.Settings != nil {
		expect = s.Settings(o, &rep.Settings)
	}
	if len(s.Variants) > 1 && o.remote == nil && !o.noBaseline {
		rep.Baseline = s.Variants[0].Name
	}
	for _, v := range pending {
		rep.Pending = append(rep.Pending, PendingVariant{Name: v.Name, Desc: v.Desc, Reason: v.Pending})
	}
	runs := len(points) * len(variants)
	if o.rateOfPeak > 0 {
		runs *= 2
	}
	prog := newProgress(o.quiet, runs)
	defer prog.finish()
	n := 0
	// runOne runs v at p and adds its row to the report; it returns the
	// row's index.
	runOne := func(v variant, p point) (int, error) {
		dir := ""
		if root != "" {
			dir = filepath.Join(root, fmt.Sprintf("run%03d", n))
		}
		n++
		prog.begin(fmt.Sprintf("%s %s %s", s.Name, p, v.Name), expect)
		o.runName = strings.NewReplacer(" ", "_", "=", "", "/", "_").Replace(p.String() + "-" + v.Name)
		if o.hooks.run != nil {
			o.hooks.run(v, p)
		}
		row, err := s.Run(ctx, o, v, p, dir)
		prog.end()
		if dir != "" && !o.keep {
			os.RemoveAll(dir)
		}
		if err == nil && ctx.Err() != nil { // cut short: its numbers mean nothing
			err = fmt.Errorf("interrupted: %w", ctx.Err())
		}
		if err == nil || row.Metrics != nil {
			row.Scenario, row.Variant, row.Point = s.Name, v.Name, p
			row.finite()
			rep.Rows = append(rep.Rows, row) // a failed run's figures too, if it has some
		}
		if err != nil {
			return 0, fmt.Errorf("%s %s %s: %w", s.Name, p, v.Name, err)
		}
		return len(rep.Rows) - 1, nil
	}
	finish := func() {
		if rep.Baseline != "" {
			fillRatios(s, rep.Rows)
		}
	}
	for _, p := range points {
		p.Rate = o.rate
		for _, v := range variants {
			closed, err := runOne(v, p)
			if err != nil {
				finish()
				return rep, err
			}
			if o.rateOfPeak <= 0 {
				continue
			}
			peak, p99 := rep.Rows[closed].Metrics["ops_per_s"], rep.Rows[closed].Metrics["p99_us"]
			if peak <= 0 {
				finish()
				return rep, fmt.Errorf("%s %s %s: no operation acknowledged, no peak for --rate-of-peak", s.Name, p, v.Name)
			}
			op := p
			op.Rate = max(1, math.Round(o.rateOfPeak*peak))
			i, err := runOne(v, op)
			if err != nil {
				finish()
				return rep, err
			}
			open := &rep.Rows[i]
			if open.Open == nil {
				open.Open = &OpenLoop{TargetRate: op.Rate}
			}
			open.Open.OfPeak, open.Open.PeakRate = o.rateOfPeak, peak
			if p99 > 0 {
				open.Open.P99VsClosed = open.Metrics["p99_us"] / p99
			}
		}
	}
	finish()
	return rep, nil
}

// dataDir returns a new directory for the runs' stores, under dir if set
// (created if need be) or else the system's temp dir; cleanup removes it
// unless keep.
func dataDir(dir string, keep bool) (root string, cleanup func(), err error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, err
		}
	}
	root, err = os.MkdirTemp(dir, "flotilla-bench-")
	if err != nil {
		return "", nil, err
	}
	return root, func() {
		if !keep {
			os.RemoveAll(root)
		}
	}, nil
}
