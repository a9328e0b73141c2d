package group

import (
	"encoding/binary"
	"errors"
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Errors of a group.
var (
	// ErrProposalDropped: the proposal was not appended, or its entry was
	// replaced by another leader's: it will never apply. Safe to retry.
	ErrProposalDropped = errors.New("group: proposal dropped")
	// ErrReadRetry: a read's ReadIndex got no answer in time (leader lost or
	// messages dropped); retry with a fresh request.
	ErrReadRetry = errors.New("group: read index not answered, retry")
	// ErrBadEntry: an entry that does not decode.
	ErrBadEntry = errors.New("group: malformed entry")
	// ErrConfChangeInProgress: a conf change is pending (proposed and not
	// yet applied) or the configuration is joint; raft would drop another.
	// Nothing was proposed: retry once the pending change has applied.
	ErrConfChangeInProgress = errors.New("group: a conf change is in progress")
	// ErrAmbiguous: the command's outcome is unknown. It may or may not
	// have applied; it must not be retried as if it had not (a write with a
	// client session may be: the session makes the retry apply at most once).
	ErrAmbiguous = errors.New("group: outcome unknown, the command may have applied")
)

// AmbiguousError reports a command whose outcome is unknown: its entry was
// appended at Index, and then the replica lost track of it (a snapshot
// covered the index, the replica was removed or closed). errors.Is(err,
// ErrAmbiguous) holds; Cause says what happened.
type AmbiguousError struct {
	ShardID uint64
	Index   uint64
	Cause   error
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("shard %d: outcome of the command at index %d unknown (it may have applied): %v", e.ShardID, e.Index, e.Cause)
}

// Is makes errors.Is(err, ErrAmbiguous) true.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// Unwrap returns the cause.
func (e *AmbiguousError) Unwrap() error { return e.Cause }

// NotLeaderError is returned by a replica that does not lead its shard. Leader
// is the node (not the replica) it believes leads (0 if unknown) at Term.
type NotLeaderError struct {
	ShardID uint64
	Leader  uint64
	Term    uint64
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return fmt.Sprintf("shard %d: not leader, leader unknown (term %d)", e.ShardID, e.Term)
	}
	return fmt.Sprintf("shard %d: not leader, leader is node %d (term %d)", e.ShardID, e.Leader, e.Term)
}

// Config of a group's raft instance.
type Config struct {
	// ReplicaID is this replica's ID in the shard (raft's ID): never the
	// node ID, never reused.
	ReplicaID uint64
	// NodeOf returns the node of a replica of the shard (0 if unknown), for
	// the leader hints of NotLeaderError. Required.
	NodeOf          func(replicaID uint64) uint64
	ElectionTicks   int
	HeartbeatTicks  int
	MaxSizePerMsg   uint64
	MaxInflightMsgs int
	// MaxUncommittedBytes bounds the proposals a leader holds uncommitted.
	MaxUncommittedBytes uint64
	// MaxCommittedBytesPerReady bounds the entries applied in one Ready.
	MaxCommittedBytesPerReady uint64
	// AsyncStorageWrites runs raft in its asynchronous storage mode: no
	// Advance; what to persist and what to apply arrive as messages to the
	// local append and apply threads, whose responses the engine steps back
	// once the writes are durable (appends) or done (applies).
	AsyncStorageWrites bool
	// DisableCheckQuorum turns raft's CheckQuorum off (see engine.Config).
	DisableCheckQuorum bool
	Logger             raft.Logger
}

// Result is what a proposal or read waiter receives.
type Result struct {
	Value []byte
	Err   error
	Index uint64 // the entry's index (proposals) or the read index (reads)
}

// Proposal is a command waiting for its entry to be applied.
type Proposal struct {
	ID    uint64
	Done  chan Result // buffered (1): the engine never blocks on it
	index uint64      // the entry's index once appended, 0 before
	cc    bool        // a conf change
}

