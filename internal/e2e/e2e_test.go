// Package e2e tests the flotilla and flotillactl binaries as a user runs
// them: real processes on loopback, found by gossip, killed with SIGKILL.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// bins holds the binaries built once for the package's tests.
var bins struct {
	once          sync.Once
	dir           string
	flotilla, ctl string
	err           error
}

func build(t *testing.T) (flotilla, ctl string) {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "flotilla-e2e-bin-")
		if bins.err != nil {
			return
		}
		root := moduleRoot(t)
		bins.flotilla = filepath.Join(bins.dir, "flotilla")
		bins.ctl = filepath.Join(bins.dir, "flotillactl")
		cmd := exec.Command("go", "build", "-o", bins.dir+"/", "./cmd/flotilla", "./cmd/flotillactl")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.flotilla, bins.ctl
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func moduleRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// freeAddr returns a loopback address with a port free for TCP and UDP.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// proc is one flotilla process.
type proc struct {
	t                            *testing.T
	name                         string
	dir                          string
	raft, client, gossip, httpad string
	args                         []string
	cmd                          *exec.Cmd
	log                          *bytes.Buffer
	logMu                        *sync.Mutex
	done                         chan error
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func newProc(t *testing.T, name, dir string, extra ...string) *proc {
	p := &proc{t: t, name: name, dir: dir, raft: freeAddr(t), client: freeAddr(t), gossip: freeAddr(t), httpad: freeAddr(t)}
	p.args = append([]string{"start", "--data-dir", dir, "--raft-addr", p.raft, "--client-addr", p.client,
		"--gossip-addr", p.gossip, "--http-addr", p.httpad, "--log-level", "info", "--join-timeout", "60s"}, extra...)
	return p
}

// start starts the process; its output goes on after that of an earlier
// run of the same proc, if any (a restart), behind a line that says so.
func (p *proc) start() {
	p.t.Helper()
	bin, _ := build(p.t)
	if p.log == nil {
		p.log, p.logMu = &bytes.Buffer{}, &sync.Mutex{}
	} else {
		fmt.Fprintf(syncWriter{p.logMu, p.log}, "--- e2e: %s restarted ---\n", p.name)
	}
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout = syncWriter{p.logMu, p.log}
	p.cmd.Stderr = syncWriter{p.logMu, p.log}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	p.t.Cleanup(func() {
		p.kill()
		p.keepLog()
	})
}

// keepLog writes the process's output to $FLOTILLA_E2E_LOGS/<test>-<name>.log
// when that variable names a directory and the test failed: the output of
// real processes is what explains a failure seen once in a while.
func (p *proc) keepLog() {
	dir := os.Getenv("FLOTILLA_E2E_LOGS")
	if dir == "" || !p.t.Failed() {
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name()) + "-" + p.name + ".log"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(p.output()), 0o644); err != nil {
		p.t.Logf("keep the log of %s: %v", p.name, err)
	}
}

func (p *proc) output() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.done <- nil // later kills return at once
}

// waitExit waits for the process to exit by itself and returns its error.
func (p *proc) waitExit(d time.Duration) error {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(d):
		p.t.Fatalf("%s did not exit within %v; output:\n%s", p.name, d, p.output())
		return nil
	}
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(ctx context.Context) {
	p.t.Helper()
	poll(p.t, ctx, fmt.Sprintf("%s ready", p.name), func() error {
		select {
		case err := <-p.done:
			p.done <- err
			p.t.Fatalf("%s exited: %v\n%s", p.name, err, p.output())
		default:
		}
		resp, err := http.Get("http://" + p.httpad + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", resp.StatusCode, body)
		}
		return nil
	})
}

// poll calls fn every 50ms until it returns nil or ctx ends.
func poll(t *testing.T, ctx context.Context, what string, fn func() error) {
	t.Helper()
	pollEvery(t, ctx, 50*time.Millisecond, what, fn)
}

// pollEvery calls fn every interval until it returns nil or ctx ends.
func pollEvery(t *testing.T, ctx context.Context, interval time.Duration, what string, fn func() error) {
	t.Helper()
	tk := time.NewTicker(interval)
	defer tk.Stop()
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last error: %v)", what, ctx.Err(), err)
		case <-tk.C:
		}
	}
}

func ctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	_, bin := build(t)
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func adminClient(t *testing.T, addr string) nodepb.AdminClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return nodepb.NewAdminClient(conn)
}

// nodeIDOf reads a data directory's node ID.
func nodeIDOf(t *testing.T, dir string) uint64 {
	b, err := os.ReadFile(filepath.Join(dir, "flotilla-node.json"))
	if err != nil {
		t.Fatal(err)
	}
	var id struct {
		NodeID uint64 `json:"node_id"`
	}
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatal(err)
	}
	return id.NodeID
}

// metric sums the samples of a Prometheus counter over its labels.
func metric(t *testing.T, httpAddr, name string) float64 {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.e+]+)$`)
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			sum += v
		}
	}
	return sum
}

// writeKeys writes keys [from, to) with 16 writers, retrying each key's
// write until it succeeds or ctx ends.
func writeKeys(ctx context.Context, t *testing.T, c *client.Client, from, to int) {
	t.Helper()
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				k, v := fmt.Sprintf("key-%06d", i), fmt.Sprintf("value-%06d", i)
				var err error
				for attempt := 0; attempt < 50 && ctx.Err() == nil; attempt++ {
					wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					err = c.Put(wctx, []byte(k), []byte(v))
					cancel()
					if err == nil {
						break
					}
				}
				if err != nil {
					failed.Store(fmt.Errorf("put %s: %w", k, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
}

// startCluster starts three `flotilla start` processes in base/n1..n3 that
// bootstrap a cluster of shards shards by gossip, waits until each is ready,
// and returns them with their client addresses; extra goes on every
// command line. The processes are killed when the test ends.
func startCluster(ctx context.Context, t *testing.T, base string, shards int, extra ...string) (ps []*proc, endpoints []string) {
	t.Helper()
	for i := range 3 {
		args := append([]string{"--bootstrap-expect", "3", "--initial-shards", strconv.Itoa(shards)}, extra...)
		ps = append(ps, newProc(t, fmt.Sprintf("node%d", i+1), filepath.Join(base, fmt.Sprintf("n%d", i+1)), args...))
	}
	for i, p := range ps {
		p.args = append(p.args, "--join", ps[(i+1)%3].gossip)
		p.start()
	}
	for _, p := range ps {
		p.waitReady(ctx)
		endpoints = append(endpoints, p.client)
	}
	return ps, endpoints
}

// TestCluster is the product's end-to-end test: three `flotilla start`
// processes bootstrap a cluster by gossip, take 10,000 writes, lose a node
// that leads shards to SIGKILL, keep taking writes, get it back, serve every
// key, and take a fourth node that joins with --join.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes")
	}
	build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	base := t.TempDir()
	ps, endpoints := startCluster(ctx, t, base, 16)
	eps := strings.Join(endpoints, ",")
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := len(c.Shards()); n != 16 {
		t.Fatalf("the ring has %d shards, want 16", n)
	}

	// 10,000 keys; the raft traffic under that load is batched.
	writeKeys(ctx, t, c, 0, 10000)
	frames, msgs := metric(t, ps[0].httpad, "flotilla_transport_frames_sent_total"), metric(t, ps[0].httpad, "flotilla_transport_messages_sent_total")
	t.Logf("node1 sent %.0f raft messages in %.0f frames: %.2f messages per frame", msgs, frames, msgs/frames)
	if frames == 0 || msgs/frames <= 1 {
		t.Fatalf("messages per frame %.2f (%v messages, %v frames): not batched", msgs/frames, msgs, frames)
	}

	// Kill -9 a node that leads shards.
	var victim *proc
	for _, p := range ps {
		st, err := adminClient(t, p.client).LocalShards(ctx, &nodepb.LocalShardsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Shards {
			if s.Leader == st.NodeId && !s.System {
				victim = p
			}
		}
		if victim != nil {
			break
		}
	}
	if victim == nil {
		t.Fatal("no node leads a shard")
	}
	t.Logf("kill -9 %s (it leads shards)", victim.name)
	victim.kill()
	var live []string
	for _, p := range ps {
		if p != victim {
			live = append(live, p.client)
		}
	}
	c2, err := client.New(ctx, client.Config{Endpoints: live})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	writeKeys(ctx, t, c2, 10000, 11000)

	// The dead node shows as suspect or dead.
	out, err := ctl(t, "--endpoints", live[0], "--output", "json", "status")
	if err != nil {
		t.Fatalf("flotillactl status: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"dead"`) && !strings.Contains(out, `"suspect"`) {
		t.Logf("status while a node is down (not yet declared down):\n%s", out)
	}

	// Restart it with the same data directory; every key reads back.
	victim.start()
	victim.waitReady(ctx)
	checkKeys(ctx, t, c, 11000)

	// A fourth node joins with --join alone, and takes a replica.
	p4 := newProc(t, "node4", filepath.Join(base, "n4"), "--join", ps[0].gossip)
	p4.start()
	p4.waitReady(ctx)
	id4 := nodeIDOf(t, p4.dir)
	poll(t, ctx, "node4 live in status", func() error {
		out, err := ctl(t, "--endpoints", eps, "--output", "json", "status")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var st struct {
			Nodes []struct {
				ID    uint64 `json:"node_id"`
				State string `json:"state"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		live := 0
		for _, n := range st.Nodes {
			if n.State == "live" {
				live++
			}
		}
		if live != 4 || !strings.Contains(out, strconv.FormatUint(id4, 10)) {
			return fmt.Errorf("%d live: %s", live, out)
		}
		return nil
	})
	out, err = ctl(t, "--endpoints", eps, "add-replica", "1", strconv.FormatUint(id4, 10))
	if err != nil {
		t.Fatalf("add-replica: %v\n%s", err, out)
	}
	t.Logf("add-replica 1 %d:\n%s", id4, out)
	poll(t, ctx, "node4 serves shard 1", func() error {
		st, err := adminClient(t, p4.client).LocalShards(ctx, &nodepb.LocalShardsRequest{})
		if err != nil {
			return err
		}
		for _, s := range st.Shards {
			if s.ShardId == 1 && s.Applied > 0 && s.Leader != 0 {
				return nil
			}
		}
		return fmt.Errorf("shard 1 not on node4: %v", st.Shards)
	})
	out, err = ctl(t, "--endpoints", p4.client, "shards")
	if err != nil {
		t.Fatalf("shards: %v\n%s", err, out)
	}
	t.Logf("flotillactl shards:\n%s", out)
	if n := strings.Count(out, "\n"); n < 16+2 {
		st, _ := ctl(t, "--endpoints", p4.client, "status")
		o2, _ := ctl(t, "--endpoints", ps[1].client, "shards")
		o3, _ := ctl(t, "--endpoints", p4.client, "shards")
		t.Fatalf("node4 lists %d lines of shards, want the 16 and meta; status from node4:\n%s\nshards from node2:\n%s\nagain from node4:\n%s", n, st, o2, o3)
	}
	c4, err := client.New(ctx, client.Config{Endpoints: []string{p4.client}})
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	checkKeys(ctx, t, c4, 11000)

	// SIGTERM: the node hands its leaderships away, leaves, exits 0.
	if err := ps[1].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ps[1].waitExit(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: exit %v\n%s", err, ps[1].output())
	}
	if out := ps[1].output(); !strings.Contains(out, "draining leaderships") || strings.Contains(out, "drain incomplete") {
		t.Fatalf("SIGTERM: no complete drain:\n%s", out)
	}
}

// checkKeys checks that key-000000 .. key-(n-1) hold value-000000 ..
// value-(n-1).
func checkKeys(ctx context.Context, t *testing.T, c *client.Client, n int) {
	t.Helper()
	keys := make([]string, n)
	want := make(map[string]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("key-%06d", i)
		want[keys[i]] = fmt.Sprintf("value-%06d", i)
	}
	checkValues(ctx, t, c, keys, want)
}

// checkValues reads keys back (readBack) and fails the test at the first
// key that does not hold want[key].
func checkValues(ctx context.Context, t *testing.T, c *client.Client, keys []string, want map[string]string) {
	t.Helper()
	got := readBack(ctx, t, c, keys)
	for _, k := range keys {
		if v, ok := got[k]; !ok || v != want[k] {
			t.Fatalf("%s: %q found=%v, want %q", k, v, ok, want[k])
		}
	}
}

// readBack reads keys with linearizable Gets, 500 to a batch (a batch that
// fails is tried again, 20 times at most), and returns the values found; a
// key whose read fails fails the test.
func readBack(ctx context.Context, t *testing.T, c *client.Client, keys []string) map[string]string {
	t.Helper()
	got := make(map[string]string, len(keys))
	for lo := 0; lo < len(keys); lo += 500 {
		part := keys[lo:min(lo+500, len(keys))]
		ops := make([]client.Op, len(part))
		for i, k := range part {
			ops[i] = client.GetOp([]byte(k), false)
		}
		var res []client.Result
		var err error
		for attempt := 0; attempt < 20; attempt++ {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err = c.Batch(rctx, ops)
			cancel()
			if err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("read keys %s..: %v", part[0], err)
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("%s: %v", part[i], r.Err)
			}
			if r.Found {
				got[part[i]] = string(r.Value)
			}
		}
	}
	return got
}

// rawCodec sends and receives bytes as they are, to put malformed messages
// on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestRefusals: bad input is refused with a clear message and harms
// nothing: a second node with a taken --node-id, a data directory of
// another cluster, flotillactl against a dead endpoint, malformed requests
// on the client port.
func TestRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes")
	}
	build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base := t.TempDir()
	single := []string{"--bootstrap-expect", "1", "--initial-shards", "4", "--replication", "1"}
	a := newProc(t, "a", filepath.Join(base, "a"), single...)
	a.start()
	a.waitReady(ctx)
	idA := nodeIDOf(t, a.dir)

	// A second process claiming node A's ID.
	dup := newProc(t, "dup", filepath.Join(base, "dup"), "--node-id", strconv.FormatUint(idA, 10), "--join", a.gossip)
	dup.start()
	if err := dup.waitExit(90 * time.Second); err == nil {
		t.Fatalf("a duplicate node ID was accepted:\n%s", dup.output())
	}
	if out := dup.output(); !strings.Contains(out, "held by another node") {
		t.Fatalf("duplicate node ID: unclear message:\n%s", out)
	}
	t.Logf("duplicate --node-id: %s", lastLine(dup.output()))

	// A data directory of another cluster.
	b := newProc(t, "b", filepath.Join(base, "b"), single...)
	b.start()
	b.waitReady(ctx)
	b.kill()
	b2 := newProc(t, "b-again", b.dir, "--join", a.gossip)
	b2.start()
	if err := b2.waitExit(90 * time.Second); err == nil {
		t.Fatalf("a data directory of another cluster was accepted:\n%s", b2.output())
	}
	if out := b2.output(); !strings.Contains(out, "belongs to another cluster") {
		t.Fatalf("wrong cluster: unclear message:\n%s", out)
	}
	t.Logf("another cluster's data directory: %s", lastLine(b2.output()))

	// flotillactl against a dead endpoint.
	dead := freeAddr(t)
	for _, args := range [][]string{{"status"}, {"put", "k", "v"}, {"shards"}} {
		out, err := ctl(t, append([]string{"--endpoints", dead, "--timeout", "3s"}, args...)...)
		if err == nil {
			t.Fatalf("flotillactl %v against a dead endpoint succeeded:\n%s", args, out)
		}
		if !strings.Contains(out, dead) {
			t.Fatalf("flotillactl %v: the message does not name the endpoint:\n%s", args, out)
		}
		t.Logf("flotillactl %v, dead endpoint: %s", args, strings.TrimSpace(out))
	}

	// Malformed requests on the client port: garbage bytes, a message that
	// does not decode, an empty key. Each gets an error; the node serves on.
	conn, err := net.Dial("tcp", a.client)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 1024))
	conn.Close()
	gc, err := grpc.NewClient(a.client, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	garbage := []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}
	var reply []byte
	err = gc.Invoke(ctx, "/flotilla.node.v1.KV/Put", &garbage, &reply, grpc.ForceCodec(rawCodec{}))
	if err == nil {
		t.Fatal("a malformed Put succeeded")
	}
	t.Logf("malformed Put: %v", err)
	kv := nodepb.NewKVClient(gc)
	if _, err := kv.Put(ctx, &nodepb.PutRequest{Key: nil, Value: []byte("v")}); err == nil || !strings.Contains(err.Error(), "empty key") {
		t.Fatalf("empty key: %v", err)
	}
	c, err := client.New(ctx, client.Config{Endpoints: []string{a.client}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Put(ctx, []byte("still"), []byte("serving")); err != nil {
		t.Fatalf("after malformed requests: %v", err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
