package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/group"
	"go.etcd.io/raft/v3/raftpb"
)

// Leader leases (Config.ReadMode = ReadModeLease).
//
// raft's own lease (ReadOnlyLeaseBased) rests on CheckQuorum's rule that a
// follower which heard from its leader within an election timeout refuses
// to vote. The engine breaks that rule in several places: a leadership
// transfer makes the transferee campaign by force (raft's followers grant
// it whatever their lease), ForgetLeader (a leader suspected down, see
// quiesce.go) makes a follower leaderless and so ready to vote at once, a
// restarted replica knows no leader and votes at once, and a replica ticks
// only while it is not quiesced, so an election timeout counted in its
// ticks is no bound in time. So the engine keeps its own lease, on both
// sides of it:
//
// The voters' promise (the vote gate). A replica that stepped a message of
// a leader (an append, a heartbeat or a snapshot, coalesced or not) at time
// heard, by its lease clock, neither grants nor asks for a vote until
// heard + ElectionTicks×TickInterval: incoming MsgVote and MsgPreVote are
// dropped, its own are not sent, and the engine's own campaigns
// (successor, rejectedCampaign, split children) wait. Only a transfer's
// forced campaign passes (see below). A replica opened from the store (a
// restart, a replica reopened in place) counts as having heard at its
// opening: it may have acknowledged a leader just before the restart. A
// replica created new, by CreateShard or as a split child with no earlier
// replica here, has never acknowledged a leader and has no promise to keep.
// The gate holds whether or not the replica knows its leader, ticks or is
// quiesced: it is measured in time, not in ticks.
//
// The leader's lease. A leader's ReadIndex request is taken at time start;
// its confirmation means that a quorum stepped a heartbeat of this term
// sent after start, so each of them keeps the gate until at least start +
// the election timeout on its own clock, and no other replica can win an
// election in a later term before then (a winner needs a vote of that
// quorum, its own included). The leader itself, one of the quorum, keeps
// the promise by raft's CheckQuorum rule: while it leads it ignores vote
// requests (lease mode needs CheckQuorum; without it a leader that sees a
// higher term steps down, and so stops serving, before it votes). The leader holds a lease until start +
// ElectionTicks×TickInterval − MaxClockDrift by its own clock, renewed by
// every confirmed ReadIndex it makes itself. MaxClockDrift covers the
// difference between the two clocks' rates over an election timeout, and
// the time between reading a clock and acting on it. While the lease
// holds, a lease read is answered at the leader's commit index once applied,
// provided that the commit index holds an entry of the leader's term
// (raft's rule for a new leader: before that, its commit index may miss
// entries an earlier leader committed). A lease read that finds no lease
// does a ReadIndex, whose confirmation renews it; one that finds less than
// half of it left asks for a renewal on the side.
//
// What ends a lease: losing the leadership or the term (the lease is of a
// term); starting a leadership transfer (the transferee's forced campaign
// ignores the gate, so a leader that calls TransferLeader, or sends
// MsgTimeoutNow, keeps no lease for the rest of its term, even if the
// transfer is abandoned: the MsgTimeoutNow may still arrive); a conf change
// applied (the quorum that confirmed the lease may be of the older
// configuration: the next ReadIndex confirms one of the new). A snapshot
// never reaches a leader of its term; a merge's frozen shard refuses reads
// as before (Engine.read); a split child starts with no lease.
//
// The engine's campaigns, each gated: CreateShard's first campaign (a new
// shard: no leader ever, no promise); a split child's first campaign by
// the parent's leader (gated if the child replica was reopened in place,
// else new); a successor's campaign after its leader was suspected down
// and the campaign after a rejected pre-vote (quiesce.go: both wait for
// the gate); raft's own election timer (its vote requests are dropped
// while the gate holds, and raft tries again later). The engine never
// steps MsgHup or MsgTimeoutNow itself.
//
// The cost: after its leader dies, a shard elects no sooner than an
// election timeout after the last message it had from it (instead of a
// few ticks after the leader is suspected down), and a restarted node
// votes no sooner than an election timeout after it started.

// Errors of lease reads.
var (
	// ErrLeaseNeedsCheckQuorum: ReadModeLease with DisableCheckQuorum.
	ErrLeaseNeedsCheckQuorum = errors.New("engine: lease reads need CheckQuorum (ReadMode lease with DisableCheckQuorum)")
	// ErrLeaseReadsOff: a lease read asked of an engine not in
	// ReadModeLease (its voters keep no promise a lease could rest on).
	ErrLeaseReadsOff = fmt.Errorf("%w: lease reads are off (ReadMode is not lease)", ErrBadRequest)
)

// validateLease checks the lease settings.
func (c Config) validateLease() []error {
	var errs []error
	if c.ReadMode != ReadModeIndex && c.ReadMode != ReadModeLease {
		errs = append(errs, fmt.Errorf("unknown ReadMode %d", int(c.ReadMode)))
	}
	if c.MaxClockDrift < 0 {
		errs = append(errs, fmt.Errorf("MaxClockDrift %v < 0", c.MaxClockDrift))
	}
	if c.ReadMode != ReadModeLease {
		return errs
	}
	if c.DisableCheckQuorum {
		errs = append(errs, ErrLeaseNeedsCheckQuorum)
	}
	if et := time.Duration(c.ElectionTicks) * c.TickInterval; c.MaxClockDrift >= et && c.ElectionTicks > 0 && c.TickInterval > 0 {
		errs = append(errs, fmt.Errorf("MaxClockDrift %v leaves no lease: it must be below the election timeout %v", c.MaxClockDrift, et))
	}
	if c.Ticks != nil && c.Clock == nil {
		errs = append(errs, errors.New("ReadMode lease with Ticks needs a Clock that advances with the ticks"))
	}
	return errs
}

