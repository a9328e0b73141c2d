package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Errors returned by the storage package.
var (
	ErrClosed        = errors.New("storage: closed")
	ErrCorrupt       = errors.New("storage: corrupt record")
	ErrTombstoned    = errors.New("storage: replica was removed from this node")
	ErrShardExists   = errors.New("storage: shard already has state on this node")
	ErrIdentMismatch = errors.New("storage: store belongs to another cluster or node")
	// ErrStoreVersion: the store was written by a version of Flotilla whose
	// format this one does not read.
	ErrStoreVersion = errors.New("storage: unsupported store format version")
)

// Config configures a Store. The zero value of each field means its default.
type Config struct {
	// Dir is the directory of the Pebble store. Required.
	Dir string
	// FS is the file system; default vfs.Default. Tests pass
	// vfs.NewCrashableMem() so that a crash loses exactly the unsynced writes.
	FS vfs.FS
	// CacheBytes is Pebble's block cache, in bytes; default 64 MiB.
	CacheBytes int64
	// MemTableBytes is the size of one Pebble memtable, in bytes; default 32 MiB.
	MemTableBytes uint64
	// WALMinSyncInterval spaces the syncs of the write-ahead log: a sync
	// asked for sooner after the last one waits, so that more batches
	// share it (Pebble's option of that name). 0: no wait.
	WALMinSyncInterval time.Duration
	// EntryCacheEntries caps the entries each shard keeps in memory for raft
	// (the tail of its log); default 256. Entries beyond the cap are read
	// back from Pebble.
	EntryCacheEntries int
	// EntryCacheBytes caps the bytes of one shard's entry cache; default 1 MiB.
	EntryCacheBytes uint64
	// Logger receives Pebble's log lines; default slog.Default().
	Logger *slog.Logger
	// ReadOnly opens the store for inspection only (the admin tool's debug
	// commands): nothing is written, and the directory must exist.
	ReadOnly bool
}

// DefaultConfig returns a Config with every default filled in, for dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:               dir,
		FS:                vfs.Default,
		CacheBytes:        64 << 20,
		MemTableBytes:     32 << 20,
		EntryCacheEntries: 256,
		EntryCacheBytes:   1 << 20,
	}
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Dir)
	if c.FS == nil {
		c.FS = d.FS
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = d.CacheBytes
	}
	if c.MemTableBytes == 0 {
		c.MemTableBytes = d.MemTableBytes
	}
	if c.EntryCacheEntries == 0 {
		c.EntryCacheEntries = d.EntryCacheEntries
	}
	if c.EntryCacheBytes == 0 {
		c.EntryCacheBytes = d.EntryCacheBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks c without changing it.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("storage: Config.Dir is required")
	case c.CacheBytes < 0:
		return fmt.Errorf("storage: Config.CacheBytes %d < 0", c.CacheBytes)
	case c.EntryCacheEntries < 0:
		return fmt.Errorf("storage: Config.EntryCacheEntries %d < 0", c.EntryCacheEntries)
	}
	return nil
}

// Store is a node's one Pebble database. It is safe for concurrent use; each
// Log it opens belongs to one goroutine at a time (the shard's worker).
type Store struct {
	cfg    Config
	db     *pebble.DB
	closed atomic.Bool
	seq    atomic.Uint64 // names of staged snapshot files
	syncs  atomic.Uint64 // file syncs (syncfs.go)
}

// walMinSyncInterval is Pebble's option: nil when there is no interval.
func (c Config) walMinSyncInterval() func() time.Duration {
	if c.WALMinSyncInterval <= 0 {
		return nil
	}
	d := c.WALMinSyncInterval
	return func() time.Duration { return d }
}

// FileSyncs returns the number of file syncs (fsyncs) the store has done.
func (s *Store) FileSyncs() uint64 { return s.syncs.Load() }

// DiskUsage returns the space of the file system that holds the store, as
// the store's vfs.FS reports it (an error where it cannot, as on an
// in-memory FS). The store's own size is DB().Metrics().DiskSpaceUsage().
func (s *Store) DiskUsage() (vfs.DiskUsage, error) { return s.cfg.FS.GetDiskUsage(s.cfg.Dir) }