// Complete hands r to the waiter.
func (p *Proposal) Complete(r Result) { p.Done <- r }

// Reset readies a proposal whose result was received for reuse (its Done
// channel is kept, empty).
func (p *Proposal) Reset() { *p = Proposal{Done: p.Done} }

// Read is a linearizable read waiting for its read index to be applied.
type Read struct {
	ctx   [8]byte
	Done  chan Result
	index uint64 // read index once known
	ticks int    // ticks since the ReadIndex request
	// A leader's ReadIndex that renews its lease once confirmed (lease.go):
	// the lease clock before the request, and the term it was made in
	// (0: not a lease renewal).
	leaseStart int64
	leaseTerm  uint64
}

// NewRead returns a read waiter whose ReadIndex context is id: every attempt
// gets a fresh id, never reused across retries.
func NewRead(id uint64) *Read {
	r := &Read{Done: make(chan Result, 1)}
	binary.BigEndian.PutUint64(r.ctx[:], id)
	return r
}

// Group is one shard's raft state machine on this node.
type Group struct {
	ShardID uint64
	RN      *raft.RawNode

	replicaID uint64
	nodeOf    func(uint64) uint64
	election  int
	lead      uint64 // leader's replica ID
	term      uint64
	state     raft.StateType

	proposals map[uint64]*Proposal // by proposal ID; nil until the first, kept empty after (a shard that writes once writes again)
	fresh     []*Proposal          // proposed since the last Ready
	reads     []*Read              // waiting reads in request order
	lease     lease                // the leader's lease (lease.go)
	// pendingConf is the index of the last conf change this replica
	// appended as leader (or, on becoming leader, its last index, which may
	// hold one): as raft's own pendingConfIndex, another conf change is
	// refused until the applied index reaches it.
	pendingConf uint64
}

// New starts the raft instance of shardID over storage, resuming after
// applied (the applied index persisted with the state machine).
func New(cfg Config, shardID uint64, storage raft.Storage, applied uint64) (*Group, error) {
	rc := &raft.Config{
		AsyncStorageWrites:        cfg.AsyncStorageWrites,
		ID:                        cfg.ReplicaID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   storage,
		Applied:                   applied,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxCommittedSizePerReady:  cfg.MaxCommittedBytesPerReady,
		MaxUncommittedEntriesSize: cfg.MaxUncommittedBytes,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		CheckQuorum:               !cfg.DisableCheckQuorum,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    cfg.Logger,
	}
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		return nil, fmt.Errorf("group: shard %d: %w", shardID, err)
	}
	hs, _, _ := storage.InitialState()
	return &Group{ShardID: shardID, RN: rn, replicaID: cfg.ReplicaID, nodeOf: cfg.NodeOf, election: cfg.ElectionTicks, term: hs.Term}, nil
}

// Leader returns the leader (its replica ID) this replica knows and the term.
func (g *Group) Leader() (leader, term uint64) { return g.lead, g.term }

// LeaderNode returns the node of the leader this replica knows (0 if none).
func (g *Group) LeaderNode() uint64 {
	if g.lead == 0 {
		return 0
	}
	return g.nodeOf(g.lead)
}

// IsLeader reports whether this replica leads.
func (g *Group) IsLeader() bool { return g.state == raft.StateLeader }

func (g *Group) notLeader() error {
	return &NotLeaderError{ShardID: g.ShardID, Leader: g.LeaderNode(), Term: g.term}
}

// EncodeEntry returns the entry data for a proposal.
func EncodeEntry(id uint64, cmd []byte) []byte {
	b := make([]byte, 9+len(cmd))
	b[0] = 1
	binary.BigEndian.PutUint64(b[1:], id)
	copy(b[9:], cmd)
	return b
}

// DecodeEntry splits a normal entry's data; empty data is a leader's no-op
// (id 0, nil command).
func DecodeEntry(data []byte) (id uint64, cmd []byte, err error) {
	if len(data) == 0 {
		return 0, nil, nil
	}
	if len(data) < 9 || data[0] != 1 {
		return 0, nil, ErrBadEntry
	}
	return binary.BigEndian.Uint64(data[1:9]), data[9:], nil
}

