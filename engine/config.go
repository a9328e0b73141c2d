package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/router"
)

// Config configures an Engine. New copies it; zero fields take the value of
// DefaultConfig.
type Config struct {
	// NodeID is this node's ID, never reused in the cluster. Required.
	NodeID uint64
	// ClusterID is checked against the store's (and carried by transports).
	// Required.
	ClusterID uint64
	// Dir is the directory of the node's Pebble store. Required.
	Dir string
	// FS is the file system of the store; default vfs.Default.
	FS vfs.FS
	// Workers is the number of worker goroutines; shards are assigned to
	// workers by hash. Default: GOMAXPROCS.
	Workers int
	// PriorityShards are served apart from the others: by a worker of
	// their own (one more than Workers), whose cycles a bulk of other
	// shards never makes long, and with their raft messages sent ahead of
	// the queue when the transport can (PrioritySender). A node gives its
	// meta shard: the control plane's reads and writes (a node's
	// registration, the placement driver's records) stay quick while a
	// start elects 100,000 shards. Keep the list short.
	PriorityShards []uint64
	// TickInterval is the raft tick; default 100ms. Ignored when Ticks is set.
	TickInterval time.Duration
	// Ticks, when non-nil, replaces the ticker: every receive is one tick
	// (tests drive a manual clock through it).
	Ticks <-chan struct{}
	// ElectionTicks (default 10) and HeartbeatTicks (default 1) are in ticks.
	ElectionTicks  int
	HeartbeatTicks int
	// MaxProposalBytes bounds one command; default 1 MiB. Larger proposals
	// fail with ErrProposalTooLarge.
	MaxProposalBytes int
	// MaxSizePerMsg bounds the entries of one append message; default 1 MiB.
	MaxSizePerMsg uint64
	// MaxInflightMsgs bounds in-flight appends per follower; default 256.
	MaxInflightMsgs int
	// MaxUncommittedBytes bounds a leader's uncommitted proposals per shard;
	// default 16 MiB.
	MaxUncommittedBytes uint64
	// LogTruncateBytes: a shard whose log above its truncation point exceeds
	// this many bytes is truncated; default 4 MiB.
	LogTruncateBytes uint64
	// LogTruncateEntries: the same, in entries; default 10,000.
	LogTruncateEntries uint64
	// SnapshotChunkBytes is the size of one snapshot chunk; default 256 KiB.
	SnapshotChunkBytes int
	// MaxConcurrentSnapshots bounds outgoing snapshot streams; default 4.
	MaxConcurrentSnapshots int
	// StateMachine applies commands; default the built-in key-value store.
	StateMachine StateMachine
	// PartitionRule places user keys in the hash space (the router's rule);
	// default: the whole key.
	PartitionRule router.PartitionRule
	// StoreCacheBytes is Pebble's block cache; default 64 MiB.
	StoreCacheBytes int64
	// MemTableBytes is the size of one Pebble memtable; default 32 MiB.
	MemTableBytes uint64
	// WALMinSyncInterval spaces the store's write-ahead log syncs so that
	// more passes share one fsync (see storage.Config); 0: none.
	WALMinSyncInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// DisableHeartbeatCoalescing sends every shard's heartbeats as messages
	// of their own instead of one coalesced message per node pair per tick;
	// it also disables quiescence. A baseline for benchmarks.
	DisableHeartbeatCoalescing bool
	// DisableQuiescence keeps idle shards ticking and heartbeating. A
	// baseline for benchmarks.
	DisableQuiescence bool
	// SyncInWorker makes a worker commit and sync each pass's batch itself,
	// waiting for the fsync before it sends, answers and advances: the path
	// before durability moved off the workers (see ready.go), kept as the
	// baseline of benchmarks (bench variant sync-in-worker). Leave it off.
	SyncInWorker bool
	// SyncEachShard commits and syncs each shard's writes separately instead
	// of once per worker pass (implies SyncInWorker): the baseline that
	// benchmarks compare the batched path against. Never faster; leave it
	// off.
	SyncEachShard bool
	// SendAfterSync (with SyncInWorker only) holds a leader's MsgApps until
	// its own append is synced (the order raft's Ready contract asks for
	// everything else): the baseline of sending them first, so that
	// followers write in parallel with the leader. Leave it off. (On the
	// asynchronous path raft itself tells what may go before the sync.)
	SendAfterSync bool
	// SessionTTL is how long a client session (ProposeSession) is kept after
	// its last write; default 1h. A leader proposes, at most every
	// SessionTTL/4 per shard, the expiry of the sessions idle for longer,
	// by its own clock. A client must never retry one request for longer
	// than SessionTTL, and the leaders' clocks must agree to well within it.
	SessionTTL time.Duration
	// ReadMode is how Read is served when the caller does not choose
	// (ReadLease serves lease reads in ReadModeLease only); default
	// ReadModeIndex. ReadModeLease makes the engine keep leader leases (see
	// lease.go): every node of the cluster must run with it, and with the
	// same ElectionTicks and TickInterval, for the leases to be safe.
	ReadMode ReadMode
	// MaxClockDrift bounds, in lease mode, how far two nodes' monotonic
	// clocks may drift apart over one election timeout
	// (ElectionTicks×TickInterval), scheduling delays included: a leader's
	// lease lasts the election timeout minus MaxClockDrift from the start
	// of the quorum round that confirmed it. Default: a tenth of the
	// election timeout. Must be below the election timeout.
	MaxClockDrift time.Duration
	// DisableCheckQuorum turns raft's CheckQuorum off (on by default: a
	// leader that has not heard from a quorum for an election timeout steps
	// down, and followers that heard from their leader within one refuse
	// votes). ReadModeLease needs it on.
	DisableCheckQuorum bool
	// Clock is the monotonic clock leases are measured with; default
	// time.Now. Tests that drive the engine with Ticks and lease reads set
	// it to a clock that advances TickInterval per tick (required then).
	Clock func() time.Time
	// StartCampaignsPerTick bounds the campaigns a node starts per tick
	// when it reopens its replicas (New): each shard's designated voter
	// campaigns in turn, the other replicas wait quiesced (see start.go);
	// default 128 (1,280 a second at the default tick).
	StartCampaignsPerTick int
	// TickingStart makes every replica a node reopens tick from the start
	// and elect on raft's randomized timeouts: the start before start.go,
	// the baseline of the cluster-start bench. Leave it off.
	TickingStart bool
	// NoPriority sends the per-tick message to each peer with Send, behind
	// the raft traffic queued for it, even when the transport can send it
	// ahead (PrioritySender): the baseline of the cluster-start bench.
	// Leave it off.
	NoPriority bool
	// NoYield keeps each worker on its processor for a whole pass, however
	// long: the baseline of the cluster-start bench (worker.yield says why
	// a worker yields). Leave it off.
	NoYield bool
	// BusyOnMessage counts a leader stepped a message in a cycle as busy
	// at that cycle's tick, as the engine did before idleLeader looked at
	// raft alone: the baseline of the cluster-start bench. Leave it off.
	BusyOnMessage bool
	// BeforeStoreClose, if set, is called by Close after every worker has
	// stopped and before the store is closed: nothing the engine does is
	// visible any more, and nothing unsynced has been synced. The in-process
	// test cluster takes its crash image of the file system there.
	BeforeStoreClose func()
}

