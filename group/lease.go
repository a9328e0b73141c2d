package group

import "go.etcd.io/raft/v3"

// A leader's lease, kept for the engine (see engine/lease.go for why it is
// safe and what the engine guarantees in exchange). The group only keeps
// the book: the start of the latest quorum round that confirmed this
// replica's leadership in its term, and whether a leadership transfer was
// started in the term. Times are readings of the engine's lease clock, in
// nanoseconds.
type lease struct {
	term  uint64 // the term start belongs to; 0: no lease
	start int64  // the lease clock before the confirming round was requested
	// voidTerm: a leadership transfer was started in this term, whose
	// transferee campaigns ignoring the followers' leases: no lease for the
	// rest of the term.
	voidTerm uint64
	// renewAt: when a renewal (a ReadIndex of the engine's own) was last
	// requested, so that reads do not pile renewals up.
	renewAt int64
}

// ReadIndexRenewing starts a linearizable read on the leader, as
// ReadIndex, whose confirmation renews the lease: now is the lease clock
// read before the request (an earlier reading is safe, a later one is not).
func (g *Group) ReadIndexRenewing(r *Read, now int64) error {
	if err := g.ReadIndex(r); err != nil {
		return err
	}
	r.leaseStart, r.leaseTerm = now, g.term
	return nil
}

// renewLease takes r's confirmation (a read state) into the lease: a
// quorum acknowledged a heartbeat of this term sent after r.leaseStart.
func (g *Group) renewLease(r *Read) {
	if r.leaseTerm == 0 || r.leaseTerm != g.term || g.state != raft.StateLeader || g.lease.voidTerm == g.term {
		return
	}
	if g.lease.term != g.term || r.leaseStart > g.lease.start {
		g.lease.term, g.lease.start = g.term, r.leaseStart
	}
}

// LeaseExpiry returns when this replica's lease ends (lease clock, ns),
// for a lease of length dur; ok is false if it holds none: it does not
// lead, its lease is of an earlier term or was dropped, or a transfer was
// started in its term.
func (g *Group) LeaseExpiry(dur int64) (expiry int64, ok bool) {
	if g.state != raft.StateLeader || g.lease.term != g.term || g.lease.voidTerm == g.term {
		return 0, false
	}
	return g.lease.start + dur, true
}

// VoidLease ends the lease for the rest of the term: the leader is
// handing its leadership over (a transferee campaigns by force, ignoring
// the followers' leases).
func (g *Group) VoidLease() {
	g.lease.voidTerm = g.term
	g.lease.term = 0
}

// DropLease ends the current lease (a conf change applied: the quorum that
// confirmed it may be of an older configuration); the next confirmed
// ReadIndexRenewing starts a new one.
func (g *Group) DropLease() { g.lease.term = 0 }

// ShouldRenew reports whether the lease should be renewed now, and notes
// that it will be: less than half of it is left and no renewal was asked
// for in the last quarter of it.
func (g *Group) ShouldRenew(now, expiry, dur int64) bool {
	if expiry-now > dur/2 || now-g.lease.renewAt < dur/4 {
		return false
	}
	g.lease.renewAt = now
	return true
}

// ReadAt adds a read whose index is known (a lease read: the leader's
// commit index), answered once the replica has applied up to index; it
// completes at once if applied has reached it.
func (g *Group) ReadAt(r *Read, index, applied uint64) {
	r.index = max(index, 1)
	if applied >= r.index {
		r.Done <- Result{Index: r.index}
		return
	}
	g.reads = append(g.reads, r)
}
