package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/flotilla-db/flotilla/group"
	"github.com/flotilla-db/flotilla/heartbeat"
	"github.com/flotilla-db/flotilla/storage"
)

// Engine hosts the shards of one node on a fixed pool of workers.
type Engine struct {
	cfg       Config
	store     *storage.Store
	transport Transport
	workers   []*worker
	// bulk: the workers of the shards not in Config.PriorityShards (all of
	// workers but the last when there are priority shards); priority: the
	// priority shards' worker, by shard. Both fixed at New.
	bulk       []*worker
	priority   map[uint64]*worker
	ids        atomic.Uint64 // proposal and read IDs, random start per run
	closed     atomic.Bool
	stop       chan struct{}
	wg         sync.WaitGroup
	syncers    sync.WaitGroup // the workers' syncLoops
	snapSem    chan struct{}
	stats      engineStats
	beats      *heartbeat.Coalescer
	live       liveness
	coalesce   bool      // heartbeats travel coalesced
	quiescence bool      // idle shards quiesce
	lease      bool      // ReadModeLease: leases and the vote gate (lease.go)
	epoch      time.Time // the lease clock's zero

	syncLatency  latencyHistogram // synced batch commits
	applyLatency latencyHistogram // state machine time per shard per pass

	// sent counts messages and bytes sent per peer node.
	sent sync.Map // node ID -> *peerCounters
	// users is held shared by every caller that reads the store outside the
	// workers (ReadLocal, incoming snapshots); Close takes it exclusively
	// before closing the store.
	users sync.RWMutex

	leaderHub hub[LeaderEvent]
	descHub   hub[DescriptorEvent]
	// ranges guards the hash ranges of the initialized shards on this node,
	// so that no two overlap.
	ranges shardRanges
	// sweeps: shard ID -> *atomic.Int64, when this node last proposed the
	// expiry of the shard's idle client sessions (Unix ns; session.go).
	sweeps sync.Map
}

// shardRanges are the ranges of a node's shards, by shard and (user shards)
// sorted by start.
type shardRanges struct {
	sync.Mutex
	byShard map[uint64]storage.Descriptor
	sorted  []storage.Descriptor
}

type engineStats struct {
	applied     atomic.Uint64 // commands applied by the state machine
	syncs       atomic.Uint64 // synced batch commits (or hand-offs to the syncer)
	commits     atomic.Uint64 // batch commits
	snapsSent   atomic.Uint64
	snapsRecv   atomic.Uint64
	quiesced    atomic.Uint64 // replicas quiesced now
	leading     atomic.Uint64 // replicas leading now
	led         atomic.Uint64 // replicas that know a leader now
	passes      atomic.Uint64 // Ready passes
	readies     atomic.Uint64 // shard Readies handled
	commitNanos atomic.Uint64
	passNanos   atomic.Uint64
	cycles      atomic.Uint64
	msgsIn      atomic.Uint64
	propsIn     atomic.Uint64
	// staleDropped counts messages addressed to a replica ID this node's
	// replica is not (an earlier, removed incarnation): dropped, never stepped.
	staleDropped atomic.Uint64
	campaigns    atomic.Uint64 // successor campaigns started
	// startCampaigns, startWakes: a cold start's designated campaigns and
	// the replicas it woke at its end (start.go).
	startCampaigns, startWakes atomic.Uint64

	sessionReplays  atomic.Uint64 // session commands answered with their stored result
	sessionsExpired atomic.Uint64
	followerReads   atomic.Uint64 // ReadOnReplica requests taken by a replica that did not lead
	leaseReads      atomic.Uint64 // lease reads served from the lease
	leaseMisses     atomic.Uint64 // lease reads that found no lease (a ReadIndex instead)
	votesHeld       atomic.Uint64 // vote requests the vote gate dropped
	yields          atomic.Uint64 // times a worker gave up its processor mid-cycle
}

