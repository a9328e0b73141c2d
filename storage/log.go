package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Initial log position of a bootstrapped shard: every replica of a new shard
// starts from the same state at this index and term, as if it had applied a
// snapshot there, so that no replica needs a bootstrap entry.
const (
	InitialIndex = 10
	InitialTerm  = 5
)

// Log is one shard's raft state on this node: it implements raft.Storage over
// the shared Pebble store, with an in-memory cache of the log's tail.
//
// A Log is not safe for concurrent use. It belongs to the worker that drives
// its shard: raft calls it from that goroutine, and that goroutine writes
// through a Batch and commits it before raft reads again. The in-memory state
// changes when a write is added to a Batch, not when the Batch commits; a
// failed commit is a fatal storage error for the node.
type Log struct {
	s         *Store
	shardID   uint64
	replicaID uint64

	hs   raftpb.HardState
	cs   raftpb.ConfState
	desc *Descriptor // nil until the replica is initialized

	applied, appliedTerm  uint64
	truncIndex, truncTerm uint64
	last                  uint64

	cache      []raftpb.Entry // contiguous tail of the log; cache[len-1].Index == last
	cacheBytes uint64
	logBytes   uint64 // approximate bytes of the log since the truncation point

	stateQueued bool // the raft state record is queued in a Batch
}

// ShardID returns the shard this log belongs to.
func (l *Log) ShardID() uint64 { return l.shardID }

// Initialized reports whether the replica has state to serve from: it was
// bootstrapped or received a snapshot. An uninitialized replica (created by a
// message from a leader that is adding it) waits for a snapshot.
func (l *Log) Initialized() bool { return l.desc != nil }

// Descriptor returns the shard's descriptor, or false if uninitialized.
// The descriptor's Replicas are shared: callers must not modify them.
func (l *Log) Descriptor() (Descriptor, bool) {
	if l.desc == nil {
		return Descriptor{}, false
	}
	return *l.desc, true
}

// Frozen reports whether the descriptor is frozen for a merge:
// Descriptor().Frozen() without the copy.
func (l *Log) Frozen() bool { return l.desc != nil && l.desc.Frozen() }

// NodeOf returns the node of the replica with replicaID in the shard's
// descriptor (0 if none): Descriptor without the copy, for the per-message
// lookups of the hot path.
func (l *Log) NodeOf(replicaID uint64) uint64 {
	if l.desc != nil {
		for i := range l.desc.Replicas {
			if r := &l.desc.Replicas[i]; r.ReplicaID == replicaID {
				return r.NodeID
			}
		}
	}
	return 0
}

// Applied returns the applied index and its term.
func (l *Log) Applied() (index, term uint64) { return l.applied, l.appliedTerm }

// ConfState returns the configuration as of the applied index.
func (l *Log) ConfState() raftpb.ConfState { return l.cs }

// HardState returns the last HardState written.
func (l *Log) HardState() raftpb.HardState { return l.hs }

// LogBytes returns the approximate size of the log above its truncation
// point. It starts from zero when the store is opened.
func (l *Log) LogBytes() uint64 { return l.logBytes }

// CreateShard bootstraps replica replicaID of a new shard described by desc
// (its first configuration: desc.Replicas) at InitialIndex. It fails with
// ErrShardExists if the shard has state here and ErrTombstoned if the
// shard's tombstone forbids replicaID (a replica with that ID was removed).
// Synced.
//
// A replica that exists but is uninitialized (created by a message from a
// leader before the local request to create the shard arrived) is
// bootstrapped in place, keeping its term and vote, if it has the same
// replica ID.
func (s *Store) CreateShard(desc Descriptor, replicaID uint64) (*Log, error) {
	return s.createShard(desc, replicaID, InitialIndex, nil)
}

// CreateShardIn is CreateShard with its writes added to b instead of
// committed at once: many shards created with one synced commit (a
// bootstrap of thousands). The log is usable once b is committed with
// sync; b must not hold another creation of the same shard.
func (s *Store) CreateShardIn(b *Batch, desc Descriptor, replicaID uint64) (*Log, error) {
	return s.writeShard(b, desc, replicaID, InitialIndex, nil)
}

// createShard is CreateShard at the initial index index, with extra writes
// (if not nil) in its batch.
func (s *Store) createShard(desc Descriptor, replicaID, index uint64, extra func(*Batch)) (*Log, error) {
	b := s.NewBatch()
	defer b.Close()
	l, err := s.writeShard(b, desc, replicaID, index, extra)
	if err != nil {
		return nil, err
	}
	if err := b.Commit(true); err != nil {
		return nil, err
	}
	return l, nil
}

