package engine

import (
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/flotilla-db/flotilla/group"
	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

var pebbleSync = pebble.Sync

// A worker owns the shards that hash to it. Everything below "owned by the
// worker goroutine" is touched by that goroutine only; other goroutines
// reach the worker through its inbox.
type worker struct {
	e      *Engine
	id     int
	signal chan struct{} // 1-buffered: the inbox is not empty
	mu     struct {
		sync.Mutex
		in     inbox // guarded
		closed bool  // guarded
	}

	// owned by the worker goroutine
	spare      inbox
	shards     map[uint64]*replica
	ticking    map[uint64]*replica // the shards not quiesced
	tombstones map[uint64]struct{}
	dirty      []*replica
	rds        []readyShard
	batch      *storage.Batch
	applyBatch *pebble.Batch // indexed: the state machine reads its own writes
	actx       ApplyContext
	out        map[uint64][]Message // per destination node, handed to the transport
	done       []completion
	leaderEvs  []LeaderEvent
	staged     []*replica // replicas holding staged snapshots this cycle
}

type inbox struct {
	msgs  []Message
	beats []beatIn
	props []proposalReq
	reads []readReq
	snaps []snapReq
	fns   []func()
	ticks int
}

func (in *inbox) reset() {
	clear(in.msgs)
	clear(in.beats)
	in.beats = in.beats[:0]
	clear(in.props)
	clear(in.reads)
	clear(in.snaps)
	clear(in.fns)
	in.msgs, in.props, in.reads, in.snaps, in.fns, in.ticks = in.msgs[:0], in.props[:0], in.reads[:0], in.snaps[:0], in.fns[:0], 0
}

type proposalReq struct {
	shardID uint64
	p       *group.Proposal
	data    []byte
	cc      *raftpb.ConfChangeV2
}

type readReq struct {
	shardID uint64
	r       *group.Read
}

type snapReq struct {
	shardID uint64
	msg     raftpb.Message
	staged  *storage.StagedSnapshot
	done    chan error
}

type completion struct {
	p   *group.Proposal
	res group.Result
}

type readyShard struct {
	r  *replica
	rd raft.Ready
}

type stagedSnap struct {
	index uint64
	st    *storage.StagedSnapshot
}

// replica is one shard on this node, owned by its worker.
type replica struct {
	shardID uint64
	g       *group.Group
	log     *storage.Log
	staged  []stagedSnap
	dirty   bool
	remove  bool

	quiesced bool // not ticking (see quiesce.go)
	idle     int  // consecutive idle ticks of a leader
	leading  bool // this replica leads (for Stats)
	// campaignIn counts down the ticks after the leader, downLeader, was
	// suspected down; at 0 the successor campaigns (see leaderDown).
	campaignIn uint8
	successor  bool
	downLeader uint64
}

func newWorker(e *Engine, id int) *worker {
	w := &worker{
		e:          e,
		id:         id,
		signal:     make(chan struct{}, 1),
		shards:     make(map[uint64]*replica),
		ticking:    make(map[uint64]*replica),
		tombstones: make(map[uint64]struct{}),
		batch:      e.store.NewBatch(),
		applyBatch: e.store.DB().NewIndexedBatch(),
		out:        make(map[uint64][]Message),
	}
	w.actx.rule = e.cfg.PartitionRule
	return w
}

func (w *worker) groupConfig() group.Config {
	c := w.e.cfg
	return group.Config{
		NodeID:                    c.NodeID,
		ElectionTicks:             c.ElectionTicks,
		HeartbeatTicks:            c.HeartbeatTicks,
		MaxSizePerMsg:             c.MaxSizePerMsg,
		MaxInflightMsgs:           c.MaxInflightMsgs,
		MaxUncommittedBytes:       c.MaxUncommittedBytes,
		MaxCommittedBytesPerReady: 4 << 20,
		Logger:                    w.e.raftLog,
	}
}

// open makes a replica of log's shard and registers it.
func (w *worker) open(log *storage.Log) (*replica, error) {
	applied, _ := log.Applied()
	g, err := group.New(w.groupConfig(), log.ShardID(), log, applied)
	if err != nil {
		return nil, err
	}
	r := &replica{shardID: log.ShardID(), g: g, log: log}
	w.shards[r.shardID] = r
	w.ticking[r.shardID] = r
	w.e.notePeers(log.ConfState())
	return r, nil
}

// load reopens a shard at startup (before the worker runs).
func (w *worker) load(shardID uint64) error {
	log, err := w.e.store.OpenLog(shardID)
	if err != nil {
		return err
	}
	if desc, ok := log.Descriptor(); ok {
		if err := w.e.claimRange(desc); err != nil {
			return err
		}
	}
	_, err = w.open(log)
	return err
}

func (w *worker) create(spec ShardSpec) error {
	id := spec.Desc.ShardID
	if old := w.shards[id]; old != nil && old.log.Initialized() {
		return fmt.Errorf("%w: shard %d", ErrShardExists, id)
	}
	if _, ok := w.tombstones[id]; ok {
		return fmt.Errorf("%w: shard %d", ErrTombstoned, id)
	}
	if err := w.e.claimRange(spec.Desc); err != nil {
		return err
	}
	log, err := w.e.store.CreateShard(spec.Desc, spec.Voters, spec.Learners)
	if err != nil {
		w.e.releaseRange(id)
		return err
	}
	if old := w.shards[id]; old != nil {
		old.g.FailAll(ErrShardRemoved)
		w.abortStaged(old)
	}
	r, err := w.open(log)
	if err != nil {
		return err
	}
	// One voter campaigns at once, so that a new shard has a leader without
	// waiting for an election timeout; which one varies with the shard, so
	// that leaders of new shards spread over their voters.
	if n := len(spec.Voters); n > 0 && spec.Voters[id%uint64(n)] == w.e.cfg.NodeID {
		_ = r.g.RN.Campaign()
	}
	w.markDirty(r)
	return nil
}

func (w *worker) markDirty(r *replica) {
	if !r.dirty {
		r.dirty = true
		w.dirty = append(w.dirty, r)
	}
}

func (w *worker) notify() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// lockInbox locks the inbox for adding to it; nil if the worker is closed
// (the lock is then not held). unlockInbox releases it and wakes the worker.
func (w *worker) lockInbox() *inbox {
	w.mu.Lock()
	if w.mu.closed {
		w.mu.Unlock()
		return nil
	}
	return &w.mu.in
}

func (w *worker) unlockInbox() {
	w.mu.Unlock()
	w.notify()
}

func (w *worker) enqueueFn(fn func()) bool {
	in := w.lockInbox()
	if in == nil {
		return false
	}
	in.fns = append(in.fns, fn)
	w.unlockInbox()
	return true
}

func (w *worker) enqueueProposal(p proposalReq) bool {
	in := w.lockInbox()
	if in == nil {
		return false
	}
	in.props = append(in.props, p)
	w.unlockInbox()
	return true
}

func (w *worker) enqueueRead(r readReq) bool {
	in := w.lockInbox()
	if in == nil {
		return false
	}
	in.reads = append(in.reads, r)
	w.unlockInbox()
	return true
}

func (w *worker) enqueueSnapshot(s snapReq) bool {
	in := w.lockInbox()
	if in == nil {
		return false
	}
	in.snaps = append(in.snaps, s)
	w.unlockInbox()
	return true
}

func (w *worker) enqueueTick() {
	if in := w.lockInbox(); in != nil {
		in.ticks++
		w.unlockInbox()
	}
}

func (w *worker) run() {
	defer w.e.wg.Done()
	for {
		if len(w.dirty) == 0 {
			select {
			case <-w.signal:
			case <-w.e.stop:
				return
			}
		} else {
			// Shards still have work after the last pass: take what arrived
			// meanwhile too, without waiting.
			select {
			case <-w.signal:
			case <-w.e.stop:
				return
			default:
			}
		}
		w.cycle()
	}
}

// shutdown fails everything still queued or waiting; the goroutine is gone.
func (w *worker) shutdown() {
	w.mu.Lock()
	w.mu.closed = true
	in := w.mu.in
	w.mu.in = inbox{}
	w.mu.Unlock()
	for _, p := range in.props {
		p.p.Complete(group.Result{Err: ErrClosed})
	}
	for _, r := range in.reads {
		r.r.Done <- group.Result{Err: ErrClosed}
	}
	for _, s := range in.snaps {
		s.staged.Abort()
		s.done <- ErrClosed
	}
	for _, r := range w.shards {
		r.g.FailAll(ErrClosed)
		w.abortStaged(r)
	}
	w.batch.Close()
	_ = w.applyBatch.Close()
}

// cycle takes the inbox and processes it: steps, proposals, reads, ticks,
// then one pass of Ready handling for every shard that has work.
func (w *worker) cycle() {
	w.mu.Lock()
	in := w.mu.in
	w.mu.in = w.spare
	w.mu.Unlock()

	w.e.stats.cycles.Add(1)
	w.e.stats.msgsIn.Add(uint64(len(in.msgs)))
	w.e.stats.propsIn.Add(uint64(len(in.props)))
	for _, fn := range in.fns {
		fn()
	}
	for i := range in.msgs {
		w.step(&in.msgs[i])
	}
	for i := range in.beats {
		w.stepBeat(&in.beats[i])
	}
	for _, s := range in.snaps {
		w.stepSnapshot(s)
	}
	for _, p := range in.props {
		w.propose(p)
	}
	for _, rr := range in.reads {
		r := w.shards[rr.shardID]
		if r == nil {
			rr.r.Done <- group.Result{Err: fmt.Errorf("%w: shard %d", ErrShardNotFound, rr.shardID)}
			continue
		}
		w.wake(r)
		if err := r.g.ReadIndex(rr.r); err != nil {
			rr.r.Done <- group.Result{Err: err}
			continue
		}
		w.markDirty(r)
	}
	if in.ticks > 0 {
		for _, r := range w.ticking {
			w.tickReplica(r)
		}
	}
	in.reset()
	w.spare = in
	w.handleReady()
}

func (w *worker) step(m *Message) {
	if m.Msg.To != w.e.cfg.NodeID || m.Msg.Type == raftpb.MsgSnap {
		return // misaddressed; snapshots arrive only through HandleSnapshot
	}
	r := w.shards[m.ShardID]
	if r == nil {
		var err error
		if r, err = w.createUninitialized(m.ShardID, m.Msg.Type); r == nil || err != nil {
			return
		}
	}
	_ = r.g.RN.Step(m.Msg) // errors: messages from unknown peers, stale: dropped
	w.markDirty(r)
	w.wake(r)
}

// createUninitialized makes an empty replica for a message of a leader that
// is adding this node, unless the shard's replica was removed from here.
func (w *worker) createUninitialized(shardID uint64, t raftpb.MessageType) (*replica, error) {
	if t != raftpb.MsgApp && t != raftpb.MsgHeartbeat && t != raftpb.MsgSnap {
		return nil, nil
	}
	if _, ok := w.tombstones[shardID]; ok {
		return nil, nil
	}
	log, err := w.e.store.OpenLog(shardID)
	if err != nil {
		return nil, err
	}
	return w.open(log)
}

func (w *worker) propose(req proposalReq) {
	r := w.shards[req.shardID]
	if r == nil {
		req.p.Complete(group.Result{Err: fmt.Errorf("%w: shard %d", ErrShardNotFound, req.shardID)})
		return
	}
	w.wake(r)
	var err error
	if req.cc != nil {
		err = r.g.ProposeConfChange(req.p, *req.cc)
	} else {
		err = r.g.Propose(req.p, req.data)
	}
	if err != nil {
		req.p.Complete(group.Result{Err: err})
		return
	}
	w.markDirty(r)
}

func isMember(cs *raftpb.ConfState, id uint64) bool {
	return contains(cs.Voters, id) || contains(cs.Learners, id) ||
		contains(cs.VotersOutgoing, id) || contains(cs.LearnersNext, id)
}

func (r *replica) status(nodeID uint64) ShardStatus {
	bs := r.g.RN.BasicStatus()
	cs := r.log.ConfState()
	first, _ := r.log.FirstIndex()
	last, _ := r.log.LastIndex()
	applied, _ := r.log.Applied()
	desc, init := r.log.Descriptor()
	var progress []ReplicaProgress
	if bs.RaftState == raft.StateLeader {
		r.g.RN.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
			progress = append(progress, ReplicaProgress{NodeID: id, Match: pr.Match, Next: pr.Next, State: pr.State.String(), Learner: pr.IsLearner})
		})
	}
	return ShardStatus{
		Progress:    progress,
		ShardID:     r.shardID,
		NodeID:      nodeID,
		Leader:      bs.Lead,
		Term:        bs.Term,
		State:       bs.RaftState.String(),
		Commit:      bs.Commit,
		Applied:     applied,
		FirstIndex:  first,
		LastIndex:   last,
		Voters:      append([]uint64(nil), cs.Voters...),
		Learners:    append([]uint64(nil), cs.Learners...),
		Outgoing:    append([]uint64(nil), cs.VotersOutgoing...),
		Initialized: init,
		Quiesced:    r.quiesced,
		Desc:        desc,
	}
}
