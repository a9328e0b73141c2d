package meta

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/flotilla-db/flotilla/engine"
)

// Engine is what the package needs of the engine: the meta shard's
// key-value commands and queries (engine.PutCommand, CASCommand,
// BatchCommand, GetQuery, ScanQuery). *engine.Engine has it. Its methods
// may be called concurrently.
type Engine interface {
	// Propose replicates cmd through shardID's log and returns its result
	// once applied; this node must lead the shard.
	Propose(ctx context.Context, shardID uint64, cmd []byte) ([]byte, error)
	// Read answers query reflecting every write acknowledged before the
	// call; this node must lead the shard.
	Read(ctx context.Context, shardID uint64, query []byte) ([]byte, error)
	// ReadLocal answers query from this node's replica as it is: possibly
	// stale, never torn.
	ReadLocal(shardID uint64, query []byte) ([]byte, error)
}

// Config configures a Store. New copies it; zero fields take the value of
// DefaultConfig.
type Config struct {
	// MaxProposalBytes bounds one write: set it to the engine's
	// Config.MaxProposalBytes. Default 1 MiB, the engine's default.
	MaxProposalBytes int
	// ScanPage is how many keys one scan query returns; default 1,000.
	ScanPage int
	// ChangeLogVersions is how many ring versions keep their change entry:
	// a Watcher further behind reads every record again. Default 4,096.
	ChangeLogVersions int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxProposalBytes: 1 << 20, ScanPage: 1000, ChangeLogVersions: 4096}
}

// Validate checks c without changing it.
func (c Config) Validate() error {
	var errs []error
	if c.MaxProposalBytes != 0 && c.MaxProposalBytes < 4<<10 {
		errs = append(errs, fmt.Errorf("MaxProposalBytes %d < 4 KiB", c.MaxProposalBytes))
	}
	if c.ScanPage < 0 {
		errs = append(errs, fmt.Errorf("ScanPage %d < 0", c.ScanPage))
	}
	if c.ChangeLogVersions < 0 {
		errs = append(errs, fmt.Errorf("ChangeLogVersions %d < 0", c.ChangeLogVersions))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("meta: invalid config: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxProposalBytes == 0 {
		c.MaxProposalBytes = d.MaxProposalBytes
	}
	if c.ScanPage == 0 {
		c.ScanPage = d.ScanPage
	}
	if c.ChangeLogVersions == 0 {
		c.ChangeLogVersions = d.ChangeLogVersions
	}
	return c
}

// Consistency says how fresh a read must be.
type Consistency uint8

const (
	// Local reads this node's replica of the meta shard as it is: possibly
	// stale, never torn, no leader needed. For routers and watchers.
	Local Consistency = iota
	// Linearizable reflects every write acknowledged before the call; this
	// node must lead the meta shard. For decisions.
	Linearizable
)

// Store reads and writes the meta shard's records through one engine. It
// holds no mutable state and is safe for concurrent use.
type Store struct {
	e   Engine
	cfg Config
}

// New returns a Store on e; cfg is copied.
func New(e Engine, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{e: e, cfg: cfg.withDefaults()}, nil
}

// query answers q, linearizably or from the local replica.
func (s *Store) query(ctx context.Context, q []byte, c Consistency) ([]byte, error) {
	if c == Linearizable {
		return s.e.Read(ctx, ShardID, q)
	}
	return s.e.ReadLocal(ShardID, q)
}

// get returns key's raw value.
func (s *Store) get(ctx context.Context, key []byte, c Consistency) ([]byte, bool, error) {
	res, err := s.query(ctx, engine.GetQuery(key), c)
	if err != nil {
		return nil, false, err
	}
	return engine.DecodeGetResult(res)
}

// decode unmarshals a record's value.
func decode[T any](key, raw []byte) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	return v, nil
}

// getRecord reads and decodes key; the zero T and found false if absent.
func getRecord[T any](ctx context.Context, s *Store, key []byte, c Consistency) (v T, raw []byte, found bool, err error) {
	raw, found, err = s.get(ctx, key, c)
	if err != nil || !found {
		return v, nil, false, err
	}
	v, err = decode[T](key, raw)
	return v, raw, err == nil, err
}