// ReadMode is how a leader serves linearizable reads.
type ReadMode int

const (
	// ReadModeIndex confirms leadership with a quorum round (raft's
	// ReadIndex) for every read: safe whatever the clocks do.
	ReadModeIndex ReadMode = iota
	// ReadModeLease lets a leader that holds a lease answer without the
	// round (see lease.go); it assumes bounded clock drift.
	ReadModeLease
)

// String returns the mode's flag name: "readindex" or "lease".
func (m ReadMode) String() string {
	switch m {
	case ReadModeIndex:
		return "readindex"
	case ReadModeLease:
		return "lease"
	}
	return fmt.Sprintf("ReadMode(%d)", int(m))
}

// ParseReadMode parses a mode's flag name.
func ParseReadMode(s string) (ReadMode, error) {
	switch s {
	case "readindex", "read-index", "":
		return ReadModeIndex, nil
	case "lease":
		return ReadModeLease, nil
	}
	return 0, fmt.Errorf("%w: read mode %q (want readindex or lease)", ErrBadRequest, s)
}

// DefaultConfig returns the defaults for node nodeID of cluster clusterID
// storing in dir.
func DefaultConfig(clusterID, nodeID uint64, dir string) Config {
	return Config{
		NodeID:                 nodeID,
		ClusterID:              clusterID,
		Dir:                    dir,
		FS:                     vfs.Default,
		Workers:                runtime.GOMAXPROCS(0),
		TickInterval:           100 * time.Millisecond,
		ElectionTicks:          10,
		HeartbeatTicks:         1,
		MaxProposalBytes:       1 << 20,
		MaxSizePerMsg:          1 << 20,
		MaxInflightMsgs:        256,
		MaxUncommittedBytes:    16 << 20,
		LogTruncateBytes:       4 << 20,
		LogTruncateEntries:     10000,
		SnapshotChunkBytes:     256 << 10,
		MaxConcurrentSnapshots: 4,
		StoreCacheBytes:        64 << 20,
		SessionTTL:             time.Hour,
		StartCampaignsPerTick:  128,
	}
}