// Open opens (creating if needed) the store in cfg.Dir.
func Open(cfg Config) (*Store, error) {
	cfg = cfg.withDefaults() // fill, then check (Pebble's order)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cache := pebble.NewCache(cfg.CacheBytes)
	defer cache.Unref()
	s := &Store{cfg: cfg}
	opts := &pebble.Options{
		FS:                 syncFS{FS: cfg.FS, n: &s.syncs},
		Cache:              cache,
		MemTableSize:       cfg.MemTableBytes,
		WALMinSyncInterval: cfg.walMinSyncInterval(),
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{l: cfg.Logger},
		ReadOnly:           cfg.ReadOnly,
	}
	if cfg.ReadOnly {
		opts.ErrorIfNotExists = true
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", cfg.Dir, err)
	}
	s.db = db
	if err := s.checkVersion(); err != nil {
		db.Close()
		return nil, err
	}
	if cfg.ReadOnly {
		return s, nil
	}
	if err := cfg.FS.MkdirAll(s.stagingDir(), 0o755); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: %w", err)
	}
	// Staged snapshots of a previous run were never ingested: drop them.
	if names, err := cfg.FS.List(s.stagingDir()); err == nil {
		for _, n := range names {
			_ = cfg.FS.Remove(cfg.FS.PathJoin(s.stagingDir(), n))
		}
	}
	return s, nil
}

// FormatVersion is the store format this package reads and writes. Version
// 2: replica IDs distinct from node IDs (descriptors with replicas, a
// replica ID record per shard, tombstones holding the next replica ID).
// Stores of version 1 (no version record) are refused: there is no
// deployed data to migrate.
const FormatVersion = 2

// checkVersion refuses a store of another format version, and stamps a new
// store with FormatVersion.
func (s *Store) checkVersion() error {
	v, err := s.get(versionKey)
	if err != nil {
		return err
	}
	if v != nil {
		if len(v) != 8 || binary.BigEndian.Uint64(v) != FormatVersion {
			return fmt.Errorf("%w: %s holds format %x, this build reads format %d; start with an empty data directory",
				ErrStoreVersion, s.cfg.Dir, v, FormatVersion)
		}
		return nil
	}
	it, err := s.db.NewIter(nil)
	if err != nil {
		return err
	}
	empty := !it.First()
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("%w: %s was written by an older Flotilla (format 1), this build reads format %d; start with an empty data directory",
			ErrStoreVersion, s.cfg.Dir, FormatVersion)
	}
	if s.cfg.ReadOnly {
		return nil
	}
	return s.db.Set(versionKey, binary.BigEndian.AppendUint64(nil, FormatVersion), pebble.Sync)
}

// pebbleLogger bridges Pebble's logger to slog: its Infof (WAL recovery,
// ingestion notes) at Debug, Errorf at Error; Fatalf logs at Error and
// panics, as Pebble expects it not to return.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...interface{}) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "from", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...interface{}) {
	p.l.Error(fmt.Sprintf(format, args...), "from", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "from", "pebble")
	panic("pebble: " + msg)
}

func (s *Store) stagingDir() string { return s.cfg.FS.PathJoin(s.cfg.Dir, "snapshots") }

// DB returns the underlying Pebble database, for reads of user data and for
// the engine's batches.
func (s *Store) DB() *pebble.DB { return s.db }

// Close closes the database. Logs opened from it must no longer be used.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	return s.db.Close()
}

// Ident is a node's identity, written once when the node joins a cluster.
type Ident struct {
	ClusterID uint64
	NodeID    uint64
}

// Ident returns the stored identity; ok is false on a fresh store.
func (s *Store) Ident() (id Ident, ok bool, err error) {
	v, err := s.get(identKey)
	if err != nil || v == nil {
		return Ident{}, false, err
	}
	if len(v) != 16 {
		return Ident{}, false, fmt.Errorf("%w: ident of %d bytes", ErrCorrupt, len(v))
	}
	return Ident{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])}, true, nil
}

// EnsureIdent stores id on a fresh store, and checks it against the stored
// one otherwise (ErrIdentMismatch).
func (s *Store) EnsureIdent(id Ident) error {
	old, ok, err := s.Ident()
	if err != nil {
		return err
	}
	if ok {
		if old != id {
			return fmt.Errorf("%w: stored %+v, asked %+v", ErrIdentMismatch, old, id)
		}
		return nil
	}
	v := binary.BigEndian.AppendUint64(nil, id.ClusterID)
	v = binary.BigEndian.AppendUint64(v, id.NodeID)
	return s.db.Set(identKey, v, pebble.Sync)
}

