package engine

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

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
	e  *Engine
	id int
	// priority: this worker serves Config.PriorityShards only, and sends
	// their messages ahead of the queue.
	priority bool
	signal   chan struct{} // 1-buffered: the inbox is not empty
	mu       struct {
		sync.Mutex
		in     inbox // guarded
		closed bool  // guarded
	}

	// owned by the worker goroutine
	now        int64     // the lease clock at the start of the cycle (lease mode only)
	yieldN     uint64    // calls of yield
	yieldAt    time.Time // when this worker last yielded, or its cycle began
	spare      inbox
	shards     map[uint64]*replica
	ticking    map[uint64]*replica // the shards not quiesced
	leading    map[uint64]*replica // the replicas that lead, as of their last Ready (replica.leading)
	tombstones map[uint64]uint64   // shard -> lowest replica ID allowed here
	dirty      []*replica
	rds        []readyShard
	batch      *storage.Batch
	truncs     *storage.Batch // the pass's log truncations (ready.go)
	applyBatch *pebble.Batch  // indexed: the state machine reads its own writes
	actx       ApplyContext
	out        map[uint64][]Message // per destination node, handed to the transport
	done       []completion
	leaderEvs  []LeaderEvent
	descEvs    []DescriptorEvent
	splits     []pendingSplit      // applied this pass, children not created yet
	merges     []pendingMerge      // applied this pass, right shards not destroyed yet
	rangeOrder []bool              // splits (true) and merges of this pass, in apply order
	holding    map[uint64]*replica // replicas holding entries for a merge (merge.go)
	staged     []*replica          // replicas holding staged snapshots this cycle
	// Asynchronous durability (ready.go): the syncer's queue, the passes
	// in it, and spare batches and passes for reuse.
	syncq    chan *inflight
	inflight int
	spareB   []*storage.Batch
	spareF   []*inflight
	resps    []localResp // the pass's responses of the local append thread
	start    startState  // a cold start's campaigns (start.go)
}

type inbox struct {
	msgs  []Message
	beats []beatIn
	props []proposalReq
	reads []readReq
	snaps []snapReq
	fns   []func()
	// synced: passes whose batch is durable now, from the syncer.
	synced []*inflight
	ticks  int
}

func (in *inbox) reset() {
	clear(in.msgs)
	clear(in.beats)
	in.beats = in.beats[:0]
	clear(in.props)
	clear(in.reads)
	clear(in.snaps)
	clear(in.fns)
	clear(in.synced)
	in.msgs, in.props, in.reads, in.snaps, in.fns, in.ticks = in.msgs[:0], in.props[:0], in.reads[:0], in.snaps[:0], in.fns[:0], 0
	in.synced = in.synced[:0]
}

type proposalReq struct {
	shardID uint64
	p       *group.Proposal
	data    []byte
	change  *ChangeRequest
}

type readReq struct {
	shardID uint64
	r       *group.Read
	// kind: on the leader by ReadIndex or lease, or on this node's
	// replica whatever its role (a follower asks its leader for the read
	// index).
	kind readKind
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
	shardID   uint64
	replicaID uint64 // this replica's raft ID, never the node ID
	// former are replicas the shard no longer has, kept so that messages
	// raft still addresses to them in the Ready that removed them find
	// their node.
	former []storage.Replica
	// nodes caches the node of the replica IDs looked up last: a replica
	// ID belongs to one node for good (IDs are never reused), so an entry
	// never goes stale, and the per-message lookups stay in the replica's
	// own cache lines instead of chasing the descriptor.
	nodes  [4]replicaNode
	g      *group.Group
	log    *storage.Log
	staged []stagedSnap
	dirty  bool
	// unsynced counts the responses of this replica's appends that wait
	// for a sync (ready.go): the shard is not idle meanwhile.
	unsynced int
	remove   bool
	// destroyed: the replica is gone (a newer one of this node superseded
	// it mid-cycle); a pass must not touch its storage again.
	destroyed bool
	// heldFrom..heldTo are committed entries held for a merge waiting for
	// this node's replica of the right shard (merge.go); 0: none.
	heldFrom, heldTo uint64
	heldWarned       time.Time // when a long hold was last logged

	quiesced bool // not ticking (see quiesce.go)
	idle     int  // consecutive idle ticks of a leader
	leading  bool // this replica leads (for Stats)
	led      bool // this replica knows a leader (for Stats)
	// campaignIn counts down the ticks after the leader, downLeader, was
	// suspected down; at 0 the successor campaigns (see leaderDown).
	campaignIn uint8
	successor  bool
	downLeader uint64
	// heardAt is when (lease clock) the replica last stepped a message of
	// a leader, or was opened from the store; never for a new replica.
	// Until an election timeout later it neither grants nor asks for a
	// vote (lease mode: the vote gate, lease.go).
	heardAt int64
}

