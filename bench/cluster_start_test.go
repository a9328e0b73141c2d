package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestClusterStart runs the cluster-start scenario small: 200 shards on 3
// full nodes, started, then restarted on their data directories; every
// shard is led after each, the leaders are within the band, and the row's
// figures are consistent. The default variant only (the baselines take as
// long again each).
func TestClusterStart(t *testing.T) {
	o := shortOptions(t, "cluster-start", "--shards", "200", "--settle", "100ms", "--duration", "300ms",
		"--variants", "default", "--no-baseline")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	rep, err := runScenario(ctx, clusterStartScenario, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster-start of 200 shards: %v in all", time.Since(start).Round(time.Millisecond))
	if len(rep.Rows) != 1 || rep.Rows[0].Variant != "default" {
		t.Fatalf("%d rows, want the default variant's", len(rep.Rows))
	}
	checkClusterStartRow(t, rep.Rows[0])
	var out bytes.Buffer
	if err := writeTable(&out, clusterStartScenario, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"restart: all led", "idle cpu/node", "transport grpc", " default "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("\n%s%s", out.String(), strings.Join(rep.Rows[0].Timeline, "\n"))
	checkJSON(t, rep)
}

// checkClusterStartRow checks one row of TestClusterStart.
func checkClusterStartRow(t *testing.T, row Row) {
	t.Helper()
	m := row.Metrics
	for _, p := range []string{"", "restart_"} {
		if b, l := m[p+"bootstrap_s"], m[p+"led_s"]; b <= 0 || l < b {
			t.Errorf("%s: %sbootstrap %vs, all led %vs: want 0 < bootstrap <= all led", row.Variant, p, b, l)
		}
		// Every shard led once, over the 3 nodes.
		if lo, hi := m[p+"leaders_min"], m[p+"leaders_max"]; lo < 0 || hi < lo || hi > 200 || lo*3 > 200 {
			t.Errorf("%s: %sleaders per node: min %v, max %v of 200 shards", row.Variant, p, lo, hi)
		}
	}
	if m["leaders_in_band"] != 1 || m["restart_leaders_in_band"] != 1 {
		t.Errorf("%s: leaders out of the band: %v", row.Variant, row.Timeline)
	}
	if m["cpu_per_node_pct"] <= 0 || m["rss_per_replica_bytes"] == 0 || row.Seconds <= 0 {
		t.Errorf("%s: idle cpu/node %v%%, rss/replica %vB over %vs", row.Variant, m["cpu_per_node_pct"], m["rss_per_replica_bytes"], row.Seconds)
	}
}
