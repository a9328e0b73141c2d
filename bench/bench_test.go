package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"go.uber.org/goleak"
)

// The tests run a very short version of every scenario (a few shards, well
// under a second of load) and check that the harness's numbers are
// consistent, not what they are: operations counted are the operations
// acknowledged, a failed operation is never counted as done, every
// acknowledged write really applied, percentiles are ordered, the JSON
// round-trips.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shortOptions parses args (after the scenario) plus the flags that keep a
// test run short and quiet.
func shortOptions(t *testing.T, scenario string, args ...string) *options {
	t.Helper()
	args = append([]string{"--quiet", "--dir", t.TempDir(), "--tick", "20ms", "--settle", "200ms", "--op-timeout", "5s"}, args...)
	o, err := parseFlags(scenario, args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder sees what a run did: the operations the load reported done, and
// the writes that the state machines of the nodes applied. It keeps one
// record per run (per variant and point).
type recorder struct {
	mu   sync.Mutex
	cur  string
	runs map[string]*runRecord
}

type runRecord struct {
	acked   map[uint64]opKind // client<<32|seq of the acknowledged operations
	failed  map[uint64]bool
	kinds   [numKinds]uint64 // acknowledged operations by kind
	applied map[uint64]bool  // stamps of the Puts applied on any replica
}

func newRecorder(o *options) *recorder {
	r := &recorder{runs: map[string]*runRecord{}}
	o.hooks.run = func(v variant, p point) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.cur = p.String() + " " + v.Name
		r.runs[r.cur] = &runRecord{acked: map[uint64]opKind{}, failed: map[uint64]bool{}, applied: map[uint64]bool{}}
	}
	o.hooks.done = func(client int, seq uint64, kind opKind, err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		rec, id := r.runs[r.cur], uint64(client)<<32|seq
		if err != nil {
			rec.failed[id] = true
			return
		}
		rec.acked[id] = kind
		rec.kinds[kind]++
	}
	o.hooks.engine = func(c *engine.Config) {
		c.StateMachine = &recordingKV{KV: engine.NewKV(), r: r}
	}
	return r
}

func (r *recorder) run(row Row) *runRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[row.Point.String()+" "+row.Variant]
}

// recordingKV is the key-value state machine that also records the stamp
// (stampValue) of every Put it applies.
type recordingKV struct {
	*engine.KV
	r *recorder
}

func (k *recordingKV) Apply(s *engine.ApplyContext, cmd []byte) ([]byte, error) {
	if len(cmd) > 0 && cmd[0] == 1 { // Put: 1 uvarint(len key) key value
		if n, w := binary.Uvarint(cmd[1:]); w > 0 && len(cmd) >= 1+w+int(n)+8 {
			stamp := binary.BigEndian.Uint64(cmd[1+w+int(n):])
			k.r.mu.Lock()
			k.r.runs[k.r.cur].applied[stamp] = true
			k.r.mu.Unlock()
		}
	}
	return k.KV.Apply(s, cmd)
}

// checkCounts checks what every row of a load must satisfy.
func checkCounts(t *testing.T, row Row, rec *runRecord) {
	t.Helper()
	name := row.Point.String() + " " + row.Variant
	if row.Ops+row.Failed != row.Attempts {
		t.Errorf("%s: ops %d + failed %d != attempts %d", name, row.Ops, row.Failed, row.Attempts)
	}
	if rec != nil {
		if uint64(len(rec.acked)) != row.Ops || uint64(len(rec.failed)) != row.Failed {
			t.Errorf("%s: row counts %d acked, %d failed; the operations reported %d and %d",
				name, row.Ops, row.Failed, len(rec.acked), len(rec.failed))
		}
		for id := range rec.failed {
			if _, ok := rec.acked[id]; ok {
				t.Errorf("%s: operation %x both failed and acknowledged", name, id)
			}
		}
	}
	if row.Ops == 0 {
		t.Errorf("%s: no operation acknowledged", name)
	}
	m := row.Metrics
	if got, want := m["ops_per_s"]*row.Seconds, float64(row.Ops); math.Abs(got-want) > 1e-6*want {
		t.Errorf("%s: ops/s x seconds = %v, want %v", name, got, want)
	}
	for _, prefix := range []string{"", "write_", "read_"} {
		p50, ok := m[prefix+"p50_us"]
		if !ok {
			continue
		}
		p99, p999, pmax := m[prefix+"p99_us"], m[prefix+"p999_us"], m[prefix+"max_us"]
		if !(0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= pmax) {
			t.Errorf("%s: %s percentiles out of order: p50 %v p99 %v p99.9 %v max %v", name, prefix, p50, p99, p999, pmax)
		}
	}
}

