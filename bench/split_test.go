package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestSplit runs the split scenario small: one shard split under load
// into 8 over gRPC (3 probes with the load paused, 4 splits under it),
// then a shard of 16 MiB split beside an empty one. No write fails, every
// acknowledged write applied, the splits wrote bytes, and the full
// shard's split wrote about what the empty one's did.
func TestSplit(t *testing.T) {
	o := shortOptions(t, "split", "--shards", "8", "--clients", "16", "--payload", "16", "--phase", "300ms",
		"--warmup", "100ms", "--split-every", "20ms", "--split-data", "16MiB")
	rec := newRecorder(o)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	rep, err := runScenario(ctx, splitScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("split to 8 shards and the size comparison: %v in all", time.Since(start).Round(time.Millisecond))
	if len(rep.Rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rep.Rows))
	}
	row := rep.Rows[0]
	r := rec.run(row)
	checkCounts(t, row, r)
	checkApplied(t, row, r, false)
	m := row.Metrics
	if row.Failed != 0 || m["warmup_failed"] != 0 {
		t.Errorf("%d writes failed, %v in the warm-up: %v", row.Failed, m["warmup_failed"], row.Errors)
	}
	if m["shards_reached"] != 8 || m["splits"] != 7 || m["split_probes"] != 3 || m["splits_under_load"] != 4 {
		t.Errorf("%v shards reached in %v splits (%v probes, %v under load)", m["shards_reached"], m["splits"],
			m["split_probes"], m["splits_under_load"])
	}
	if !(0 < m["split_p50_s"] && m["split_p50_s"] <= m["split_max_s"] && 0 < m["led_p50_s"] && m["led_p50_s"] <= m["led_max_s"]) {
		t.Errorf("split p50 %vs max %vs, led p50 %vs max %vs", m["split_p50_s"], m["split_max_s"], m["led_p50_s"], m["led_max_s"])
	}
	// A split writes a few records on each node: far from nothing, far
	// from a copy of anything.
	if !(0 < m["split_bytes_min"] && m["split_bytes_min"] <= m["split_bytes_p50"] && m["split_bytes_max"] < 64<<10) {
		t.Errorf("bytes per split: min %v, p50 %v, max %v", m["split_bytes_min"], m["split_bytes_p50"], m["split_bytes_max"])
	}
	for _, ph := range []string{"before", "during", "after"} {
		if m["writes_per_s_"+ph] <= 0 || m[ph+"_write_p99_us"] <= 0 {
			t.Errorf("%s: %v writes/s, p99 %vµs", ph, m["writes_per_s_"+ph], m[ph+"_write_p99_us"])
		}
	}
	if m["data_bytes"] < 16<<20 || m["data_store_bytes"] < 3*16<<20 {
		t.Errorf("%v bytes of data written, the stores hold %v", m["data_bytes"], m["data_store_bytes"])
	}
	if ratio := m["data_vs_empty_bytes"]; m["empty_split_bytes"] <= 0 || ratio < 0.5 || ratio > 1.5 {
		t.Errorf("the split of 16 MiB wrote %v bytes, of an empty shard %v (ratio %v)", m["data_split_bytes"],
			m["empty_split_bytes"], ratio)
	}
	if m["empty_split_led_s"] <= 0 || m["data_split_led_s"] <= 0 {
		t.Errorf("led after %vs (empty), %vs (data)", m["empty_split_led_s"], m["data_split_led_s"])
	}
	if n := len(row.Timeline); n != 9 || !strings.Contains(row.Timeline[0], "load paused") || !strings.HasPrefix(row.Timeline[n-1], "data: ") {
		t.Errorf("timeline %q", row.Timeline)
	}
	var out bytes.Buffer
	if err := writeTable(&out, splitScenario, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bytes/split", "split p50", "data/empty", "16.0MiB written into one shard", "transport grpc"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	checkJSON(t, rep)
	if st := rep.Settings.Split; st == nil || st.DataBytes != 16<<20 || st.Phase != 0.3 {
		t.Errorf("settings %+v, split %+v", rep.Settings, st)
	}
}

// TestSplitFlags: the split flags are refused elsewhere, and bad values
// with a clear error.
func TestSplitFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"split", "--shards", "1"}, "at least 2 shards"},
		{[]string{"split", "--split-data", "1GB"}, "want a byte count"},
		{[]string{"split", "--split-data", "-1"}, "want a byte count"},
		{[]string{"split", "--duration", "1s"}, "no --duration"},
		{[]string{"split", "--split-every", "-1s"}, "--split-every -1s"},
		{[]string{"split", "--joins", "3"}, "--joins: rebalance only"},
		{[]string{"write", "--split-data", "1GiB"}, "--split-data: split only"},
		{[]string{"write", "--phase", "1s"}, "--phase: rebalance and split only"},
	} {
		var errOut bytes.Buffer
		if code := run(context.Background(), tc.args, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
	for s, want := range map[string]int64{"0": 0, "1GiB": 1 << 30, "64MiB": 64 << 20, "512 KiB": 512 << 10, "100B": 100, "7": 7} {
		if got, err := parseBytes(s); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
}