// Propose appends data (from EncodeEntry with p.ID) if this replica leads.
// On error nothing is pending.
func (g *Group) Propose(p *Proposal, data []byte) error {
	if g.state != raft.StateLeader {
		return g.notLeader()
	}
	if err := g.RN.Propose(data); err != nil {
		if errors.Is(err, raft.ErrProposalDropped) {
			return ErrProposalDropped
		}
		return err
	}
	g.track(p)
	return nil
}

// ConfChangeAllowed reports whether raft would accept a conf change now: no
// other is pending (appended as leader and not applied by applied) and the
// configuration is not joint. raft silently replaces a conf change it does
// not accept with an empty entry; the engine refuses it up front instead.
func (g *Group) ConfChangeAllowed(applied uint64, cs raftpb.ConfState) bool {
	return g.pendingConf <= applied && len(cs.VotersOutgoing) == 0
}

// leaveJointAllowed reports whether raft would accept leaving the joint
// configuration now: it is joint and no other change is pending.
func (g *Group) leaveJointAllowed(applied uint64, cs raftpb.ConfState) bool {
	return g.pendingConf <= applied && len(cs.VotersOutgoing) > 0
}

// ProposeConfChange proposes cc, whose Context starts with the proposal ID
// (ConfChangeContext); a cc with no changes leaves a joint configuration.
// It fails with ErrConfChangeInProgress if raft would drop it (see
// ConfChangeAllowed; leaving needs a joint configuration instead); should raft drop it all the same, the
// proposal completes with that error at the next Ready.
func (g *Group) ProposeConfChange(p *Proposal, cc raftpb.ConfChangeV2, applied uint64, cs raftpb.ConfState) error {
	if g.state != raft.StateLeader {
		return g.notLeader()
	}
	allowed := g.ConfChangeAllowed(applied, cs)
	if cc.LeaveJoint() {
		allowed = g.leaveJointAllowed(applied, cs)
	}
	if !allowed {
		return ErrConfChangeInProgress
	}
	if err := g.RN.ProposeConfChange(cc); err != nil {
		if errors.Is(err, raft.ErrProposalDropped) {
			return ErrProposalDropped
		}
		return err
	}
	p.cc = true
	g.track(p)
	return nil
}

// ConfChangeContext encodes a proposal ID for ConfChangeV2.Context,
// followed by extra (the engine's description of the change).
func ConfChangeContext(id uint64, extra []byte) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(extra)), id), extra...)
}

// ConfChangeID decodes what ConfChangeContext encoded (0 if absent).
func ConfChangeID(ctx []byte) (id uint64, extra []byte) {
	if len(ctx) < 8 {
		return 0, nil
	}
	return binary.BigEndian.Uint64(ctx), ctx[8:]
}

func (g *Group) track(p *Proposal) {
	if g.proposals == nil {
		g.proposals = make(map[uint64]*Proposal)
	}
	g.proposals[p.ID] = p
	g.fresh = append(g.fresh, p)
}

// Pending returns the number of proposals and reads waiting.
func (g *Group) Pending() int { return len(g.proposals) + len(g.reads) }

// ReadIndex starts a linearizable read if this replica leads.
func (g *Group) ReadIndex(r *Read) error {
	if g.state != raft.StateLeader {
		return g.notLeader()
	}
	g.RN.ReadIndex(r.ctx[:])
	g.reads = append(g.reads, r)
	return nil
}

// ReadIndexOnReplica starts a linearizable read served by this replica
// whatever its role: a leader confirms its leadership as for ReadIndex; a
// follower or learner asks its leader for the read index (raft forwards
// the request, and the leader confirms its leadership with a quorum before
// it answers), and the read completes once this replica has applied that
// index. Refused (a *NotLeaderError) while no leader is known.
func (g *Group) ReadIndexOnReplica(r *Read) error {
	if g.state != raft.StateLeader && (g.state != raft.StateFollower || g.lead == 0) {
		return g.notLeader()
	}
	g.RN.ReadIndex(r.ctx[:])
	g.reads = append(g.reads, r)
	return nil
}

