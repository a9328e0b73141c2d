package node

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHTTPEndpoints starts three nodes on loopback (4 shards, each on every
// node), serves node 1's HTTP endpoint and checks /metrics, the probes and
// pprof; then closes node 1 with the server still up and checks that the
// probes answer 503, and stops the server.
func TestHTTPEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes := startStatic(t, ctx, loopbackPeers(t, 3), nil)
	stop, addr, err := nodes[0].StartHTTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// A client of its own, so its idle connections can be closed for goleak.
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.StatusCode, string(body)
	}

	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, want := range []string{
		"\nflotilla_shards 4\n",
		"\n# TYPE flotilla_shards_leaderless gauge\n", // its value moves with the start's leader hand-back
		"\n# TYPE flotilla_applied_commands_total counter\n",
		"\n# TYPE flotilla_fsyncs_total counter\n",
		"\n# TYPE flotilla_commit_seconds_total counter\n",
		"\n# TYPE flotilla_shards_leading gauge\n",
		"\n# TYPE flotilla_sync_seconds histogram\n",
		"\n# TYPE flotilla_apply_seconds histogram\n",
		"\nflotilla_transport_frames_sent_total{peer=\"2\"} ",
		"\nflotilla_messages_sent_total{peer=\"2\"} ",
		"\nflotilla_message_bytes_sent_total{peer=\"3\"} ",
		"\ngo_goroutines ",
		"\nprocess_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, tc := range []struct {
		path, want string
	}{
		{"/healthz", "ok"},
		{"/readyz", "ready: 4 shards"},
		{"/debug/pprof/", "goroutine"},
		{"/debug/pprof/cmdline", ""},
	} {
		code, body := get(tc.path)
		if code != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %q, want 200 containing %q", tc.path, code, body, tc.want)
		}
	}
	if code, _ := get("/nope"); code != http.StatusNotFound {
		t.Errorf("/nope: %d, want 404", code)
	}

	// The engine closed, the probes fail while the server still answers.
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	nodes[0] = nil
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(path); code != http.StatusServiceUnavailable {
			t.Errorf("%s after Close: %d %q, want 503", path, code, body)
		}
	}
	if code, _ := get("/metrics"); code != http.StatusOK {
		t.Errorf("/metrics after Close: %d, want 200", code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	hc.CloseIdleConnections()
	if _, err := hc.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("GET after stop succeeded")
	}
}
