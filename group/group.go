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
)

// NotLeaderError is returned by a replica that does not lead its shard. Leader
// is the node it believes leads (0 if unknown) at Term.
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
	NodeID          uint64
	ElectionTicks   int
	HeartbeatTicks  int
	MaxSizePerMsg   uint64
	MaxInflightMsgs int
	// MaxUncommittedBytes bounds the proposals a leader holds uncommitted.
	MaxUncommittedBytes uint64
	// MaxCommittedBytesPerReady bounds the entries applied in one Ready.
	MaxCommittedBytesPerReady uint64
	Logger                    raft.Logger
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
}

// Complete hands r to the waiter.
func (p *Proposal) Complete(r Result) { p.Done <- r }

// Read is a linearizable read waiting for its read index to be applied.
type Read struct {
	ctx   [8]byte
	Done  chan Result
	index uint64 // read index once known
	ticks int    // ticks since the ReadIndex request
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

	nodeID   uint64
	election int
	lead     uint64
	term     uint64
	state    raft.StateType

	proposals map[uint64]*Proposal // by proposal ID; nil when none
	reads     []*Read              // waiting reads in request order
}

// New starts the raft instance of shardID over storage, resuming after
// applied (the applied index persisted with the state machine).
func New(cfg Config, shardID uint64, storage raft.Storage, applied uint64) (*Group, error) {
	rc := &raft.Config{
		ID:                        cfg.NodeID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   storage,
		Applied:                   applied,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxCommittedSizePerReady:  cfg.MaxCommittedBytesPerReady,
		MaxUncommittedEntriesSize: cfg.MaxUncommittedBytes,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		CheckQuorum:               true,
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
	return &Group{ShardID: shardID, RN: rn, nodeID: cfg.NodeID, election: cfg.ElectionTicks, term: hs.Term}, nil
}

// Leader returns the leader this replica knows and the term.
func (g *Group) Leader() (leader, term uint64) { return g.lead, g.term }

// IsLeader reports whether this replica leads.
func (g *Group) IsLeader() bool { return g.state == raft.StateLeader }

func (g *Group) notLeader() error {
	return &NotLeaderError{ShardID: g.ShardID, Leader: g.lead, Term: g.term}
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

// ProposeConfChange proposes cc, whose Context the caller set to the
// proposal ID (ConfChangeContext).
func (g *Group) ProposeConfChange(p *Proposal, cc raftpb.ConfChangeV2) error {
	if g.state != raft.StateLeader {
		return g.notLeader()
	}
	if err := g.RN.ProposeConfChange(cc); err != nil {
		if errors.Is(err, raft.ErrProposalDropped) {
			return ErrProposalDropped
		}
		return err
	}
	g.track(p)
	return nil
}

// ConfChangeContext encodes a proposal ID for ConfChangeV2.Context.
func ConfChangeContext(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// ConfChangeID decodes what ConfChangeContext encoded (0 if absent).
func ConfChangeID(ctx []byte) uint64 {
	if len(ctx) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(ctx)
}

func (g *Group) track(p *Proposal) {
	if g.proposals == nil {
		g.proposals = make(map[uint64]*Proposal)
	}
	g.proposals[p.ID] = p
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
	if len(g.proposals) > 0 {
		for i := range rd.Entries {
			e := &rd.Entries[i]
			var id uint64
			switch e.Type {
			case raftpb.EntryNormal:
				id, _, _ = DecodeEntry(e.Data)
			case raftpb.EntryConfChangeV2:
				var cc raftpb.ConfChangeV2
				if cc.Unmarshal(e.Data) == nil {
					id = ConfChangeID(cc.Context)
				}
			}
			if p := g.proposals[id]; p != nil && id != 0 {
				p.index = e.Index
			}
		}
	}
	for _, rs := range rd.ReadStates {
		for _, r := range g.reads {
			if string(r.ctx[:]) == string(rs.RequestCtx) {
				r.index = rs.Index
				if r.index == 0 {
					r.index = 1
				}
			}
		}
	}
	return change
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

// Applied is called after entries up to index are applied and durable in
// the engine's batch: proposals whose entry index is at or below it but
// which were not taken were replaced by another leader's entries
// (ErrProposalDropped), and reads whose index is reached complete.
func (g *Group) Applied(index uint64) {
	for id, p := range g.proposals {
		if p.index != 0 && p.index <= index {
			delete(g.proposals, id)
			p.Done <- Result{Err: ErrProposalDropped, Index: p.index}
		}
	}
	if len(g.proposals) == 0 {
		g.proposals = nil
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

// FailAll completes every waiter with err (the replica is closing or was
// removed).
func (g *Group) FailAll(err error) {
	for _, p := range g.proposals {
		p.Done <- Result{Err: err}
	}
	for _, r := range g.reads {
		r.Done <- Result{Err: err}
	}
	g.proposals, g.reads = nil, nil
}
