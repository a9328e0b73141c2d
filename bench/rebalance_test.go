package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRebalance runs the rebalance scenario small: 24 shards on 3 full
// nodes, 2 join; the placement driver spreads replicas and leaderships
// over 5 without a failed write, and the row's figures are consistent.
func TestRebalance(t *testing.T) {
	o := shortOptions(t, "rebalance", "--shards", "24", "--clients", "8", "--payload", "64", "--phase", "1s",
		"--warmup", "200ms", "--balance-timeout", "60s", "--placement-moves-per-minute", "6000",
		"--placement-snapshots-per-node", "4")
	rec := newRecorder(o)
	// Both variants take 30-70 s on 2 cores; on a loaded machine more,
	// and writes cut off by the end of ctx would count as failed.
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	start := time.Now()
	rep, err := runScenario(ctx, rebalanceScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rebalance of 24 shards: %v in all", time.Since(start).Round(time.Millisecond))
	if len(rep.Rows) != len(rebalanceScenario.Variants) {
		t.Fatalf("%d rows, want one per variant", len(rep.Rows))
	}
	for _, row := range rep.Rows {
		checkRebalanceRow(t, rec, row)
	}
	var out bytes.Buffer
	if err := writeTable(&out, rebalanceScenario, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"balanced in", "2 nodes join", "at most 6000 replica moves a minute", " default ", " serial "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	checkJSON(t, rep)
	if st := rep.Settings.Rebalance; st == nil || st.Joins != 2 || st.MovesPerMinute != 6000 || rep.Settings.Transport != "grpc" {
		t.Errorf("settings %+v, rebalance %+v", rep.Settings, st)
	}
}

// checkRebalanceRow checks one row of TestRebalance.
func checkRebalanceRow(t *testing.T, rec *recorder, row Row) {
	t.Helper()
	r := rec.run(row)
	checkCounts(t, row, r)
	checkApplied(t, row, r, false) // the meta shard's writes apply too
	m := row.Metrics
	if row.Failed != 0 || m["warmup_failed"] != 0 {
		t.Errorf("%d writes failed, %v in the warm-up: %v", row.Failed, m["warmup_failed"], row.Errors)
	}
	if m["balance_s"] <= 0 || m["placement_ops"] <= 0 || m["ops_rebalance_replica"] <= 0 || m["move_p50_s"] <= 0 {
		t.Errorf("balanced in %vs, %v placement ops (%v replica moves, p50 %vs)", m["balance_s"], m["placement_ops"],
			m["ops_rebalance_replica"], m["move_p50_s"])
	}
	if m["snapshots"] <= 0 || m["snapshot_bytes"] <= 0 || m["snapshot_bytes_total"] < m["snapshot_bytes"] {
		t.Errorf("%v snapshots, %v bytes moved (%v in all)", m["snapshots"], m["snapshot_bytes"], m["snapshot_bytes_total"])
	}
	// 3 nodes hold every shard; over 5, each is within ±2 of the mean.
	if m["replica_spread_before"] != 0 || m["replica_spread_after"] > 4 || m["leader_spread_after"] > 4 {
		t.Errorf("replica spread %v before, %v after; leader spread %v after", m["replica_spread_before"],
			m["replica_spread_after"], m["leader_spread_after"])
	}
	for _, ph := range []string{"before", "during", "after"} {
		if m["writes_per_s_"+ph] <= 0 || m[ph+"_write_p99_us"] <= 0 || m[ph+"_write_p99_us"] > m[ph+"_write_max_us"] {
			t.Errorf("%s: %v writes/s, p99 %vµs, max %vµs", ph, m["writes_per_s_"+ph], m[ph+"_write_p99_us"], m[ph+"_write_max_us"])
		}
	}
	if len(row.Timeline) == 0 || !strings.Contains(row.Timeline[len(row.Timeline)-1], "placement ops done") {
		t.Errorf("timeline %q", row.Timeline)
	}
}
