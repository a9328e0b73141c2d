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
// Pebble's estimate of the disk space of its data span: cheap (it reads
// table metadata, not data), rounded to whole tables.
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
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultConfig returns a 30 s window sampled every 5 s.
func DefaultConfig() Config {
	return Config{Window: 30 * time.Second, Interval: 5 * time.Second, Now: time.Now}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Interval == 0 {
		c.Interval = d.Interval
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

// needsSize reports whether the shard's size is to be measured again at
// now with applied index applied: never measured, written to since
// (applied moved), or measured more than window ago (a compaction shrinks
// a shard's files without a write). An idle shard is measured once a
// window instead of at every sample: on a node leading thousands of
// shards each measure is one of Pebble's estimates over its range.
func (h *history) needsSize(now time.Time, applied uint64, window time.Duration) bool {
	return h.sizedAt.IsZero() || applied != h.sizedApplied || now.Sub(h.sizedAt) >= window
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
		if h.needsSize(now, l.Applied, t.cfg.Window) {
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
