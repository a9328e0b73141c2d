// Package recovery recovers shards from the loss of a majority of their
// voters, two ways. Online (online.go, `flotillactl recover plan|apply`,
// the CockroachDB way): in a running cluster, only the shards without a
// live quorum are recovered, each on its most up-to-date live replica,
// rewritten while its node runs. Offline, before a node starts (the rest
// of this doc): `flotilla start --force-new-cluster` (the etcd way). Every replica on the node whose
// shard has lost its quorum for good is rewritten into the only voter of
// its shard (storage.Store.ForceSoleVoter), the meta shard's included,
// with one synced write; the node then starts, marks the lost nodes
// removed in the meta shard, and the placement driver re-replicates every
// shard onto the nodes that join.
//
// # What is kept, what may be lost
//
// The survivor's data wins. Its whole log is kept and committed, entries
// that no quorum had acknowledged included; the conf changes of its
// unapplied tail are dropped (applied, they would bring the lost voters
// back). A write acknowledged by the lost majority but not yet appended to
// the survivor's log is lost: for each shard the report says which
// replica was kept, its last index and term, and that writes acknowledged
// after that index may be lost.
//
// # Fencing the old members
//
// The kept replica takes a fresh replica ID, above every ID its shard ever
// had, and a tombstone below it: the old members' messages name replica
// IDs the engine drops as stale, so they cannot disturb the new
// configuration, whatever state they come back with; and they are marked
// removed in the meta shard, so the transport refuses their frames and
// they cannot register again (node IDs are never reused). The old members
// can still talk among themselves: never restart them with their old data
// directories (wipe them; a fresh start joins under a new node ID).
//
// # Several survivors
//
// When more than one node survives, each one's replicas are compared, per
// shard, by raft's rule (last term, then last index; a tie goes to the
// lower node ID): the most up-to-date replica is kept, the others are
// removed (with a tombstone below every replica ID the winner can hand
// out, so that the placement driver can add them back as fresh replicas).
// The survivors exchange what they hold offline: `flotilla recover-info
// --data-dir DIR` prints a node's Info as JSON, before any survivor is
// started; each survivor then starts with --force-new-cluster
// --recover-peers naming the other survivors' files (and --join the
// others' gossip addresses). Every survivor computes the same winners from
// the same files. Only nodes named by a file count as survivors: a survivor
// started without the others' files keeps every shard it holds.
//
// # Refusal
//
// A node whose shards still have a live quorum elsewhere must not be
// recovered: it would fork them. Before it writes anything, ForceNewCluster
// probes (TCP connect, Config.ProbeTimeout) the raft, client and gossip
// addresses of every other voter of every shard it holds, as the node
// records of its copy of the meta shard give them, and refuses with a
// *QuorumAliveError if, for some shard, the live voters (the survivors,
// and the others that answer) form a quorum that needs at least one of
// those others, unless Config.Force. (A quorum of survivors alone is
// recovered with them: every one of them starts with --force-new-cluster
// and the same files.) A voter with no node record cannot be probed and
// counts as gone.
//
// # Concurrency
//
// ForceNewCluster and Collect open the node's store themselves and close it
// before they return; the node must not be running. PlanOnline and
// ApplyOnline act through a Cluster (the running node that plans) and
// hold no state.
package recovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
)

// Errors of the recovery.
var (
	// ErrNotMember: the data directory belongs to no cluster yet, or its
	// store to another node or cluster than its identity says.
	ErrNotMember = errors.New("recovery: the data directory is not a member of a cluster")
	// ErrBadPeer: a survivor's Info is of another cluster, of this node,
	// or names a node twice.
	ErrBadPeer = errors.New("recovery: bad survivor info")
)

// QuorumAliveError: shard ShardID still has a live quorum (its voters
// Voters, of which Live answered or are survivors); recovering this node
// would fork it. Live counts the survivors (this node among them) and the
// other voters that answered. Use Config.Force only if those nodes are in
// fact gone.
type QuorumAliveError struct {
	ShardID uint64
	Voters  []uint64
	Live    []uint64
}

func (e *QuorumAliveError) Error() string {
	return fmt.Sprintf("recovery: shard %d still has a live quorum: nodes %v of its voters %v are live (this node, the survivors named, and those that answer); "+
		"start the node without --force-new-cluster (or, if those nodes are in fact gone, add --force)", e.ShardID, e.Live, e.Voters)
}

// Info is what a survivor holds, for the other survivors to pick the most
// up-to-date replica of each shard (`flotilla recover-info`).
type Info struct {
	NodeID    uint64      `json:"node_id"`
	ClusterID uint64      `json:"cluster_id"`
	Shards    []ShardInfo `json:"shards"`
}