func newWorker(e *Engine, id int) *worker {
	w := &worker{
		e:          e,
		id:         id,
		signal:     make(chan struct{}, 1),
		shards:     make(map[uint64]*replica),
		ticking:    make(map[uint64]*replica),
		leading:    make(map[uint64]*replica),
		tombstones: make(map[uint64]uint64),
		batch:      e.store.NewBatch(),
		truncs:     e.store.NewBatch(),
		applyBatch: e.store.DB().NewIndexedBatch(),
		holding:    make(map[uint64]*replica),
		out:        make(map[uint64][]Message),
		syncq:      make(chan *inflight, syncQueueLen),
	}
	w.actx.rule = e.cfg.PartitionRule
	return w
}

func (w *worker) groupConfig(r *replica) group.Config {
	c := w.e.cfg
	return group.Config{
		ReplicaID:                 r.replicaID,
		NodeOf:                    r.nodeOf,
		ElectionTicks:             c.ElectionTicks,
		HeartbeatTicks:            c.HeartbeatTicks,
		MaxSizePerMsg:             c.MaxSizePerMsg,
		MaxInflightMsgs:           c.MaxInflightMsgs,
		MaxUncommittedBytes:       c.MaxUncommittedBytes,
		MaxCommittedBytesPerReady: 4 << 20,
		AsyncStorageWrites:        !c.SyncInWorker && !c.SyncEachShard,
		DisableCheckQuorum:        c.DisableCheckQuorum,
		Logger:                    raftLogger{l: w.e.cfg.Logger, shard: r.shardID},
	}
}

// open makes a replica of log's shard and registers it.
func (w *worker) open(log *storage.Log) (*replica, error) {
	if log.ReplicaID() == 0 {
		return nil, fmt.Errorf("%w: shard %d has no replica ID", storage.ErrCorrupt, log.ShardID())
	}
	applied, _ := log.Applied()
	r := &replica{shardID: log.ShardID(), replicaID: log.ReplicaID(), log: log}
	if w.e.lease {
		// It may have acknowledged a leader before it was (re)opened.
		r.heardAt = w.e.leaseNow()
	}
	g, err := group.New(w.groupConfig(r), log.ShardID(), log, applied)
	if err != nil {
		return nil, err
	}
	r.g = g
	w.shards[r.shardID] = r
	w.ticking[r.shardID] = r
	w.e.notePeers(r)
	return r, nil
}

type replicaNode struct{ replica, node uint64 }

// nodeOf returns the node of one of r's replicas (0 if unknown).
func (r *replica) nodeOf(replicaID uint64) uint64 {
	for i := range r.nodes {
		if r.nodes[i].replica == replicaID && replicaID != 0 {
			return r.nodes[i].node
		}
	}
	n := r.log.NodeOf(replicaID)
	if n == 0 {
		for _, rep := range r.former {
			if rep.ReplicaID == replicaID {
				n = rep.NodeID
				break
			}
		}
	}
	if n != 0 {
		copy(r.nodes[1:], r.nodes[:len(r.nodes)-1])
		r.nodes[0] = replicaNode{replica: replicaID, node: n}
	}
	return n
}