// Stats are counters of an engine since it started.
type Stats struct {
	Applied uint64 // commands applied by the state machine
	// Syncs counts the synced batch commits: the passes whose batch needed
	// a sync. Batches of several workers may share one fsync: FileSyncs
	// counts those.
	Syncs uint64
	// FileSyncs counts the store's file syncs (fsyncs of the write-ahead
	// log, sstables and manifest).
	FileSyncs           uint64
	Commits             uint64 // batch commits
	SnapshotsSent       uint64
	SnapshotsRecv       uint64
	HeartbeatsCoalesced uint64 // heartbeats that travelled inside coalesced messages
	ShardsQuiesced      uint64 // replicas quiesced now
	ShardsLeading       uint64 // replicas leading now
	// ShardsLed counts the replicas that know their shard's leader now
	// (themselves included); Shards - ShardsLed have none yet, e.g. while
	// a node starts.
	ShardsLed    uint64
	MessagesSent uint64 // messages handed to the transport, all peers
	Passes       uint64 // worker passes over Readies
	Readies      uint64 // shard Readies handled (Readies/Passes: shards batched per pass)
	CommitNanos  uint64 // time spent committing batches (fsyncs included)
	PassNanos    uint64 // time spent in Ready passes
	Cycles       uint64 // worker cycles (inbox taken)
	MessagesIn   uint64 // messages taken from inboxes
	ProposalsIn  uint64 // proposals taken from inboxes
	// StaleDropped counts messages addressed to a replica ID that this
	// node's replica of the shard is not (a removed incarnation): dropped.
	StaleDropped uint64
	// SuccessorCampaigns counts the campaigns started at once by the
	// designated successor of a dead leader (or by a follower that rejected
	// a staler candidate), instead of waiting for an election timeout.
	SuccessorCampaigns uint64
	// StartCampaigns counts the campaigns of this node's designated voters
	// after it reopened its replicas quiesced; StartWakes the replicas
	// still without a leader that the start woke at its end to elect on
	// raft's timeouts (start.go).
	StartCampaigns, StartWakes uint64
	Shards                     int
	// SessionReplays counts the session commands (ProposeSession) that were
	// answered with the result stored at their first application instead
	// of being applied again: retries of a request that had applied. They
	// count in Applied too, which counts the commands taken from the log.
	SessionReplays uint64
	// SessionsExpired counts the client sessions deleted by expiry.
	SessionsExpired uint64
	// FollowerReads counts the ReadOnReplica requests taken by a replica
	// that did not lead (it asked its leader for the read index).
	FollowerReads uint64
	// LeaseReads counts the lease reads served from the leader's lease;
	// LeaseMisses those that found none and did a ReadIndex (which renews
	// it). VotesHeld counts the vote requests, in and out, that the vote
	// gate dropped (lease.go).
	LeaseReads, LeaseMisses, VotesHeld uint64
	// Yields counts the times a worker gave up its processor in the middle
	// of a cycle that had kept it for over a millisecond (worker.yield).
	Yields uint64
}

// New opens the node's store in cfg.Dir, reopens every shard found there and
// starts the workers. The engine owns t from now on and closes it in Close.
func New(cfg Config, t Transport) (*Engine, error) {
	cfg = cfg.withDefaults() // fill, then check (Pebble's order)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	store, err := storage.Open(storage.Config{Dir: cfg.Dir, FS: cfg.FS, CacheBytes: cfg.StoreCacheBytes, MemTableBytes: cfg.MemTableBytes, WALMinSyncInterval: cfg.WALMinSyncInterval, Logger: cfg.Logger.With("node", cfg.NodeID)})
	if err != nil {
		return nil, err
	}
	if err := store.EnsureIdent(storage.Ident{ClusterID: cfg.ClusterID, NodeID: cfg.NodeID}); err != nil {
		store.Close()
		return nil, err
	}
	e := &Engine{
		cfg:       cfg,
		store:     store,
		transport: t,
		stop:      make(chan struct{}),
		snapSem:   make(chan struct{}, cfg.MaxConcurrentSnapshots),
		beats:     heartbeat.NewCoalescer(),
		coalesce:  !cfg.DisableHeartbeatCoalescing,
	}
	e.quiescence = e.coalesce && !cfg.DisableQuiescence
	e.lease = cfg.ReadMode == ReadModeLease
	if e.lease {
		e.epoch = cfg.Clock()
	}
	e.live.init()
	e.ids.Store(rand.Uint64() >> 1)
	e.ranges.byShard = make(map[uint64]storage.Descriptor)
	for i := 0; i < cfg.Workers; i++ {
		e.workers = append(e.workers, newWorker(e, i))
	}
	e.bulk = e.workers
	if len(cfg.PriorityShards) > 0 {
		w := newWorker(e, len(e.workers))
		w.priority = true
		e.workers = append(e.workers, w)
		e.priority = make(map[uint64]*worker, len(cfg.PriorityShards))
		for _, id := range cfg.PriorityShards {
			e.priority[id] = w
		}
	}
	tombs, err := store.Tombstones()
	if err != nil {
		store.Close()
		return nil, err
	}
	for id, next := range tombs {
		e.workerFor(id).tombstones[id] = next
	}
	// A merge that a crash left half done: its right shard's replica goes
	// before the shards reopen (its range is its left neighbour's now).
	merged, err := store.MergeMarkers()
	if err != nil {
		store.Close()
		return nil, err
	}
	for id, next := range merged {
		cfg.Logger.Info("merge: destroying a merged shard's replica after a restart", "shard", id)
		if err := store.DestroyMerged(id, next); err != nil {
			store.Close()
			return nil, err
		}
		e.workerFor(id).tombstones[id] = max(next, e.workerFor(id).tombstones[id])
	}
	ids, err := store.ShardIDs()
	if err != nil {
		store.Close()
		return nil, err
	}
	for _, id := range ids {
		if err := e.workerFor(id).load(id); err != nil {
			store.Close()
			return nil, fmt.Errorf("engine: reopen shard %d: %w", id, err)
		}
	}
	if err := e.finishSplits(); err != nil {
		store.Close()
		return nil, fmt.Errorf("engine: finish splits: %w", err)
	}
	if err := t.Start(e); err != nil {
		store.Close()
		return nil, fmt.Errorf("engine: start transport: %w", err)
	}
	for _, w := range e.workers {
		e.wg.Add(1)
		go w.run()
		e.syncers.Add(1)
		go w.syncLoop()
	}
	e.wg.Add(1)
	go e.tickLoop()
	return e, nil
}

