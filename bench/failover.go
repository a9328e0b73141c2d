package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/router"
)

var failoverScenario = &scenario{
	Name: "failover",
	Summary: "clients write to every shard; after a third of --duration the node that leads the most shards " +
		"is closed; the time until every shard has a leader again, and the writes that failed",
	Variants: []variant{{Name: "default", Desc: "the engine's defaults"}},
	Params:   []string{"shards", "clients"},
	Timing: func(st Settings) string {
		return fmt.Sprintf("%v per run, the kill after %v", secs(st.Duration), secs(st.Duration/3))
	},
	Columns: []column{
		{"leaders_lost", "leaders lost", fmtCount},
		{"recovery_s", "recovery", fmtSeconds},
		{"failed_after_kill", "failed writes", fmtCount},
		{"writes_per_s_before", "writes/s before", fmtCount},
		{"writes_per_s_after", "writes/s after", fmtCount},
		{"write_p99_us", "p99", fmtMicros},
		{"write_max_us", "max", fmtMicros},
	},
	Notes: []string{
		"recovery: from closing the node until every shard has a leader on a running node",
		"failed writes: writes that returned an error after the kill (in flight on the closed node, or no leader" +
			" found within --op-timeout); a failed write is not counted in writes/s",
		"writes/s before: from the start to the kill; after: from the recovery to the end",
	},
	Points: func(o *options) ([]point, error) {
		var ps []point
		for _, s := range o.shardList([]int{1000}) {
			ps = append(ps, point{Shards: s, Payload: o.payloadList([]int{128})[0], Clients: o.clientsFor(s)})
		}
		return ps, nil
	},
	Run: runFailover,
}

func runFailover(ctx context.Context, o *options, v variant, p point, dir string) (Row, error) {
	c, descs, err := startCluster(ctx, o, v, dir, p.Shards)
	if err != nil {
		return Row{}, err
	}
	defer c.close()
	ws := writers(ctx, o, c, descs, p.Clients, p.Payload)
	var acked atomic.Uint64
	spec := loadSpec{
		clients: len(ws), duration: o.duration, grace: o.opTimeout, acked: &acked, done: o.hooks.done,
		op: func(ctx context.Context, client int, seq uint64) (opKind, error) {
			return opWrite, ws[client].write(ctx, client, seq)
		},
	}
	u0 := readUsage()
	var t *tally
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		t = runLoad(ctx, spec)
	}()

	killErr := pause(ctx, o.duration/3)
	var (
		victim, lost   uint64
		tKill, tRecov  time.Time
		nKill, nRecov  uint64
		recovered      bool
		leadersByNode  = map[uint64]uint64{}
		recoverTimeout = o.duration
	)
	if killErr == nil {
		for _, l := range c.leaders(ctx) {
			leadersByNode[l]++
		}
		for id, n := range leadersByNode {
			if n > lost || n == lost && id < victim {
				victim, lost = id, n
			}
		}
		nKill, tKill = acked.Load(), time.Now()
		if victim == 0 {
			killErr = errors.New("no shard has a leader")
		} else {
			killErr = c.stop(victim)
		}
		if killErr == nil {
			wctx, cancel := context.WithTimeout(ctx, recoverTimeout)
			killErr = c.waitLeaders(wctx, descs, 5*time.Millisecond)
			cancel()
			tRecov, nRecov, recovered = time.Now(), acked.Load(), killErr == nil
		}
	}
	<-loadDone
	u1 := readUsage()
	if killErr != nil {
		return Row{}, fmt.Errorf("kill node %d (leads %d shards): %w", victim, lost, killErr)
	}
	r := loadRow(t, u0, u1)
	m := r.Metrics
	m["victim"] = float64(victim)
	m["leaders_lost"] = float64(lost)
	m["recovery_s"] = tRecov.Sub(tKill).Seconds()
	m["failed_after_kill"] = float64(t.failedSince(tKill))
	m["writes_per_s_before"] = rate(nKill, tKill.Sub(u0.at).Seconds())
	if end := u0.at.Add(t.elapsed); recovered && end.After(tRecov) {
		m["writes_per_s_after"] = rate(t.ops()-nRecov, end.Sub(tRecov).Seconds())
	}
	return r, nil
}

var routerScenario = &scenario{
	Name:     "router",
	Summary:  "router.Lookup (hash, binary search of the ring, route load) from several goroutines at once",
	Variants: []variant{{Name: "default", Desc: "the router package"}},
	Params:   []string{"shards", "clients"},
	Columns: []column{
		{"ops_per_s", "lookups/s", fmtCount},
		{"ns_per_op", "ns/lookup", fmtFloat},
		{"cpu_ns_per_op", "cpu ns/lookup", fmtFloat},
		{"allocs_per_op", "allocs/lookup", fmtFloat},
	},
	Notes: []string{
		"keys land at uniformly random places in the ring (cold ring and routes: the worst case);" +
			" clients are goroutines; ns/lookup is the wall time one goroutine spends per lookup",
	},
	Points: func(o *options) ([]point, error) {
		goroutines := o.clients
		if goroutines == 0 {
			goroutines = 4
		}
		var ps []point
		for _, s := range o.shardList([]int{1000, 100000}) {
			ps = append(ps, point{Shards: s, Clients: goroutines})
		}
		return ps, nil
	},
	Run: runRouter,
}

func runRouter(ctx context.Context, o *options, v variant, p point, _ string) (Row, error) {
	r, err := router.New(router.DefaultConfig())
	if err != nil {
		return Row{}, err
	}
	ids := make([]uint64, p.Shards)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	ring, err := router.EvenRing(1, ids)
	if err != nil {
		return Row{}, err
	}
	if err := r.SetRing(ring); err != nil {
		return Row{}, err
	}
	for i, id := range ids {
		if err := r.SetReplicas(id, []uint64{1, 2, 3}); err != nil {
			return Row{}, err
		}
		r.UpdateLeader(id, uint64(1+i%3), 1)
	}
	var (
		wg          sync.WaitGroup
		ops, failed atomic.Uint64
	)
	u0 := readUsage()
	deadline := u0.at.Add(o.duration)
	for range p.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte("user:00:00000000:orders")
			x := rand.Uint64()
			var n, bad uint64
			for ctx.Err() == nil && time.Now().Before(deadline) {
				for range 1024 {
					x += 0x9e3779b97f4a7c15
					binary.LittleEndian.PutUint64(key[8:], x) // aligned with xxhash's 8-byte reads
					if rt, err := r.Lookup(key); err != nil || rt.ShardID == 0 {
						bad++
					} else {
						n++
					}
				}
			}
			ops.Add(n)
			failed.Add(bad)
		}()
	}
	wg.Wait()
	u1 := readUsage()
	secs := u1.at.Sub(u0.at).Seconds()
	n := ops.Load()
	return Row{
		Seconds: secs,
		Ops:     n, Failed: failed.Load(), Attempts: n + failed.Load(),
		Metrics: map[string]float64{
			"ops_per_s":     rate(n, secs),
			"ns_per_op":     perOp(secs*1e9*float64(p.Clients), n),
			"cpu_ns_per_op": perOp(float64(u1.cpu-u0.cpu), n),
			"allocs_per_op": perOp(float64(u1.mallocs-u0.mallocs), n),
		},
	}, nil
}