// notePeer records that replica id is on node, as a message from it says:
// an uninitialized replica has no descriptor to answer from until its
// snapshot arrives.
func (r *replica) notePeer(id, node uint64) {
	if id != 0 && node != 0 && r.nodeOf(id) == 0 {
		r.former = append(r.former, storage.Replica{NodeID: node, ReplicaID: id})
		if n := len(r.former); n > 16 {
			r.former = append(r.former[:0], r.former[n-16:]...)
		}
	}
}

// replicaOn returns the ID of r's replica on node (0 if none).
func (r *replica) replicaOn(node uint64) uint64 {
	if d, ok := r.log.Descriptor(); ok {
		if rep, ok := d.ReplicaOfNode(node); ok {
			return rep.ReplicaID
		}
	}
	return 0
}

// setDescriptor records r's new descriptor in b, keeping the replicas it
// drops in r.former.
func (r *replica) setDescriptor(b *storage.Batch, d storage.Descriptor) {
	if old, ok := r.log.Descriptor(); ok {
		r.setFormer(old)
	}
	r.log.SetDescriptor(b, d)
}

// setFormer remembers the replicas of old (the most recent few), whose
// nodes raft may still address once a new descriptor replaced old.
func (r *replica) setFormer(old storage.Descriptor) {
	for _, rep := range old.Replicas {
		if !slices.Contains(r.former, rep) {
			r.former = append(r.former, rep)
		}
	}
	if n := len(r.former); n > 16 {
		r.former = append(r.former[:0], r.former[n-16:]...)
	}
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
	r, err := w.open(log)
	if err != nil {
		return err
	}
	w.loadQuiesced(r)
	return nil
}