// NodeID returns this node's ID.
func (e *Engine) NodeID() uint64 { return e.cfg.NodeID }

// Store returns the node's store (read-only use: inspection, tests).
func (e *Engine) Store() *storage.Store { return e.store }

func (e *Engine) tickLoop() {
	defer e.wg.Done()
	ticks := e.cfg.Ticks
	if ticks == nil {
		t := time.NewTicker(e.cfg.TickInterval)
		defer t.Stop()
		ch := make(chan struct{})
		go func() {
			for {
				select {
				case <-t.C:
					select {
					case ch <- struct{}{}:
					case <-e.stop:
						return
					}
				case <-e.stop:
					return
				}
			}
		}()
		ticks = ch
	}
	var peers []uint64
	var lag tickLag
	for {
		select {
		case _, ok := <-ticks:
			if !ok {
				return
			}
			lag.tick(time.Now(), e.cfg.ElectionTicks)
			var down []uint64
			peers, down = e.live.tick(uint64(e.cfg.ElectionTicks), peers)
			if e.coalesce {
				e.flushBeats(peers)
			}
			for _, node := range down {
				// silent_for is wall time; max_tick_gap the longest time
				// between two of this node's own ticks over the last
				// election timeout: a large one says this node was too
				// busy to hear, rather than the peer silent.
				e.cfg.Logger.Info("peer suspected down: silent for an election timeout", "peer", node,
					"silent_for", e.live.silentFor(node).Round(time.Millisecond), "max_tick_gap", lag.max().Round(time.Millisecond))
				e.peerDown(node)
			}
			for _, w := range e.workers {
				w.enqueueTick()
			}
		case <-e.stop:
			return
		}
	}
}

// notePeers records the nodes of r's replicas as peers, for liveness.
func (e *Engine) notePeers(r *replica) {
	d, ok := r.log.Descriptor()
	if !ok {
		return
	}
	for _, rep := range d.Replicas {
		if rep.NodeID != e.cfg.NodeID {
			e.live.addPeers(rep.NodeID)
		}
	}
}

// peerDown wakes the quiesced shards that node led, so that they elect.
func (e *Engine) peerDown(node uint64) {
	for _, w := range e.workers {
		w.enqueueFn(func() { w.leaderDown(node) })
	}
}

type peerCounters struct{ msgs, bytes atomic.Uint64 }

func (e *Engine) countSent(to, msgs, bytes uint64) {
	c, ok := e.sent.Load(to)
	if !ok {
		c, _ = e.sent.LoadOrStore(to, &peerCounters{})
	}
	pc := c.(*peerCounters)
	pc.msgs.Add(msgs)
	pc.bytes.Add(bytes)
}

// PeerStats counts what this node sent one peer node.
type PeerStats struct {
	NodeID   uint64
	Messages uint64 // messages handed to the transport (a coalesced heartbeat message counts one)
	Bytes    uint64 // their encoded size
}

