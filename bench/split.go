package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/storage"
)

var splitScenario = &scenario{
	Name: "split",
	Summary: "one shard on the nodes, under closed-loop writes routed by the ring as it splits, is split at the middle of" +
		" every range, round after round, until --shards: the time a split takes, the bytes it writes, writes/s and p99" +
		" before, during and after; then a shard of --split-data and an empty one, split with no load",
	Variants: []variant{{Name: "default", Desc: "the engine's defaults"}},
	Params:   []string{"shards", "payload", "clients"},
	Timing: func(st Settings) string {
		sp := st.Split
		if sp == nil {
			return ""
		}
		s := fmt.Sprintf("%v before the first split and %v after the last, the splits %v apart under load (the first of each"+
			" round with the load paused, to count its bytes), after %v of warm-up", secs(sp.Phase), secs(sp.Phase),
			secs(sp.Every), secs(st.Warmup))
		if sp.DataBytes > 0 {
			s += fmt.Sprintf("; then %s written into one shard of a fresh cluster, split beside an empty shard", fmtBytes(float64(sp.DataBytes)))
		}
		return s
	},
	Warmup: true,
	Columns: slices.Concat([]column{
		{"splits", "splits", fmtCount},
		{"split_p50_s", "split p50", fmtSeconds},
		{"split_max_s", "max", fmtSeconds},
		{"led_p50_s", "led p50", fmtSeconds},
		{"split_bytes_p50", "bytes/split", fmtBytes},
		{"split_bytes_max", "max", fmtBytes},
	}, phaseColumns, []column{
		{"empty_split_bytes", "bytes empty", fmtBytes},
		{"data_split_bytes", "bytes data", fmtBytes},
		{"data_vs_empty_bytes", "data/empty", fmtRatio},
		{"empty_split_led_s", "led empty", fmtSeconds},
		{"data_split_led_s", "led data", fmtSeconds},
		{"leaders_busiest_node", "most led", fmtCount},
	}),
	Notes: []string{
		"split: from the Split call on the parent's leader until the child has a leader that acknowledged a write of a key" +
			" of its range (the splits under load); led: until the child's first leader was announced (engine leader events;" +
			" every split)",
		"bytes/split: what the split wrote to the stores, summed over the nodes: Pebble's WAL bytes in (the batches" +
			" committed: the split entry in every replica's log, its apply, the child's raft state, its election and first" +
			" entry, the parent's sessions copied) from before the split to when every replica has applied its leader's" +
			" whole log and the WALs are quiet; measured on the first split of each round, with the load paused and settled",
		"writes: Puts of --payload bytes, client i writing its keys c<i>-0..1023 in turn, routed by a router whose ring is" +
			" the splits' descriptors and whose leaders are those the engines announce; a write retries a stale ring" +
			" (KeyNotInShardError), a NotLeader redirect, a dropped or ambiguous proposal for up to --op-timeout; failed:" +
			" the writes that still failed; during: the load between the splits (the paused splits excluded)",
		"most led: the shards the busiest node leads at the end (a child's leader is its parent's: it campaigns at once)",
		"bytes empty, bytes data, led empty, led data: an empty shard and one holding --split-data, side by side in a" +
			" fresh cluster, each split once with no load (bytes as above)",
	},
	Points: func(o *options) ([]point, error) {
		var ps []point
		for _, s := range o.shardList([]int{64}) {
			ps = append(ps, point{Shards: s, Payload: o.payloadList([]int{16})[0], Clients: o.clientsFor(s)})
		}
		return ps, nil
	},
	Settings: func(o *options, st *Settings) time.Duration {
		st.Transport = o.splitTransport()
		st.Duration = 0
		st.Split = &SplitSettings{Phase: o.phase.Seconds(), Every: o.splitEvery.Seconds(), DataBytes: o.splitData}
		return 2*o.phase + o.warmup
	},
	Run: runSplit,
}

// SplitSettings are the split scenario's options.
type SplitSettings struct {
	Phase     float64 `json:"phase_s"`
	Every     float64 `json:"split_every_s"`
	DataBytes int64   `json:"split_data_bytes"`
}

func splitFlags(fs *flag.FlagSet, o *options) {
	o.splitData = 1 << 30
	fs.Func("split-data", "split: the data written into one shard, split beside an empty one (e.g. 64MiB, 1GiB; 0: skip; default 1GiB)",
		func(s string) error {
			n, err := parseBytes(s)
			o.splitData = n
			return err
		})
	fs.DurationVar(&o.splitEvery, "split-every", 100*time.Millisecond, "split: the load's time between two splits")
}

// parseBytes parses a byte count with an optional B, KiB, MiB or GiB
// suffix.
func parseBytes(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("%q: want a byte count with an optional B, KiB, MiB or GiB suffix, e.g. 1GiB (0: skip)", s)
	}
	return n * mult, nil
}