// create creates this node's replicas of specs (checked by checkSpec),
// all in one synced batch; it returns each one's outcome.
func (w *worker) create(specs []ShardSpec) []error {
	errs := make([]error, len(specs))
	type made struct {
		i   int
		log *storage.Log
	}
	var ok []made
	b := w.e.store.NewBatch()
	defer b.Close()
	inBatch := make(map[uint64]bool, len(specs))
	for i, spec := range specs {
		id := spec.Desc.ShardID
		desc := storage.NewDescriptor(id, spec.Desc.Start, spec.Desc.Last, spec.Desc.Generation, spec.Voters, spec.Learners)
		self, _ := desc.ReplicaOfNode(w.e.cfg.NodeID)
		if old := w.shards[id]; inBatch[id] || (old != nil && (old.log.Initialized() || old.replicaID != self.ReplicaID)) {
			errs[i] = fmt.Errorf("%w: shard %d", ErrShardExists, id)
			continue
		}
		if next, found := w.tombstones[id]; found && self.ReplicaID < next {
			errs[i] = fmt.Errorf("%w: shard %d", ErrTombstoned, id)
			continue
		}
		if err := w.e.claimRange(desc); err != nil {
			errs[i] = err
			continue
		}
		log, err := w.e.store.CreateShardIn(b, desc, self.ReplicaID)
		if err != nil {
			w.e.releaseRange(id)
			errs[i] = err
			continue
		}
		inBatch[id] = true
		ok = append(ok, made{i, log})
	}
	if len(ok) == 0 {
		return errs
	}
	if err := b.Commit(true); err != nil {
		for _, m := range ok {
			w.e.releaseRange(specs[m.i].Desc.ShardID)
			errs[m.i] = err
		}
		return errs
	}
	for _, m := range ok {
		spec := specs[m.i]
		id := spec.Desc.ShardID
		if old := w.shards[id]; old != nil {
			old.g.FailAll(ErrShardRemoved)
			w.abortStaged(old)
		}
		r, err := w.open(m.log)
		if err != nil {
			errs[m.i] = err
			continue
		}
		r.heardAt = never // a new shard: no leader was ever acknowledged
		// One voter campaigns at once, so that a new shard has a leader
		// without waiting for an election timeout; which one varies with
		// the shard, so that leaders of new shards spread over their
		// voters.
		if DesignatedVoter(id, spec.Voters) == w.e.cfg.NodeID {
			_ = r.g.RN.Campaign()
		}
		w.markDirty(r)
	}
	return errs
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

// yield lets other goroutines run once this worker has kept its processor
// for yieldAfter since it last yielded (checked every yieldEvery calls, one
// per replica or message handled). A worker is CPU-bound for as long as its
// shards keep it busy (the elections of a start of 100,000 shards take
// minutes), and the goroutines that carry messages between nodes are not:
// gRPC's writer yields before it flushes a small write (runtime.Gosched),
// and a goroutine that the network poller wakes is queued too, both on the
// scheduler's global run queue, which a processor whose local queue is
// never empty serves only every 61st time. With the workers always
// runnable, a per-tick message then waited seconds on its way (cluster-start
// at 100,000 shards, 3 nodes in one process on 2 cores: 55-byte frames
// 0.2-5 s in SendMsg while the tick loop kept its pace), and live peers
// were suspected down over and over. A worker that yields goes to the back
// of that global queue, behind them. Nothing else changes: the worker's
// state is its own, and the pass goes on where it was.
func (w *worker) yield() {
	if w.e.cfg.NoYield {
		return
	}
	w.yieldN++
	if w.yieldN%yieldEvery != 0 {
		return
	}
	now := time.Now()
	if now.Sub(w.yieldAt) < yieldAfter {
		return
	}
	runtime.Gosched()
	w.yieldAt = time.Now()
	w.e.stats.yields.Add(1)
}

const (
	yieldEvery = 64
	yieldAfter = time.Millisecond
)

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
	for _, f := range in.synced {
		if f.b != nil {
			f.b.Close()
		}
	}
	for _, b := range w.spareB {
		b.Close()
	}
	for _, r := range w.shards {
		r.g.FailAll(ErrClosed)
		w.abortStaged(r)
	}
	w.batch.Close()
	w.truncs.Close()
	_ = w.applyBatch.Close()
}

// cycle takes the inbox and processes it: steps, proposals, reads, ticks,
// then one pass of Ready handling for every shard that has work.
func (w *worker) cycle() {
	w.mu.Lock()
	in := w.mu.in
	w.mu.in = w.spare
	w.mu.Unlock()

	if w.e.lease {
		w.now = w.e.leaseNow()
	}
	if !w.e.cfg.NoYield {
		w.yieldAt = time.Now() // it waited for work before this cycle
	}
	w.e.stats.cycles.Add(1)
	w.e.stats.msgsIn.Add(uint64(len(in.msgs)))
	w.e.stats.propsIn.Add(uint64(len(in.props)))
	for _, f := range in.synced {
		w.finishSynced(f)
	}
	for _, fn := range in.fns {
		fn()
	}
	for i := range in.msgs {
		w.step(&in.msgs[i])
		w.yield()
	}
	for i := range in.beats {
		w.stepBeat(&in.beats[i])
		w.yield()
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
		if rr.kind == readLease {
			w.leaseRead(r, rr)
			continue
		}
		if rr.kind == readOnReplica {
			// A follower's request wakes its leader; the follower ticks
			// until the leader quiesces them both again, and an unanswered
			// request is retried after an election timeout.
			if err := r.g.ReadIndexOnReplica(rr.r); err != nil {
				rr.r.Done <- group.Result{Err: err}
				continue
			}
			if !r.g.IsLeader() {
				w.e.stats.followerReads.Add(1)
			}
			w.wake(r)
			w.markDirty(r)
			continue
		}
		if r.g.IsLeader() {
			w.wake(r) // a follower refuses at once, and stays quiesced
		}
		if err := r.g.ReadIndex(rr.r); err != nil {
			rr.r.Done <- group.Result{Err: err}
			continue
		}
		w.markDirty(r)
	}
	if in.ticks > 0 {
		w.startTick()
		for _, r := range w.ticking {
			w.tickReplica(r)
			w.yield()
		}
		for _, r := range w.holding {
			w.tryHeld(r)
		}
	}
	in.reset()
	w.spare = in
	w.handleReady()
}