// PeerStats returns the per-peer send counters.
func (e *Engine) PeerStats() []PeerStats {
	var out []PeerStats
	e.sent.Range(func(k, v any) bool {
		pc := v.(*peerCounters)
		out = append(out, PeerStats{NodeID: k.(uint64), Messages: pc.msgs.Load(), Bytes: pc.bytes.Load()})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

// Close stops the workers and the transport and closes the store. Waiting
// callers get ErrClosed.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(e.stop)
	terr := e.transport.Close()
	e.wg.Wait()
	// The workers are gone: no batch is handed off any more. The syncers
	// wait for the ones in flight, whose passes then fail in shutdown.
	for _, w := range e.workers {
		close(w.syncq)
	}
	e.syncers.Wait()
	for _, w := range e.workers {
		w.shutdown()
	}
	e.leaderHub.closeAll()
	e.descHub.closeAll()
	e.users.Lock() // no reader of the store is left
	defer e.users.Unlock()
	if e.cfg.BeforeStoreClose != nil {
		e.cfg.BeforeStoreClose()
	}
	return errors.Join(terr, e.store.Close())
}

// acquire registers a user of the store; false once the engine is closed.
func (e *Engine) acquire() bool {
	e.users.RLock()
	if e.closed.Load() {
		e.users.RUnlock()
		return false
	}
	return true
}

func (e *Engine) release() { e.users.RUnlock() }

func (e *Engine) workerFor(shardID uint64) *worker {
	if w, ok := e.priority[shardID]; ok {
		return w
	}
	var b [8]byte
	for i := range b {
		b[i] = byte(shardID >> (8 * i))
	}
	return e.bulk[xxhash.Sum64(b[:])%uint64(len(e.bulk))]
}

func (e *Engine) nextID() uint64 { return e.ids.Add(1) }

// call runs fn on shardID's worker and waits for its result.
func call[T any](ctx context.Context, e *Engine, shardID uint64, fn func(w *worker) (T, error)) (T, error) {
	v, err := callWorker(ctx, e, e.workerFor(shardID), fn)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("engine: shard %d: %w", shardID, err)
	}
	return v, err
}

// ShardSpec describes a shard to create: its descriptor and its initial
// members (node IDs).
type ShardSpec struct {
	Desc     storage.Descriptor
	Voters   []uint64
	Learners []uint64
}

// CreateShard bootstraps this node's replica of a new shard. Every node in
// spec's members must create it with the same spec; a node added later by
// ChangeReplicas is instead created by the leader's messages and a snapshot.
// It fails with ErrShardExists, ErrRangeOverlap or ErrTombstoned (the spec
// gives this node a replica ID that a removed replica of it had, or lower:
// a node added back gets a fresh ID through ChangeReplicas).
func (e *Engine) CreateShard(ctx context.Context, spec ShardSpec) error {
	if err := e.checkSpec(spec); err != nil {
		return err
	}
	_, err := call(ctx, e, spec.Desc.ShardID, func(w *worker) (struct{}, error) {
		return struct{}{}, w.create([]ShardSpec{spec})[0]
	})
	return err
}

// CreateShards creates this node's replicas of specs, each as CreateShard
// does, with one synced write per worker for all of them instead of one
// per shard: the bootstrap of thousands of shards costs a few fsyncs, not
// thousands. errs[i] is the outcome of specs[i] (nil: created); err is set
// if the call itself failed (ctx, a closed engine), and then some specs
// may have been created and others not: a retry finds the first ones with
// ErrShardExists. The workers create their specs in parallel, each in one
// step of its loop, so keep specs to a few thousand per call.
func (e *Engine) CreateShards(ctx context.Context, specs []ShardSpec) (errs []error, err error) {
	errs = make([]error, len(specs))
	byWorker := make(map[*worker][]int)
	for i, spec := range specs {
		if errs[i] = e.checkSpec(spec); errs[i] == nil {
			w := e.workerFor(spec.Desc.ShardID)
			byWorker[w] = append(byWorker[w], i)
		}
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		fail []error
	)
	for w, idx := range byWorker {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]ShardSpec, len(idx))
			for j, i := range idx {
				mine[j] = specs[i]
			}
			res, err := callWorker(ctx, e, w, func(w *worker) ([]error, error) { return w.create(mine), nil })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fail = append(fail, err)
				return
			}
			for j, i := range idx {
				errs[i] = res[j]
			}
		}()
	}
	wg.Wait()
	if len(fail) > 0 {
		return errs, fmt.Errorf("engine: create %d shards: %w", len(specs), errors.Join(fail...))
	}
	return errs, nil
}

// checkSpec refuses a spec that is malformed or that has no replica here.
func (e *Engine) checkSpec(spec ShardSpec) error {
	if spec.Desc.ShardID == 0 || len(spec.Voters) == 0 || spec.Desc.Start > spec.Desc.Last {
		return fmt.Errorf("%w: shard spec %+v", ErrBadRequest, spec)
	}
	if !contains(spec.Voters, e.cfg.NodeID) && !contains(spec.Learners, e.cfg.NodeID) {
		return fmt.Errorf("%w: node %d is not a member of shard %d", ErrBadRequest, e.cfg.NodeID, spec.Desc.ShardID)
	}
	return nil
}

