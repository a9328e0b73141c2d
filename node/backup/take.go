package backup

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
)

// Cluster is how a backup reaches the cluster. flotillactl implements it
// over its --endpoints.
type Cluster interface {
	// Status and Shards are the Admin service's, answered by any node.
	Status(ctx context.Context) (*nodepb.StatusResponse, error)
	Shards(ctx context.Context) (*nodepb.ShardsResponse, error)
	// Node returns an Admin client of the node at the client address addr.
	Node(addr string) (nodepb.AdminClient, error)
}

// Config configures Take.
type Config struct {
	// Dir is the directory to write the backup into: new or empty.
	Dir string
	// Parallel is how many shards are read at once; default 4.
	Parallel int
	// ShardTimeout bounds the read of one shard from one replica; default
	// 10 minutes.
	ShardTimeout time.Duration
	// Rounds is how many times each replica of a shard is tried, with a
	// backoff between rounds, before the backup fails (a shard frozen for
	// a merge, or electing, is served again soon); default 3.
	Rounds int
	// Logger; default slog.Default(). A replica that failed and the next
	// one tried are logged at Info.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default filled in, for dir.
func DefaultConfig(dir string) Config {
	return Config{Dir: dir, Parallel: 4, ShardTimeout: 10 * time.Minute, Rounds: 3, Logger: slog.Default()}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Dir)
	if c.Parallel == 0 {
		c.Parallel = d.Parallel
	}
	if c.ShardTimeout == 0 {
		c.ShardTimeout = d.ShardTimeout
	}
	if c.Rounds == 0 {
		c.Rounds = d.Rounds
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return c
}

// Validate checks c without changing it.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("backup: Config.Dir is required")
	case c.Parallel < 0 || c.ShardTimeout < 0 || c.Rounds < 0:
		return fmt.Errorf("backup: Config.Parallel %d, ShardTimeout %v and Rounds %d must not be negative", c.Parallel, c.ShardTimeout, c.Rounds)
	}
	return nil
}

// Take backs up every user shard of the cluster into cfg.Dir (see the
// package doc): the shards are listed, each is read from one of its
// replicas (the leader first; another on failure), written to its file,
// and the MANIFEST is written last. A directory that is not empty is
// refused (ErrDirNotEmpty) and left alone; a backup that fails removes
// what it wrote. Errors: ErrShardUnavailable (no replica of a shard served
// it), ErrRingChanged (retry), ctx's, the cluster's.
func Take(ctx context.Context, cfg Config, cl Cluster) (*Manifest, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	created, err := prepareDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	m, err := take(ctx, cfg, cl)
	if err != nil {
		if created {
			_ = os.RemoveAll(cfg.Dir)
		} else if entries, rerr := os.ReadDir(cfg.Dir); rerr == nil {
			for _, e := range entries {
				_ = os.RemoveAll(filepath.Join(cfg.Dir, e.Name()))
			}
		}
		return nil, err
	}
	return m, nil
}

// prepareDir makes sure dir exists and is empty; created reports that it
// made it.
func prepareDir(dir string) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case err == nil && len(entries) > 0:
		return false, fmt.Errorf("%w: %s holds %d entries (%s, ...); give an empty or new directory", ErrDirNotEmpty, dir, len(entries), entries[0].Name())
	case err == nil:
		return false, nil
	case !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("backup: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("backup: %w", err)
	}
	return true, nil
}

// target is a shard to read and the client addresses of its replicas, in
// the order to try them.
type target struct {
	shardID uint64
	addrs   []string
	nodes   []uint64
}

