package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	flnode "github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/placement"
)

// A variant is one engine configuration a scenario runs. The first variant
// of a scenario is its baseline: every other variant is run right after it
// at the same point of the sweep, in the same process, and reported with
// the ratio of its metrics to the baseline's.
//
// Adding an optimisation to a scenario is adding a variant whose Engine
// sets the config field that turns it on; a variant that is planned but not
// buildable yet carries Pending (the reason) and is listed, not run.
type variant struct {
	Name   string
	Desc   string
	Engine func(*engine.Config) // adjusts every node's config; nil: defaults
	// Driver adjusts the placement driver's config of full nodes (the
	// rebalance scenario); nil: as the flags say.
	Driver func(*placement.DriverConfig)
	// Node adjusts the config of full nodes (rebalance, cluster-start);
	// nil: as the flags say.
	Node func(*flnode.ClusterConfig)
	// Read is how the read scenario reads (readLeader when empty).
	Read    string
	Pending string // non-empty: not runnable yet, why
}

// A point is one position of a scenario's sweep.
type point struct {
	Shards  int    `json:"shards,omitempty"`
	Payload int    `json:"payload_bytes,omitempty"`
	Clients int    `json:"clients,omitempty"`
	Mix     string `json:"mix,omitempty"` // read: "read" or "9:1"
	// Rate is the operations due per second of an open load (--rate,
	// --rate-of-peak), over all clients; 0 for a closed load.
	Rate float64 `json:"rate_per_s,omitempty"`
}

func (p point) String() string {
	var parts []string
	if p.Shards > 0 {
		parts = append(parts, fmt.Sprintf("shards=%d", p.Shards))
	}
	if p.Payload > 0 {
		parts = append(parts, fmt.Sprintf("payload=%d", p.Payload))
	}
	if p.Mix != "" {
		parts = append(parts, "mix="+p.Mix)
	}
	if p.Rate > 0 {
		parts = append(parts, fmt.Sprintf("rate=%s/s", fmtCount(p.Rate)))
	}
	return strings.Join(parts, " ")
}

// A column is one metric as the table shows it.
type column struct {
	Key    string // in Row.Metrics
	Header string
	Format func(float64) string
}

// scenario is one named workload.
type scenario struct {
	Name     string
	Summary  string
	Variants []variant // [0] is the baseline
	// Params are the point fields shown as columns: "shards", "payload",
	// "clients", "mix".
	Params  []string
	Columns []column
	// Ratios are the metrics compared with the baseline's (a column
	// "<metric> vs <baseline>" each); the first is the chart's y axis.
	Ratios []string
	// Notes are printed under the table header (what a metric means).
	Notes []string
	// Timing says how long a run measures, for the table header; nil: the
	// scenario runs no cluster.
	Timing func(st Settings) string
	// Warmup and Settle say whether a run uses --warmup and --settle.
	Warmup, Settle bool
	// Endpoints says that the scenario runs against a real cluster with
	// --endpoints (Run then finds o.remote set); OpenLoop that it runs
	// open loads with --rate and --rate-of-peak (Run then finds p.Rate).
	Endpoints, OpenLoop bool
	Points              func(o *options) ([]point, error)
	// Settings, if set, adds the scenario's own settings to the report's
	// and returns how long a run takes, set-up not included, 0 if unknown
	// (default: --duration, plus --warmup and --settle if used).
	Settings func(o *options, st *Settings) time.Duration
	// Run runs one point. A run that fails may return a row with its
	// figures (Metrics set) along with the error: it is reported.
	Run func(ctx context.Context, o *options, v variant, p point, dir string) (Row, error)
}

// Row is the result of one (point, variant) run.
type Row struct {
	Scenario string             `json:"scenario"`
	Variant  string             `json:"variant"`
	Baseline string             `json:"baseline,omitempty"` // the variant Ratios compare with
	Point    point              `json:"point"`
	Metrics  map[string]float64 `json:"metrics"`
	// Ratios[m] = Metrics[m] / the baseline's Metrics[m] at the same point.
	Ratios map[string]float64 `json:"ratios,omitempty"`
	// Ops are the operations acknowledged in the measured window, Failed
	// those that returned an error; Attempts = Ops + Failed.
	Ops      uint64   `json:"ops"`
	Failed   uint64   `json:"failed"`
	Attempts uint64   `json:"attempts"`
	Seconds  float64  `json:"seconds"` // the measured window
	Errors   []string `json:"errors,omitempty"`
	// Open is set for an open load (Point.Rate > 0).
	Open *OpenLoop `json:"open_loop,omitempty"`
	// Timeline are samples taken during the run, for people (rebalance:
	// the nodes' counts and the placement operations done).
	Timeline []string `json:"timeline,omitempty"`
}