func (w *worker) step(m *Message) {
	if m.Msg.Type == raftpb.MsgSnap {
		return // snapshots arrive only through HandleSnapshot
	}
	r := w.replicaFor(m.ShardID, &m.Msg)
	if r == nil {
		return
	}
	r.notePeer(m.Msg.From, m.fromNode)
	switch m.Msg.Type {
	case raftpb.MsgApp, raftpb.MsgHeartbeat:
		w.heardLeader(r)
	case raftpb.MsgVote, raftpb.MsgPreVote:
		if w.dropVote(r, &m.Msg) {
			return
		}
	}
	_ = r.g.RN.Step(m.Msg) // errors: messages from unknown peers, stale: dropped
	w.markDirty(r)
	w.wake(r)
}

// replicaFor returns the replica of shardID that m is for, or nil if m is
// to be dropped. Replica IDs are never reused, so, with to = m.To:
//   - to == the local replica's ID: that replica;
//   - to < it, or below the shard's tombstone: a message for an earlier
//     incarnation of this node's replica, dropped and counted;
//   - to > the local replica's ID: this node was removed from the shard and
//     added back under a new ID while the local replica missed its removal;
//     the stale replica is destroyed, and m, if it may create replicas,
//     creates the new one (uninitialized, caught up by a snapshot);
//   - no local replica: m, if it may create replicas, creates an
//     uninitialized one.
//
// A leader's messages create replicas, and so do a candidate's vote
// requests once its log goes beyond the bootstrap index (a split child
// starts just beyond it: see SplitInitialIndex): a voter that no
// leader's message has reached yet (added while its node was cut off, or
// its creation lost in a crash) must still be able to vote, as raft lets a
// replica with an empty log do. Otherwise a shard whose quorum needs that
// voter, once its leader is gone, could never elect another: only a leader
// would create the replica. (A split child on a node whose parent replica
// jumped over the split with a snapshot is such a voter: no split creates
// it there.) A candidate whose log ends at the bootstrap
// index knows only the shard's first members, whose replicas CreateShard
// makes from the spec; letting its requests create them instead would
// elect a leader before they exist, which then has to send each a
// snapshot.
func (w *worker) replicaFor(shardID uint64, m *raftpb.Message) *replica {
	to := m.To
	r := w.shards[shardID]
	if r != nil && to == r.replicaID {
		return r
	}
	if to == 0 || (r != nil && to < r.replicaID) {
		w.e.stats.staleDropped.Add(1)
		return nil
	}
	if next, ok := w.tombstones[shardID]; ok && to < next {
		w.e.stats.staleDropped.Add(1)
		return nil
	}
	switch m.Type {
	case raftpb.MsgApp, raftpb.MsgHeartbeat, raftpb.MsgSnap:
	case raftpb.MsgVote, raftpb.MsgPreVote:
		if m.Index <= storage.InitialIndex {
			return nil
		}
	default:
		return nil // only a leader or a candidate creates a replica
	}
	if r != nil {
		w.e.cfg.Logger.Info("replica superseded by a newer one of this node: destroying it",
			"shard", shardID, "replica", r.replicaID, "new_replica", to)
		w.destroy(r)
	}
	r, err := w.createUninitialized(shardID, to)
	if err != nil {
		w.e.cfg.Logger.Warn("create replica", "shard", shardID, "replica", to, "err", err)
		return nil
	}
	return r
}