// checkSplit refuses what split does not support.
func (o *options) checkSplit(s *scenario) error {
	if s.Name != "split" {
		return nil
	}
	var errs []error
	if o.set["duration"] {
		errs = append(errs, errors.New("split measures --phase before the first split and after the last, and the splits between: no --duration"))
	}
	if o.phase <= 0 || o.splitEvery < 0 {
		errs = append(errs, fmt.Errorf("--phase %v must be positive and --split-every %v not negative", o.phase, o.splitEvery))
	}
	for _, n := range o.shards {
		if n < 2 {
			errs = append(errs, fmt.Errorf("--shards %d: split needs a target of at least 2 shards (it starts from 1)", n))
		}
	}
	if o.replicas > o.nodes {
		errs = append(errs, fmt.Errorf("--replicas %d > --nodes %d", o.replicas, o.nodes))
	}
	return errors.Join(errs...)
}

// splitTransport is the transport of the split scenario: gRPC unless
// --transport says otherwise.
func (o *options) splitTransport() string {
	if o.set["transport"] {
		return o.transport
	}
	return "grpc"
}

func runSplit(ctx context.Context, o *options, v variant, p point, dir string) (Row, error) {
	cfg := o.clusterConfig(v, filepath.Join(dir, "load"))
	cfg.Transport = o.splitTransport()
	r, err := runSplitLoad(ctx, o, cfg, p)
	if err != nil || o.splitData == 0 {
		return r, err
	}
	cfg.Dir = filepath.Join(dir, "data")
	return r, runSplitData(ctx, o, cfg, &r)
}

// runSplitLoad splits one shard under load until p.Shards (see the
// scenario).
func runSplitLoad(ctx context.Context, o *options, cfg clusterConfig, p point) (Row, error) {
	sp, err := startSplitter(ctx, o, cfg, descriptors(1))
	if err != nil {
		return Row{}, err
	}
	defer sp.close()
	spec := loadSpec{clients: p.Clients, duration: o.phase, grace: o.opTimeout, done: o.hooks.done,
		op: splitWriters(sp.rt, p.Clients, p.Payload)}
	warm := warmUp(ctx, o, spec)
	u0 := readUsage()
	before := runLoad(ctx, spec)

	during := &tally{}
	splitErr := sp.splitUnderLoad(ctx, spec, p.Shards, during)

	after := runAfter(ctx, spec, splitErr == nil)
	u1 := readUsage()
	r := phasedRow(warm, before, during, after, u0, u1)
	m := r.Metrics
	sp.rt.retryMetrics(m)
	sp.splitMetrics(m)
	r.Timeline = sp.timeline()
	if splitErr != nil {
		return r, splitErr
	}
	n, leaders, err := sp.shardsLed(ctx)
	m["shards_reached"] = float64(n)
	if err == nil {
		m["leader_spread_end"], m["leaders_busiest_node"] = spreadOf(leaders), float64(slices.Max(slices.Collect(maps.Values(leaders))))
	}
	if err == nil && n != p.Shards {
		err = fmt.Errorf("%d shards led on every replica after the splits, want %d", n, p.Shards)
	}
	return r, err
}

// splitUnderLoad splits the ring's shards round after round until there
// are target: in each round, the first shard in ring order with the load
// paused (a probe: its bytes are counted), then each other one with spec
// running in the background, --split-every apart. during gets the load's
// tallies.
func (sp *splitter) splitUnderLoad(ctx context.Context, spec loadSpec, target int, during *tally) error {
	for round, seg := 1, uint64(0); ; round++ {
		ds := sp.rt.descs()
		n := min(len(ds), target-len(ds)) // splits in this round
		if n <= 0 {
			return nil
		}
		if err := sp.probe(ctx, ds[0], round); err != nil {
			return err
		}
		if n == 1 {
			continue
		}
		seg++
		lspec := spec
		lspec.seqBase = 1<<29 | seg<<22
		stop := background(ctx, lspec)
		err := func() error {
			for _, d := range ds[1:n] {
				if err := pause(ctx, sp.o.splitEvery); err != nil {
					return err
				}
				if err := sp.loaded(ctx, d, round); err != nil {
					return err
				}
			}
			return pause(ctx, sp.o.splitEvery) // the last split's aftermath under load too
		}()
		t := stop()
		during.merge(t)
		during.elapsed += t.elapsed
		if err != nil {
			return err
		}
	}
}

// background runs spec until the returned function is called, which
// returns what it did.
func background(ctx context.Context, spec loadSpec) (stop func() *tally) {
	ch, done := make(chan struct{}), make(chan *tally, 1)
	spec.stop, spec.duration = ch, 24*time.Hour
	go func() { done <- runLoad(ctx, spec) }()
	return func() *tally {
		close(ch)
		return <-done
	}
}

// startSplitter starts a cluster of cfg with the shards descs (every one
// led) and a router over them.
func startSplitter(ctx context.Context, o *options, cfg clusterConfig, descs []storage.Descriptor) (*splitter, error) {
	c, err := newCluster(cfg)
	if err != nil {
		return nil, err
	}
	rt, err := newSplitRouter(c, descs, o.opTimeout)
	if err != nil {
		c.close()
		return nil, err
	}
	sp := &splitter{o: o, c: c, rt: rt, nextID: uint64(len(descs)) + 1}
	if err := c.createShards(ctx, descs); err != nil {
		sp.close()
		return nil, err
	}
	if err := c.waitLeaders(ctx, descs, pollInterval(len(descs))); err != nil {
		sp.close()
		return nil, err
	}
	return sp, nil
}