// OpenLoop is what an open load was asked to do and what it did.
type OpenLoop struct {
	// TargetRate is the operations due per second over all clients
	// (Point.Rate); with --rate-of-peak it is OfPeak x PeakRate, the ops/s
	// of the closed load of the same variant and point run just before.
	TargetRate float64 `json:"target_rate_per_s"`
	OfPeak     float64 `json:"of_peak,omitempty"`
	PeakRate   float64 `json:"peak_rate_per_s,omitempty"`
	// AchievedRate is the acknowledged operations per second (ops/s).
	AchievedRate float64 `json:"achieved_rate_per_s"`
	// Scheduled are the operations due in the window: Attempts (started)
	// plus Missed (due, but not started before the window's end); Late
	// started more than LateAfter after they were due, LateBehind of them
	// because their client's previous operation was still in flight (the
	// others: the load generator woke up late, e.g. short of CPU); MaxLag
	// is the largest delay of a start.
	Scheduled  uint64  `json:"scheduled"`
	Late       uint64  `json:"late"`
	LateBehind uint64  `json:"late_behind"`
	Missed     uint64  `json:"missed"`
	LateAfter  float64 `json:"late_after_s"`
	MaxLag     float64 `json:"max_start_lag_s"`
	// P99VsClosed is the p99 latency (every kind) of this load over the
	// closed load's (--rate-of-peak only).
	P99VsClosed float64 `json:"p99_vs_closed,omitempty"`
}

var scenarios = []*scenario{writeScenario, readScenario, idleScenario, scaleScenario, failoverScenario, rebalanceScenario, clusterStartScenario, splitScenario, routerScenario}

func findScenario(name string) *scenario {
	for _, s := range scenarios {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// selectVariants returns the runnable variants named in names (all when
// empty), the baseline always first, and the pending ones.
func (s *scenario) selectVariants(names []string) (run, pending []variant, err error) {
	for _, n := range names {
		if !slices.ContainsFunc(s.Variants, func(v variant) bool { return v.Name == n }) {
			return nil, nil, fmt.Errorf("scenario %s has no variant %q", s.Name, n)
		}
	}
	for i, v := range s.Variants {
		switch {
		case v.Pending != "":
			pending = append(pending, v)
		case i == 0 || len(names) == 0 || slices.Contains(names, v.Name):
			run = append(run, v)
		}
	}
	return run, pending, nil
}

// fillRatios sets every row's Ratios against the row of the baseline
// variant at the same point.
func fillRatios(s *scenario, rows []Row) {
	if len(s.Variants) < 2 || len(s.Ratios) == 0 {
		return
	}
	base := s.Variants[0].Name
	for i := range rows {
		r := &rows[i]
		j := slices.IndexFunc(rows, func(b Row) bool { return b.Variant == base && b.Point == r.Point })
		if j < 0 {
			continue
		}
		r.Baseline = base
		r.Ratios = nil
		for _, m := range s.Ratios {
			if b := rows[j].Metrics[m]; b != 0 {
				if r.Ratios == nil {
					r.Ratios = map[string]float64{}
				}
				r.Ratios[m] = r.Metrics[m] / b
			}
		}
	}
}

// finite drops the NaN and infinite metrics, which JSON cannot carry.
func (r *Row) finite() {
	for k, v := range r.Metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			delete(r.Metrics, k)
		}
	}
}

// perOp returns x/ops, 0 when nothing was acknowledged.
func perOp(x float64, ops uint64) float64 {
	if ops == 0 {
		return 0
	}
	return x / float64(ops)
}

// rate returns n per second over secs, 0 for an empty window.
func rate(n uint64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

// Timings of the table header.

func loadTiming(st Settings) string {
	return fmt.Sprintf("%v per run after %v of warm-up", secs(st.Duration), secs(st.Warmup))
}

func settleTiming(st Settings) string {
	return fmt.Sprintf("a %v window after %v of settling", secs(st.Duration), secs(st.Settle))
}

// Formats of the table's cells.

func fmtCount(v float64) string {
	switch a := math.Abs(v); {
	case a >= 10e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case a >= 10e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// fmtMicros shows a duration given in microseconds.
func fmtMicros(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.1fµs", us)
}

func fmtSeconds(s float64) string { return fmtMicros(s * 1e6) }

func fmtFloat(v float64) string {
	if v > 0 && v < 0.001 {
		return "<0.001"
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func fmtBytes(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2fGiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1fKiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0fB", v)
}

func fmtPercent(v float64) string { return fmt.Sprintf("%.1f%%", v) }

func fmtRatio(v float64) string {
	switch {
	case v >= 10:
		return fmt.Sprintf("%.1fx", v)
	case v >= 0.1 || v == 0:
		return fmt.Sprintf("%.2fx", v)
	}
	return fmt.Sprintf("%.2gx", v)
}
