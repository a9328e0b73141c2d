package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// Snapshots of a shard.
//
// A snapshot is the shard's session span (SessionSpan) followed by its user
// data range, read at one Pebble snapshot and cut into chunks of
// length-prefixed key/value pairs: one increasing key order, since session
// keys sort before data keys. It is streamed, never held whole in memory.
// The receiver writes the chunks into an sstable (StagedSnapshot) whose
// first records are range deletions of both spans. Applying it ingests that sstable together with a second one holding
// the shard's new raft state (a range deletion of its raft keys, then the
// applied and truncated state, HardState, ConfState and descriptor). Both are
// ingested in one atomic Ingest: a crash leaves either the old replica or the
// new one, never a mix. The range deletions hide older keys only: keys of the
// same ingested table share its sequence number and survive.
//
// A backup (package node/backup) stores a shard's stream as it is; its
// files are checked with SnapshotDecoder, which needs no store, and a
// restore stages each one and ingests it alone (IngestData) before the
// shard is created over the data.

// ErrBadSnapshot is returned for a snapshot stream that is malformed: a
// broken chunk, a key outside the shard's range or out of order.
var ErrBadSnapshot = errors.New("storage: bad snapshot")

// span is a key range [start, end).
type span struct{ start, end []byte }

// snapshotSpans returns the spans a snapshot of desc's shard carries, in key
// order: its sessions, then its data.
func snapshotSpans(desc Descriptor) []span {
	ss, se := SessionSpan(desc.ShardID)
	ds, de := desc.DataSpan()
	return []span{{ss, se}, {ds, de}}
}

// SnapshotSource reads a shard's sessions and data at a Pebble snapshot,
// chunk by chunk. It is used by one goroutine; Close releases the Pebble
// snapshot.
type SnapshotSource struct {
	snap      *pebble.Snapshot
	it        *pebble.Iterator
	spans     []span // the spans after the iterator's
	chunk     []byte
	chunkSize int
	valid     bool
	Bytes     uint64 // bytes of keys and values read so far
	Keys      uint64
}

// NewSnapshotSource opens the sessions and data of desc's shard as they are
// now. chunkSize is the target chunk size in bytes (default 256 KiB).
func (s *Store) NewSnapshotSource(desc Descriptor, chunkSize int) (*SnapshotSource, error) {
	if chunkSize <= 0 {
		chunkSize = 256 << 10
	}
	snap := s.db.NewSnapshot()
	spans := snapshotSpans(desc)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: spans[0].start, UpperBound: spans[0].end})
	if err != nil {
		snap.Close()
		return nil, err
	}
	return &SnapshotSource{snap: snap, it: it, spans: spans[1:], chunkSize: chunkSize, valid: it.First()}, nil
}

// Next returns the next chunk, or io.EOF after the last (an empty shard
// yields no chunk). The chunk is valid until the next call.
func (src *SnapshotSource) Next() ([]byte, error) {
	src.chunk = src.chunk[:0]
	for len(src.chunk) < src.chunkSize {
		if !src.valid {
			if err := src.it.Error(); err != nil || len(src.spans) == 0 {
				break
			}
			// The next span, on the same iterator and Pebble snapshot.
			src.it.SetBounds(src.spans[0].start, src.spans[0].end)
			src.spans = src.spans[1:]
			src.valid = src.it.First()
			continue
		}
		k, v := src.it.Key(), src.it.Value()
		src.chunk = binary.AppendUvarint(src.chunk, uint64(len(k)))
		src.chunk = append(src.chunk, k...)
		src.chunk = binary.AppendUvarint(src.chunk, uint64(len(v)))
		src.chunk = append(src.chunk, v...)
		src.Bytes += uint64(len(k) + len(v))
		src.Keys++
		src.valid = src.it.Next()
	}
	if err := src.it.Error(); err != nil {
		return nil, err
	}
	if len(src.chunk) == 0 {
		return nil, io.EOF
	}
	return src.chunk, nil
}

// Close releases the iterator and the Pebble snapshot.
func (src *SnapshotSource) Close() error {
	return errors.Join(src.it.Close(), src.snap.Close())
}

// StagedSnapshot is a received snapshot written to an sstable, waiting for
// raft to accept it. Exactly one of Apply (through Log.ApplySnapshot) or
// Abort releases it.
type StagedSnapshot struct {
	s      *Store
	desc   Descriptor
	path   string
	w      *sstable.Writer
	dec    SnapshotDecoder
	done   bool
	Keys   uint64
	Bytes  uint64
	closed bool
}