// withDefaults returns c with zero fields filled.
func (c Config) withDefaults() Config {
	d := DefaultConfig(c.ClusterID, c.NodeID, c.Dir)
	setIf := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setIf64 := func(p *uint64, v uint64) {
		if *p == 0 {
			*p = v
		}
	}
	if c.FS == nil {
		c.FS = d.FS
	}
	setIf(&c.Workers, d.Workers)
	if c.TickInterval == 0 {
		c.TickInterval = d.TickInterval
	}
	setIf(&c.ElectionTicks, d.ElectionTicks)
	setIf(&c.HeartbeatTicks, d.HeartbeatTicks)
	setIf(&c.MaxProposalBytes, d.MaxProposalBytes)
	setIf64(&c.MaxSizePerMsg, d.MaxSizePerMsg)
	setIf(&c.MaxInflightMsgs, d.MaxInflightMsgs)
	setIf64(&c.MaxUncommittedBytes, d.MaxUncommittedBytes)
	setIf64(&c.LogTruncateBytes, d.LogTruncateBytes)
	setIf64(&c.LogTruncateEntries, d.LogTruncateEntries)
	setIf(&c.SnapshotChunkBytes, d.SnapshotChunkBytes)
	setIf(&c.MaxConcurrentSnapshots, d.MaxConcurrentSnapshots)
	setIf(&c.StartCampaignsPerTick, d.StartCampaignsPerTick)
	if c.StoreCacheBytes == 0 {
		c.StoreCacheBytes = d.StoreCacheBytes
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = d.SessionTTL
	}
	if c.MaxClockDrift == 0 {
		c.MaxClockDrift = time.Duration(c.ElectionTicks) * c.TickInterval / 10
	}
	if c.Clock == nil && c.Ticks == nil {
		c.Clock = time.Now
	}
	if c.StateMachine == nil {
		c.StateMachine = NewKV()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks c without changing it.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == 0 {
		errs = append(errs, errors.New("NodeID is required"))
	}
	if c.ClusterID == 0 {
		errs = append(errs, errors.New("ClusterID is required"))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	for name, v := range map[string]int{
		"Workers": c.Workers, "ElectionTicks": c.ElectionTicks, "HeartbeatTicks": c.HeartbeatTicks,
		"MaxProposalBytes": c.MaxProposalBytes, "MaxInflightMsgs": c.MaxInflightMsgs,
		"SnapshotChunkBytes": c.SnapshotChunkBytes, "MaxConcurrentSnapshots": c.MaxConcurrentSnapshots,
		"StartCampaignsPerTick": c.StartCampaignsPerTick,
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s %d < 0", name, v))
		}
	}
	if c.Workers > 1<<16 {
		errs = append(errs, fmt.Errorf("Workers %d > 65536", c.Workers))
	}
	if c.TickInterval < 0 {
		errs = append(errs, fmt.Errorf("TickInterval %v < 0", c.TickInterval))
	}
	if c.SessionTTL < 0 {
		errs = append(errs, fmt.Errorf("SessionTTL %v < 0", c.SessionTTL))
	}
	if c.ElectionTicks != 0 && c.HeartbeatTicks != 0 && c.ElectionTicks <= c.HeartbeatTicks {
		errs = append(errs, fmt.Errorf("ElectionTicks %d must exceed HeartbeatTicks %d", c.ElectionTicks, c.HeartbeatTicks))
	}
	errs = append(errs, c.validateLease()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("engine: invalid config: %w", err)
	}
	return nil
}