// Tick advances the group's logical clock; reads unanswered for an election
// timeout fail with ErrReadRetry.
func (g *Group) Tick() {
	g.RN.Tick()
	if len(g.reads) == 0 {
		return
	}
	keep := g.reads[:0]
	for _, r := range g.reads {
		r.ticks++
		if r.index == 0 && r.ticks > g.election {
			r.Done <- Result{Err: ErrReadRetry}
			continue
		}
		keep = append(keep, r)
	}
	g.reads = g.shrinkReads(keep)
}

func (g *Group) shrinkReads(keep []*Read) []*Read {
	for i := len(keep); i < cap(keep) && i < len(g.reads); i++ {
		g.reads[i] = nil
	}
	if len(keep) == 0 {
		return nil
	}
	return keep
}

// LeaderChange describes a change of leader seen in a Ready.
type LeaderChange struct {
	Leader, Term uint64
}

// OnReady takes note of what a Ready says before it is persisted: the leader
// and term (returning a change if the leader changed), the indexes of this
// node's proposals among the new entries, and the read states.
func (g *Group) OnReady(rd *raft.Ready) (change *LeaderChange) {
	if !raft.IsEmptyHardState(rd.HardState) {
		g.term = rd.HardState.Term
	}
	if rd.SoftState != nil {
		wasLeader := g.state == raft.StateLeader
		g.state = rd.SoftState.RaftState
		if !wasLeader && g.state == raft.StateLeader && len(rd.Entries) > 0 {
			// raft's pendingConfIndex is its last index on becoming leader,
			// before the empty entry of its term: an unapplied entry up to
			// there may be a conf change.
			pending := rd.Entries[len(rd.Entries)-1].Index
			for _, e := range rd.Entries {
				if e.Term == g.term && e.Type == raftpb.EntryNormal && len(e.Data) == 0 {
					pending = e.Index - 1
					break
				}
			}
			g.pendingConf = max(g.pendingConf, pending)
		}
		if rd.SoftState.Lead != g.lead {
			g.lead = rd.SoftState.Lead
			change = &LeaderChange{Leader: g.lead, Term: g.term}
		}
		if wasLeader && g.state != raft.StateLeader {
			// Reads issued as leader cannot be answered by this replica.
			for _, r := range g.reads {
				r.Done <- Result{Err: g.notLeader()}
			}
			g.reads = nil
		}
	}
	for i := range rd.Entries {
		e := &rd.Entries[i]
		var id uint64
		switch e.Type {
		case raftpb.EntryNormal:
			if len(g.proposals) > 0 {
				id, _, _ = DecodeEntry(e.Data)
			}
		case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
			if g.state == raft.StateLeader {
				g.pendingConf = max(g.pendingConf, e.Index)
			}
			var cc raftpb.ConfChangeV2
			if e.Type == raftpb.EntryConfChangeV2 && len(g.proposals) > 0 && cc.Unmarshal(e.Data) == nil {
				id, _ = ConfChangeID(cc.Context)
			}
		}
		if p := g.proposals[id]; p != nil && id != 0 {
			p.index = e.Index
		}
	}
	// Every proposal accepted since the last Ready is among its entries,
	// unless raft dropped it on the way: raft replaces a conf change it
	// refuses with an empty entry, and nobody would ever complete it.
	for i, p := range g.fresh {
		if p.index == 0 && g.proposals[p.ID] == p {
			delete(g.proposals, p.ID)
			err := ErrProposalDropped
			if p.cc {
				err = ErrConfChangeInProgress
			}
			p.Done <- Result{Err: err}
		}
		g.fresh[i] = nil
	}
	g.fresh = g.fresh[:0]
	g.failBeyondLog(rd)
	for _, rs := range rd.ReadStates {
		for _, r := range g.reads {
			if string(r.ctx[:]) == string(rs.RequestCtx) {
				r.index = rs.Index
				if r.index == 0 {
					r.index = 1
				}
				g.renewLease(r)
			}
		}
	}
	return change
}