func contains(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// claimRange records desc as this node's, failing if it overlaps another
// shard's range. The user shards' ranges are kept sorted by start too, so
// that the check looks at the two neighbours only: reopening a node with
// 100,000 shards must not compare every pair (the claims never overlap, so
// a range that overlaps any overlaps one of its two neighbours).
//
// The claims' invariant: a replica's claim is its applied descriptor's
// range, except while a snapshot it has staged is in flight (claimed as it
// arrives, so that two replicas cannot both stage data for one range);
// once raft takes or drops that snapshot, the replica's claim is its own
// again (claimOwn). A replica destroyed gives its claim up; one merged away
// hands it to the left shard in the same step (claimMerged).
func (e *Engine) claimRange(desc storage.Descriptor) error {
	e.ranges.Lock()
	defer e.ranges.Unlock()
	return e.claimRangeLocked(desc)
}

// claimMerged hands the range of shard right, merged into desc's shard, to
// desc in one step: a claim of right's range made meanwhile (a snapshot of
// right arriving as the merge applies) can neither slip in between nor
// outlive right.
func (e *Engine) claimMerged(desc storage.Descriptor, right uint64) error {
	e.ranges.Lock()
	defer e.ranges.Unlock()
	old, had := e.ranges.byShard[right]
	if had {
		e.ranges.removeSortedLocked(old)
		delete(e.ranges.byShard, right)
	}
	err := e.claimRangeLocked(desc)
	if err != nil && had {
		e.ranges.insertSortedLocked(old)
		e.ranges.byShard[right] = old
	}
	return err
}

func (e *Engine) claimRangeLocked(desc storage.Descriptor) error {
	if old, ok := e.ranges.byShard[desc.ShardID]; ok {
		e.ranges.removeSortedLocked(old)
	}
	if !storage.IsSystemShard(desc.ShardID) {
		sorted := e.ranges.sorted
		i, _ := slices.BinarySearchFunc(sorted, desc.Start, func(d storage.Descriptor, start uint64) int { return cmp.Compare(d.Start, start) })
		for _, j := range []int{i - 1, i} {
			if j >= 0 && j < len(sorted) && sorted[j].Overlaps(desc) {
				d := sorted[j]
				if old, ok := e.ranges.byShard[desc.ShardID]; ok {
					e.ranges.insertSortedLocked(old) // put back what was removed
				}
				return fmt.Errorf("%w: shard %d [%016x, %016x] and shard %d [%016x, %016x]",
					ErrRangeOverlap, desc.ShardID, desc.Start, desc.Last, d.ShardID, d.Start, d.Last)
			}
		}
		e.ranges.sorted = slices.Insert(sorted, i, desc)
	}
	e.ranges.byShard[desc.ShardID] = desc
	return nil
}

func (e *Engine) releaseRange(shardID uint64) {
	e.ranges.Lock()
	if old, ok := e.ranges.byShard[shardID]; ok {
		e.ranges.removeSortedLocked(old)
		delete(e.ranges.byShard, shardID)
	}
	e.ranges.Unlock()
}

// removeSortedLocked drops d from the sorted ranges.
func (r *shardRanges) removeSortedLocked(d storage.Descriptor) {
	if storage.IsSystemShard(d.ShardID) {
		return
	}
	i, found := slices.BinarySearchFunc(r.sorted, d.Start, func(x storage.Descriptor, start uint64) int { return cmp.Compare(x.Start, start) })
	if found && r.sorted[i].ShardID == d.ShardID {
		r.sorted = slices.Delete(r.sorted, i, i+1)
	}
}

// insertSortedLocked puts d back into the sorted ranges.
func (r *shardRanges) insertSortedLocked(d storage.Descriptor) {
	if storage.IsSystemShard(d.ShardID) {
		return
	}
	i, _ := slices.BinarySearchFunc(r.sorted, d.Start, func(x storage.Descriptor, start uint64) int { return cmp.Compare(x.Start, start) })
	r.sorted = slices.Insert(r.sorted, i, d)
}

// Propose replicates cmd through shardID's raft log and returns the state
// machine's result once it is applied on this node (this node must lead the
// shard: otherwise a *NotLeaderError with the leader it knows). Errors:
// ErrShardNotFound, ErrProposalTooLarge, ErrProposalDropped (never applied,
// retry), the state machine's rejection, ErrClosed, an *AmbiguousError (the
// command may or may not apply: a snapshot covered its entry, another
// leader's entries cut it off, or the replica was removed or closed), or
// ctx's error (the same). Commands whose first byte is 0xF0 or above are
// the engine's own (session.go) and refused with ErrBadRequest; see
// ProposeSession for writes that apply exactly once.
func (e *Engine) Propose(ctx context.Context, shardID uint64, cmd []byte) ([]byte, error) {
	if isEngineCommand(cmd) {
		return nil, fmt.Errorf("%w: command byte %#x is reserved for the engine", ErrBadRequest, cmd[0])
	}
	return e.propose(ctx, shardID, cmd)
}

// propose proposes cmd, of the state machine or of the engine, and waits
// for its result.
func (e *Engine) propose(ctx context.Context, shardID uint64, cmd []byte) ([]byte, error) {
	p, err := e.enqueue(shardID, cmd)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-p.Done:
		// Answered: the worker let go of p when it completed it (every
		// path that completes a proposal first drops it), so p serves the
		// next one. A proposal given up on is never reused.
		putProposal(p)
		return r.Value, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("engine: shard %d: %w", shardID, ctx.Err())
	case <-e.stop:
		return nil, ErrClosed
	}
}

// proposals are reused, with their result channel: two allocations less
// per write.
var proposals = sync.Pool{New: func() any { return &group.Proposal{Done: make(chan group.Result, 1)} }}

func putProposal(p *group.Proposal) {
	p.Reset()
	proposals.Put(p)
}

// enqueue hands a proposal of cmd to shardID's worker; the result arrives
// on the proposal's Done (buffered: nobody needs to wait for it).
func (e *Engine) enqueue(shardID uint64, cmd []byte) (*group.Proposal, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	if len(cmd) > e.cfg.MaxProposalBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrProposalTooLarge, len(cmd), e.cfg.MaxProposalBytes)
	}
	if len(cmd) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrBadRequest)
	}
	p := proposals.Get().(*group.Proposal)
	p.ID = e.nextID()
	if !e.workerFor(shardID).enqueueProposal(proposalReq{shardID: shardID, p: p, data: group.EncodeEntry(p.ID, cmd)}) {
		return nil, ErrClosed
	}
	return p, nil
}

func (e *Engine) wait(ctx context.Context, shardID uint64, done chan group.Result) ([]byte, error) {
	select {
	case r := <-done:
		return r.Value, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("engine: shard %d: %w", shardID, ctx.Err())
	case <-e.stop:
		return nil, ErrClosed
	}
}