// writeShard checks that desc can be created here and adds its creation
// to b.
func (s *Store) writeShard(b *Batch, desc Descriptor, replicaID, index uint64, extra func(*Batch)) (*Log, error) {
	if desc.Start > desc.Last {
		return nil, fmt.Errorf("storage: shard %d: empty range [%d, %d]", desc.ShardID, desc.Start, desc.Last)
	}
	if _, ok := desc.Replica(replicaID); !ok || replicaID == 0 {
		return nil, fmt.Errorf("storage: shard %d: replica %d is not in the descriptor", desc.ShardID, replicaID)
	}
	if next, ok, err := s.Tombstone(desc.ShardID); err != nil {
		return nil, err
	} else if ok && replicaID < next {
		return nil, fmt.Errorf("%w: shard %d: replica %d (tombstone: IDs below %d)", ErrTombstoned, desc.ShardID, replicaID, next)
	}
	old, err := s.OpenLog(desc.ShardID)
	if err != nil {
		return nil, err
	}
	if old.Initialized() || old.last > 0 || (old.replicaID != 0 && old.replicaID != replicaID) {
		return nil, fmt.Errorf("%w: shard %d", ErrShardExists, desc.ShardID)
	}
	hs := raftpb.HardState{Term: InitialTerm, Commit: index}
	if old.hs.Term > InitialTerm {
		hs.Term, hs.Vote = old.hs.Term, old.hs.Vote
	}
	l := &Log{s: s, shardID: desc.ShardID}
	l.SetReplicaID(b, replicaID)
	l.SetDescriptor(b, desc)
	l.SetConfState(b, desc.ConfState())
	l.SetApplied(b, index, InitialTerm)
	l.SetHardState(b, hs)
	b.set(raftKey(desc.ShardID, raftTrunc), encode2(index, InitialTerm))
	if extra != nil {
		extra(b)
	}
	l.truncIndex, l.truncTerm, l.last = index, InitialTerm, index
	return l, nil
}

// OpenLog loads shardID's raft state. A shard with no state yields an empty,
// uninitialized Log with no replica ID: the caller checks the shard's
// tombstone and sets the ID (SetReplicaID) before it uses the log.
func (s *Store) OpenLog(shardID uint64) (*Log, error) {
	l := &Log{s: s, shardID: shardID}
	if v, err := s.get(raftKey(shardID, raftReplicaID)); err != nil {
		return nil, err
	} else if v != nil {
		if len(v) != 8 {
			return nil, fmt.Errorf("%w: replica ID of shard %d has %d bytes", ErrCorrupt, shardID, len(v))
		}
		l.replicaID = binary.BigEndian.Uint64(v)
	}
	if v, err := s.get(raftKey(shardID, raftHard)); err != nil {
		return nil, err
	} else if v != nil {
		if err := l.decodeState(v); err != nil {
			return nil, err
		}
	}
	if v, err := s.get(raftKey(shardID, raftConf)); err != nil {
		return nil, err
	} else if v != nil {
		if err := l.cs.Unmarshal(v); err != nil {
			return nil, fmt.Errorf("%w: confstate of shard %d: %v", ErrCorrupt, shardID, err)
		}
	}
	if v, err := s.get(raftKey(shardID, raftDesc)); err != nil {
		return nil, err
	} else if v != nil {
		d, err := UnmarshalDescriptor(v)
		if err != nil {
			return nil, err
		}
		l.desc = &d
	}
	var err error
	if l.truncIndex, l.truncTerm, err = s.get2(raftKey(shardID, raftTrunc)); err != nil {
		return nil, err
	}
	l.last = l.truncIndex
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: logKey(shardID, 0),
		UpperBound: logKey(shardID, ^uint64(0)),
	})
	if err != nil {
		return nil, err
	}
	if it.Last() {
		l.last = binary.BigEndian.Uint64(it.Key()[raftKeyLen:])
		// The last entry seeds the cache: raft asks for its term at once
		// (every campaign and vote compares it), and a node that reopens
		// thousands of shards would otherwise seek Pebble for each.
		var e raftpb.Entry
		if err := e.Unmarshal(it.Value()); err == nil && e.Index == l.last && uint64(e.Size()) <= s.cfg.EntryCacheBytes {
			l.cache, l.cacheBytes = []raftpb.Entry{e}, uint64(e.Size())
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	return l, nil
}

// ReplicaID returns this replica's ID in its shard (0 for a log that has
// none yet).
func (l *Log) ReplicaID() uint64 { return l.replicaID }

// SetReplicaID records this replica's ID. It is written before (or with)
// anything raft persists for the replica.
func (l *Log) SetReplicaID(b *Batch, id uint64) {
	b.set(raftKey(l.shardID, raftReplicaID), binary.BigEndian.AppendUint64(nil, id))
	l.replicaID = id
}

func (s *Store) get2(k []byte) (a, b uint64, err error) {
	v, err := s.get(k)
	if err != nil || v == nil {
		return 0, 0, err
	}
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("%w: %s of %d bytes", ErrCorrupt, DescribeKey(k), len(v))
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), nil
}