// leaseGuards, cleared bit by bit by tests only, turns the lease's guards
// off, to show that the tests catch a lease without them.
var leaseGuards atomic.Int32

func init() { leaseGuards.Store(guardVotes | guardTransfer) }

const (
	guardVotes    = 1 << iota // the vote gate
	guardTransfer             // no lease after a transfer started
)

// campaignTransfer is the Context of the vote requests of a transfer's
// forced campaign (raft's campaignTransfer, unexported).
var campaignTransfer = []byte("CampaignTransfer")

// never is the heard time of a replica that has never acknowledged a
// leader (no gate).
const never = math.MinInt64 / 2

// leaseNow reads the lease clock: nanoseconds since the engine started.
func (e *Engine) leaseNow() int64 { return int64(e.cfg.Clock().Sub(e.epoch)) }

// electionNanos is the election timeout in time.
func (e *Engine) electionNanos() int64 {
	return int64(time.Duration(e.cfg.ElectionTicks) * e.cfg.TickInterval)
}

// leaseNanos is the length of a lease.
func (e *Engine) leaseNanos() int64 { return e.electionNanos() - int64(e.cfg.MaxClockDrift) }

// heardLeader notes that r stepped a leader's message in this cycle.
func (w *worker) heardLeader(r *replica) {
	if w.e.lease {
		r.heardAt = w.now
	}
}

// voteHeld reports whether r's vote gate holds now (w.now: the cycle's
// start, earlier than the vote is acted on, which errs on the safe side).
func (w *worker) voteHeld(r *replica) bool { return w.voteHeldFor(r, w.e.electionNanos()) }

// voteHeldFor reports whether r heard from a leader less than d ago.
func (w *worker) voteHeldFor(r *replica, d int64) bool {
	return w.e.lease && leaseGuards.Load()&guardVotes != 0 && w.now-r.heardAt < d
}

// isVote reports whether m asks for a vote other than by a transfer's
// forced campaign.
func isVote(m *raftpb.Message) bool {
	return (m.Type == raftpb.MsgVote || m.Type == raftpb.MsgPreVote) &&
		!bytes.Equal(m.Context, campaignTransfer)
}

// dropVote reports whether m, to or from r, is a vote request the gate
// holds back (counted).
func (w *worker) dropVote(r *replica, m *raftpb.Message) bool {
	if !isVote(m) || !w.voteHeld(r) {
		return false
	}
	w.e.stats.votesHeld.Add(1)
	return true
}

// voidLease ends r's lease for the rest of its term (a transfer starts).
func voidLease(r *replica) {
	if leaseGuards.Load()&guardTransfer != 0 {
		r.g.VoidLease()
	}
}

// leaseRead serves rr, a lease read, on the worker: from the lease if r
// holds one and has committed an entry of its term, otherwise by a
// ReadIndex that renews the lease.
func (w *worker) leaseRead(r *replica, rr readReq) {
	if !r.g.IsLeader() {
		rr.r.Done <- group.Result{Err: &NotLeaderError{ShardID: r.shardID, Leader: r.g.LeaderNode(), Term: r.term()}}
		return
	}
	dur := w.e.leaseNanos()
	if expiry, ok := r.g.LeaseExpiry(dur); ok && w.now < expiry {
		bs := r.g.RN.BasicStatus()
		if t, err := r.log.Term(bs.Commit); err == nil && t == bs.Term && bs.LeadTransferee == 0 {
			applied, _ := r.log.Applied()
			// Counted before the read may be answered: a caller that
			// reads Stats once it has its answer sees this read in them.
			w.e.stats.leaseReads.Add(1)
			r.g.ReadAt(rr.r, bs.Commit, applied)
			if r.g.ShouldRenew(w.now, expiry, dur) {
				// A ReadIndex of the engine's own, whose waiter nobody
				// reads (its channel is buffered).
				_ = r.g.ReadIndexRenewing(group.NewRead(w.e.nextID()), w.now)
				w.wake(r)
				w.markDirty(r)
			}
			return
		}
	}
	w.e.stats.leaseMisses.Add(1)
	w.wake(r)
	if err := r.g.ReadIndexRenewing(rr.r, w.now); err != nil {
		rr.r.Done <- group.Result{Err: err}
		return
	}
	w.markDirty(r)
}

// ReadLease answers query from shardID's state with linearizable
// semantics, as Read, from the leader's lease when it holds one (no quorum
// round; see lease.go), by a ReadIndex otherwise. This node must lead the
// shard (otherwise a *NotLeaderError), and the engine must run in
// ReadModeLease (otherwise ErrLeaseReadsOff).
func (e *Engine) ReadLease(ctx context.Context, shardID uint64, query []byte) ([]byte, error) {
	if !e.lease {
		return nil, fmt.Errorf("shard %d: %w", shardID, ErrLeaseReadsOff)
	}
	return e.read(ctx, shardID, query, readLease)
}

// ReadLeader answers query on the leader as the engine's ReadMode says:
// ReadLease in ReadModeLease, Read otherwise.
func (e *Engine) ReadLeader(ctx context.Context, shardID uint64, query []byte) ([]byte, error) {
	if e.lease {
		return e.read(ctx, shardID, query, readLease)
	}
	return e.read(ctx, shardID, query, readIndex)
}
