// Package shardload measures the load of the shards a node leads, for the
// placement driver's split and merge duties (package placement: a shard
// above SplitSize or SplitWriteRate is split, adjacent small and cold ones
// are merged): writes a second, averaged over a window, and the bytes of
// its data on disk.
//
// Writes are counted as the shard's applied index moves: one per raft
// entry, which counts every write request (a client's batch is one) and,
// rarely, an entry of the engine's own (a new leader's empty entry, a
// configuration change, a session expiry). The rate is the advance of the
// applied index across the samples kept within Window (30 s by default),
// so that a burst shorter than the window does not split a shard, and a
// shard split because of a sustained load stays split. A shard's size is
// Pebble's estimate of the disk space of its data span: it reads table
// metadata, not data, rounded to whole tables, yet it is some 25 µs a
// shard, so a shard is measured when it is first led and when it was
// written to since its last measure; an idle shard only once every
// SizeRefresh (5 minutes by default: a compaction shrinks a shard without
// a write, and a size too large only delays a merge), and never more of
// them in one sample than spreads their refreshes evenly over SizeRefresh.
// On a node leading 33,000 idle shards the measures of every idle shard
// every 30 s were a third of the node's idle CPU.
//
// # Concurrency
//
// A Tracker is driven by one goroutine (Sample, from the node's loop every
// Interval); Loads may be called from any other one at the same time.
package shardload

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/storage"
)

// Config tunes a Tracker. Zero fields take the values of DefaultConfig.
type Config struct {
	// Window is the span the write rate is averaged over. Default 30s.
	Window time.Duration
	// Interval is how often the node samples (it calls Sample); the
	// tracker keeps Window/Interval + 1 samples per shard. Default 5s.
	Interval time.Duration
	// SizeRefresh is how often the size of a shard that is not written
	// to is measured again. Default 5m.
	SizeRefresh time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultConfig returns a 30 s window sampled every 5 s, and idle shards'
// sizes measured again every 5 minutes.
func DefaultConfig() Config {
	return Config{Window: 30 * time.Second, Interval: 5 * time.Second, SizeRefresh: 5 * time.Minute, Now: time.Now}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.SizeRefresh == 0 {
		c.SizeRefresh = d.SizeRefresh
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Validate checks c, with its zero fields taken as their defaults, without
// changing it.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Window < 0 || c.Interval <= 0 || c.Interval > c.Window {
		return fmt.Errorf("shardload: Window %v and Interval %v: want 0 < Interval <= Window", c.Window, c.Interval)
	}
	if c.SizeRefresh < c.Interval {
		return fmt.Errorf("shardload: SizeRefresh %v below Interval %v", c.SizeRefresh, c.Interval)
	}
	return nil
}

// Engine is what the tracker reads of the node's engine.
type Engine interface {
	// Leading returns the shards whose replica on the node leads.
	Leading(ctx context.Context) ([]engine.LedShard, error)
	// SizeOf returns the bytes on disk of desc's data.
	SizeOf(desc storage.Descriptor) (uint64, error)
}

// Load is one shard's load.
type Load struct {
	ShardID uint64
	// Generation of the shard's range when measured: a split or merge
	// starts its count afresh.
	Generation uint64
	// WritesPerSecond over the samples within the window; 0 until two
	// samples are in.
	WritesPerSecond float64
	// Size in bytes of the shard's data on disk (an estimate).
	Size uint64
}

// Tracker keeps the samples of the shards this node leads.
type Tracker struct {
	cfg Config
	e   Engine

	mu struct {
		sync.Mutex
		// shards: the samples of each shard led here, oldest first.
		shards map[uint64]*history
		// samples counts the calls of Sample.
		samples uint64
	}
}

type sample struct {
	at      time.Time
	applied uint64
}

type history struct {
	gen     uint64
	size    uint64
	samples []sample
	// sizedAt and sizedApplied: when size was measured, at which applied
	// index. seen: the number of the last sample that found the shard led.
	sizedAt      time.Time
	sizedApplied uint64
	seen         uint64
}

// needsSize reports whether the shard's size is to be measured at now with
// applied index applied: must (never measured, or written to since: applied
// moved), or may (measured refresh or more ago: a compaction shrinks a
// shard's files without a write), within the sample's budget.
func (h *history) needsSize(now time.Time, applied uint64, refresh time.Duration) (must, may bool) {
	if h.sizedAt.IsZero() || applied != h.sizedApplied {
		return true, false
	}
	return false, now.Sub(h.sizedAt) >= refresh
}

// New returns a tracker of e's led shards.
func New(cfg Config, e Engine) (*Tracker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Tracker{cfg: cfg, e: e}
	t.mu.shards = map[uint64]*history{}
	return t, nil
}

// Interval is how often the caller should Sample.
func (t *Tracker) Interval() time.Duration { return t.cfg.Interval }

// Sample takes one sample of every user shard this node leads; shards it
// no longer leads are forgotten.
func (t *Tracker) Sample(ctx context.Context) error {
	led, err := t.e.Leading(ctx)
	if err != nil {
		return err
	}
	now := t.cfg.Now()
	keep := int(t.cfg.Window/t.cfg.Interval) + 1
	type sized struct {
		h       *history
		desc    storage.Descriptor
		applied uint64
	}
	var toSize []sized
	// budget: how many idle shards due may be measured again in this
	// sample: enough to measure all once every SizeRefresh at an even
	// pace, rather than all at once.
	budget := len(led)*int(t.cfg.Interval)/int(t.cfg.SizeRefresh) + 1
	t.mu.Lock()
	t.mu.samples++
	for _, l := range led {
		if storage.IsSystemShard(l.ShardID) {
			continue
		}
		h := t.mu.shards[l.ShardID]
		if h == nil || h.gen != l.Desc.Generation {
			h = &history{gen: l.Desc.Generation}
			t.mu.shards[l.ShardID] = h
		}
		h.seen = t.mu.samples
		h.samples = append(h.samples, sample{at: now, applied: l.Applied})
		if n := len(h.samples) - keep; n > 0 {
			h.samples = append(h.samples[:0], h.samples[n:]...)
		}
		must, may := h.needsSize(now, l.Applied, t.cfg.SizeRefresh)
		if may && budget > 0 {
			budget--
			must = true
		}
		if must {
			toSize = append(toSize, sized{h, l.Desc, l.Applied})
		}
	}
	for id, h := range t.mu.shards {
		if h.seen != t.mu.samples {
			delete(t.mu.shards, id) // not led any more
		}
	}
	t.mu.Unlock()
	// Sizes outside the lock: Pebble's estimate reads table metadata.
	for _, s := range toSize {
		size, err := t.e.SizeOf(s.desc)
		if err != nil {
			return fmt.Errorf("shardload: size of shard %d: %w", s.desc.ShardID, err)
		}
		t.mu.Lock()
		s.h.size, s.h.sizedAt, s.h.sizedApplied = size, now, s.applied
		t.mu.Unlock()
	}
	return nil
}

// Loads returns the load of every shard this node led at the last sample.
func (t *Tracker) Loads() []Load {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Load, 0, len(t.mu.shards))
	for id, h := range t.mu.shards {
		l := Load{ShardID: id, Generation: h.gen, Size: h.size}
		if n := len(h.samples); n >= 2 {
			first, last := h.samples[0], h.samples[n-1]
			if dt := last.at.Sub(first.at).Seconds(); dt > 0 && last.applied >= first.applied {
				l.WritesPerSecond = float64(last.applied-first.applied) / dt
			}
		}
		out = append(out, l)
	}
	return out
}