// StageSnapshot starts receiving a snapshot of desc's shard: the staged
// sstable starts with range deletions of its session and data spans.
func (s *Store) StageSnapshot(desc Descriptor) (*StagedSnapshot, error) {
	path := s.cfg.FS.PathJoin(s.stagingDir(), fmt.Sprintf("%d-%d.sst", desc.ShardID, s.seq.Add(1)))
	w, err := s.newSSTWriter(path)
	if err != nil {
		return nil, err
	}
	st := &StagedSnapshot{s: s, desc: desc, path: path, w: w, dec: NewSnapshotDecoder(desc)}
	for _, sp := range st.dec.spans {
		if err := w.DeleteRange(sp.start, sp.end); err != nil {
			st.Abort()
			return nil, err
		}
	}
	return st, nil
}

// SnapshotDecoder checks and decodes the chunks of a snapshot stream of one
// shard, as SnapshotSource produces them: length-prefixed key/value pairs,
// keys in strictly increasing order, each inside the shard's session span
// or data span. It needs no store: StagedSnapshot writes what it decodes,
// and a backup (package node/backup) checks its files with it.
type SnapshotDecoder struct {
	desc  Descriptor
	spans []span // accepted keys, in order
	lastK []byte
	Keys  uint64 // pairs decoded so far
	Bytes uint64 // bytes of their keys and values
}

// NewSnapshotDecoder returns a decoder of a snapshot stream of desc's shard.
func NewSnapshotDecoder(desc Descriptor) SnapshotDecoder {
	return SnapshotDecoder{desc: desc, spans: snapshotSpans(desc)}
}

// inSpans reports whether k lies in one of the snapshot's spans.
func (d *SnapshotDecoder) inSpans(k []byte) bool {
	for _, sp := range d.spans {
		if bytes.Compare(k, sp.start) >= 0 && bytes.Compare(k, sp.end) < 0 {
			return true
		}
	}
	return false
}

// Decode checks chunk and calls fn (if not nil) with each pair, in order;
// k and v are valid during the call only. A malformed chunk, a key outside
// the shard's spans or out of order is ErrBadSnapshot; fn's error is
// returned as is.
func (d *SnapshotDecoder) Decode(chunk []byte, fn func(k, v []byte) error) error {
	for len(chunk) > 0 {
		k, rest, ok := cutLengthPrefixed(chunk)
		if !ok {
			return fmt.Errorf("%w: truncated key", ErrBadSnapshot)
		}
		v, rest, ok := cutLengthPrefixed(rest)
		if !ok {
			return fmt.Errorf("%w: truncated value", ErrBadSnapshot)
		}
		chunk = rest
		if !d.inSpans(k) {
			return fmt.Errorf("%w: key %s outside shard %d", ErrBadSnapshot, DescribeKey(k), d.desc.ShardID)
		}
		if d.lastK != nil && bytes.Compare(k, d.lastK) <= 0 {
			return fmt.Errorf("%w: key %s out of order", ErrBadSnapshot, DescribeKey(k))
		}
		if fn != nil {
			if err := fn(k, v); err != nil {
				return err
			}
		}
		d.lastK = append(d.lastK[:0], k...)
		d.Keys++
		d.Bytes += uint64(len(k) + len(v))
	}
	return nil
}

func (s *Store) newSSTWriter(path string) (*sstable.Writer, error) {
	f, err := s.cfg.FS.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	opts := sstable.WriterOptions{TableFormat: s.db.TableFormat()}
	return sstable.NewWriter(objstorageprovider.NewFileWritable(f), opts), nil
}

// Write adds one chunk as produced by SnapshotSource.Next. Keys must be in
// strictly increasing order and inside the shard's session or data span
// (ErrBadSnapshot).
func (st *StagedSnapshot) Write(chunk []byte) error {
	if st.done {
		return fmt.Errorf("%w: write after finish", ErrBadSnapshot)
	}
	err := st.dec.Decode(chunk, func(k, v []byte) error {
		if err := st.w.Set(k, v); err != nil {
			return fmt.Errorf("storage: stage snapshot: %w", err)
		}
		return nil
	})
	st.Keys, st.Bytes = st.dec.Keys, st.dec.Bytes
	return err
}

func cutLengthPrefixed(b []byte) (field, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, nil, false
	}
	return b[w : w+int(n)], b[w+int(n):], true
}

