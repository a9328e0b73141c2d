package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// logLines is a slog handler that keeps the messages logged.
type logLines struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newLogLines() logLines { return logLines{mu: &sync.Mutex{}, msgs: new([]string)} }

func (l logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l logLines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l logLines) WithGroup(string) slog.Handler            { return l }
func (l logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.msgs = append(*l.msgs, r.Message)
	return nil
}

func (l logLines) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(*l.msgs)
}

// waitLog waits until some message logged so far satisfies ok.
func (l logLines) waitLog(ctx context.Context, t *testing.T, what string, ok func(string) bool) string {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if i := slices.IndexFunc(l.lines(), ok); i >= 0 {
			return l.lines()[i]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no log line %s: %v; logged: %q", what, ctx.Err(), l.lines())
		case <-tick.C:
		}
	}
}

// TestStartProgress starts node 1 of three with static peers, alone, so
// that none of its 6 shards (3 replicas each) can elect: it logs "0 of 6
// shards led", /readyz answers 503 naming what it waits for and
// flotilla_shards_leaderless counts them. Then the two others
// start: node 1 logs "every shard led", the gauge drops to 0 and /readyz
// answers 200.
func TestStartProgress(t *testing.T) {
	ctx, dir, peers := threeStatic(t)
	logs := newLogLines()
	nodes := make([]*Node, 3)
	defer closeNodes(nodes)
	startNode := func(i int, log *slog.Logger) {
		t.Helper()
		p := peers[i]
		n, err := startNode(ctx, Config{NodeID: p.NodeID, ClusterID: 9, DataDir: filepath.Join(dir, fmt.Sprint(p.NodeID)),
			RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr, Peers: peers, InitialShards: 6, Replication: 3,
			Logger: log, ProgressInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
	}
	startNode(0, slog.New(logs))
	h := NewHTTPHandler(nodes[0])
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}

	logs.waitLog(ctx, t, `"start: 0 of 6 shards led, 0/s"`, func(s string) bool { return s == "start: 0 of 6 shards led, 0/s" })
	code, body := get("/readyz")
	if want := "not ready: waiting for a leader of 6 of 6 shards (0 led), e.g. shards 1, 2, 3, 4, 5 and 1 more"; code != http.StatusServiceUnavailable || !strings.Contains(body, want) {
		t.Errorf("/readyz alone: %d %q, want 503 %q", code, body, want)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "\nflotilla_shards_leaderless 6\n") {
		t.Errorf("/metrics alone lacks flotilla_shards_leaderless 6:\n%s", grepLines(body, "flotilla_shards"))
	}

	startNode(1, slog.New(slog.DiscardHandler))
	startNode(2, slog.New(slog.DiscardHandler))
	logs.waitLog(ctx, t, `"start: every shard led"`, func(s string) bool { return s == "start: every shard led" })
	if err := nodes[0].WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/readyz"); code != http.StatusOK || !strings.Contains(body, "ready: 6 shards") {
		t.Errorf("/readyz: %d %q, want 200 ready: 6 shards", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "\nflotilla_shards_leaderless 0\n") {
		t.Errorf("/metrics lacks flotilla_shards_leaderless 0:\n%s", grepLines(body, "flotilla_shards"))
	}
	for _, l := range logs.lines() {
		if strings.HasPrefix(l, "start: ") {
			t.Log(l)
		}
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestThousands(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "0"}, {7, "7"}, {999, "999"}, {1000, "1,000"}, {7412, "7,412"}, {10000, "10,000"}, {1234567, "1,234,567"}} {
		if got := thousands(tc.n); got != tc.want {
			t.Errorf("thousands(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