// ShardInfo is one replica of a survivor.
type ShardInfo struct {
	ShardID       uint64 `json:"shard_id"`
	ReplicaID     uint64 `json:"replica_id"`
	Initialized   bool   `json:"initialized"`
	LastIndex     uint64 `json:"last_index"`
	LastTerm      uint64 `json:"last_term"`
	NextReplicaID uint64 `json:"next_replica_id"`
}

// Config configures a recovery.
type Config struct {
	// StoreDir is the node's store (the data directory's "store"). Required.
	StoreDir string
	// FS is the store's file system; default vfs.Default.
	FS vfs.FS
	// NodeID and ClusterID are the node's identity, which the store must
	// hold. Required.
	NodeID, ClusterID uint64
	// Peers are the other survivors' Infos, taken before any was started.
	Peers []Info
	// Force recovers even shards whose voters still answer.
	Force bool
	// ProbeTimeout bounds each probe of another node's address; default
	// DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Probe, if set, replaces the TCP probe: it reports whether addr
	// answers (tests).
	Probe func(ctx context.Context, addr string) bool
}

// DefaultProbeTimeout is how long a probe waits for an address to answer.
const DefaultProbeTimeout = time.Second

// Validate checks c without changing it.
func (c Config) Validate() error {
	var errs []error
	if c.StoreDir == "" {
		errs = append(errs, errors.New("StoreDir is required"))
	}
	if c.NodeID == 0 || c.ClusterID == 0 {
		errs = append(errs, fmt.Errorf("%w: node %d, cluster %016x", ErrNotMember, c.NodeID, c.ClusterID))
	}
	if c.ProbeTimeout < 0 {
		errs = append(errs, fmt.Errorf("ProbeTimeout %v < 0", c.ProbeTimeout))
	}
	seen := map[uint64]bool{c.NodeID: true}
	for _, p := range c.Peers {
		switch {
		case p.ClusterID != c.ClusterID:
			errs = append(errs, fmt.Errorf("%w: node %d is in cluster %016x, this node in %016x", ErrBadPeer, p.NodeID, p.ClusterID, c.ClusterID))
		case p.NodeID == 0 || seen[p.NodeID]:
			errs = append(errs, fmt.Errorf("%w: node %d is this node or named twice", ErrBadPeer, p.NodeID))
		}
		seen[p.NodeID] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("recovery: invalid config: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.Probe == nil {
		timeout := c.ProbeTimeout
		c.Probe = func(ctx context.Context, addr string) bool {
			d := net.Dialer{Timeout: timeout}
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return false
			}
			conn.Close()
			return true
		}
	}
	return c
}