// scan calls fn with every key of the meta shard that starts with prefix,
// page by page (keys come in hash order). Linearizable: the first page is
// read linearizably, the others locally after it, so each is at least as
// fresh.
func (s *Store) scan(ctx context.Context, prefix string, c Consistency, fn func(key, value []byte) error) error {
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("meta: scan: %w", err)
		}
		res, err := s.query(ctx, engine.ScanQuery(after, s.cfg.ScanPage), c)
		if err != nil {
			return err
		}
		c = Local
		sr, err := engine.DecodeScanResult(res)
		if err != nil {
			return err
		}
		for _, kv := range sr.Pairs {
			if bytes.HasPrefix(kv.Key, []byte(prefix)) {
				if err := fn(kv.Key, kv.Value); err != nil {
					return err
				}
			}
		}
		if sr.Next == nil {
			return nil
		}
		after = sr.Next
	}
}

// Header returns the ring header; the zero header before the first shard
// record is written.
func (s *Store) Header(ctx context.Context, c Consistency) (RingHeader, error) {
	h, _, _, err := getRecord[RingHeader](ctx, s, []byte(KeyRing), c)
	return h, err
}

// getExisting reads and decodes key, or returns an error matching
// ErrNotFound.
func getExisting[T any](ctx context.Context, s *Store, key []byte, c Consistency) (T, error) {
	v, _, found, err := getRecord[T](ctx, s, key, c)
	if err == nil && !found {
		err = fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return v, err
}

// Shard returns shard shardID's record, or an error matching ErrNotFound.
func (s *Store) Shard(ctx context.Context, shardID uint64, c Consistency) (ShardRecord, error) {
	return getExisting[ShardRecord](ctx, s, ShardKey(shardID), c)
}

// scanShards calls fn with every shard record of the local copy, in no
// order.
func (s *Store) scanShards(ctx context.Context, fn func(ShardRecord)) error {
	return s.scan(ctx, ShardPrefix, Local, func(key, value []byte) error {
		r, err := decode[ShardRecord](key, value)
		if err == nil {
			fn(r)
		}
		return err
	})
}

// snapshotTries is how many times Shards scans while writes land.
const snapshotTries = 3

// Shards returns every shard record, sorted by shard ID, and the ring
// header. It scans the whole meta shard; the header is read before the
// scan and again after it, and the scan repeated (up to 3 times) if it
// changed, so that the records normally are the state at the header's
// version. If writes kept landing, each record is at least as new as the
// header. Linearizable also makes the first read a linearizable one.
func (s *Store) Shards(ctx context.Context, c Consistency) ([]ShardRecord, RingHeader, error) {
	h, err := s.Header(ctx, c)
	if err != nil {
		return nil, RingHeader{}, err
	}
	var out []ShardRecord
	for try := 1; ; try++ {
		out = out[:0]
		if err := s.scanShards(ctx, func(r ShardRecord) { out = append(out, r) }); err != nil {
			return nil, RingHeader{}, err
		}
		after, err := s.Header(ctx, Local)
		if err != nil {
			return nil, RingHeader{}, err
		}
		if after.Version == h.Version || try == snapshotTries {
			break
		}
		h = after
	}
	slices.SortFunc(out, func(a, b ShardRecord) int { return cmp.Compare(a.ShardID, b.ShardID) })
	return out, h, nil
}

// Cluster returns the cluster record, or an error matching ErrNotFound.
func (s *Store) Cluster(ctx context.Context, c Consistency) (ClusterRecord, error) {
	return getExisting[ClusterRecord](ctx, s, []byte(KeyCluster), c)
}

// NodeIndex returns the node index; the zero index before the first node
// record is written.
func (s *Store) NodeIndex(ctx context.Context, c Consistency) (NodeIndex, error) {
	x, _, _, err := getRecord[NodeIndex](ctx, s, []byte(KeyNodes), c)
	return x, err
}

// Nodes returns every node record, sorted by node ID, and the index that
// lists them (one read of the index, one per node: no scan).
func (s *Store) Nodes(ctx context.Context, c Consistency) ([]NodeRecord, NodeIndex, error) {
	x, err := s.NodeIndex(ctx, c)
	if err != nil {
		return nil, NodeIndex{}, err
	}
	out := make([]NodeRecord, 0, len(x.IDs))
	for _, id := range x.IDs {
		key := NodeKey(id)
		r, _, found, err := getRecord[NodeRecord](ctx, s, key, Local)
		if err != nil {
			return nil, NodeIndex{}, err
		}
		if !found {
			return nil, NodeIndex{}, fmt.Errorf("%w: %s is in the node index but absent", ErrCorrupt, key)
		}
		out = append(out, r)
	}
	return out, x, nil
}

// Node returns node nodeID's record, or an error matching ErrNotFound.
func (s *Store) Node(ctx context.Context, nodeID uint64, c Consistency) (NodeRecord, error) {
	return getExisting[NodeRecord](ctx, s, NodeKey(nodeID), c)
}