// failBeyondLog ends the proposals whose entries rd's entries or snapshot
// cut off: a replica that led appended them, and a new leader's entries
// (or snapshot) replaced its log from a lower index and end before them.
// Applied would end them once their index applies, but nothing may ever
// be appended there (the shard goes idle), and the waiter would wait until
// it gives up. Their outcome is unknown, not "dropped": another replica may
// still hold such an entry, lead and commit it. (A proposal whose index
// now holds another entry is left to Applied, which says "dropped" once
// that index applies.) A leader's own entries never end before its
// proposals': it only appends after them.
func (g *Group) failBeyondLog(rd *raft.Ready) {
	if len(g.proposals) == 0 {
		return
	}
	var end uint64
	switch {
	case len(rd.Entries) > 0:
		end = rd.Entries[len(rd.Entries)-1].Index
	case !raft.IsEmptySnap(rd.Snapshot):
		end = rd.Snapshot.Metadata.Index
	default:
		return
	}
	for id, p := range g.proposals {
		if p.index > end {
			delete(g.proposals, id)
			p.Done <- Result{Err: &AmbiguousError{ShardID: g.ShardID, Index: p.index, Cause: errors.New("another leader's entries replaced this replica's log before it")}, Index: p.index}
		}
	}
}

// TakeProposal removes and returns this node's proposal id, if any.
func (g *Group) TakeProposal(id uint64) *Proposal {
	if id == 0 || g.proposals == nil {
		return nil
	}
	p := g.proposals[id]
	if p != nil {
		delete(g.proposals, id)
	}
	return p
}

// Applied is called after entries up to index are applied (their writes
// visible in the store): proposals whose entry index is at or below it but
// which were not taken were replaced by another leader's entries
// (ErrProposalDropped), and reads whose index is reached complete.
func (g *Group) Applied(index uint64) {
	for id, p := range g.proposals {
		if p.index != 0 && p.index <= index {
			delete(g.proposals, id)
			p.Done <- Result{Err: ErrProposalDropped, Index: p.index}
		}
	}
	if len(g.reads) == 0 {
		return
	}
	keep := g.reads[:0]
	for _, r := range g.reads {
		if r.index != 0 && r.index <= index {
			r.Done <- Result{Index: r.index}
			continue
		}
		keep = append(keep, r)
	}
	g.reads = g.shrinkReads(keep)
}

// SnapshotApplied is called when a snapshot brought the replica to index:
// the outcome of a proposal whose entry was at or below it is unknown (the
// snapshot may or may not hold it).
func (g *Group) SnapshotApplied(index uint64) {
	for id, p := range g.proposals {
		if p.index != 0 && p.index <= index {
			delete(g.proposals, id)
			p.Done <- Result{Err: &AmbiguousError{ShardID: g.ShardID, Index: p.index, Cause: errors.New("a snapshot replaced the log")}, Index: p.index}
		}
	}
}

// FailAll completes every waiter with err (the replica is closing or was
// removed). A proposal already appended gets an *AmbiguousError wrapping
// err: it may still have applied.
func (g *Group) FailAll(err error) {
	for _, p := range g.proposals {
		if p.index != 0 {
			p.Done <- Result{Err: &AmbiguousError{ShardID: g.ShardID, Index: p.index, Cause: err}, Index: p.index}
			continue
		}
		p.Done <- Result{Err: err}
	}
	for _, r := range g.reads {
		r.Done <- Result{Err: err}
	}
	clear(g.fresh)
	g.proposals, g.reads, g.fresh = nil, nil, g.fresh[:0]
}