// createUninitialized makes an empty replica with ID replicaID for a message
// of a leader that is adding this node; the caller checked the tombstone.
func (w *worker) createUninitialized(shardID, replicaID uint64) (*replica, error) {
	log, err := w.e.store.OpenLog(shardID)
	if err != nil {
		return nil, err
	}
	if log.Initialized() || (log.ReplicaID() != 0 && log.ReplicaID() != replicaID) {
		return nil, fmt.Errorf("%w: shard %d has state of replica %d", ErrShardExists, shardID, log.ReplicaID())
	}
	if log.ReplicaID() == 0 {
		// Written before anything raft persists for the replica: the
		// pass's batch is committed before any message leaves.
		log.SetReplicaID(w.batch, replicaID)
	}
	return w.open(log)
}

func (w *worker) propose(req proposalReq) {
	r := w.shards[req.shardID]
	if r == nil {
		req.p.Complete(group.Result{Err: fmt.Errorf("%w: shard %d", ErrShardNotFound, req.shardID)})
		return
	}
	if !r.g.IsLeader() {
		// Refused at once: a follower is not woken by a request it does
		// not serve (a woken follower of a quiesced leader would tick,
		// hear nothing and campaign against a healthy leader).
		req.p.Complete(group.Result{Err: &NotLeaderError{ShardID: r.shardID, Leader: r.g.LeaderNode(), Term: r.term()}})
		return
	}
	w.wake(r)
	var err error
	if req.change != nil {
		err = w.proposeConfChange(r, req.p, req.change)
	} else {
		err = r.g.Propose(req.p, req.data)
	}
	if errors.Is(err, errNothingToDo) {
		err = nil
		req.p.Complete(group.Result{})
		return
	}
	if err != nil {
		req.p.Complete(group.Result{Err: err})
		return
	}
	w.markDirty(r)
}

func (r *replica) term() uint64 { _, t := r.g.Leader(); return t }

func isMember(cs *raftpb.ConfState, id uint64) bool {
	return contains(cs.Voters, id) || contains(cs.Learners, id) ||
		contains(cs.VotersOutgoing, id) || contains(cs.LearnersNext, id)
}

func (r *replica) status(nodeID uint64) ShardStatus {
	bs := r.g.RN.BasicStatus()
	first, _ := r.log.FirstIndex()
	last, _ := r.log.LastIndex()
	applied, _ := r.log.Applied()
	desc, init := r.log.Descriptor()
	var progress []ReplicaProgress
	if bs.RaftState == raft.StateLeader {
		r.g.RN.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
			progress = append(progress, ReplicaProgress{NodeID: r.nodeOf(id), ReplicaID: id, Match: pr.Match, Next: pr.Next, State: pr.State.String(), Learner: pr.IsLearner})
		})
	}
	st := ShardStatus{
		Progress:      progress,
		ShardID:       r.shardID,
		NodeID:        nodeID,
		ReplicaID:     r.replicaID,
		Leader:        r.g.LeaderNode(),
		LeaderReplica: bs.Lead,
		Term:          bs.Term,
		State:         bs.RaftState.String(),
		Commit:        bs.Commit,
		Applied:       applied,
		FirstIndex:    first,
		LastIndex:     last,
		Initialized:   init,
		Quiesced:      r.quiesced,
		Desc:          desc.Clone(),
	}
	joint := len(r.log.ConfState().VotersOutgoing) > 0
	for _, rep := range desc.Replicas {
		switch rep.Role {
		case storage.RoleVoter:
			st.Voters = append(st.Voters, rep.NodeID)
			if joint {
				st.Outgoing = append(st.Outgoing, rep.NodeID)
			}
		case storage.RoleVoterIncoming:
			st.Voters = append(st.Voters, rep.NodeID)
		case storage.RoleLearner:
			st.Learners = append(st.Learners, rep.NodeID)
		case storage.RoleVoterOutgoing, storage.RoleVoterDemoting:
			st.Outgoing = append(st.Outgoing, rep.NodeID)
		}
	}
	return st
}