// Finish completes the staged sstable; the snapshot can then be applied.
func (st *StagedSnapshot) Finish() error {
	if st.done {
		return nil
	}
	st.done = true
	st.closed = true
	if err := st.w.Close(); err != nil {
		st.removeFile()
		return fmt.Errorf("storage: finish snapshot: %w", err)
	}
	return nil
}

// Descriptor returns the descriptor the snapshot was staged for.
func (st *StagedSnapshot) Descriptor() Descriptor { return st.desc }

// Abort discards the staged snapshot.
func (st *StagedSnapshot) Abort() {
	if !st.closed {
		st.closed = true
		_ = st.w.Close()
	}
	st.done = true
	st.removeFile()
}

func (st *StagedSnapshot) removeFile() { _ = st.s.cfg.FS.Remove(st.path) }

// ApplySnapshot replaces the replica's state with the staged snapshot: data,
// log (emptied), applied and truncated state at snap's index, its ConfState
// and descriptor, and hs. Atomic and durable when it returns.
func (l *Log) ApplySnapshot(st *StagedSnapshot, snap raftpb.Snapshot, hs raftpb.HardState) error {
	if !st.done {
		return fmt.Errorf("%w: not finished", ErrBadSnapshot)
	}
	defer st.removeFile()
	desc, err := UnmarshalDescriptor(snap.Data)
	if err != nil {
		return err
	}
	if !desc.Equal(st.desc) {
		return fmt.Errorf("%w: staged for %+v, raft snapshot for %+v", ErrBadSnapshot, st.desc, desc)
	}
	m := snap.Metadata
	if hs.Commit < m.Index {
		hs.Commit = m.Index
	}
	if hs.Term < m.Term {
		hs.Term = m.Term
	}
	raftPath := st.path + ".raft"
	w, err := l.s.newSSTWriter(raftPath)
	if err != nil {
		return err
	}
	defer func() { _ = l.s.cfg.FS.Remove(raftPath) }()
	start, end := raftSpan(l.shardID)
	csBytes, _ := m.ConfState.Marshal()
	next := Log{shardID: l.shardID, hs: hs, applied: m.Index, appliedTerm: m.Term}
	if l.replicaID == 0 {
		return fmt.Errorf("%w: shard %d has no replica ID", ErrBadSnapshot, l.shardID)
	}
	// Keys in sorted order: c < d < h < i < t.
	err = errors.Join(
		w.DeleteRange(start, end),
		w.Set(raftKey(l.shardID, raftConf), csBytes),
		w.Set(raftKey(l.shardID, raftDesc), desc.Marshal()),
		w.Set(raftKey(l.shardID, raftHard), next.appendState(nil)),
		w.Set(raftKey(l.shardID, raftReplicaID), binary.BigEndian.AppendUint64(nil, l.replicaID)),
		w.Set(raftKey(l.shardID, raftTrunc), encode2(m.Index, m.Term)),
	)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("storage: snapshot raft state: %w", err)
	}
	if err := l.s.db.Ingest(context.Background(), []string{st.path, raftPath}); err != nil {
		return fmt.Errorf("storage: ingest snapshot of shard %d: %w", l.shardID, err)
	}
	l.hs, l.cs, l.desc = hs, m.ConfState, &desc
	l.applied, l.appliedTerm = m.Index, m.Term
	l.truncIndex, l.truncTerm, l.last = m.Index, m.Term, m.Index
	l.cache, l.cacheBytes, l.logBytes = nil, 0, 0
	return nil
}

// IngestData ingests a finished staged snapshot's sessions and data alone,
// with no raft state: the shard's data put in place before any replica of
// it exists here, as a restore from a backup does before the shard is
// created over it (CreateShard keeps the data span as it is). A shard with
// raft state here is refused with ErrShardExists. Atomic and durable when
// it returns; the staged snapshot is released either way.
func (s *Store) IngestData(st *StagedSnapshot) error {
	if !st.done {
		st.Abort()
		return fmt.Errorf("%w: not finished", ErrBadSnapshot)
	}
	defer st.removeFile()
	l, err := s.OpenLog(st.desc.ShardID)
	if err != nil {
		return err
	}
	if l.Initialized() || l.replicaID != 0 || l.last > 0 {
		return fmt.Errorf("%w: shard %d: its data is not ingested under a replica", ErrShardExists, st.desc.ShardID)
	}
	if err := s.db.Ingest(context.Background(), []string{st.path}); err != nil {
		return fmt.Errorf("storage: ingest data of shard %d: %w", st.desc.ShardID, err)
	}
	return nil
}
