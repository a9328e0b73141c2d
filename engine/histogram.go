package engine

import (
	"math"
	"sync/atomic"
	"time"
)

// latencyHistogram counts durations in fixed exponential buckets, lock-free:
// workers observe, a metrics scrape reads.
type latencyHistogram struct {
	counts [len(latencyBounds) + 1]atomic.Uint64 // the last bucket is +Inf
	sum    atomic.Uint64                         // nanoseconds
}

// latencyBounds are the buckets' upper bounds: 25 µs to ~0.8 s, doubling.
var latencyBounds = func() [16]time.Duration {
	var b [16]time.Duration
	for i := range b {
		b[i] = 25 * time.Microsecond << i
	}
	return b
}()

func (h *latencyHistogram) observe(d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(uint64(d))
}

// Histogram is a snapshot of a latency histogram: Buckets[i] counts the
// observations at or below Bounds[i] (cumulative, as Prometheus has it).
type Histogram struct {
	Bounds  []float64 // seconds
	Buckets []uint64  // cumulative counts
	Count   uint64
	Sum     float64 // seconds
}

func (h *latencyHistogram) snapshot() Histogram {
	out := Histogram{Bounds: make([]float64, len(latencyBounds)), Buckets: make([]uint64, len(latencyBounds))}
	var cum uint64
	for i, b := range latencyBounds {
		cum += h.counts[i].Load()
		out.Bounds[i] = b.Seconds()
		out.Buckets[i] = cum
	}
	out.Count = cum + h.counts[len(latencyBounds)].Load()
	out.Sum = float64(h.sum.Load()) / float64(time.Second)
	if math.IsNaN(out.Sum) {
		out.Sum = 0
	}
	return out
}

// SyncLatency returns the histogram of synced batch commits (an fsync and
// the commit around it), since the engine started.
func (e *Engine) SyncLatency() Histogram { return e.syncLatency.snapshot() }

// ApplyLatency returns the histogram of the time the state machine took to
// apply one shard's committed entries of one worker pass.
func (e *Engine) ApplyLatency() Histogram { return e.applyLatency.snapshot() }