func encode2(a, b uint64) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), a)
	return binary.BigEndian.AppendUint64(v, b)
}

// InitialState implements raft.Storage.
func (l *Log) InitialState() (raftpb.HardState, raftpb.ConfState, error) {
	return l.hs, l.cs, nil
}

// FirstIndex implements raft.Storage.
func (l *Log) FirstIndex() (uint64, error) { return l.truncIndex + 1, nil }

// LastIndex implements raft.Storage.
func (l *Log) LastIndex() (uint64, error) { return l.last, nil }

func (l *Log) cacheFirst() uint64 {
	if len(l.cache) == 0 {
		return l.last + 1
	}
	return l.cache[0].Index
}

// Term implements raft.Storage.
func (l *Log) Term(i uint64) (uint64, error) {
	switch {
	case i == l.truncIndex:
		return l.truncTerm, nil
	case i < l.truncIndex:
		return 0, raft.ErrCompacted
	case i > l.last:
		return 0, raft.ErrUnavailable
	case i >= l.cacheFirst():
		return l.cache[i-l.cacheFirst()].Term, nil
	}
	ents, err := l.load(i, i+1, 0)
	if err != nil {
		return 0, err
	}
	return ents[0].Term, nil
}

// Entries implements raft.Storage.
func (l *Log) Entries(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	switch {
	case lo <= l.truncIndex:
		return nil, raft.ErrCompacted
	case hi > l.last+1 || lo > hi:
		return nil, raft.ErrUnavailable
	case lo == hi:
		return nil, nil
	}
	if first := l.cacheFirst(); lo >= first {
		ents := l.cache[lo-first : hi-first : hi-first]
		return limitSize(ents, maxSize), nil
	}
	return l.load(lo, hi, maxSize)
}

// limitSize returns the longest prefix of ents within maxSize bytes, and at
// least one entry.
func limitSize(ents []raftpb.Entry, maxSize uint64) []raftpb.Entry {
	if len(ents) == 0 {
		return ents
	}
	size := uint64(ents[0].Size())
	for i := 1; i < len(ents); i++ {
		size += uint64(ents[i].Size())
		if size > maxSize {
			return ents[:i:i]
		}
	}
	return ents
}

// load reads entries [lo, hi) from Pebble, up to maxSize bytes (at least one;
// maxSize 0 means one entry).
func (l *Log) load(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	it, err := l.s.db.NewIter(&pebble.IterOptions{
		LowerBound: logKey(l.shardID, lo),
		UpperBound: logKey(l.shardID, hi),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var (
		out  []raftpb.Entry
		size uint64
		want = lo
	)
	for it.First(); it.Valid(); it.Next() {
		var e raftpb.Entry
		if err := e.Unmarshal(it.Value()); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, DescribeKey(it.Key()), err)
		}
		if e.Index != want {
			return nil, fmt.Errorf("%w: shard %d log has index %d where %d belongs", ErrCorrupt, l.shardID, e.Index, want)
		}
		size += uint64(e.Size())
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, e)
		want++
		if maxSize == 0 {
			break
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: shard %d log misses index %d", ErrCorrupt, l.shardID, lo)
	}
	return out, nil
}

// Snapshot implements raft.Storage. It describes the applied state; the
// engine streams the data itself, from a Pebble snapshot taken when it sends
// the snapshot, and may then describe a later applied index.
func (l *Log) Snapshot() (raftpb.Snapshot, error) {
	if l.desc == nil || l.applied == 0 {
		return raftpb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
	}
	return raftpb.Snapshot{
		Data: l.desc.Marshal(),
		Metadata: raftpb.SnapshotMetadata{
			Index:     l.applied,
			Term:      l.appliedTerm,
			ConfState: l.cs,
		},
	}, nil
}

// Batch is a write batch that spans any number of shards, committed with at
// most one sync.
type Batch struct {
	s     *Store
	b     *pebble.Batch
	sync  bool
	buf   []byte
	state []*Log // logs whose raft state record must be written at Commit
}

func (b *Batch) stateChanged(l *Log) {
	if !l.stateQueued {
		l.stateQueued = true
		b.state = append(b.state, l)
	}
}

