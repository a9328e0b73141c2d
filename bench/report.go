package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Env is where a report was measured.
type Env struct {
	GoVersion  string `json:"go_version"`
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	NumCPU     int    `json:"num_cpu"`
	Commit     string `json:"commit,omitempty"`
	Modified   bool   `json:"modified,omitempty"` // the build's VCS state had local changes
	Hostname   string `json:"hostname,omitempty"`
	Time       string `json:"time"` // RFC 3339, the start of the invocation
}

// Settings are the options a report's numbers depend on.
type Settings struct {
	Nodes        int     `json:"nodes"`
	Replicas     int     `json:"replicas"`
	Transport    string  `json:"transport"`
	Duration     float64 `json:"duration_s"`
	Warmup       float64 `json:"warmup_s,omitempty"`
	Settle       float64 `json:"settle_s,omitempty"`
	TickInterval float64 `json:"tick_interval_s"`
	Workers      int     `json:"workers,omitempty"` // 0: GOMAXPROCS
	OpTimeout    float64 `json:"op_timeout_s"`
	DataDir      string  `json:"data_dir"`
	// Endpoints: the run was against the real cluster at these addresses
	// (--endpoints); Nodes and Replicas are then the cluster's (0 if its
	// Admin service did not say) and Transport is "client".
	Endpoints []string `json:"endpoints,omitempty"`
	// Rate (--rate) is the operations due per second of the open loads;
	// RateOfPeak (--rate-of-peak) the fraction of each closed load's ops/s
	// its open load ran at; LateAfter the delay of a start that counts as
	// late.
	Rate       float64 `json:"rate_per_s,omitempty"`
	RateOfPeak float64 `json:"rate_of_peak,omitempty"`
	LateAfter  float64 `json:"late_after_s,omitempty"`
	// Rebalance: the rebalance scenario's phases and placement limits.
	Rebalance *RebalanceSettings `json:"rebalance,omitempty"`
	// Split: the split scenario's phases and data.
	Split *SplitSettings `json:"split,omitempty"`
}

// PendingVariant is a variant the scenario lists but cannot run yet.
type PendingVariant struct {
	Name   string `json:"name"`
	Desc   string `json:"desc"`
	Reason string `json:"reason"`
}

// Report is what one invocation measured; it is the JSON file's content.
type Report struct {
	Scenario string           `json:"scenario"`
	Env      Env              `json:"env"`
	Settings Settings         `json:"settings"`
	Baseline string           `json:"baseline,omitempty"`
	Pending  []PendingVariant `json:"pending_variants,omitempty"`
	Notes    []string         `json:"notes,omitempty"` // of this invocation (--endpoints)
	Rows     []Row            `json:"rows"`
}