// Read answers query from shardID's state with linearizable semantics: it
// reflects every write acknowledged before Read was called. This node must
// lead the shard (otherwise a *NotLeaderError). Each ReadIndex attempt
// carries a fresh context; an unanswered one is retried until ctx ends.
func (e *Engine) Read(ctx context.Context, shardID uint64, query []byte) ([]byte, error) {
	return e.read(ctx, shardID, query, readIndex)
}

// ReadOnReplica answers query from this node's replica of shardID, leader,
// follower or learner, with linearizable semantics: the replica gets a read
// index from the shard's leader (which confirms with a quorum that it still
// leads), waits until it has applied that index, and then answers from its
// own state. It spares the leader the read itself, at the cost of a round
// trip to it. A replica that knows no leader answers a *NotLeaderError
// (with no leader); otherwise as Read.
func (e *Engine) ReadOnReplica(ctx context.Context, shardID uint64, query []byte) ([]byte, error) {
	return e.read(ctx, shardID, query, readOnReplica)
}

// readKind is how a read is served.
type readKind uint8

const (
	readIndex     readKind = iota // ReadIndex on the leader
	readOnReplica                 // ReadIndex on any replica (a follower asks its leader)
	readLease                     // the leader's lease, else a ReadIndex (lease.go)
)

func (e *Engine) read(ctx context.Context, shardID uint64, query []byte, kind readKind) ([]byte, error) {
	if err := e.readBarrier(ctx, shardID, kind); err != nil {
		return nil, err
	}
	return e.ReadLocal(shardID, query)
}

// readBarrier returns once this node's replica of shardID has applied a
// read index that the shard's leader confirmed with a quorum, or that its
// lease covers (as kind says): the replica then holds every write
// acknowledged before the call.
func (e *Engine) readBarrier(ctx context.Context, shardID uint64, kind readKind) error {
	for {
		if e.closed.Load() {
			return ErrClosed
		}
		// A caller gone already gets no answer: wait's select would pick a
		// barrier passed at once as often as the ended ctx.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("engine: shard %d: %w", shardID, err)
		}
		if d, ok := e.claimed(shardID); ok && d.Frozen() {
			return &ShardMergingError{ShardID: shardID, Into: d.MergeInto}
		}
		r := group.NewRead(e.nextID())
		w := e.workerFor(shardID)
		if !w.enqueueRead(readReq{shardID: shardID, r: r, kind: kind}) {
			return ErrClosed
		}
		_, err := e.wait(ctx, shardID, r.Done)
		if errors.Is(err, group.ErrReadRetry) {
			continue
		}
		if err != nil {
			return err
		}
		if d, ok := e.claimed(shardID); ok && d.Frozen() {
			return &ShardMergingError{ShardID: shardID, Into: d.MergeInto}
		}
		return nil
	}
}

// ReadLocal answers query from this node's replica as it is, without any
// coordination: possibly stale, never torn.
func (e *Engine) ReadLocal(shardID uint64, query []byte) ([]byte, error) {
	if !e.acquire() {
		return nil, ErrClosed
	}
	defer e.release()
	desc, ok := e.claimed(shardID)
	if !ok {
		return nil, fmt.Errorf("%w: shard %d", ErrShardNotFound, shardID)
	}
	if readLocalHook != nil {
		readLocalHook(shardID)
	}
	res, err := e.cfg.StateMachine.Query(&QueryContext{Desc: desc, rule: e.cfg.PartitionRule, r: e.store.DB()}, query)
	// A replica being destroyed releases its range before its data is
	// deleted: if the range is still held now, the data was there for the
	// whole query. Otherwise the answer may lack keys that exist.
	if now, ok := e.claimed(shardID); !ok || now.Generation != desc.Generation {
		return nil, fmt.Errorf("%w: shard %d (its replica left this node during the read)", ErrShardNotFound, shardID)
	}
	return res, err
}

// readLocalHook, when set (by tests only), runs in ReadLocal between finding
// the shard's range and querying the store.
var readLocalHook func(shardID uint64)

// claimed returns the descriptor of shardID's range as claimed on this node.
func (e *Engine) claimed(shardID uint64) (storage.Descriptor, bool) {
	e.ranges.Lock()
	defer e.ranges.Unlock()
	d, ok := e.ranges.byShard[shardID]
	return d, ok
}

