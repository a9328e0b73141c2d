package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

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
	// EntryCacheEntries caps the entries each shard keeps in memory for raft
	// (the tail of its log); default 256. Entries beyond the cap are read
	// back from Pebble.
	EntryCacheEntries int
	// EntryCacheBytes caps the bytes of one shard's entry cache; default 1 MiB.
	EntryCacheBytes uint64
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
}

// Open opens (creating if needed) the store in cfg.Dir.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cache := pebble.NewCache(cfg.CacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		FS:                 cfg.FS,
		Cache:              cache,
		MemTableSize:       cfg.MemTableBytes,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
		ReadOnly:           cfg.ReadOnly,
	}
	if cfg.ReadOnly {
		opts.ErrorIfNotExists = true
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", cfg.Dir, err)
	}
	s := &Store{cfg: cfg, db: db}
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

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{})  {}
func (quietLogger) Errorf(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf("pebble: "+format, args...))
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

// Tombstoned reports whether a replica of shardID was removed from this node.
func (s *Store) Tombstoned(shardID uint64) (bool, error) {
	v, err := s.get(tombstoneKey(shardID))
	return v != nil, err
}

// Tombstones lists the shards whose replicas were removed from this node.
func (s *Store) Tombstones() ([]uint64, error) {
	p := tombstonePrefix()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: []byte{prefixLocal, localMeta, metaTomb + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []uint64
	for it.First(); it.Valid(); it.Next() {
		out = append(out, binary.BigEndian.Uint64(it.Key()[3:]))
	}
	return out, it.Error()
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

// Descriptor is what a shard's replica knows of the shard outside raft: the
// hash range [Start, Last] of the user data it owns and the generation of
// that range (bumped by splits and merges).
type Descriptor struct {
	ShardID    uint64
	Start      uint64
	Last       uint64
	Generation uint64
}

// Contains reports whether hash lies in d's range.
func (d Descriptor) Contains(hash uint64) bool { return hash >= d.Start && hash <= d.Last }

// Overlaps reports whether d and o share any stored data: hash ranges
// overlap within one key space (a system shard has a space of its own).
func (d Descriptor) Overlaps(o Descriptor) bool {
	if (IsSystemShard(d.ShardID) || IsSystemShard(o.ShardID)) && d.ShardID != o.ShardID {
		return false
	}
	return d.Start <= o.Last && o.Start <= d.Last
}

// Marshal encodes d in 32 bytes.
func (d Descriptor) Marshal() []byte {
	b := make([]byte, 0, 32)
	b = binary.BigEndian.AppendUint64(b, d.ShardID)
	b = binary.BigEndian.AppendUint64(b, d.Start)
	b = binary.BigEndian.AppendUint64(b, d.Last)
	return binary.BigEndian.AppendUint64(b, d.Generation)
}

// UnmarshalDescriptor decodes what Marshal encoded.
func UnmarshalDescriptor(b []byte) (Descriptor, error) {
	if len(b) != 32 {
		return Descriptor{}, fmt.Errorf("%w: descriptor of %d bytes", ErrCorrupt, len(b))
	}
	d := Descriptor{
		ShardID:    binary.BigEndian.Uint64(b),
		Start:      binary.BigEndian.Uint64(b[8:]),
		Last:       binary.BigEndian.Uint64(b[16:]),
		Generation: binary.BigEndian.Uint64(b[24:]),
	}
	if d.Start > d.Last {
		return Descriptor{}, fmt.Errorf("%w: descriptor range [%d, %d]", ErrCorrupt, d.Start, d.Last)
	}
	return d, nil
}

// DestroyReplica deletes every key of shardID's replica on this node (raft
// state and, when desc is non-nil, its user data) and leaves a tombstone so
// that a stale message cannot recreate it. Synced.
func (s *Store) DestroyReplica(shardID uint64, desc *Descriptor) error {
	b := s.db.NewBatch()
	defer b.Close()
	start, end := raftSpan(shardID)
	if err := b.DeleteRange(start, end, nil); err != nil {
		return err
	}
	ss, se := SessionSpan(shardID) // its client sessions (session.go)
	if err := b.DeleteRange(ss, se, nil); err != nil {
		return err
	}
	if desc != nil {
		ds, de := desc.DataSpan()
		if err := b.DeleteRange(ds, de, nil); err != nil {
			return err
		}
	}
	if err := b.Set(tombstoneKey(shardID), []byte{1}, nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// ClearTombstone removes shardID's tombstone, so that the shard may be
// created on this node again by an explicit request (never by a message).
func (s *Store) ClearTombstone(shardID uint64) error {
	return s.db.Delete(tombstoneKey(shardID), pebble.Sync)
}