func take(ctx context.Context, cfg Config, cl Cluster) (*Manifest, error) {
	m := &Manifest{Format: ManifestFormat, StoreFormat: storage.FormatVersion, Started: time.Now().UTC()}
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: cluster status: %w", err)
	}
	m.ClusterID = st.GetClusterId()
	addrs := map[uint64]string{}
	for _, ns := range st.GetNodes() {
		if n := ns.GetNode(); n.GetClientAddr() != "" && ns.GetState() != "removed" {
			addrs[n.GetNodeId()] = n.GetClientAddr()
		}
	}
	sh, err := cl.Shards(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: list the shards: %w", err)
	}
	var targets []target
	for _, si := range sh.GetShards() {
		if si.GetSystem() || storage.IsSystemShard(si.GetShardId()) {
			continue
		}
		targets = append(targets, targetOf(si, addrs))
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("backup: the cluster lists no user shard")
	}
	results := make([]Shard, len(targets))
	replication := make([]uint32, len(targets))
	errs := make([]error, len(targets))
	work := make(chan int)
	var wg sync.WaitGroup
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(cfg.Parallel, len(targets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				results[i], replication[i], errs[i] = fetchShard(wctx, cfg, cl, targets[i])
				if errs[i] != nil {
					cancel() // the backup fails: the others need not go on
				}
			}
		}()
	}
feed:
	for i := range targets {
		select {
		case work <- i:
		case <-wctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := firstError(errs, ctx); err != nil {
		return nil, err
	}
	m.Finished = time.Now().UTC()
	m.Shards = results
	slices.SortFunc(m.Shards, func(a, b Shard) int { return cmp.Compare(a.Start, b.Start) })
	if err := checkRing(m.Shards); err != nil {
		return nil, fmt.Errorf("%w (a shard was split or merged; retry): %v", ErrRingChanged, err)
	}
	for _, r := range replication {
		m.Replication = max(m.Replication, int(r))
	}
	if m.Replication == 0 {
		m.Replication = 1 // static peers: no cluster record
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(cfg.Dir, ManifestFile, append(b, '\n')); err != nil {
		return nil, fmt.Errorf("backup: write the manifest: %w", err)
	}
	return m, nil
}

// firstError returns the error of the first shard that failed for its own
// reason (the others were cancelled after it), or ctx's.
func firstError(errs []error, ctx context.Context) error {
	var cancelled error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) && ctx.Err() == nil:
			cancelled = err
		default:
			return err
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("backup: %w", ctx.Err())
	}
	return cancelled
}

