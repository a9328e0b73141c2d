package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node/backup"
	"github.com/flotilla-db/flotilla/node/nodepb"
)

// ackLoad writes distinct keys, each once, with writers goroutines until
// stopped, and records when each write was acknowledged.
type ackLoad struct {
	c       *client.Client
	wg      sync.WaitGroup
	stopped chan struct{}
	mu      sync.Mutex
	acked   map[string]time.Time // key -> when its write was acknowledged
	failed  int
}

func valueOf(k string) string { return "value-of-" + k }

func (l *ackLoad) start(ctx context.Context, writers int) {
	l.stopped, l.acked = make(chan struct{}), map[string]time.Time{}
	for w := range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stopped:
					return
				default:
				}
				k := fmt.Sprintf("bk-%02d-%07d", w, i)
				wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				err := l.c.Put(wctx, []byte(k), []byte(valueOf(k)))
				cancel()
				l.mu.Lock()
				if err == nil {
					l.acked[k] = time.Now()
				} else {
					l.failed++ // outcome unknown: the key is not checked
				}
				l.mu.Unlock()
				if ctx.Err() != nil {
					return
				}
			}
		}()
	}
}

func (l *ackLoad) stop() { close(l.stopped); l.wg.Wait() }

func (l *ackLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// split returns the keys acknowledged before t and those at or after it.
func (l *ackLoad) split(t time.Time) (before, after []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, at := range l.acked {
		if at.Before(t) {
			before = append(before, k)
		} else {
			after = append(after, k)
		}
	}
	slices.Sort(before)
	slices.Sort(after)
	return before, after
}

// flotillaCmd runs the flotilla binary with args, bounded by ctx.
func flotillaCmd(ctx context.Context, t *testing.T, args ...string) (string, time.Duration, error) {
	t.Helper()
	bin, _ := build(t)
	start := time.Now()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), time.Since(start), err
}

