package merger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
)

// outcome is how settle left a merge.
type outcome uint8

const (
	outcomeUnsettled outcome = iota // the right shard may still be frozen
	outcomeMerged                   // the left shard took the right one's range
	outcomeAbandoned                // the merge can no longer apply; the right shard is thawed
	outcomeLeftGone                 // the left shard was merged away, so the merge never can; the right shard is thawed
)

// settleBackoff spaces the attempts of settle's steps.
var settleBackoff = backoff.Config{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}

// settle ends the merge that frozen, a right shard's frozen descriptor,
// was frozen for, and which no one is running any more: it bumps the left
// shard's generation (frozen.MergeIntoGeneration) on its leader, so that
// the merge command can no longer apply anywhere, then thaws the right
// shard. If the bump finds the left shard's range over the right shard's
// first hash at a later generation, the merge applied: outcomeMerged. If
// a bump fails and the left shard has a tombstone (it was merged into its
// own left neighbour meanwhile, its replicas destroyed), no bump can get
// through, and none is needed: the left shard's log is gone, and with it
// any merge command in flight; the right shard is thawed at once
// (outcomeLeftGone). A left shard without a leader, or not found, but
// without a tombstone is not gone: the bump is retried.
// Each step is retried until ctx ends while the shard's leader cannot be
// reached; the error is the last step's.
func (m *Merger) settle(ctx context.Context, frozen storage.Descriptor) (outcome, error) {
	left, leftGen := frozen.MergeInto, frozen.MergeIntoGeneration
	var (
		bumped       storage.Descriptor
		merged, gone bool
		into         uint64 // the shard the left one was merged into, if gone
	)
	err := backoff.Retry(ctx, settleBackoff, func(ctx context.Context) error {
		var err error
		bumped, err = m.c.BumpGeneration(ctx, left, leftGen)
		var stale *engine.StaleGenerationError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &stale):
			// The left shard is past the generation the merge was
			// planned against: the merge command can no longer apply; if
			// the left shard holds the right one's first hash, it did.
			merged = stale.Start <= frozen.Start && frozen.Start <= stale.Last
			return nil
		case errors.Is(err, engine.ErrShardMerging):
			// The left shard is frozen itself: a merge into it fails while
			// it is, and its thaw raises its generation.
			return nil
		}
		// No leader, not found: the left shard may be gone, merged into
		// its own left neighbour; only its tombstone says so.
		var gerr error
		if into, gone, gerr = m.c.MergedAway(ctx, left); gerr == nil && gone {
			return nil
		}
		if errors.Is(err, engine.ErrBadRequest) {
			return backoff.Permanent(err)
		}
		if gerr != nil {
			err = fmt.Errorf("%w (and shard %d's tombstone could not be read: %v)", err, left, gerr)
		}
		return err
	})
	if err != nil {
		return outcomeUnsettled, fmt.Errorf("merger: bump the generation of shard %d: %w", left, err)
	}
	if merged {
		return outcomeMerged, nil
	}
	if gone {
		m.cfg.Logger.Warn("merge settled: the left shard was merged away, so the merge can never apply: thawing the right shard without a bump",
			"shard", left, "merged_into", into, "right", frozen.ShardID)
	}
	var thawed storage.Descriptor
	err = backoff.Retry(ctx, settleBackoff, func(ctx context.Context) error {
		var err error
		thawed, err = m.c.Unfreeze(ctx, frozen.ShardID, frozen.Generation)
		var stale *engine.StaleGenerationError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &stale), errors.Is(err, engine.ErrBadRequest):
			// Not frozen at that generation: thawed already (another
			// abandon), or never frozen (a freeze whose outcome was
			// unknown).
			thawed = storage.Descriptor{}
			return nil
		}
		return err
	})
	if err != nil {
		return outcomeUnsettled, fmt.Errorf("merger: thaw shard %d: %w", frozen.ShardID, err)
	}
	// The shards' reconcilers write the same records; this only saves
	// them the wait.
	var recs []nodemeta.ShardRecord
	for _, d := range []storage.Descriptor{bumped, thawed} {
		if d.ShardID != 0 {
			recs = append(recs, nodemeta.RecordOf(d))
		}
	}
	if len(recs) > 0 {
		if err := m.c.PutShards(ctx, recs); err != nil {
			m.cfg.Logger.Debug("merge abandoned: the records were not written; the shards' reconcilers will", "err", err)
		}
	}
	if gone {
		return outcomeLeftGone, nil
	}
	return outcomeAbandoned, nil
}

// Recovery settles merges left unfinished: right shards led on this node
// that have stayed frozen for longer than Config.FrozenTimeout (see the
// package doc). It belongs to one goroutine, which calls Pass
// periodically.
type Recovery struct {
	m *Merger
	// since is when each frozen shard led here was first seen frozen at
	// that generation.
	since map[uint64]frozenSince
}

type frozenSince struct {
	generation uint64
	at         time.Time
}

// Recovery returns a Recovery that settles with m.
func (m *Merger) Recovery() *Recovery {
	return &Recovery{m: m, since: map[uint64]frozenSince{}}
}

// Settled is a merge a Recovery pass settled.
type Settled struct {
	// Frozen is the right shard's frozen descriptor.
	Frozen storage.Descriptor
	// Merged: the merge had applied (the left shard took the range);
	// else it was abandoned.
	Merged bool
	// LeftGone: the left shard had been merged away itself (its
	// tombstone in the meta shard), so the merge could never apply: the
	// right shard was thawed without a bump of the left one.
	LeftGone bool
}

// Pass looks at the shards led on this node at time now, and settles each
// that has been frozen at one generation for longer than FrozenTimeout. It
// returns the merges it settled, and the errors of those it could not
// (to be tried again at the next pass).
func (r *Recovery) Pass(ctx context.Context, now time.Time) ([]Settled, error) {
	led, err := r.m.e.LeadingFrozen(ctx)
	if err != nil {
		return nil, err
	}
	frozen := map[uint64]bool{}
	var (
		settled []Settled
		errs    []error
	)
	for _, l := range led {
		d := l.Desc
		if !d.Frozen() {
			continue
		}
		frozen[d.ShardID] = true
		s, ok := r.since[d.ShardID]
		if !ok || s.generation != d.Generation {
			r.since[d.ShardID] = frozenSince{generation: d.Generation, at: now}
			continue
		}
		if now.Sub(s.at) < r.m.cfg.FrozenTimeout {
			continue
		}
		r.m.cfg.Logger.Warn("merge recovery: settling a shard frozen for too long", "shard", d.ShardID, "into", d.MergeInto,
			"frozen_for", now.Sub(s.at).Round(time.Millisecond))
		sctx, cancel := context.WithTimeout(ctx, r.m.cfg.SettleTimeout)
		out, err := r.m.settle(sctx, d)
		cancel()
		switch out {
		case outcomeUnsettled:
			errs = append(errs, fmt.Errorf("shard %d: %w", d.ShardID, err))
		case outcomeMerged:
			// Its replica here goes once the left shard's replica here
			// applies the merge; not asked again before another timeout.
			r.since[d.ShardID] = frozenSince{generation: d.Generation, at: now}
			settled = append(settled, Settled{Frozen: d, Merged: true})
		case outcomeAbandoned, outcomeLeftGone:
			delete(r.since, d.ShardID)
			settled = append(settled, Settled{Frozen: d, LeftGone: out == outcomeLeftGone})
		}
	}
	for id := range r.since {
		if !frozen[id] {
			delete(r.since, id)
		}
	}
	return settled, errors.Join(errs...)
}
