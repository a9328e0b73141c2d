package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	flnode "github.com/flotilla-db/flotilla/node"
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
	r.attach(o)
	return r
}

// attach sets o's hooks to record the runs in r.
func (r *recorder) attach(o *options) {
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
}

func (r *recorder) run(row Row) *runRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[row.Point.String()+" "+row.Variant]
}

// snapshot returns a copy of the record of row's run: the replicas of a
// real cluster, which keeps running, may still be applying.
func (r *recorder) snapshot(row Row) *runRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := *r.runs[row.Point.String()+" "+row.Variant]
	rec.applied = maps.Clone(rec.applied)
	return &rec
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
			if rec := k.r.runs[k.r.cur]; rec != nil { // a real cluster may apply before the first run
				rec.applied[stamp] = true
			}
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
	if n := len(rep.Rows); n != len(writeScenario.Variants) || rep.Rows[0].Variant != "sync-in-worker" || rep.Rows[n-1].Variant != "async" {
		t.Fatalf("rows %+v, want every variant, the baseline first and the engine's path (async) last", rep.Rows)
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
		if row.Baseline != "sync-in-worker" || row.Ratios["writes_per_s"] <= 0 {
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
	if len(rep.Rows) != 8 {
		t.Fatalf("%d rows, want 8 (read, 9:1 for leader, follower, stale and lease reads)", len(rep.Rows))
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
	for _, args := range [][]string{{"nope"}, {"write", "--transport", "carrier-pigeon"}, {"write", "--shards", "0"}, {"write", "extra"},
		{"write", "--rate", "-1"}, {"write", "--rate", "100", "--rate-of-peak", "0.5"}, {"router", "--rate", "100"},
		{"failover", "--rate-of-peak", "0.5"}, {"write", "--endpoints", "127.0.0.1:1", "--variants", "async"},
		{"write", "--endpoints", "127.0.0.1:1,"}, {"write", "--phase", "1s"}, {"rebalance", "--duration", "1s"},
		{"rebalance", "--joins", "0"}, {"rebalance", "--placement-moves-per-minute", "0"}, {"rebalance", "--replicas", "4"}} {
		if code := run(ctx, args, io.Discard, io.Discard); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	for _, sc := range []string{"idle", "scale", "failover", "rebalance"} {
		errOut.Reset()
		if code := run(ctx, []string{sc, "--endpoints", "127.0.0.1:1"}, io.Discard, &errOut); code != 2 ||
			!strings.Contains(errOut.String(), "scenario "+sc+" needs the in-process cluster; --endpoints supports write and read") {
			t.Errorf("%s --endpoints: exit %d, %q", sc, code, errOut.String())
		}
	}
	errOut.Reset()
	if run(ctx, nil, io.Discard, &errOut); !strings.Contains(errOut.String(), "-endpoints") ||
		!strings.Contains(errOut.String(), "-rate-of-peak") || !strings.Contains(errOut.String(), "-rate float") {
		t.Errorf("usage does not describe the new flags:\n%s", errOut.String())
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

// TestOpenLoad drives the open loop with a fake operation that takes a
// little time and fails every fifth time: every operation due in the
// window is started or missed, every one started is acknowledged or
// failed, none starts before it is due, and latencies count from the due
// time.
func TestOpenLoad(t *testing.T) {
	var mu sync.Mutex
	acked, failed := 0, 0
	boom := errors.New("boom")
	const rate, clients, window = 400.0, 4, 300 * time.Millisecond
	var early []string
	tl := runLoad(context.Background(), loadSpec{
		clients: clients, duration: window, rate: rate, grace: time.Second,
		op: func(ctx context.Context, client int, seq uint64) (opKind, error) {
			time.Sleep(500 * time.Microsecond)
			if seq%5 == 4 {
				return opWrite, boom
			}
			return opWrite, nil
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
		timed: func(client int, seq uint64, due, began time.Time, lat time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if began.Before(due) || lat < began.Sub(due)+500*time.Microsecond {
				early = append(early, fmt.Sprintf("client %d seq %d: began %v after due, latency %v", client, seq, began.Sub(due), lat))
			}
		},
	})
	if tl.ops() != uint64(acked) || tl.failures() != uint64(failed) || tl.started != tl.ops()+tl.failures() {
		t.Fatalf("tally %d acked %d failed of %d started; ops saw %d and %d", tl.ops(), tl.failures(), tl.started, acked, failed)
	}
	// The operations due at j/rate for j = 0, 1, ... before the window's end.
	if want := uint64(math.Ceil(window.Seconds() * rate)); tl.scheduled() != want {
		t.Errorf("%d operations scheduled (%d started, %d missed), want %d", tl.scheduled(), tl.started, tl.missed, want)
	}
	if tl.started == 0 || tl.failures() == 0 || uint64(len(tl.lat[opWrite])) != tl.ops() {
		t.Errorf("%d started, %d failed, %d latencies for %d acknowledged", tl.started, tl.failures(), len(tl.lat[opWrite]), tl.ops())
	}
	if len(early) > 0 {
		t.Errorf("latencies not counted from the due time:\n%s", strings.Join(early, "\n"))
	}
	if tl.late > tl.started {
		t.Errorf("%d late of %d started", tl.late, tl.started)
	}
}

// TestOpenLoadStall stalls one operation of client 0 on a channel: the
// operations of client 0 due during the stall start late, once it ends,
// and their latencies include the wait; client 1 keeps its schedule.
func TestOpenLoadStall(t *testing.T) {
	const stall = 150 * time.Millisecond
	const stalledSeq = 3
	stalled, release := make(chan struct{}), make(chan struct{})
	go func() {
		<-stalled
		time.Sleep(stall)
		close(release)
	}()
	type op struct {
		due, began time.Time
		lat        time.Duration
	}
	var mu sync.Mutex
	ops := map[uint64]op{} // of client 0, by seq
	tl := runLoad(context.Background(), loadSpec{
		clients: 2, duration: 400 * time.Millisecond, rate: 200, grace: time.Second, // each client every 10ms
		op: func(ctx context.Context, client int, seq uint64) (opKind, error) {
			if client == 0 && seq == stalledSeq {
				close(stalled)
				<-release
			}
			return opWrite, nil
		},
		timed: func(client int, seq uint64, due, began time.Time, lat time.Duration) {
			if client == 0 {
				mu.Lock()
				ops[seq] = op{due, began, lat}
				mu.Unlock()
			}
		},
	})
	if tl.started != tl.ops() || tl.failures() != 0 || tl.scheduled() != 80 {
		t.Fatalf("%d started, %d acknowledged, %d failed, %d scheduled (want 80)", tl.started, tl.ops(), tl.failures(), tl.scheduled())
	}
	s := ops[stalledSeq]
	if s.lat < stall {
		t.Errorf("the stalled operation's latency %v < the stall %v", s.lat, stall)
	}
	end := s.due.Add(s.lat) // when the stall ended
	late := 0
	for seq := uint64(stalledSeq + 1); ; seq++ {
		o, ok := ops[seq]
		if !ok || !o.due.Before(end) {
			break
		}
		// Due during the stall: started once it ended, latency from due;
		// late unless due within lateAfter of its end.
		if end.Sub(o.due) > lateAfter {
			late++
		}
		if o.began.Before(end) || o.lat < end.Sub(o.due) {
			t.Errorf("seq %d due %v before the stall's end: began %v before it, latency %v",
				seq, end.Sub(o.due), end.Sub(o.began), o.lat)
		}
	}
	if late < 10 || tl.late < uint64(late) || tl.lateBehind < uint64(late) || tl.lateBehind > tl.late {
		t.Errorf("%d operations due during the %v stall, the tally counts %d late, %d behind", late, stall, tl.late, tl.lateBehind)
	}
	if ps := percentiles(tl.lat[opWrite], 1); ps[0] < stall {
		t.Errorf("max latency %v < the stall %v", ps[0], stall)
	}
}

// TestRateOfPeak runs every variant closed, then open at half its peak.
func TestRateOfPeak(t *testing.T) {
	o := shortOptions(t, "write", "--shards", "2", "--payload", "16", "--clients", "4", "--duration", "300ms", "--warmup", "0s",
		"--rate-of-peak", "0.5", "--variants", "async")
	rec := newRecorder(o)
	rep, err := runScenario(testCtx(t), writeScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want closed and open for each of 2 variants", len(rep.Rows))
	}
	for i := 0; i < len(rep.Rows); i += 2 {
		closed, open := rep.Rows[i], rep.Rows[i+1]
		for _, row := range []Row{closed, open} {
			r := rec.run(row)
			checkCounts(t, row, r)
			checkApplied(t, row, r, row.Failed == 0)
		}
		peak := closed.Metrics["ops_per_s"]
		if closed.Open != nil || closed.Point.Rate != 0 || open.Variant != closed.Variant || open.Open == nil {
			t.Fatalf("rows %d, %d: %s %+v then %s %+v", i, i+1, closed.Variant, closed.Open, open.Variant, open.Open)
		}
		ol := open.Open
		if open.Point.Rate != math.Round(peak/2) || ol.TargetRate != open.Point.Rate || ol.OfPeak != 0.5 || ol.PeakRate != peak {
			t.Errorf("%s: open at %v/s (%+v), closed peak %v/s", open.Variant, open.Point.Rate, ol, peak)
		}
		if ol.Scheduled != open.Attempts+ol.Missed || ol.AchievedRate != open.Metrics["ops_per_s"] || ol.Late > open.Attempts {
			t.Errorf("%s: open loop %+v, %d attempts", open.Variant, ol, open.Attempts)
		}
		if want := open.Metrics["p99_us"] / closed.Metrics["p99_us"]; ol.P99VsClosed != want {
			t.Errorf("%s: p99 vs closed %v, want %v", open.Variant, ol.P99VsClosed, want)
		}
	}
	var out bytes.Buffer
	if err := writeTable(&out, writeScenario, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99 vs closed", "open 0.5x", "closed", "target/s", "late", "missed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if rep.Settings.RateOfPeak != 0.5 || rep.Settings.LateAfter <= 0 {
		t.Errorf("settings %+v", rep.Settings)
	}
	checkJSON(t, rep)
}

// startNodes starts three nodes of package node on loopback with static
// peers, as node/node_test.go does, each with a state machine that
// records what it applies; it returns their client addresses.
func startNodes(t *testing.T, ctx context.Context, shards int, r *recorder) []string {
	t.Helper()
	freeAddr := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	dir := t.TempDir()
	var peers []flnode.Peer
	for i := 1; i <= 3; i++ {
		peers = append(peers, flnode.Peer{NodeID: uint64(i), RaftAddr: freeAddr(), ClientAddr: freeAddr()})
	}
	var addrs []string
	for _, p := range peers {
		n, err := flnode.Start(ctx, flnode.Config{
			NodeID: p.NodeID, ClusterID: 9, DataDir: filepath.Join(dir, fmt.Sprint(p.NodeID)),
			RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr, Peers: peers, InitialShards: shards,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Engine: func(c *engine.Config) {
				c.TickInterval = 20 * time.Millisecond
				c.StateMachine = &recordingKV{KV: engine.NewKV(), r: r}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		addrs = append(addrs, n.ClientAddr())
	}
	return addrs
}

// TestEndpoints runs write (closed) and read (open) against a cluster of
// package node through the client.
func TestEndpoints(t *testing.T) {
	ctx := testCtx(t)
	r := &recorder{runs: map[string]*runRecord{}}
	addrs := startNodes(t, ctx, 4, r)
	// Clients spread over the cluster's shards.
	rc, err := dialRemote(ctx, addrs, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.shards) != 4 || rc.nodes != 3 || rc.replicas != 3 {
		t.Errorf("cluster of %d shards, %d nodes, %d replicas", len(rc.shards), rc.nodes, rc.replicas)
	}
	ws, err := remoteWriters(&options{opTimeout: time.Second}, rc, 6, 8)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		if s, err := rc.client.ShardOf(w.key); err != nil || s != rc.shards[i%4] {
			t.Errorf("client %d: key %q of shard %d (%v), want %d", i, w.key, s, err, rc.shards[i%4])
		}
	}
	rc.close()

	// Write, closed: --shards does not apply (a note says so).
	o := shortOptions(t, "write", "--endpoints", strings.Join(addrs[:2], ","), "--shards", "100", "--payload", "16",
		"--clients", "6", "--duration", "1s", "--warmup", "200ms")
	r.attach(o)
	o.hooks.engine = nil // the nodes have their state machines
	rep, err := runScenario(ctx, writeScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rep.Rows))
	}
	row := rep.Rows[0]
	rr := r.snapshot(row)
	checkCounts(t, row, rr)
	if row.Failed != 0 {
		t.Errorf("%d writes failed: %v", row.Failed, row.Errors)
	}
	checkApplied(t, row, rr, row.Failed == 0)
	if row.Variant != "cluster" || row.Point.Shards != 4 || row.Point.Clients != 6 || row.Open != nil || row.Baseline != "" {
		t.Errorf("row %s %+v open %v baseline %q", row.Variant, row.Point, row.Open, row.Baseline)
	}
	if math.Round(row.Metrics["writes_per_s"]*row.Seconds) != float64(rr.kinds[opWrite]) || rr.kinds[opRead] != 0 {
		t.Errorf("writes/s %v over %vs, %d writes acknowledged", row.Metrics["writes_per_s"], row.Seconds, rr.kinds[opWrite])
	}
	if _, ok := row.Metrics["fsyncs_per_op"]; ok || row.Metrics["client_cpu_us_per_op"] <= 0 {
		t.Errorf("metrics %v: no fsyncs from a real cluster, the clients' CPU", row.Metrics)
	}
	st := rep.Settings
	if !reflect.DeepEqual(st.Endpoints, addrs[:2]) || st.Nodes != 3 || st.Replicas != 3 || st.DataDir != "" {
		t.Errorf("settings %+v", st)
	}
	var out bytes.Buffer
	if err := writeTable(&out, writeScenario, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster at " + strings.Join(addrs[:2], ","), "3 nodes, 3 replicas per shard",
		"--shards does not apply with --endpoints: the cluster has 4 shards", " cluster "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "fsyncs/write") || strings.Contains(out.String(), " vs ") {
		t.Errorf("table has columns a real cluster does not measure:\n%s", out.String())
	}
	checkJSON(t, rep)

	// Read, open loop: 9 reads to 1 write, and reads only.
	o = shortOptions(t, "read", "--endpoints", addrs[2], "--clients", "4", "--rate", "200", "--duration", "500ms", "--warmup", "0s")
	r.attach(o)
	o.hooks.engine = nil
	if rep, err = runScenario(ctx, readScenario, o); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rep.Rows))
	}
	for _, row := range rep.Rows {
		rr := r.snapshot(row)
		checkCounts(t, row, rr)
		checkApplied(t, row, rr, false) // the preload's writes are not measured
		ol := row.Open
		if row.Failed != 0 || ol == nil || ol.TargetRate != 200 || row.Point.Rate != 200 || ol.Scheduled != 100 ||
			ol.Scheduled != row.Attempts+ol.Missed {
			t.Errorf("%s: %d failed (%v), open loop %+v, %d attempts", row.Point.Mix, row.Failed, row.Errors, ol, row.Attempts)
		}
		if rr.kinds[opRead] == 0 || (row.Point.Mix == "9:1") != (rr.kinds[opWrite] > 0) {
			t.Errorf("%s: %d reads, %d writes", row.Point.Mix, rr.kinds[opRead], rr.kinds[opWrite])
		}
	}
	checkJSON(t, rep)
}