// targetOf orders si's replicas for a backup read: the leader, then the
// voters, then the others; replicas on nodes with no known address are
// left out.
func targetOf(si *nodepb.ShardInfo, addrs map[uint64]string) target {
	t := target{shardID: si.GetShardId()}
	reps := slices.Clone(si.GetReplicas())
	rank := func(r *nodepb.Replica) int {
		switch {
		case r.GetNodeId() == si.GetLeader():
			return 0
		case r.GetRole() == "voter":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(reps, func(a, b *nodepb.Replica) int { return cmp.Compare(rank(a), rank(b)) })
	for _, r := range reps {
		if a, ok := addrs[r.GetNodeId()]; ok {
			t.addrs, t.nodes = append(t.addrs, a), append(t.nodes, r.GetNodeId())
		}
	}
	return t
}

// fetchShard reads t's shard from its replicas in turn until one serves
// it whole, into its file: cfg.Rounds rounds over the replicas, with a
// backoff between rounds.
func fetchShard(ctx context.Context, cfg Config, cl Cluster, t target) (Shard, uint32, error) {
	if len(t.addrs) == 0 {
		return Shard{}, 0, fmt.Errorf("%w: shard %d: no replica on a node with a known address", ErrShardUnavailable, t.shardID)
	}
	b, err := backoff.New(backoff.Config{Initial: 250 * time.Millisecond, Max: 2 * time.Second})
	if err != nil {
		return Shard{}, 0, err
	}
	var errs []error
	for round := 1; ; round++ {
		errs = errs[:0]
		for i, addr := range t.addrs {
			s, repl, err := fetchFrom(ctx, cfg, cl, t.shardID, addr)
			if err == nil {
				return s, repl, nil
			}
			if ctx.Err() != nil {
				return Shard{}, 0, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("node %d at %s: %w", t.nodes[i], addr, err))
			cfg.Logger.Info("backup: a replica failed, trying the next", "shard", t.shardID, "node", t.nodes[i], "round", round, "err", err)
		}
		if round >= cfg.Rounds {
			return Shard{}, 0, fmt.Errorf("%w: shard %d (%d rounds): %w", ErrShardUnavailable, t.shardID, round, errors.Join(errs...))
		}
		if err := b.Wait(ctx); err != nil {
			return Shard{}, 0, err
		}
	}
}

// fetchFrom reads shardID from the node at addr into its file: under a
// temporary name, synced, then renamed.
func fetchFrom(ctx context.Context, cfg Config, cl Cluster, shardID uint64, addr string) (s Shard, replication uint32, err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ShardTimeout)
	defer cancel()
	a, err := cl.Node(addr)
	if err != nil {
		return Shard{}, 0, err
	}
	stream, err := a.Backup(ctx, &nodepb.BackupRequest{ShardId: shardID})
	if err != nil {
		return Shard{}, 0, err
	}
	first, err := stream.Recv()
	if err != nil {
		return Shard{}, 0, err
	}
	h := first.GetHeader()
	if h == nil || h.GetShardId() != shardID || h.GetStart() > h.GetLast() {
		return Shard{}, 0, fmt.Errorf("backup: shard %d: the stream does not start with the shard's header", shardID)
	}
	if h.GetStoreFormat() != storage.FormatVersion {
		return Shard{}, 0, fmt.Errorf("%w: the node sends keys of store format %d, this build writes %d", ErrFormat, h.GetStoreFormat(), storage.FormatVersion)
	}
	s = Shard{ShardID: shardID, Start: h.GetStart(), Last: h.GetLast(), Generation: h.GetGeneration(),
		AppliedIndex: h.GetAppliedIndex(), AppliedTerm: h.GetAppliedTerm(), Node: h.GetNodeId(), File: shardFileName(shardID)}
	tmp := filepath.Join(cfg.Dir, "."+s.File+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return Shard{}, 0, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	hash := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, hash), 1<<20)
	count := &countWriter{w: w}
	dec := storage.NewSnapshotDecoder(s.descriptor())
	if _, err := count.Write([]byte(fileMagic)); err != nil {
		return Shard{}, 0, err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return Shard{}, 0, fmt.Errorf("backup: shard %d: the stream ended without its trailer", shardID)
		}
		if err != nil {
			return Shard{}, 0, err
		}
		if tr := msg.GetTrailer(); tr != nil {
			if tr.GetKeys() != dec.Keys || tr.GetBytes() != dec.Bytes {
				return Shard{}, 0, fmt.Errorf("backup: shard %d: received %d pairs of %d bytes, the node sent %d of %d", shardID, dec.Keys, dec.Bytes, tr.GetKeys(), tr.GetBytes())
			}
			break
		}
		chunk := msg.GetData()
		if len(chunk) == 0 {
			return Shard{}, 0, fmt.Errorf("backup: shard %d: an empty or unknown part in the stream", shardID)
		}
		if err := dec.Decode(chunk, nil); err != nil {
			return Shard{}, 0, fmt.Errorf("backup: shard %d: %w", shardID, err)
		}
		n := binary.PutUvarint(lenBuf[:], uint64(len(chunk)))
		if _, err := count.Write(lenBuf[:n]); err != nil {
			return Shard{}, 0, err
		}
		if _, err := count.Write(chunk); err != nil {
			return Shard{}, 0, err
		}
	}
	if err = w.Flush(); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	f = nil
	if err == nil {
		err = os.Rename(tmp, filepath.Join(cfg.Dir, s.File))
	}
	if err == nil {
		err = syncDir(cfg.Dir)
	}
	if err != nil {
		return Shard{}, 0, fmt.Errorf("backup: write shard %d: %w", shardID, err)
	}
	s.Size, s.SHA256, s.Keys, s.Bytes = count.n, hex.EncodeToString(hash.Sum(nil)), dec.Keys, dec.Bytes
	return s, h.GetReplication(), nil
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
