package placer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/flotilla-db/flotilla/node/gossip"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/placement"
	"github.com/flotilla-db/flotilla/storage"
)

// Cluster is what the Source reads of the node, as functions so that tests
// can give their own.
type Cluster struct {
	// Store is the meta shard's records (its local copy is read).
	Store *nodemeta.Store
	// Members lists gossip's members (liveness and load).
	Members func() []gossip.Member
	// Leaders returns the leader of every shard the router knows (0:
	// unknown).
	Leaders func() map[uint64]uint64
	// LeadersVersion returns a number that moves whenever what Leaders
	// returns may have changed (router.Router.Version). nil: unknown, and
	// the source has no Version (the driver plans at every step).
	LeadersVersion func() uint64
	// Meta returns the meta shard's descriptor and leader as this node's
	// replica knows them.
	Meta func(ctx context.Context) (storage.Descriptor, uint64, error)
	// Loads returns the load of the user shards (writes a second, size),
	// from the nodes that lead them (nil: no loads; the planner then
	// splits and merges nothing on its own).
	Loads func(ctx context.Context) (map[uint64]Load, error)
	// LoadsEvery is how often Loads is called, at most. Default 5s.
	LoadsEvery time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Load is a shard's load as its leader measured it (package
// node/shardload).
type Load struct {
	Generation      uint64
	WritesPerSecond float64
	Size            uint64
}

// loadsRefresh is how often the source asks the nodes for their shards'
// loads by default, at most: they average over 30 s.
const loadsRefresh = 5 * time.Second

// source implements placement.Source.
type source struct {
	c Cluster
	w *nodemeta.Watcher

	// Owned by the driver's goroutine (State is never called concurrently).
	shards map[uint64]nodemeta.ShardRecord
	nodes  []nodemeta.NodeRecord
	seen   map[uint64]seenState // node -> its liveness and since when
	// ranges: when this source first saw each shard's range at its
	// generation (RangeChanged: unknown before, so the cool-down of a
	// merge starts when a new meta leader first sees the shard).
	ranges map[uint64]rangeSeen
	// loads and when they were fetched.
	loads   map[uint64]Load
	loadsAt time.Time

	// fresh holds descriptors the actuator's steps returned, newer than
	// the records until these catch up; written by the actuator (the same
	// goroutine) and read by State.
	mu    sync.Mutex
	fresh map[uint64]fresh
}

type rangeSeen struct {
	gen   uint64
	since time.Time
}

type seenState struct {
	l     placement.Liveness
	since time.Time
}

type fresh struct {
	rec    nodemeta.ShardRecord
	leader uint64
	at     time.Time
}

// freshFor is how long a step's descriptor and leader stand in for the
// records and gossip: the reconciler writes a record well within it, and
// gossip spreads a leader change within a second or two.
const freshFor = 10 * time.Second

func newSource(c Cluster) *source {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.LoadsEvery == 0 {
		c.LoadsEvery = loadsRefresh
	}
	return &source{c: c, w: nodemeta.NewWatcher(c.Store), shards: map[uint64]nodemeta.ShardRecord{},
		seen: map[uint64]seenState{}, fresh: map[uint64]fresh{}, ranges: map[uint64]rangeSeen{}}
}

// reset forgets when nodes were seen dying: called when this node starts
// leading the meta shard, so that a dead node's clock starts afresh rather
// than from what an earlier term of leadership saw.
func (s *source) reset() {
	s.seen = map[uint64]seenState{}
	s.ranges = map[uint64]rangeSeen{}
}

// noteStep records what the shard looked like after a step on its leader.
func (s *source) noteStep(rec nodemeta.ShardRecord, leader uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.fresh[rec.ShardID]; ok && cur.rec.ConfIndex > rec.ConfIndex {
		return
	}
	s.fresh[rec.ShardID] = fresh{rec: rec, leader: leader, at: s.c.Now()}
}

// State implements placement.Source.
func (s *source) State(ctx context.Context) (placement.State, error) {
	now := s.c.Now()
	if recs, changed, err := s.w.PollNodes(ctx); err != nil {
		return placement.State{}, fmt.Errorf("placer: node records: %w", err)
	} else if changed {
		s.nodes = recs
	}
	u, changed, err := s.w.Poll(ctx)
	if err != nil {
		return placement.State{}, fmt.Errorf("placer: shard records: %w", err)
	}
	if changed {
		if u.Full {
			clear(s.shards)
		}
		for _, r := range u.Shards {
			s.shards[r.ShardID] = r
		}
		for _, id := range u.Removed {
			delete(s.shards, id)
		}
	}
	metaDesc, metaLeader, err := s.c.Meta(ctx)
	if err != nil {
		return placement.State{}, fmt.Errorf("placer: meta shard: %w", err)
	}
	st := placement.State{Now: now}
	st.Nodes = s.liveness(now)
	s.refreshLoads(ctx, now)
	leaders := s.c.Leaders()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, r := range s.shards {
		leader := leaders[id]
		if f, ok := s.fresh[id]; ok {
			switch {
			case f.rec.ConfIndex < r.ConfIndex || now.Sub(f.at) > freshFor:
				delete(s.fresh, id) // the record went past it, or it is old
			default:
				r = f.rec
				if f.leader != 0 {
					leader = f.leader
				}
			}
		}
		sh := shardOf(r, leader, false)
		if l, ok := s.loads[id]; ok && l.Generation == sh.Generation {
			sh.WritesPerSecond, sh.Size = l.WritesPerSecond, l.Size
		}
		if rs, ok := s.ranges[id]; !ok || rs.gen != sh.Generation {
			s.ranges[id] = rangeSeen{gen: sh.Generation, since: now}
		}
		sh.RangeChanged = s.ranges[id].since
		st.Shards = append(st.Shards, sh)
	}
	for id := range s.ranges {
		if _, ok := s.shards[id]; !ok {
			delete(s.ranges, id)
		}
	}
	st.Shards = append(st.Shards, shardOf(nodemeta.RecordOf(metaDesc), metaLeader, true))
	return st, nil
}

// errNoVersion: the Cluster has no LeadersVersion.
var errNoVersion = errors.New("placer: no version of the leaders")

// Version implements placement.VersionedSource: a hash of what State reads
// apart from the time and the loads, each cheap to get: the versions of
// the meta shard's shard records and node records (one local read each),
// the meta shard's descriptor and leader, gossip's members with their
// liveness and replica and leader counts, the router's version for the
// leaders, and the descriptors the actuator's steps left. The loads are
// left out, the shards' (refreshed every LoadsEvery, averaged over 30 s)
// and the nodes' disk and write rate (which gossip re-advertises every
// few seconds as the file system's free space moves): the driver plans
// with new ones within its IdleInterval.
func (s *source) Version(ctx context.Context) (uint64, error) {
	if s.c.LeadersVersion == nil {
		return 0, errNoVersion
	}
	h, err := s.c.Store.Header(ctx, nodemeta.Local)
	if err != nil {
		return 0, err
	}
	x, err := s.c.Store.NodeIndex(ctx, nodemeta.Local)
	if err != nil {
		return 0, err
	}
	metaDesc, metaLeader, err := s.c.Meta(ctx)
	if err != nil {
		return 0, err
	}
	// One hash per item, summed: gossip's members and the fresh
	// descriptors come in no particular order.
	var sum uint64
	hash := func(vs ...uint64) {
		b := make([]byte, 0, 8*len(vs))
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		sum += xxhash.Sum64(b)
	}
	hash(0, h.Version, h.Generation, x.Version, s.c.LeadersVersion())
	hash(1, metaLeader, metaDesc.Generation, metaDesc.ConfIndex, uint64(len(metaDesc.Replicas)))
	for _, r := range metaDesc.Replicas {
		hash(2, r.NodeID, r.ReplicaID, uint64(r.Role))
	}
	for _, m := range s.c.Members() {
		bad := uint64(0)
		if m.MetaErr != nil {
			bad = 1
		}
		hash(3, m.Meta.NodeID, uint64(m.State), bad, m.Meta.Instance, uint64(m.Meta.Replicas), uint64(m.Meta.Leaders),
			xxhash.Sum64String(m.Meta.ClientAddr))
	}
	s.mu.Lock()
	for id, f := range s.fresh {
		hash(4, id, f.rec.ConfIndex, f.leader)
	}
	s.mu.Unlock()
	return sum, nil
}

// refreshLoads asks the nodes for their shards' loads if the last answer
// is older than loadsRefresh; on failure the last loads stay.
func (s *source) refreshLoads(ctx context.Context, now time.Time) {
	if s.c.Loads == nil || now.Sub(s.loadsAt) < s.c.LoadsEvery {
		return
	}
	ls, err := s.c.Loads(ctx)
	if err != nil {
		return
	}
	s.loads, s.loadsAt = ls, now
}

// liveness builds the nodes of the state from the node records and
// gossip. A node gossip does not list (never seen, or forgotten after it
// died) or whose metadata does not decode is dead or unknown: never live.
func (s *source) liveness(now time.Time) []placement.Node {
	members := map[uint64]gossip.Member{}
	for _, m := range s.c.Members() {
		prev, ok := members[m.Meta.NodeID]
		if !ok || (prev.State != gossip.Alive && m.State == gossip.Alive) || (prev.MetaErr != nil && m.MetaErr == nil) {
			members[m.Meta.NodeID] = m
		}
	}
	out := make([]placement.Node, 0, len(s.nodes))
	for _, rec := range s.nodes {
		n := placement.Node{ID: rec.NodeID, Draining: rec.Draining, Removed: rec.Removed}
		m, ok := members[rec.NodeID]
		switch {
		case !ok:
			n.Liveness = placement.Dead
		case m.MetaErr != nil:
			n.Liveness = placement.Unknown // its load and identity are unknown: nothing moves for it
		case m.Meta.Instance != 0 && rec.Instance != 0 && m.Meta.Instance != rec.Instance:
			n.Liveness = placement.Unknown // another data directory claims the ID
		case m.State == gossip.Alive:
			n.Liveness = placement.Live
		case m.State == gossip.Suspect:
			n.Liveness = placement.Suspect
		case m.State.Gone():
			n.Liveness = placement.Dead
		}
		if ok && m.MetaErr == nil {
			n.Replicas, n.Leaders = int(m.Meta.Replicas), int(m.Meta.Leaders)
			n.DiskUsed, n.DiskCapacity, n.WriteRate = m.Meta.DiskUsed, m.Meta.DiskCapacity, float64(m.Meta.WriteRate)
		}
		prev, seen := s.seen[n.ID]
		if !seen || prev.l != n.Liveness {
			prev = seenState{l: n.Liveness, since: now}
			s.seen[n.ID] = prev
		}
		n.Since = prev.since
		out = append(out, n)
	}
	return out
}

// shardOf converts a shard record.
func shardOf(r nodemeta.ShardRecord, leader uint64, meta bool) placement.Shard {
	sh := placement.Shard{ID: r.ShardID, Start: r.Start, Last: r.Last, Generation: r.Generation, Meta: meta, Merging: r.MergeInto != 0}
	isVoter := false
	for _, rep := range r.Replicas {
		role := roleOf(rep.Role)
		sh.Replicas = append(sh.Replicas, placement.Replica{NodeID: rep.NodeID, ReplicaID: rep.ReplicaID, Role: role})
		if role != placement.Voter && role != placement.Learner {
			sh.Joint = true
		}
		if rep.NodeID == leader && role != placement.Learner {
			isVoter = true
		}
	}
	if isVoter {
		sh.Leader = leader
	}
	return sh
}

func roleOf(r nodemeta.Role) placement.Role {
	switch r {
	case nodemeta.RoleVoter:
		return placement.Voter
	case nodemeta.RoleLearner:
		return placement.Learner
	case nodemeta.RoleVoterIncoming:
		return placement.VoterIncoming
	case nodemeta.RoleVoterOutgoing:
		return placement.VoterOutgoing
	case nodemeta.RoleVoterDemoting:
		return placement.VoterDemoting
	}
	return 0 // refused by State.Validate: a record the planner cannot read
}