// flushState writes the raft state record of every log that changed.
func (b *Batch) flushState() {
	for _, l := range b.state {
		b.buf = l.appendState(b.buf[:0])
		b.set(raftKey(l.shardID, raftHard), b.buf)
		l.stateQueued = false
	}
	clear(b.state)
	b.state = b.state[:0]
}

// NewBatch returns an empty batch.
func (s *Store) NewBatch() *Batch { return &Batch{s: s, b: s.db.NewBatch()} }

// Pebble exposes the underlying batch, for state machine writes.
func (b *Batch) Pebble() *pebble.Batch { return b.b }

// Empty reports whether nothing was written to b.
func (b *Batch) Empty() bool { return b.b.Empty() && len(b.state) == 0 }

// Len returns the encoded size of b in bytes.
func (b *Batch) Len() int { return b.b.Len() }

// MarkSync makes the commit of b synced.
func (b *Batch) MarkSync() { b.sync = true }

// NeedsSync reports whether b holds raft log or HardState writes, which must
// be durable before any message that depends on them is sent.
func (b *Batch) NeedsSync() bool { return b.sync }

// Commit writes b to the store, synced if sync or if b holds raft state that
// needs it. The batch may be reused after Reset.
func (b *Batch) Commit(sync bool) error {
	if b.s.closed.Load() {
		return ErrClosed
	}
	b.flushState()
	opts := pebble.NoSync
	if sync || b.sync {
		opts = pebble.Sync
	}
	if err := b.b.Commit(opts); err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	return nil
}

// ApplyNoSyncWait writes b to the store, synced, without waiting for the
// sync: b's writes are visible when it returns, durable once SyncWait has
// returned nil. Pebble's commit pipeline lets the batches of every worker
// that are waiting for a sync share one (CockroachDB writes its raft log
// the same way). b must not be reset, reused or closed before SyncWait.
func (b *Batch) ApplyNoSyncWait() error {
	if b.s.closed.Load() {
		return ErrClosed
	}
	b.flushState()
	if err := b.s.db.ApplyNoSyncWait(b.b, pebble.Sync); err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	return nil
}

// SyncWait waits until a batch written by ApplyNoSyncWait is durable.
func (b *Batch) SyncWait() error {
	if err := b.b.SyncWait(); err != nil {
		return fmt.Errorf("storage: sync: %w", err)
	}
	return nil
}

// Reset empties b for reuse.
func (b *Batch) Reset() {
	b.b.Reset()
	b.sync = false
	for _, l := range b.state {
		l.stateQueued = false
	}
	clear(b.state)
	b.state = b.state[:0]
}

// Close releases b.
func (b *Batch) Close() { _ = b.b.Close() }

func (b *Batch) set(k, v []byte) {
	if err := b.b.Set(k, v, nil); err != nil {
		panic(fmt.Sprintf("storage: batch set: %v", err)) // only fails on a closed or read-only batch
	}
}

func (b *Batch) deleteRange(start, end []byte) {
	if err := b.b.DeleteRange(start, end, nil); err != nil {
		panic(fmt.Sprintf("storage: batch delete range: %v", err))
	}
}

// Append writes ents (contiguous, as raft hands them over in a Ready) to the
// log, replacing any conflicting suffix.
func (l *Log) Append(b *Batch, ents []raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	first, newLast := ents[0].Index, ents[len(ents)-1].Index
	if first <= l.truncIndex || first > l.last+1 {
		return fmt.Errorf("storage: shard %d: append at %d to log (%d, %d]", l.shardID, first, l.truncIndex, l.last)
	}
	for i := range ents {
		e := &ents[i]
		size := e.Size()
		op := b.b.SetDeferred(logKeyLen, size)
		appendLogKey(op.Key[:0], l.shardID, e.Index)
		if _, err := e.MarshalTo(op.Value); err != nil {
			return fmt.Errorf("storage: marshal entry: %w", err)
		}
		if err := op.Finish(); err != nil {
			return err
		}
		l.logBytes += uint64(size)
	}
	if newLast < l.last {
		b.deleteRange(logKey(l.shardID, newLast+1), logKey(l.shardID, l.last+1))
	}
	b.sync = true
	// The cache: drop the conflicting suffix (copying, since raft may hold
	// slices of the old backing array), then append and trim the front.
	if cf := l.cacheFirst(); first <= l.last && len(l.cache) > 0 {
		if first <= cf {
			l.cache, l.cacheBytes = nil, 0
		} else {
			keep := make([]raftpb.Entry, first-cf, int(first-cf)+len(ents))
			copy(keep, l.cache[:first-cf])
			l.cache = keep
			l.cacheBytes = 0
			for i := range keep {
				l.cacheBytes += uint64(keep[i].Size())
			}
		}
	}
	l.last = newLast
	for i := range ents {
		l.cacheBytes += uint64(ents[i].Size())
	}
	l.cache = append(l.cache, ents...)
	l.trimCache()
	return nil
}