func readEnv(start time.Time) Env {
	env := Env{
		GoVersion:  runtime.Version(),
		GOOS:       runtime.GOOS,
		GOARCH:     runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
		Time:       start.UTC().Format(time.RFC3339),
	}
	env.Hostname, _ = os.Hostname()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				env.Commit = s.Value
			case "vcs.modified":
				env.Modified = s.Value == "true"
			}
		}
	}
	if env.Commit == "" { // go run does not stamp the build: ask git (read-only)
		if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
			env.Commit = strings.TrimSpace(string(out))
		}
	}
	return env
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// writeTable prints rep as a table with one row per configuration.
func writeTable(w io.Writer, s *scenario, rep *Report) error {
	e, st := rep.Env, rep.Settings
	fmt.Fprintf(w, "# %s: %s\n", s.Name, s.Summary)
	remote := len(st.Endpoints) > 0
	cl := fmt.Sprintf("%d nodes, %d replicas per shard, transport %s, ", st.Nodes, st.Replicas, st.Transport)
	switch {
	case s.Timing == nil:
		cl = "no cluster, "
	case remote:
		cl = fmt.Sprintf("cluster at %s (%s), ", strings.Join(st.Endpoints, ","), remoteShape(st))
	}
	fmt.Fprintf(w, "# %sGOMAXPROCS %d (NumCPU %d), %s, commit %s, %s/%s\n",
		cl, e.GOMAXPROCS, e.NumCPU, e.GoVersion, or(shortCommit(e.Commit), "unknown"), e.GOOS, e.GOARCH)
	switch {
	case s.Timing == nil:
	case remote:
		fmt.Fprintf(w, "# %s, through the Go client over gRPC, op timeout %v\n", s.Timing(st), secs(st.OpTimeout))
	default:
		fmt.Fprintf(w, "# %s, tick %v, stores on disk with fsync under %s\n", s.Timing(st), secs(st.TickInterval), st.DataDir)
	}
	for _, n := range s.Notes {
		if !remote || !strings.Contains(n, "fsyncs") && !strings.HasPrefix(n, "cpu/") {
			fmt.Fprintf(w, "# %s\n", n)
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "# %s\n", n)
	}
	open := slices.ContainsFunc(rep.Rows, func(r Row) bool { return r.Open != nil })
	if open {
		switch {
		case st.RateOfPeak > 0:
			fmt.Fprintf(w, "# each point runs closed-loop, then open-loop at %.3g x the closed loop's ops/s (--rate-of-peak)\n", st.RateOfPeak)
		case st.Rate > 0:
			fmt.Fprintf(w, "# open loop at %s ops/s (--rate)\n", fmtCount(st.Rate))
		}
		fmt.Fprintf(w, "# open loop: operations due on a fixed schedule (target/s over all clients, spread evenly), one in flight per"+
			" client; latencies count from the due time (waiting included); late: started over %v after due (the JSON's"+
			" late_behind: of them, due while the client's previous operation was in flight; the others, the load generator"+
			" woke up late); missed: due in the window, not started before its end\n", secs(st.LateAfter))
	}
	for _, p := range rep.Pending {
		fmt.Fprintf(w, "# variant %s (%s): pending: %s\n", p.Name, p.Desc, p.Reason)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var head []string
	head = append(head, s.Params...)
	if open {
		head = append(head, "load")
	}
	head = append(head, "variant")
	for _, c := range s.Columns {
		if remote && !slices.ContainsFunc(rep.Rows, func(r Row) bool { _, ok := r.Metrics[c.Key]; return ok }) {
			continue // not measured against a real cluster
		}
		head = append(head, c.Header)
	}
	if open {
		head = append(head, "target/s", "late", "missed")
		if st.RateOfPeak > 0 {
			head = append(head, "p99 vs closed")
		}
	}
	ratios := rep.Baseline != "" && len(s.Ratios) > 0
	if ratios {
		for _, m := range s.Ratios {
			head = append(head, header(s, m)+" vs "+rep.Baseline)
		}
	}
	load := slices.ContainsFunc(rep.Rows, func(r Row) bool { return r.Attempts > 0 })
	if load {
		head = append(head, "failed")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rep.Rows {
		var cells []string
		for _, p := range s.Params {
			cells = append(cells, paramCell(r.Point, p))
		}
		if open {
			cells = append(cells, loadCell(r))
		}
		cells = append(cells, r.Variant)
		for _, c := range s.Columns {
			if remote && !slices.ContainsFunc(rep.Rows, func(r Row) bool { _, ok := r.Metrics[c.Key]; return ok }) {
				continue
			}
			v, ok := r.Metrics[c.Key]
			cells = append(cells, cell(ok, v, c.Format))
		}
		if open {
			if o := r.Open; o != nil {
				cells = append(cells, fmtCount(o.TargetRate), fmt.Sprint(o.Late), fmt.Sprint(o.Missed))
				if st.RateOfPeak > 0 {
					cells = append(cells, cell(o.P99VsClosed > 0, o.P99VsClosed, fmtRatio))
				}
			} else {
				cells = append(cells, "-", "-", "-")
				if st.RateOfPeak > 0 {
					cells = append(cells, "-")
				}
			}
		}
		if ratios {
			for _, m := range s.Ratios {
				v, ok := r.Ratios[m]
				cells = append(cells, cell(ok, v, fmtRatio))
			}
		}
		if load {
			cells = append(cells, fmt.Sprint(r.Failed))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Rows {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "# %s %s: %s\n", r.Point, r.Variant, e)
		}
	}
	return nil
}

// loadCell says whether r's load was closed or open (and at which share
// of the peak).
func loadCell(r Row) string {
	switch {
	case r.Open == nil:
		return "closed"
	case r.Open.OfPeak > 0:
		return fmt.Sprintf("open %.3gx", r.Open.OfPeak)
	}
	return "open"
}

func cell(ok bool, v float64, f func(float64) string) string {
	if !ok {
		return "-"
	}
	return f(v)
}

func header(s *scenario, key string) string {
	for _, c := range s.Columns {
		if c.Key == key {
			return c.Header
		}
	}
	return key
}

func paramCell(p point, name string) string {
	switch name {
	case "shards":
		return fmt.Sprint(p.Shards)
	case "payload":
		return fmt.Sprint(p.Payload)
	case "clients":
		return fmt.Sprint(p.Clients)
	case "mix":
		return p.Mix
	}
	return "?"
}

func secs(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// writeJSON writes rep to path, indented.
func writeJSON(path string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// writeChart plots the scenario's first ratio metric (else its first
// column) against the shard count, one line per variant and other
// parameters, log-scaled shards; the file's extension picks the format.
func writeChart(path string, s *scenario, rep *Report) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return fmt.Errorf("chart %s: want a .png or .svg file", path)
	}
	metric := s.Columns[0].Key
	if len(s.Ratios) > 0 {
		metric = s.Ratios[0]
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (%d nodes, %s, GOMAXPROCS %d)", s.Name, rep.Settings.Nodes, rep.Settings.Transport, rep.Env.GOMAXPROCS)
	p.X.Label.Text = "shards"
	p.Y.Label.Text = header(s, metric)
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Y.Min = 0
	series := map[string]plotter.XYs{}
	var names []string
	for _, r := range rep.Rows {
		v, ok := r.Metrics[metric]
		if !ok || r.Point.Shards <= 0 {
			continue
		}
		name := r.Variant
		if r.Point.Payload > 0 && slices.Contains(s.Params, "payload") {
			name += fmt.Sprintf(" %dB", r.Point.Payload)
		}
		if r.Point.Mix != "" {
			name += " " + r.Point.Mix
		}
		if r.Open != nil {
			name += " " + loadCell(r)
		}
		if _, ok := series[name]; !ok {
			names = append(names, name)
		}
		series[name] = append(series[name], plotter.XY{X: float64(r.Point.Shards), Y: v})
	}
	if len(names) == 0 {
		return fmt.Errorf("chart %s: nothing to plot", path)
	}
	var args []any
	for _, n := range names {
		xys := series[n]
		slices.SortFunc(xys, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		args = append(args, n, xys)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// progress shows on stderr which run is going on and how far it is; nil
// (--quiet) shows nothing.
type progress struct {
	bar   *progressbar.ProgressBar
	stop  chan struct{}
	done  chan struct{}
	label string
	start time.Time
	total time.Duration
}

func newProgress(quiet bool, runs int) *progress {
	if quiet {
		return nil
	}
	return &progress{bar: progressbar.NewOptions(runs,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetWidth(20),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetDescription("starting"),
	)}
}

// begin starts a run labelled label, expected to take about expect (0:
// unknown); the description shows the time spent in it until end.
func (p *progress) begin(label string, expect time.Duration) {
	if p == nil {
		return
	}
	p.label, p.start, p.total = label, time.Now(), expect
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	p.bar.Describe(label)
	go func() {
		defer close(p.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				d := fmt.Sprintf("%s %v", p.label, time.Since(p.start).Round(time.Second))
				if p.total > 0 {
					d += fmt.Sprintf("/~%v", p.total)
				}
				p.bar.Describe(d)
			}
		}
	}()
}

// end finishes the current run.
func (p *progress) end() {
	if p == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.stop = nil
	_ = p.bar.Add(1)
}

func (p *progress) finish() {
	if p != nil {
		_ = p.bar.Finish()
	}
}