// TestBackupRestore: three flotilla processes take a continuous write load
// of distinct keys through the Go client; flotillactl backup runs while the
// writes go on; backup --verify passes; a copy with one byte of one shard
// file changed is refused by --verify and by flotilla restore, each naming
// the file, and restore into a data directory that is not empty is refused
// and leaves it as it was; the backup restores into a new data directory,
// a flotilla process started on it alone serves a new cluster, and every
// key acknowledged before the backup began reads back with its value (a
// key acknowledged while it ran may be there, then with its value).
func TestBackupRestore(t *testing.T) {
	ctx, began := realProcesses(t, 2*time.Minute)
	base := t.TempDir()
	ps, endpoints := startCluster(ctx, t, base, 8)
	eps := strings.Join(endpoints, ",")
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	load := &ackLoad{c: c}
	load.start(ctx, 16)
	poll(t, ctx, "2,000 writes acknowledged", func() error {
		if n := load.count(); n < 2000 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})

	dir := filepath.Join(base, "backup")
	backupStart := time.Now()
	out, took, err := ctlBounded(ctx, t, 60*time.Second, "--endpoints", eps, "backup", dir)
	backupEnd := time.Now()
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	during := load.count()
	load.stop()
	before, after := load.split(backupStart)
	m, err := backup.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, bytes, fileBytes := m.Totals()
	t.Logf("backup under load: %d shards, %d pairs (keys and sessions), %d bytes (%d in files) in %v; writes acknowledged: %d before it began, %d by its end, %d when the load stopped (%d failed, unchecked)",
		len(m.Shards), keys, bytes, fileBytes, took.Round(time.Millisecond), len(before), during, len(before)+len(after), load.failed)
	if len(m.Shards) != 8 || m.Replication != 3 || m.Started.Before(backupStart.Add(-time.Second)) {
		t.Fatalf("manifest: %d shards, replication %d, started %v", len(m.Shards), m.Replication, m.Started)
	}

	out, took, err = ctlBounded(ctx, t, 30*time.Second, "backup", "--verify", dir)
	if err != nil {
		t.Fatalf("backup --verify: %v\n%s", err, out)
	}
	t.Logf("verify: %v", took.Round(time.Millisecond))

	// A corrupted copy: one byte of the largest shard file changed.
	bad := filepath.Join(base, "corrupt")
	if err := os.CopyFS(bad, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	victim := slices.MaxFunc(m.Shards, func(a, b backup.Shard) int { return int(a.Size - b.Size) })
	path := filepath.Join(bad, victim.File)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x5a
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = ctlBounded(ctx, t, 30*time.Second, "backup", "--verify", bad)
	if err == nil || !strings.Contains(out, victim.File) {
		t.Fatalf("backup --verify of a corrupted backup: %v, and the output does not name %s:\n%s", err, victim.File, out)
	}
	t.Logf("verify of the corrupted copy: %s", lastLine(out))
	refused := filepath.Join(base, "refused")
	out, _, err = flotillaCmd(ctx, t, "restore", "--backup", bad, "--data-dir", refused)
	if err == nil || !strings.Contains(out, victim.File) {
		t.Fatalf("restore of a corrupted backup: %v, and the output does not name %s:\n%s", err, victim.File, out)
	}
	if _, err := os.Stat(refused); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore left %s behind: %v", refused, err)
	}
	t.Logf("restore of the corrupted copy: %s", lastLine(out))

	// Restore into a data directory that is not empty.
	busy := filepath.Join(base, "busy")
	if err := os.MkdirAll(busy, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(busy, "keep"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = flotillaCmd(ctx, t, "restore", "--backup", dir, "--data-dir", busy)
	if err == nil || !strings.Contains(out, "not empty") {
		t.Fatalf("restore into a non-empty data directory: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(busy); len(entries) != 1 {
		t.Fatalf("the refused restore changed %s: %d entries", busy, len(entries))
	}
	t.Logf("restore into a non-empty directory: %s", lastLine(out))

	for _, p := range ps {
		p.kill() // the old cluster is done with
	}
	newDir := filepath.Join(base, "restored")
	out, took, err = flotillaCmd(ctx, t, "restore", "--backup", dir, "--data-dir", newDir)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	t.Logf("restore: %v", took.Round(time.Millisecond))
	p := newProc(t, "restored", newDir)
	startAt := time.Now()
	p.start()
	p.waitReady(ctx)
	t.Logf("restored node ready in %v", time.Since(startAt).Round(time.Millisecond))
	st, err := adminClient(t, p.client).Status(ctx, &nodepb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetClusterId() == m.ClusterID || st.GetClusterId() == 0 {
		t.Fatalf("the restored cluster has ID %016x, the backed-up one %016x: want a new one", st.GetClusterId(), m.ClusterID)
	}
	rc, err := client.New(ctx, client.Config{Endpoints: []string{p.client}})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	readStart := time.Now()
	got := readBack(ctx, t, rc, before)
	for _, k := range before {
		if v, ok := got[k]; !ok || v != valueOf(k) {
			t.Fatalf("%s, acknowledged before the backup began: %q (found %v) after the restore, want %q", k, v, ok, valueOf(k))
		}
	}
	// Written once each: a key acknowledged later, if there, has its value.
	inBackup := 0
	for k, v := range readBack(ctx, t, rc, after) {
		if v != valueOf(k) {
			t.Fatalf("%s: %q after the restore, want %q", k, v, valueOf(k))
		}
		inBackup++
	}
	t.Logf("restored: all %d keys acknowledged before the backup read back (%v); %d of the %d acknowledged after it began are in it; the backup ran %v",
		len(before), time.Since(readStart).Round(time.Millisecond), inBackup, len(after), backupEnd.Sub(backupStart).Round(time.Millisecond))

	// Nodes that join get replicas from the placement driver, up to the
	// backup's replication factor.
	joinAt := time.Now()
	for i := range 2 {
		j := newProc(t, fmt.Sprintf("joiner%d", i+1), filepath.Join(base, fmt.Sprintf("j%d", i+1)), "--join", p.gossip)
		j.start()
	}
	adm := adminClient(t, p.client)
	wctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	pollEvery(t, wctx, 250*time.Millisecond, "every shard with 3 voters", func() error {
		resp, err := adm.Shards(wctx, &nodepb.ShardsRequest{})
		if err != nil {
			return err
		}
		short := 0
		for _, si := range resp.GetShards() {
			voters := 0
			for _, r := range si.GetReplicas() {
				if r.GetRole() == "voter" {
					voters++
				}
			}
			if !si.GetSystem() && voters != 3 {
				short++
			}
		}
		if short > 0 {
			return fmt.Errorf("%d shards without 3 voters", short)
		}
		return nil
	})
	t.Logf("two nodes joined: every shard has 3 voters after %v; test %v", time.Since(joinAt).Round(time.Millisecond), time.Since(began).Round(time.Second))
	checkKeysOf(ctx, t, rc, before[:min(500, len(before))])
}

// checkKeysOf reads keys back, each with its value.
func checkKeysOf(ctx context.Context, t *testing.T, c *client.Client, keys []string) {
	t.Helper()
	want := map[string]string{}
	for _, k := range keys {
		want[k] = valueOf(k)
	}
	checkValues(ctx, t, c, keys, want)
}
