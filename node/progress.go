package node

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// DefaultProgressInterval is how often a starting node logs how many of its
// shards have a leader (Config.ProgressInterval).
const DefaultProgressInterval = 2 * time.Second

// progressCheck is how often a starting node looks whether every shard it
// hosts is led: a check reads two counters. It once looked only at each
// log line, and the hand-back that follows waited up to an interval.
const progressCheck = 100 * time.Millisecond

// progress logs, every interval from the node's start until every shard it
// hosts has a leader, how many do and how fast they get one:
//
//	msg="start: 7,412 of 10,000 shards led, 1,230/s" led=7412 shards=10000 per_s=1230
//
// and then once "start: every shard led" with the time it took, once
// created reports that the node has created the replicas it starts with (a
// bootstrap member creates its initial replicas after it started: until
// then the shards hosted so far may all be led). A node with nothing hosted
// yet logs nothing until it hosts some. It reads the engine's counters
// only (Stats: ShardsLed, Shards), so it costs nothing per shard. It
// returns true once every shard is led, false if ctx ended first.
func progress(ctx context.Context, e *engine.Engine, log *slog.Logger, interval time.Duration, created func() bool) bool {
	start := time.Now()
	// It looks every progressCheck whether every shard is led (what
	// follows, the leader hand-back, waits for it), and logs every
	// interval.
	t := time.NewTicker(min(interval, progressCheck))
	defer t.Stop()
	lastLed, lastAt := uint64(0), start
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		s := e.Stats()
		if s.Shards == 0 {
			continue
		}
		now := time.Now()
		if s.ShardsLed >= uint64(s.Shards) && created() {
			log.Info("start: every shard led", "shards", s.Shards, "after", now.Sub(start).Round(time.Millisecond))
			return true
		}
		if now.Sub(lastAt) < interval {
			continue
		}
		perS := 0.0
		if s.ShardsLed > lastLed {
			perS = float64(s.ShardsLed-lastLed) / now.Sub(lastAt).Seconds()
		}
		log.Info(fmt.Sprintf("start: %s of %s shards led, %s/s", thousands(s.ShardsLed), thousands(uint64(s.Shards)), thousands(uint64(perS+0.5))),
			"led", s.ShardsLed, "shards", s.Shards, "per_s", int(perS+0.5))
		lastLed, lastAt = s.ShardsLed, now
	}
}

// thousands formats n with a comma every three digits: 10000 is "10,000".
func thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// afterStart runs from the node's start: the progress log until every
// shard hosted is led, then, unless NoLeaderHandBack, the hand-back of the
// leaderships to their designated nodes (handBackLeaders) and the request
// for those designated to this node that others lead (takeBackLeaders: a
// node restarted alone finds its shards led by the others), logged.
func (n *Node) afterStart(ctx context.Context) {
	log, interval := n.cfg.Logger, n.cfg.ProgressInterval
	if interval < 0 {
		log, interval = slog.New(slog.DiscardHandler), DefaultProgressInterval
	}
	if !progress(ctx, n.Engine, log, interval, n.created.Load) || n.cfg.NoLeaderHandBack {
		return
	}
	start := time.Now()
	tried, failed, err := n.handBackLeaders(ctx)
	if tried > 0 || err != nil {
		n.cfg.Logger.Info("start: leaderships handed to their designated nodes", "tried", tried, "failed", failed,
			"took", time.Since(start).Round(time.Millisecond), "err", err)
	}
	start = time.Now()
	tried, failed, err = n.takeBackLeaders(ctx)
	if tried > 0 || err != nil {
		n.cfg.Logger.Info("start: leaderships of the shards designated to this node asked back", "tried", tried, "failed", failed,
			"took", time.Since(start).Round(time.Millisecond), "err", err)
	}
}