// get returns a copy of the value at k, or nil if absent.
func (s *Store) get(k []byte) ([]byte, error) {
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", DescribeKey(k), err)
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, nil
}

// Tombstone returns the tombstone of shardID's removed replicas on this
// node: the lowest replica ID a new replica of the shard may have here (ok is
// false when no replica of it was removed from this node).
func (s *Store) Tombstone(shardID uint64) (nextReplicaID uint64, ok bool, err error) {
	v, err := s.get(tombstoneKey(shardID))
	if err != nil || v == nil {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("%w: tombstone of shard %d has %d bytes", ErrCorrupt, shardID, len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// Tombstones returns every tombstone: shard ID -> the lowest replica ID a
// new replica of the shard may have on this node.
func (s *Store) Tombstones() (map[uint64]uint64, error) {
	out := map[uint64]uint64{}
	err := s.scanLocalMeta(metaTomb, func(id uint64, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: tombstone of shard %d: %d bytes", ErrCorrupt, id, len(v))
		}
		out[id] = binary.BigEndian.Uint64(v)
		return nil
	})
	return out, err
}

// scanLocalMeta calls fn with the shard ID and value of every node-local
// record of kind (see localMetaKey), in shard ID order.
func (s *Store) scanLocalMeta(kind byte, fn func(shardID uint64, v []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixLocal, localMeta, kind}, UpperBound: []byte{prefixLocal, localMeta, kind + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if len(it.Key()) != 11 {
			return fmt.Errorf("%w: node-local record %s", ErrCorrupt, DescribeKey(it.Key()))
		}
		if err := fn(binary.BigEndian.Uint64(it.Key()[3:]), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// ShardIDs lists every shard with raft state on this node, in ID order: one
// seek per shard, never a scan of the logs.
func (s *Store) ShardIDs() ([]uint64, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixLocal, localRaft},
		UpperBound: []byte{prefixLocal, localRaft + 1},
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []uint64
	for valid := it.First(); valid; {
		k := it.Key()
		if len(k) < raftKeyLen {
			return out, fmt.Errorf("%w: key %x", ErrCorrupt, k)
		}
		id := binary.BigEndian.Uint64(k[2:10])
		out = append(out, id)
		if id == ^uint64(0) {
			break
		}
		valid = it.SeekGE(raftPrefix(id + 1))
	}
	return out, it.Error()
}

// DestroyReplica deletes every key of shardID's replica on this node (raft
// state and, when desc is non-nil, its user data) and leaves a tombstone:
// no replica of the shard with an ID below nextReplicaID may exist here
// again, so that a stale message cannot recreate a removed replica, while a
// replica added back later under a fresh ID can be. Synced.
func (s *Store) DestroyReplica(shardID uint64, desc *Descriptor, nextReplicaID uint64) error {
	b := s.NewBatch()
	defer b.Close()
	if err := s.DestroyReplicaIn(b, shardID, desc, nextReplicaID); err != nil {
		return err
	}
	return b.Commit(true)
}

// DestroyReplicaIn is DestroyReplica with its writes added to b (which
// must be committed with sync), so that the removal goes with others in
// one synced write (the recovery from the loss of a majority).
func (s *Store) DestroyReplicaIn(b *Batch, shardID uint64, desc *Descriptor, nextReplicaID uint64) error {
	start, end := raftSpan(shardID)
	b.deleteRange(start, end)
	ss, se := SessionSpan(shardID) // its client sessions (session.go)
	b.deleteRange(ss, se)
	if desc != nil {
		ds, de := desc.DataSpan()
		b.deleteRange(ds, de)
	}
	if old, ok, err := s.Tombstone(shardID); err != nil {
		return err
	} else if ok && old > nextReplicaID {
		nextReplicaID = old
	}
	b.set(tombstoneKey(shardID), binary.BigEndian.AppendUint64(nil, nextReplicaID))
	b.sync = true
	return nil
}

// DataSize estimates the bytes on disk of desc's data: Pebble's estimate
// from its tables' metadata (cheap: no data is read), which counts whole
// tables at the range's edges and nothing still in the memtables.
func (s *Store) DataSize(desc Descriptor) (uint64, error) {
	start, end := desc.DataSpan()
	return s.db.EstimateDiskUsage(start, end)
}