func (l *Log) trimCache() {
	max, maxBytes := l.s.cfg.EntryCacheEntries, l.s.cfg.EntryCacheBytes
	n := 0
	for n < len(l.cache) && (len(l.cache)-n > max || l.cacheBytes > maxBytes) {
		l.cacheBytes -= uint64(l.cache[n].Size())
		n++
	}
	if n > 0 {
		l.cache = l.cache[n:]
	}
}

// ReleaseCache frees the entry cache, for a shard that went idle.
func (l *Log) ReleaseCache() { l.cache, l.cacheBytes = nil, 0 }

// SetHardState records hs. The batch is synced only for what raft says must
// be (MarkSync): a HardState whose commit index alone moved need not be.
func (l *Log) SetHardState(b *Batch, hs raftpb.HardState) {
	// A new commit index alone is not written: raft needs only the term
	// and the vote durable, and learns the commit index again. It goes
	// with the next write of the record (every applied index writes it),
	// which saves a key per replica per write on the hot path.
	write := hs.Term != l.hs.Term || hs.Vote != l.hs.Vote
	l.hs = hs
	if write {
		b.stateChanged(l)
	}
}

// SetApplied records the applied index and its term. The engine writes it in
// the batch that holds the state machine's writes for the same entries.
func (l *Log) SetApplied(b *Batch, index, term uint64) {
	l.applied, l.appliedTerm = index, term
	b.stateChanged(l)
}

// The raft state record: HardState and applied state in one key, written
// once per batch however many times they changed, since they change together
// (entries are applied as soon as they commit).
const stateLen = 5 * 8

func (l *Log) appendState(dst []byte) []byte {
	for _, v := range [5]uint64{l.hs.Term, l.hs.Vote, l.hs.Commit, l.applied, l.appliedTerm} {
		dst = binary.BigEndian.AppendUint64(dst, v)
	}
	return dst
}

func (l *Log) decodeState(v []byte) error {
	if len(v) != stateLen {
		return fmt.Errorf("%w: raft state of shard %d has %d bytes", ErrCorrupt, l.shardID, len(v))
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(v[8*i:]) }
	l.hs = raftpb.HardState{Term: u(0), Vote: u(1), Commit: u(2)}
	l.applied, l.appliedTerm = u(3), u(4)
	return nil
}

// SetConfState records the configuration as of the applied index.
func (l *Log) SetConfState(b *Batch, cs raftpb.ConfState) {
	v, err := cs.Marshal()
	if err != nil {
		panic(err)
	}
	b.set(raftKey(l.shardID, raftConf), v)
	l.cs = cs
}

// SetDescriptor records the shard's descriptor.
func (l *Log) SetDescriptor(b *Batch, d Descriptor) {
	d = d.Clone()
	b.set(raftKey(l.shardID, raftDesc), d.Marshal())
	l.desc = &d
}

// Truncate discards the log up to and including index, which must be
// applied. It is a no-op below the current truncation point.
func (l *Log) Truncate(b *Batch, index uint64) error {
	if index <= l.truncIndex {
		return nil
	}
	if index > l.applied {
		return fmt.Errorf("storage: shard %d: truncate at %d above applied %d", l.shardID, index, l.applied)
	}
	// The applied entry may have been appended in b itself, not yet in
	// Pebble (and out of the cache when entries are large): its term is
	// known. Older entries were committed by earlier batches.
	term := l.appliedTerm
	if index != l.applied {
		var err error
		if term, err = l.Term(index); err != nil {
			return err
		}
	}
	b.deleteRange(logKey(l.shardID, l.truncIndex+1), logKey(l.shardID, index+1))
	b.set(raftKey(l.shardID, raftTrunc), encode2(index, term))
	if span := l.last - l.truncIndex; span > 0 {
		l.logBytes = l.logBytes / span * (l.last - index)
	}
	l.truncIndex, l.truncTerm = index, term
	if cf := l.cacheFirst(); len(l.cache) > 0 && index >= cf {
		n := index - cf + 1
		for _, e := range l.cache[:n] {
			l.cacheBytes -= uint64(e.Size())
		}
		l.cache = l.cache[n:]
	}
	return nil
}