// checkApplied checks that every acknowledged write applied and, when
// nothing failed, that every write the load made applied was acknowledged.
func checkApplied(t *testing.T, row Row, rec *runRecord, exact bool) {
	t.Helper()
	measured := 0
	for stamp := range rec.applied {
		if stamp&0xffffffff < 1<<31 { // warm-up stamps have the top bit of seq
			measured++
		}
	}
	for id, kind := range rec.acked {
		if kind == opWrite && !rec.applied[id] {
			t.Errorf("%s %s: acknowledged write %x never applied", row.Point, row.Variant, id)
		}
	}
	if exact && uint64(measured) != rec.kinds[opWrite] {
		t.Errorf("%s %s: %d measured writes applied, %d acknowledged", row.Point, row.Variant, measured, rec.kinds[opWrite])
	}
}

func TestWrite(t *testing.T) {
	o := shortOptions(t, "write", "--shards", "2", "--payload", "16", "--clients", "4", "--duration", "500ms", "--warmup", "100ms")
	rec := newRecorder(o)
	rep, err := runScenario(testCtx(t), writeScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 || rep.Rows[0].Variant != "sync-each-shard" || rep.Rows[1].Variant != "batched" {
		t.Fatalf("rows %+v, want the baseline then batched", rep.Rows)
	}
	for _, row := range rep.Rows {
		r := rec.run(row)
		checkCounts(t, row, r)
		if row.Failed != 0 {
			t.Errorf("%s: %d writes failed: %v", row.Variant, row.Failed, row.Errors)
		}
		checkApplied(t, row, r, true)
		if r.kinds[opRead] != 0 || math.Round(row.Metrics["writes_per_s"]*row.Seconds) != float64(r.kinds[opWrite]) {
			t.Errorf("%s: writes/s %v over %vs, %d writes acknowledged", row.Variant, row.Metrics["writes_per_s"], row.Seconds, r.kinds[opWrite])
		}
		if row.Metrics["fsyncs_per_op"] <= 0 || row.Metrics["cpu_us_per_op"] <= 0 || row.Metrics["allocs_per_op"] <= 0 {
			t.Errorf("%s: per-write costs missing: %v", row.Variant, row.Metrics)
		}
		if row.Baseline != "sync-each-shard" || row.Ratios["writes_per_s"] <= 0 {
			t.Errorf("%s: no ratio to the baseline: %q %v", row.Variant, row.Baseline, row.Ratios)
		}
	}
	if r := rep.Rows[0].Ratios["writes_per_s"]; r != 1 {
		t.Errorf("baseline's ratio to itself %v", r)
	}
	checkJSON(t, rep)
}

func TestRead(t *testing.T) {
	o := shortOptions(t, "read", "--shards", "2", "--clients", "4", "--duration", "400ms", "--warmup", "0s")
	rec := newRecorder(o)
	rep, err := runScenario(testCtx(t), readScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 {
		t.Fatalf("%d rows, want 2 (read, 9:1)", len(rep.Rows))
	}
	for _, row := range rep.Rows {
		r := rec.run(row)
		checkCounts(t, row, r)
		if row.Failed != 0 {
			t.Errorf("%s: %d operations failed: %v", row.Point.Mix, row.Failed, row.Errors)
		}
		reads, writes := row.Metrics["reads_per_s"]*row.Seconds, row.Metrics["writes_per_s"]*row.Seconds
		if math.Round(reads) != float64(r.kinds[opRead]) || math.Round(writes) != float64(r.kinds[opWrite]) {
			t.Errorf("%s: %v reads and %v writes counted, %d and %d acknowledged", row.Point.Mix, reads, writes, r.kinds[opRead], r.kinds[opWrite])
		}
		if r.kinds[opRead] == 0 || (row.Point.Mix == "9:1") != (r.kinds[opWrite] > 0) {
			t.Errorf("%s: %d reads, %d writes", row.Point.Mix, r.kinds[opRead], r.kinds[opWrite])
		}
		checkApplied(t, row, r, false) // the preload's writes are not measured
	}
}

func TestFailover(t *testing.T) {
	o := shortOptions(t, "failover", "--shards", "3", "--clients", "6", "--duration", "1500ms")
	rec := newRecorder(o)
	rep, err := runScenario(testCtx(t), failoverScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	row := rep.Rows[0]
	r := rec.run(row)
	checkCounts(t, row, r)
	// Writes in flight on the killed node may have applied without being
	// acknowledged: only acknowledged => applied holds.
	checkApplied(t, row, r, row.Failed == 0)
	m := row.Metrics
	if m["victim"] < 1 || m["victim"] > 3 || m["leaders_lost"] < 1 || m["recovery_s"] <= 0 {
		t.Errorf("victim %v lost %v leaders, recovery %vs", m["victim"], m["leaders_lost"], m["recovery_s"])
	}
	if m["failed_after_kill"] > float64(row.Failed) || m["writes_per_s_before"] <= 0 {
		t.Errorf("failed after kill %v of %d, writes/s before %v", m["failed_after_kill"], row.Failed, m["writes_per_s_before"])
	}
	checkJSON(t, rep)
}

func TestIdle(t *testing.T) {
	o := shortOptions(t, "idle", "--shards", "5", "--duration", "300ms")
	rep, err := runScenario(testCtx(t), idleScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != len(idleScenario.Variants) {
		t.Fatalf("%d rows for %d variants", len(rep.Rows), len(idleScenario.Variants))
	}
	plain := rep.Rows[0]
	for _, row := range rep.Rows {
		m := row.Metrics
		if m["cpu_total_pct"] <= 0 || math.Abs(m["cpu_per_node_pct"]*3-m["cpu_total_pct"]) > 1e-9 {
			t.Errorf("%s: cpu total %v, per node %v", row.Variant, m["cpu_total_pct"], m["cpu_per_node_pct"])
		}
		if row.Ratios["msgs_per_s"] != m["msgs_per_s"]/plain.Metrics["msgs_per_s"] {
			t.Errorf("%s: msgs/s ratio %v", row.Variant, row.Ratios)
		}
	}
	// The variants' config reaches the engines: uncoalesced heartbeats are
	// one message per shard and follower.
	if p, c := plain.Metrics["msgs_per_s"], rep.Rows[1].Metrics["msgs_per_s"]; p <= c {
		t.Errorf("plain %v msgs/s, coalesced %v", p, c)
	}
}

// TestScale runs on both transports: a restarted node's gRPC transport
// listens on its old port again.
func TestScale(t *testing.T) {
	for _, tr := range []string{"mem", "grpc"} {
		t.Run(tr, func(t *testing.T) {
			o := shortOptions(t, "scale", "--shards", "5", "--transport", tr)
			rep, err := runScenario(testCtx(t), scaleScenario, o)
			if err != nil {
				t.Fatal(err)
			}
			m := rep.Rows[0].Metrics
			if m["create_s"] <= 0 || m["open_s"] <= 0 || m["restart_s"] < m["open_s"] {
				t.Errorf("create %vs, open %vs, restart %vs", m["create_s"], m["open_s"], m["restart_s"])
			}
			if _, ok := m["heap_per_replica_bytes"]; !ok {
				t.Errorf("no heap per replica: %v", m)
			}
		})
	}
}

func TestRouter(t *testing.T) {
	o := shortOptions(t, "router", "--shards", "100,1000", "--clients", "2", "--duration", "100ms")
	rep, err := runScenario(testCtx(t), routerScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rep.Rows {
		checkCounts(t, row, nil)
		if row.Failed != 0 || row.Point.Clients != 2 {
			t.Errorf("shards %d: %d failed lookups, %d clients", row.Point.Shards, row.Failed, row.Point.Clients)
		}
	}
}

// TestLoad drives the closed loop with a fake operation that fails every
// third time.
func TestLoad(t *testing.T) {
	var mu sync.Mutex
	acked, failed := 0, 0
	boom := errors.New("boom")
	tl := runLoad(context.Background(), loadSpec{
		clients: 3, duration: 50 * time.Millisecond, grace: time.Second,
		op: func(ctx context.Context, client int, seq uint64) (opKind, error) {
			if seq%3 == 2 {
				return opWrite, boom
			}
			return opKind(seq % 2), nil
		},
		done: func(client int, seq uint64, kind opKind, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
			} else {
				acked++
			}
		},
	})
	if tl.ops() != uint64(acked) || tl.failures() != uint64(failed) || tl.started != tl.ops()+tl.failures() {
		t.Fatalf("tally %d acked %d failed of %d; ops saw %d and %d", tl.ops(), tl.failures(), tl.started, acked, failed)
	}
	for k := range numKinds {
		if uint64(len(tl.lat[k])) != tl.acked[k] {
			t.Errorf("kind %d: %d latencies for %d acknowledged", k, len(tl.lat[k]), tl.acked[k])
		}
	}
	if tl.failedSince(time.Time{}) != tl.failures() || len(tl.errors()) != 1 || !strings.Contains(tl.errors()[0], "boom") {
		t.Errorf("failures: %d since the start, errors %v", tl.failedSince(time.Time{}), tl.errors())
	}
}

func TestPercentiles(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n)
		}
		return out
	}
	var hundred []time.Duration
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, time.Duration(i))
	}
	for _, tc := range []struct {
		name string
		lat  []time.Duration
		want []time.Duration // p50, p99, p99.9, max
	}{
		{"empty", nil, ms(0, 0, 0, 0)},
		{"one", ms(7), ms(7, 7, 7, 7)},
		{"two", ms(9, 1), ms(1, 9, 9, 9)},
		{"hundred", hundred, ms(50, 99, 100, 100)},
	} {
		if got := percentiles(tc.lat, 0.5, 0.99, 0.999, 1); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRatios(t *testing.T) {
	s := &scenario{Variants: []variant{{Name: "base"}, {Name: "opt"}}, Ratios: []string{"x"}}
	rows := []Row{
		{Variant: "base", Point: point{Shards: 1}, Metrics: map[string]float64{"x": 2}},
		{Variant: "opt", Point: point{Shards: 1}, Metrics: map[string]float64{"x": 5}},
		{Variant: "base", Point: point{Shards: 2}, Metrics: map[string]float64{"x": 0}},
		{Variant: "opt", Point: point{Shards: 2}, Metrics: map[string]float64{"x": 1}},
	}
	fillRatios(s, rows)
	if rows[1].Ratios["x"] != 2.5 || rows[0].Ratios["x"] != 1 {
		t.Errorf("ratios %v %v", rows[0].Ratios, rows[1].Ratios)
	}
	if _, ok := rows[3].Ratios["x"]; ok {
		t.Errorf("a ratio to a zero baseline: %v", rows[3].Ratios)
	}
}

// checkJSON writes rep as the JSON file and reads it back.
func checkJSON(t *testing.T, rep *Report) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.json")
	if err := writeJSON(path, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, rep) {
		t.Errorf("JSON does not round-trip:\n%+v\n%+v", &back, rep)
	}
	if back.Env.GoVersion == "" || back.Env.GOMAXPROCS == 0 || back.Env.NumCPU == 0 {
		t.Errorf("environment missing: %+v", back.Env)
	}
}