// TransferLeader asks shardID's leader on this node to hand leadership to
// node target, and waits until this replica sees target lead.
func (e *Engine) TransferLeader(ctx context.Context, shardID, target uint64) error {
	watch := e.WatchLeaders()
	defer watch.Close()
	// start asks raft to transfer, unless this replica no longer leads (then
	// the leader it knows is the answer) or a transfer is under way.
	start := func() (done bool, err error) {
		return call(ctx, e, shardID, func(w *worker) (bool, error) {
			r := w.shards[shardID]
			if r == nil {
				return false, fmt.Errorf("%w: shard %d", ErrShardNotFound, shardID)
			}
			l, t := r.g.LeaderNode(), r.term()
			if l == target {
				return true, nil
			}
			if !r.g.IsLeader() {
				if l == 0 {
					return false, nil // an election is under way: wait for it
				}
				return false, &NotLeaderError{ShardID: shardID, Leader: l, Term: t}
			}
			d, _ := r.log.Descriptor()
			rep, ok := d.ReplicaOfNode(target)
			if !ok {
				return false, fmt.Errorf("%w: node %d holds no replica of shard %d", ErrBadRequest, target, shardID)
			}
			if !rep.Role.IsVoter() {
				// raft ignores a transfer to a learner: it would never end.
				return false, fmt.Errorf("%w: node %d's replica of shard %d is a %s, not a voter", ErrBadRequest, target, shardID, rep.Role)
			}
			to := rep.ReplicaID
			if r.g.RN.BasicStatus().LeadTransferee == 0 {
				w.wake(r)
				voidLease(r) // before the transferee may campaign (lease.go)
				r.g.RN.TransferLeader(to)
				w.markDirty(r)
			}
			return false, nil
		})
	}
	// raft abandons a transfer the target does not complete within an
	// election timeout (for instance a new voter that has not applied its
	// promotion yet): look again after about that long, and ask again.
	recheck := time.Duration(e.cfg.ElectionTicks+1) * e.cfg.TickInterval
	for {
		done, err := start()
		if err != nil || done {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, recheck)
		_, err = watch.Next(wctx)
		cancel()
		if err != nil && ctx.Err() != nil {
			return err
		}
	}
}

// ShardStatus is a replica's view of its shard.
type ShardStatus struct {
	ShardID   uint64
	NodeID    uint64
	ReplicaID uint64 // this node's replica's ID in the shard
	Leader    uint64 // the leader's node
	// LeaderReplica is the leader's replica ID.
	LeaderReplica uint64
	Term          uint64
	State         string // Leader, Follower, Candidate, PreCandidate
	Commit        uint64
	Applied       uint64
	FirstIndex    uint64
	LastIndex     uint64
	// Voters, Learners and Outgoing (voters of the outgoing config while
	// joint) are node IDs; Desc.Replicas has the replica IDs and roles.
	Voters      []uint64
	Learners    []uint64
	Outgoing    []uint64
	Initialized bool
	Quiesced    bool // not ticking: idle (see quiesce.go)
	Desc        storage.Descriptor
	// Progress of each replica, known on the leader only.
	Progress []ReplicaProgress
}

// ReplicaProgress is what a leader knows of one replica's log.
type ReplicaProgress struct {
	NodeID    uint64
	ReplicaID uint64
	Match     uint64
	Next      uint64
	State     string // StateProbe, StateReplicate, StateSnapshot
	Learner   bool
}

// Status returns this node's view of shardID.
func (e *Engine) Status(ctx context.Context, shardID uint64) (ShardStatus, error) {
	return call(ctx, e, shardID, func(w *worker) (ShardStatus, error) {
		r := w.shards[shardID]
		if r == nil {
			return ShardStatus{}, fmt.Errorf("%w: shard %d", ErrShardNotFound, shardID)
		}
		return r.status(e.cfg.NodeID), nil
	})
}

