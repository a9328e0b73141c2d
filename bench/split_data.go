package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
	"golang.org/x/sync/errgroup"
)

// The data of the size comparison: batches (engine.BatchCommand) of
// dataPerBatch Puts of dataValueBytes random bytes (just under the default
// 1 MiB proposal limit), proposed by dataLoaders at once, each through the
// engine's normal (synced) path.
const (
	dataValueBytes = 64 << 10
	dataPerBatch   = 15
	dataLoaders    = 4
	// dataSplitSlack is how many bytes more than the empty shard's split
	// the full shard's may write: the same records, a few of them with
	// larger varints (raft indexes and terms).
	dataSplitSlack = 1 << 10
)

// runSplitData is the size comparison: a fresh cluster of cfg with two
// shards, the ring's halves; --split-data is written into the second, then
// the empty one and the full one are split with no load (as the probes of
// runSplitLoad: settled before and after, the WAL bytes between), and
// their figures go into r. The cluster's stores are removed at the end
// unless --keep.
func runSplitData(ctx context.Context, o *options, cfg clusterConfig, r *Row) error {
	if !o.keep {
		defer os.RemoveAll(cfg.Dir)
	}
	descs := descriptors(2)
	sp, err := startSplitter(ctx, o, cfg, descs)
	if err != nil {
		return fmt.Errorf("size comparison: %w", err)
	}
	defer sp.close()
	m := r.Metrics
	in0, _ := sp.c.walBytes()
	start := time.Now()
	n, err := sp.loadData(ctx, descs[1], o.splitData)
	if err != nil {
		return fmt.Errorf("writing %s into shard %d: %w", fmtBytes(float64(o.splitData)), descs[1].ShardID, err)
	}
	if _, err := sp.settle(ctx); err != nil {
		return fmt.Errorf("after writing the data: %w", err)
	}
	took := time.Since(start)
	in1, _ := sp.c.walBytes()
	m["data_bytes"], m["data_load_s"] = float64(n), took.Seconds()
	m["data_load_mib_per_s"], m["data_load_wal_bytes"] = float64(n)/(1<<20)/took.Seconds(), float64(in1-in0)
	if waited, err := sp.c.waitCompactions(ctx); err != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("data: the splits ran beside flushes or compactions: %v", err))
	} else {
		m["data_compactions_wait_s"] = waited.Seconds()
	}
	m["data_store_bytes"] = float64(sp.c.diskUsage())

	// The empty shard first, then the full one, on the same stores.
	for _, d := range descs {
		if err := sp.probe(ctx, d, 1); err != nil {
			return fmt.Errorf("size comparison: %w", err)
		}
	}
	empty, full := sp.records[0], sp.records[1]
	for _, x := range []struct {
		name string
		rec  splitRecord
	}{{"empty", empty}, {"data", full}} {
		m[x.name+"_split_bytes"], m[x.name+"_split_wal_written"] = float64(x.rec.bytes), float64(x.rec.walWritten)
		m[x.name+"_split_led_s"], m[x.name+"_split_returned_s"] = x.rec.led.Seconds(), x.rec.returned.Seconds()
	}
	m["data_vs_empty_bytes"] = ratio(m, "data_split_bytes", "empty_split_bytes")
	m["data_vs_empty_led"] = ratio(m, "data_split_led_s", "empty_split_led_s")
	for _, l := range sp.timeline() {
		r.Timeline = append(r.Timeline, "data: "+l)
	}
	if err := sp.readData(ctx, full.child, descs[1]); err != nil {
		return err
	}
	if full.bytes > empty.bytes+dataSplitSlack {
		return fmt.Errorf("the split of the shard holding %s wrote %d bytes, the empty one's %d: more than %d bytes more",
			fmtBytes(float64(n)), full.bytes, empty.bytes, dataSplitSlack)
	}
	return nil
}

// ratio returns m[a]/m[b], 0 if m[b] is.
func ratio(m map[string]float64, a, b string) float64 {
	if m[b] == 0 {
		return 0
	}
	return m[a] / m[b]
}

// dataKey returns the name of the j-th key of batch b: the first of
// "d<b>-<j>-<i>", i = 0, 1, ..., whose hash d holds.
func dataKey(d storage.Descriptor, b, j int) ([]byte, uint64) {
	var rule router.PartitionRule
	for i := 0; ; i++ {
		k := fmt.Appendf(nil, "d%d-%d-%d", b, j, i)
		if h := rule.Hash(k); d.Contains(h) {
			return k, h
		}
	}
}

// loadData writes at least total bytes of values into d and returns the
// bytes written.
func (sp *splitter) loadData(ctx context.Context, d storage.Descriptor, total int64) (int64, error) {
	const batchBytes = dataPerBatch * dataValueBytes
	batches := int((total + batchBytes - 1) / batchBytes)
	pool := make([]byte, 4<<20) // values are windows of random bytes: incompressible
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(pool)
	var next atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for range dataLoaders {
		g.Go(func() error {
			for b := int(next.Add(1) - 1); b < batches; b = int(next.Add(1) - 1) {
				puts := make([][]byte, dataPerBatch)
				var hash uint64
				for j := range puts {
					k, h := dataKey(d, b, j)
					off := ((b*dataPerBatch + j) * 4099) % (len(pool) - dataValueBytes)
					puts[j], hash = engine.PutCommand(k, pool[off:off+dataValueBytes]), h
				}
				if err := sp.rt.put(ctx, hash, engine.BatchCommand(puts...)); err != nil {
					return fmt.Errorf("batch %d: %w", b, err)
				}
			}
			return nil
		})
	}
	return int64(batches) * batchBytes, g.Wait()
}

// readData reads, on the leader of child (split off parent after the data
// was written), a key of the data in its range: the child serves it
// without anything having been copied.
func (sp *splitter) readData(ctx context.Context, child uint64, parent storage.Descriptor) error {
	cd := sp.rt.desc(child)
	for j := range dataPerBatch {
		k, h := dataKey(parent, 0, j)
		if !cd.Contains(h) {
			continue
		}
		l := sp.rt.leader(child)
		e := sp.c.engine(l.leader)
		if e == nil {
			return fmt.Errorf("shard %d: no leader to read from", child)
		}
		res, err := e.Read(ctx, child, engine.GetQuery(k))
		if err != nil {
			return fmt.Errorf("reading %q from shard %d, split off: %w", k, child, err)
		}
		if v, found, err := engine.DecodeGetResult(res); err != nil || !found || len(v) != dataValueBytes {
			return fmt.Errorf("shard %d, split off, reads %q as %d bytes (found %v, %v)", child, k, len(v), found, err)
		}
		return nil
	}
	return nil // no key of batch 0 in the child's half: nothing to read
}

// waitCompactions waits, polling, until no running node's store is
// flushing or compacting, for up to settleTimeout; it returns how long it
// waited.
func (c *cluster) waitCompactions(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		busy := 0
		for _, id := range c.ids() {
			if e := c.engine(id); e != nil {
				m := e.Store().DB().Metrics()
				if m.Flush.NumInProgress > 0 || m.Compact.NumInProgress > 0 {
					busy++
				}
			}
		}
		if busy == 0 {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("%d stores still flushing or compacting: %w", busy, ctx.Err())
		case <-t.C:
		}
	}
}

// diskUsage returns the running nodes' stores' sizes on disk, summed.
func (c *cluster) diskUsage() uint64 {
	var total uint64
	for _, id := range c.ids() {
		if e := c.engine(id); e != nil {
			total += e.Store().DB().Metrics().DiskSpaceUsage()
		}
	}
	return total
}