func TestJSONNonFinite(t *testing.T) {
	row := Row{Metrics: map[string]float64{"a": math.NaN(), "b": math.Inf(1), "c": 1}}
	row.finite()
	if len(row.Metrics) != 1 {
		t.Fatalf("metrics %v", row.Metrics)
	}
	checkJSON(t, &Report{Scenario: "x", Env: readEnv(time.Now()), Rows: []Row{row}})
}

// TestCLI runs the command as a user would: usage, errors, a short run with
// the table, JSON and chart files.
func TestCLI(t *testing.T) {
	ctx := testCtx(t)
	var out, errOut bytes.Buffer
	if code := run(ctx, nil, &out, &errOut); code != 2 {
		t.Errorf("no arguments: exit %d", code)
	}
	for _, s := range scenarios {
		if !strings.Contains(errOut.String(), "\n  "+s.Name+" ") {
			t.Errorf("usage does not list %s:\n%s", s.Name, errOut.String())
		}
	}
	for _, args := range [][]string{{"nope"}, {"write", "--transport", "carrier-pigeon"}, {"write", "--shards", "0"}, {"write", "extra"}} {
		if code := run(ctx, args, io.Discard, io.Discard); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0)) // --gomaxprocs sets it for the process
	dir := t.TempDir()
	jsonPath, chartPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	out.Reset()
	args := []string{"router", "--shards", "10,100", "--clients", "1", "--duration", "50ms", "--quiet", "--gomaxprocs", "2",
		"--json", jsonPath, "--chart", chartPath}
	if code := run(ctx, args, &out, os.Stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out.String(), "GOMAXPROCS 2") || strings.Count(out.String(), " default ") != 2 {
		t.Errorf("table:\n%s", out.String())
	}
	for _, p := range []string{jsonPath, chartPath} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
}
