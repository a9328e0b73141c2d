package engine_test

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestBigSnapshotOverGRPC streams a 100 MB shard to a new learner over the
// gRPC transport, stores on disk, and checks that the process's heap never
// grows by anything near the snapshot's size (it is streamed, not held).
// Set FLOTILLA_BIG_SNAPSHOT_MB to change the size.
func TestBigSnapshotOverGRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100 MB to disk")
	}
	if raceEnabled {
		t.Skip("the race detector's allocations blur the heap measure; scripts/test.sh runs this test without it")
	}
	sizeMB := 100
	if v := os.Getenv("FLOTILLA_BIG_SNAPSHOT_MB"); v != "" {
		fmt.Sscan(v, &sizeMB)
	}
	c := testcluster.New(t, testcluster.Config{Nodes: 4, GRPC: true, Dir: t.TempDir(), Engine: func(cfg *engine.Config) {
		cfg.MemTableBytes = 4 << 20
		cfg.StoreCacheBytes = 4 << 20
		cfg.LogTruncateBytes = 8 << 20
	}})
	ctx := ctxT(t, 5*time.Minute)
	desc := storage.Descriptor{ShardID: 1, Last: ^uint64(0)}
	if err := c.CreateShards(ctx, []storage.Descriptor{desc}, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	c.RunClock(10 * time.Millisecond)
	const valueSize = 256 << 10
	n := sizeMB << 20 / valueSize
	keys := keysOf(desc, n)
	value := bytes.Repeat([]byte("flotilla"), valueSize/8)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if _, err := c.Propose(ctx, 1, engine.PutCommand(keys[i], value)); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d writes failed", failed.Load())
	}
	leader := c.Leader(ctx, 1)
	if st := status(t, ctx, c, leader, 1); st.FirstIndex < 50 {
		t.Fatalf("log not truncated (first index %d): the learner would not need a snapshot", st.FirstIndex)
	}
	// Collect often during the transfer, so that the heap measures what is
	// held rather than garbage waiting for the next cycle.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	if err := c.Engine(leader).ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	target := status(t, ctx, c, leader, 1).Applied
	if err := c.WaitFor(ctx, "learner caught up", func() bool {
		st, err := c.Engine(4).Status(ctx, 1)
		return err == nil && st.Applied >= target && c.Engine(4).Stats().SnapshotsRecv > 0
	}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-sampled
	growth := int64(peak.Load()) - int64(base)
	t.Logf("%d MB snapshot reached the learner in %v; heap in use %d MB before, peak growth %d MB",
		sizeMB, time.Since(start).Round(time.Millisecond), base>>20, growth>>20)
	if limit := int64(sizeMB<<20) / 2; growth > limit {
		t.Fatalf("heap grew by %d MB while streaming a %d MB snapshot", growth>>20, sizeMB)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		res, err := c.Engine(4).ReadLocal(1, engine.GetQuery(keys[i]))
		v, found, _ := engine.DecodeGetResult(res)
		if err != nil || !found || !bytes.Equal(v, value) {
			t.Fatalf("learner key %d: found %v, %d bytes, %v", i, found, len(v), err)
		}
	}
}
