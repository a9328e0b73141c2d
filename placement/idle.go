package placement

import (
	"context"
	"slices"
	"time"
)

// Idle stepping. On a cluster where nothing moves, each step of Run reads
// the whole state and plans over every shard to find nothing to do: at
// 10,000 shards that was about 2% of a core on the meta shard's leader,
// once a second. A Source that can say cheaply whether its state may have
// changed (a VersionedSource) spares those steps: once a step finds
// nothing to do, Run skips the steps that follow until the source's
// version moves or IdleInterval has passed. What the version does not
// cover, the clock (a node down for DownAfter, a merge's cool-down) and
// what the source leaves out of it, waits at most IdleInterval longer.
//
// A step's cost grows with the shards: at 100,000 shards one State and
// Plan took some 0.4 s of the meta leader's CPU, so that a step every
// IdleInterval (10 s) was 4% of a core spent finding nothing to do. So an
// idle driver waits the longer of IdleInterval and IdleCostRatio (100)
// times what its last step took (its State and Plan, by the driver's
// clock): finding nothing costs at most 1% of a core, and a cluster small
// enough to plan in 100 ms keeps IdleInterval.

// VersionedSource is a Source that tells cheaply whether what State would
// return may have changed. Version returns a number that differs from
// every earlier one whenever the state may have changed, apart from the
// passing of time and from whatever its doc says it leaves out; an error
// makes the driver step. Version is called from the stepping goroutine,
// like State.
type VersionedSource interface {
	Source
	Version(ctx context.Context) (uint64, error)
}

// idleState is the driver's record of a step that found nothing to do.
// Owned by the stepping goroutine.
type idleState struct {
	idle    bool          // the last step found nothing to do and left nothing in flight
	at      time.Time     // when it read the version
	version uint64        // the source's version read before that step's state
	cost    time.Duration // what that step took, from reading the version to its plan
}

// versionBefore reads the source's version before a step reads the
// state; ok is false if the source has none.
func (d *Driver) versionBefore(ctx context.Context) (v uint64, at time.Time, ok bool) {
	d.idle.idle = false
	vs, versioned := d.src.(VersionedSource)
	if !versioned {
		return 0, time.Time{}, false
	}
	at = d.cfg.Now()
	v, err := vs.Version(ctx)
	return v, at, err == nil
}

// noteIdle records, after a step's plan, whether the step found nothing to
// do: no operation planned (a QuorumLost report is not one: nothing can
// be done about it) and none in flight.
func (d *Driver) noteIdle(v uint64, at time.Time, versioned bool, ops []Op) {
	nothing := !slices.ContainsFunc(ops, func(op Op) bool { return op.Kind != QuorumLost })
	if versioned && nothing && len(d.inflight) == 0 {
		d.idle = idleState{idle: true, at: at, version: v, cost: d.cfg.Now().Sub(at)}
	}
}

// idleWait is how long an idle driver goes without a step while the
// version stays the same.
func (d *Driver) idleWait() time.Duration {
	return max(d.cfg.IdleInterval, time.Duration(d.cfg.IdleCostRatio)*d.idle.cost)
}

// due reports whether Run should step now: always, unless the last step
// found nothing to do, less than idleWait ago, and the source's version
// has not moved since.
func (d *Driver) due(ctx context.Context) bool {
	if !d.idle.idle || d.cfg.Now().Sub(d.idle.at) >= d.idleWait() {
		return true
	}
	v, err := d.src.(VersionedSource).Version(ctx)
	return err != nil || v != d.idle.version
}