// Statuses returns this node's view of every shard it hosts, one worker
// round trip per worker.
func (e *Engine) Statuses(ctx context.Context) ([]ShardStatus, error) {
	var out []ShardStatus
	for _, w := range e.workers {
		sts, err := callWorker(ctx, e, w, func(w *worker) ([]ShardStatus, error) {
			sts := make([]ShardStatus, 0, len(w.shards))
			for _, r := range w.shards {
				sts = append(sts, r.status(e.cfg.NodeID))
			}
			return sts, nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, sts...)
	}
	return out, nil
}

// LedShard is what Leading reports of a shard whose replica here leads.
type LedShard struct {
	ShardID uint64
	Applied uint64 // the replica's applied index
	// Desc is the replica's descriptor. Its Replicas are the engine's
	// own (a descriptor is replaced, never changed in place: see
	// storage.Log.SetDescriptor): read them, and Clone before changing.
	Desc storage.Descriptor
}

// Leading returns the initialized shards whose replica on this node leads
// (as of the replica's last Ready: the Stats.ShardsLeading count), one
// worker round trip per worker. It is Statuses for the periodic callers
// that look at led shards only (load sampling, the meta shard's
// reconciler, merge recovery): it walks the set of leading replicas each
// worker keeps and hands out their descriptors without a copy, where
// Statuses builds a full status (raft's BasicStatus, log indexes, node
// lists, a descriptor copy) for every replica: on a node of 10,000 idle
// shards that lead a third of them, it touches a third.
func (e *Engine) Leading(ctx context.Context) ([]LedShard, error) {
	return e.leading(ctx, false)
}

// LeadingFrozen is Leading of the shards frozen for a merge only (merge
// recovery's pass, every few seconds): it walks the same sets, and hands
// out nothing for the others.
func (e *Engine) LeadingFrozen(ctx context.Context) ([]LedShard, error) {
	return e.leading(ctx, true)
}

func (e *Engine) leading(ctx context.Context, frozenOnly bool) ([]LedShard, error) {
	var out []LedShard
	for _, w := range e.workers {
		led, err := callWorker(ctx, e, w, func(w *worker) ([]LedShard, error) {
			var led []LedShard
			if !frozenOnly {
				led = make([]LedShard, 0, len(w.leading))
			}
			for _, r := range w.leading {
				if frozenOnly && !r.log.Frozen() {
					continue
				}
				desc, ok := r.log.Descriptor()
				if !ok {
					continue
				}
				applied, _ := r.log.Applied()
				led = append(led, LedShard{ShardID: r.shardID, Applied: applied, Desc: desc})
			}
			return led, nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, led...)
	}
	return out, nil
}

// Healthy reports whether every worker answers a call within ctx (a
// worker stuck in a pass does not): a liveness probe's check, at the cost
// of one call per worker, not per shard.
func (e *Engine) Healthy(ctx context.Context) error {
	for _, w := range e.workers {
		if _, err := callWorker(ctx, e, w, func(*worker) (struct{}, error) { return struct{}{}, nil }); err != nil {
			return err
		}
	}
	return nil
}

// Shards lists the shards with a replica on this node.
func (e *Engine) Shards(ctx context.Context) ([]uint64, error) {
	var out []uint64
	for _, w := range e.workers {
		ids, err := callWorker(ctx, e, w, func(w *worker) ([]uint64, error) {
			ids := make([]uint64, 0, len(w.shards))
			for id := range w.shards {
				ids = append(ids, id)
			}
			return ids, nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, ids...)
	}
	return out, nil
}

// callWorker runs fn on worker w and waits for its result, ctx's end or
// the engine's close.
func callWorker[T any](ctx context.Context, e *Engine, w *worker, fn func(w *worker) (T, error)) (T, error) {
	var zero T
	if e.closed.Load() {
		return zero, ErrClosed
	}
	type res struct {
		v   T
		err error
	}
	done := make(chan res, 1)
	if !w.enqueueFn(func() { v, err := fn(w); done <- res{v, err} }) {
		return zero, ErrClosed
	}
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-e.stop:
		return zero, ErrClosed
	}
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	var sent uint64
	for _, p := range e.PeerStats() {
		sent += p.Messages
	}
	e.ranges.Lock()
	n := len(e.ranges.byShard)
	e.ranges.Unlock()
	return Stats{
		Applied:             e.stats.applied.Load(),
		Syncs:               e.stats.syncs.Load(),
		FileSyncs:           e.store.FileSyncs(),
		Commits:             e.stats.commits.Load(),
		SnapshotsSent:       e.stats.snapsSent.Load(),
		SnapshotsRecv:       e.stats.snapsRecv.Load(),
		HeartbeatsCoalesced: e.beats.Added(),
		ShardsQuiesced:      e.stats.quiesced.Load(),
		ShardsLeading:       e.stats.leading.Load(),
		ShardsLed:           e.stats.led.Load(),
		MessagesSent:        sent,
		Passes:              e.stats.passes.Load(),
		Cycles:              e.stats.cycles.Load(),
		MessagesIn:          e.stats.msgsIn.Load(),
		ProposalsIn:         e.stats.propsIn.Load(),
		Readies:             e.stats.readies.Load(),
		CommitNanos:         e.stats.commitNanos.Load(),
		PassNanos:           e.stats.passNanos.Load(),
		StaleDropped:        e.stats.staleDropped.Load(),
		SuccessorCampaigns:  e.stats.campaigns.Load(),
		StartCampaigns:      e.stats.startCampaigns.Load(),
		StartWakes:          e.stats.startWakes.Load(),
		Shards:              n,
		SessionReplays:      e.stats.sessionReplays.Load(),
		FollowerReads:       e.stats.followerReads.Load(),
		LeaseReads:          e.stats.leaseReads.Load(),
		LeaseMisses:         e.stats.leaseMisses.Load(),
		VotesHeld:           e.stats.votesHeld.Load(),
		Yields:              e.stats.yields.Load(),
		SessionsExpired:     e.stats.sessionsExpired.Load(),
	}
}

// Flush makes every write of this node durable (one synced WAL record).
func (e *Engine) Flush() error {
	if !e.acquire() {
		return ErrClosed
	}
	defer e.release()
	return e.store.DB().LogData(nil, pebbleSync)
}

// tickLag keeps the gaps between the tick loop's last ticks (tick loop only).
type tickLag struct {
	last time.Time
	gaps []time.Duration // a ring of the last election timeout's gaps
	i    int
}

func (l *tickLag) tick(now time.Time, window int) {
	if !l.last.IsZero() {
		if len(l.gaps) < window {
			l.gaps = append(l.gaps, now.Sub(l.last))
		} else {
			l.gaps[l.i] = now.Sub(l.last)
			l.i = (l.i + 1) % len(l.gaps)
		}
	}
	l.last = now
}

func (l *tickLag) max() time.Duration {
	var m time.Duration
	for _, g := range l.gaps {
		m = max(m, g)
	}
	return m
}