// openStore opens the node's store and checks its identity.
func openStore(c Config, readOnly bool) (*storage.Store, error) {
	s, err := storage.Open(storage.Config{Dir: c.StoreDir, FS: c.FS, ReadOnly: readOnly})
	if err != nil {
		return nil, err
	}
	id, ok, err := s.Ident()
	if err == nil && (!ok || id != (storage.Ident{ClusterID: c.ClusterID, NodeID: c.NodeID})) {
		err = fmt.Errorf("%w: the store in %s holds %+v (found %v), the identity node %d of cluster %016x", ErrNotMember, c.StoreDir, id, ok, c.NodeID, c.ClusterID)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Collect returns what the node's store holds, for the other survivors
// (Config.Peers). It writes nothing.
func Collect(cfg Config) (Info, error) {
	if err := cfg.Validate(); err != nil {
		return Info{}, err
	}
	cfg = cfg.withDefaults()
	s, err := openStore(cfg, true)
	if err != nil {
		return Info{}, err
	}
	defer s.Close()
	infos, err := replicaInfos(s)
	if err != nil {
		return Info{}, err
	}
	out := Info{NodeID: cfg.NodeID, ClusterID: cfg.ClusterID}
	for _, ri := range infos {
		out.Shards = append(out.Shards, shardInfo(ri))
	}
	return out, nil
}

func shardInfo(ri storage.ReplicaInfo) ShardInfo {
	return ShardInfo{ShardID: ri.ShardID, ReplicaID: ri.ReplicaID, Initialized: ri.Initialized,
		LastIndex: ri.LastIndex, LastTerm: ri.LastTerm, NextReplicaID: ri.Desc.NextReplicaID}
}

func replicaInfos(s *storage.Store) ([]storage.ReplicaInfo, error) {
	ids, err := s.ShardIDs()
	if err != nil {
		return nil, err
	}
	out := make([]storage.ReplicaInfo, 0, len(ids))
	for _, id := range ids {
		ri, err := s.ReplicaInfo(id)
		if err != nil {
			return nil, err
		}
		if ri.ReplicaID == 0 {
			continue // raft state left by a replica being created: nothing
		}
		out = append(out, ri)
	}
	return out, nil
}

// Outcome is what the recovery did to one of the node's replicas.
type Outcome int

// Outcomes.
const (
	// Kept: the replica is now the only voter of its shard.
	Kept Outcome = iota + 1
	// Yielded: another survivor's replica is more up to date; this one
	// was removed.
	Yielded
	// Lost: no survivor holds the shard's data (this node's replica is
	// uninitialized): its range has no replica that can serve it.
	Lost
)

func (o Outcome) String() string {
	switch o {
	case Kept:
		return "kept"
	case Yielded:
		return "yielded"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// ShardReport is what the recovery did to the node's replica of a shard.
type ShardReport struct {
	ShardID uint64
	Outcome Outcome
	// Before lists the shard's replicas before the recovery.
	Before []storage.Replica
	// Kept is the rewrite (Outcome Kept).
	Kept storage.SoleVoter
	// Winner is the survivor whose replica is kept (Outcome Yielded).
	Winner uint64
	// LastIndex and LastTerm are those of the kept replica.
	LastIndex, LastTerm uint64
}

func (r ShardReport) String() string {
	name := fmt.Sprintf("shard %d", r.ShardID)
	if r.ShardID == nodemeta.ShardID {
		name = "meta shard"
	}
	switch r.Outcome {
	case Kept:
		return fmt.Sprintf("%s: kept replica %d (was %d) on node %d as the only voter (replicas were %s); last index %d, term %d; "+
			"writes acknowledged after index %d may be lost; %d conf change(s) of the unapplied tail dropped",
			name, r.Kept.NewReplicaID, r.Kept.OldReplicaID, r.Kept.After.Replicas[0].NodeID, replicas(r.Before), r.LastIndex, r.LastTerm, r.LastIndex, len(r.Kept.Neutralized))
	case Yielded:
		return fmt.Sprintf("%s: node %d holds the most up-to-date replica (last index %d, term %d): this node's replica removed", name, r.Winner, r.LastIndex, r.LastTerm)
	case Lost:
		return fmt.Sprintf("%s: LOST: no survivor holds its data (this node's replica is uninitialized); its range cannot be served", name)
	}
	return name + ": " + r.Outcome.String()
}

func replicas(rs []storage.Replica) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%d on node %d (%s)", r.ReplicaID, r.NodeID, r.Role)
	}
	return "[" + s + "]"
}

// Report is what ForceNewCluster did.
type Report struct {
	NodeID uint64
	Shards []ShardReport // by shard ID
	// Gone are the nodes no longer part of the cluster: every node the
	// shards' replicas or the meta shard's node records named, but the
	// survivors. The node marks them removed once it leads the meta shard.
	Gone []uint64
	// MetaKept: this node keeps the meta shard (and marks Gone removed).
	MetaKept bool
}

// ForceNewCluster rewrites the node's replicas as the package doc says,
// with one synced write, or refuses with a *QuorumAliveError (nothing
// written). ctx bounds the probes.
func ForceNewCluster(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	cfg = cfg.withDefaults()
	s, err := openStore(cfg, false)
	if err != nil {
		return Report{}, err
	}
	defer s.Close()
	infos, err := replicaInfos(s)
	if err != nil {
		return Report{}, err
	}
	records, err := nodeRecords(s)
	if err != nil {
		return Report{}, err
	}
	survivors := map[uint64]bool{cfg.NodeID: true}
	peer := map[uint64]map[uint64]ShardInfo{} // shard -> node -> info
	for _, p := range cfg.Peers {
		survivors[p.NodeID] = true
		for _, si := range p.Shards {
			if peer[si.ShardID] == nil {
				peer[si.ShardID] = map[uint64]ShardInfo{}
			}
			peer[si.ShardID][p.NodeID] = si
		}
	}
	if !cfg.Force {
		if err := checkNoQuorum(ctx, cfg, infos, records, survivors); err != nil {
			return Report{}, err
		}
	}
	rep := Report{NodeID: cfg.NodeID}
	gone := map[uint64]bool{}
	for _, r := range records {
		if !r.Removed {
			gone[r.NodeID] = true
		}
	}
	b := s.NewBatch()
	defer b.Close()
	for _, ri := range infos {
		sr := ShardReport{ShardID: ri.ShardID, Before: ri.Desc.Clone().Replicas}
		for _, r := range ri.Desc.Replicas {
			gone[r.NodeID] = true
		}
		self := shardInfo(ri)
		winner, win, minID := cfg.NodeID, self, self.NextReplicaID
		for node, si := range peer[ri.ShardID] {
			minID = max(minID, si.NextReplicaID)
			if !si.Initialized {
				continue
			}
			if !win.Initialized || si.LastTerm > win.LastTerm || (si.LastTerm == win.LastTerm && si.LastIndex > win.LastIndex) ||
				(si.LastTerm == win.LastTerm && si.LastIndex == win.LastIndex && node < winner) {
				winner, win = node, si
			}
		}
		sr.LastIndex, sr.LastTerm = win.LastIndex, win.LastTerm
		switch {
		case !win.Initialized:
			sr.Outcome = Lost
		case winner == cfg.NodeID:
			sv, err := s.ForceSoleVoter(b, ri.ShardID, cfg.NodeID, minID)
			if err != nil {
				return Report{}, err
			}
			sr.Outcome, sr.Kept = Kept, sv
			rep.MetaKept = rep.MetaKept || ri.ShardID == nodemeta.ShardID
		default:
			var desc *storage.Descriptor
			if ri.Initialized {
				desc = &ri.Desc
			}
			if err := s.DestroyReplicaIn(b, ri.ShardID, desc, minID); err != nil {
				return Report{}, err
			}
			sr.Outcome, sr.Winner = Yielded, winner
		}
		rep.Shards = append(rep.Shards, sr)
	}
	if err := b.Commit(true); err != nil {
		return Report{}, err
	}
	for id := range gone {
		if !survivors[id] {
			rep.Gone = append(rep.Gone, id)
		}
	}
	slices.Sort(rep.Gone)
	return rep, nil
}

// nodeRecords reads the node records of the store's copy of the meta
// shard (none without a copy).
func nodeRecords(s *storage.Store) ([]nodemeta.NodeRecord, error) {
	ecfg := engine.DefaultConfig(1, 1, "unused")
	e := offlineMeta{s: s, sm: engine.NewKV(), rule: ecfg.PartitionRule}
	ms, err := nodemeta.New(e, nodemeta.Config{})
	if err != nil {
		return nil, err
	}
	recs, _, err := ms.Nodes(context.Background(), nodemeta.Local)
	if errors.Is(err, engine.ErrShardNotFound) {
		return nil, nil
	}
	return recs, err
}

// checkNoQuorum refuses (*QuorumAliveError) if a shard of infos has a live
// quorum: its survivors and the other voters that answer a probe.
func checkNoQuorum(ctx context.Context, cfg Config, infos []storage.ReplicaInfo, records []nodemeta.NodeRecord, survivors map[uint64]bool) error {
	addrs := map[uint64][]string{}
	for _, r := range records {
		if !r.Removed {
			addrs[r.NodeID] = []string{r.RaftAddr, r.ClientAddr, r.GossipAddr}
		}
	}
	var probe []uint64
	for _, ri := range infos {
		for _, r := range ri.Desc.Replicas {
			if !survivors[r.NodeID] && r.Role != storage.RoleLearner && !slices.Contains(probe, r.NodeID) {
				probe = append(probe, r.NodeID)
			}
		}
	}
	live := map[uint64]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range probe {
		for _, a := range addrs[id] {
			if a == "" {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, cfg.ProbeTimeout)
				defer cancel()
				if cfg.Probe(pctx, a) {
					mu.Lock()
					live[id] = true
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recovery: probing the other voters: %w", err)
	}
	for _, ri := range infos {
		var voters, up []uint64
		for _, r := range ri.Desc.Replicas {
			if r.Role == storage.RoleLearner {
				continue
			}
			voters = append(voters, r.NodeID)
			if survivors[r.NodeID] || live[r.NodeID] {
				up = append(up, r.NodeID)
			}
		}
		// A quorum of survivors alone is recovered with them (their
		// replicas are compared); one that counts a node outside the
		// survivors that still answers must not be forked.
		if len(up) > len(voters)/2 && slices.ContainsFunc(up, func(id uint64) bool { return live[id] }) {
			slices.Sort(voters)
			slices.Sort(up)
			return &QuorumAliveError{ShardID: ri.ShardID, Voters: voters, Live: up}
		}
	}
	return nil
}

// offlineMeta answers the meta store's local reads from a store that no
// engine has open; it writes nothing.
type offlineMeta struct {
	s    *storage.Store
	sm   engine.StateMachine
	rule router.PartitionRule
}

var errOffline = errors.New("recovery: the meta shard is read offline: no writes or linearizable reads")

func (o offlineMeta) Propose(context.Context, uint64, []byte) ([]byte, error) { return nil, errOffline }
func (o offlineMeta) Read(context.Context, uint64, []byte) ([]byte, error)    { return nil, errOffline }
func (o offlineMeta) ReadLocal(shardID uint64, query []byte) ([]byte, error) {
	return engine.QueryStore(o.s, o.sm, o.rule, shardID, query)
}
