package meta

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
)

// ClusterRecord is the meta shard's record of the cluster (key "cluster").
type ClusterRecord struct {
	ClusterID     uint64    `json:"cluster_id"`
	Bootstrap     []uint64  `json:"bootstrap"` // the bootstrap members
	InitialShards int       `json:"initial_shards"`
	Replication   int       `json:"replication"`
	Created       time.Time `json:"created"`
	// Ring, when set, is the initial ring in place of InitialShards shards
	// over an even split of the hash space: the shards of a cluster
	// restored from a backup (package node/backup), with the IDs and hash
	// ranges they had, InitialShards of them. It lives in the bootstrap
	// member's identity only: Bootstrap writes the meta shard's cluster
	// record without it, the shard records carry the ranges.
	Ring []InitialRange `json:"ring,omitempty"`
	// RestoredFrom is the ID of the cluster whose backup this one was
	// restored from; 0 for a cluster bootstrapped empty.
	RestoredFrom uint64 `json:"restored_from,omitempty"`
}

// InitialRange is one shard of a ClusterRecord's Ring.
type InitialRange struct {
	ShardID uint64 `json:"shard_id"`
	Start   uint64 `json:"start"` // the hash range, both ends inclusive
	Last    uint64 `json:"last"`
}

// NodeRecord is the meta shard's record of one node (key "node/<id>").
// Node IDs are never reused: a removed node's record stays, marked Removed.
// A Draining node is being decommissioned: placement moves its replicas
// and leaderships off it and places nothing new on it (Store.SetDraining).
type NodeRecord struct {
	NodeID     uint64    `json:"node_id"`
	Instance   uint64    `json:"instance"` // the data directory's random instance ID
	RaftAddr   string    `json:"raft_addr"`
	ClientAddr string    `json:"client_addr"`
	GossipAddr string    `json:"gossip_addr"`
	HTTPAddr   string    `json:"http_addr,omitempty"`
	Removed    bool      `json:"removed,omitempty"`
	Draining   bool      `json:"draining,omitempty"`
	Joined     time.Time `json:"joined"`
}

// NodeIndex lists the node records (key "nodes"), so that finding them
// needs no scan of the meta shard. Version grows with every change of a
// node record.
type NodeIndex struct {
	Version uint64   `json:"version"`
	IDs     []uint64 `json:"ids"` // sorted
}

// IntentIndex lists the shards that have an intent record (key
// "intents"), so that reading the intents needs no scan of the meta shard.
type IntentIndex struct {
	ShardIDs []uint64 `json:"shard_ids"` // sorted
}

// Role is a replica's part in its shard's configuration. While a
// configuration is joint, a voter of the incoming configuration only is
// RoleVoterIncoming, one of the outgoing configuration only is
// RoleVoterOutgoing (being removed) or RoleVoterDemoting (becoming a
// learner).
type Role string

// Roles.
const (
	RoleVoter         Role = "voter"
	RoleLearner       Role = "learner"
	RoleVoterIncoming Role = "voter-incoming"
	RoleVoterOutgoing Role = "voter-outgoing"
	RoleVoterDemoting Role = "voter-demoting"
)

func (r Role) valid() bool {
	switch r {
	case RoleVoter, RoleLearner, RoleVoterIncoming, RoleVoterOutgoing, RoleVoterDemoting:
		return true
	}
	return false
}

// Replica is one replica of a shard: raft knows it by ReplicaID only.
type Replica struct {
	NodeID    uint64 `json:"node_id"`
	ReplicaID uint64 `json:"replica_id"`
	Role      Role   `json:"role"`
}

// ShardRecord is the meta shard's record of one shard (key "shard/<id>"):
// a copy of the shard's replicated descriptor, which is the authority.
type ShardRecord struct {
	ShardID uint64 `json:"shard_id"`
	// Start and Last bound the shard's hash range, both inclusive.
	Start uint64 `json:"start"`
	Last  uint64 `json:"last"`
	// Generation of the range, bumped by splits and merges.
	Generation uint64 `json:"generation"`
	// ConfIndex is the shard's log index of its last applied conf change.
	ConfIndex uint64 `json:"conf_index"`
	// NextReplicaID is greater than every replica ID the shard ever had.
	NextReplicaID uint64    `json:"next_replica_id"`
	Replicas      []Replica `json:"replicas"`
	// MergeInto, when not 0, is the left neighbour the shard is frozen to
	// be merged into, at that neighbour's generation MergeIntoGeneration:
	// a merge in flight (see the package doc, # Merges).
	MergeInto           uint64 `json:"merge_into,omitempty"`
	MergeIntoGeneration uint64 `json:"merge_into_generation,omitempty"`
	// Version is the ring version (RingHeader.Version) of the write that
	// stored the record. The store sets it; what a caller passes is ignored.
	Version uint64 `json:"version"`
}

// Newer reports whether r describes a later state of the shard than o: a
// higher ConfIndex, or the same ConfIndex and a higher Generation. Both
// only grow over a shard's life, and every change of its descriptor raises
// one of them.
func (r ShardRecord) Newer(o ShardRecord) bool {
	return r.ConfIndex > o.ConfIndex || (r.ConfIndex == o.ConfIndex && r.Generation > o.Generation)
}

// Equal reports whether r and o describe the shard alike; Version is not
// compared.
func (r ShardRecord) Equal(o ShardRecord) bool {
	return r.ShardID == o.ShardID && r.Start == o.Start && r.Last == o.Last && r.Generation == o.Generation &&
		r.ConfIndex == o.ConfIndex && r.NextReplicaID == o.NextReplicaID && slices.Equal(r.Replicas, o.Replicas) &&
		r.MergeInto == o.MergeInto && r.MergeIntoGeneration == o.MergeIntoGeneration
}

// Frozen reports whether the record says the shard is frozen for a merge.
func (r ShardRecord) Frozen() bool { return r.MergeInto != 0 }

// Clone returns a deep copy of r.
func (r ShardRecord) Clone() ShardRecord {
	r.Replicas = slices.Clone(r.Replicas)
	return r
}

// Range returns the shard's range in the router's terms.
func (r ShardRecord) Range() router.Range {
	return router.Range{ShardID: r.ShardID, Start: r.Start, Last: r.Last}
}

// NodeIDs returns the nodes that hold a replica of the shard, in replica
// order: what the router's SetReplicas takes.
func (r ShardRecord) NodeIDs() []uint64 {
	out := make([]uint64, len(r.Replicas))
	for i, rp := range r.Replicas {
		out[i] = rp.NodeID
	}
	return out
}

// Validate checks that r is a well-formed record: a user shard ID, a
// non-empty range, a generation, replicas with distinct non-zero node and
// replica IDs below NextReplicaID and known roles. It returns a
// *RecordError and does not change r.
func (r ShardRecord) Validate() error {
	bad := func(format string, args ...any) error {
		return &RecordError{ShardID: r.ShardID, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case r.ShardID == 0 || storage.IsSystemShard(r.ShardID):
		return bad("shard ID %d is not a user shard's", r.ShardID)
	case r.Start > r.Last:
		return bad("empty range: start %#x > last %#x", r.Start, r.Last)
	case r.Generation == 0:
		return bad("generation 0")
	case len(r.Replicas) == 0:
		return bad("no replicas")
	case r.MergeInto == r.ShardID || storage.IsSystemShard(r.MergeInto):
		return bad("frozen for a merge into shard %d", r.MergeInto)
	}
	for i, rp := range r.Replicas {
		switch {
		case rp.NodeID == 0 || rp.ReplicaID == 0:
			return bad("replica %d: node ID %d, replica ID %d: zero is not an ID", i, rp.NodeID, rp.ReplicaID)
		case rp.ReplicaID >= r.NextReplicaID:
			return bad("replica ID %d >= next replica ID %d", rp.ReplicaID, r.NextReplicaID)
		case !rp.Role.valid():
			return bad("replica %d: unknown role %q", rp.ReplicaID, rp.Role)
		}
		for _, prev := range r.Replicas[:i] {
			if prev.NodeID == rp.NodeID {
				return bad("node %d holds two replicas (%d and %d)", rp.NodeID, prev.ReplicaID, rp.ReplicaID)
			}
			if prev.ReplicaID == rp.ReplicaID {
				return bad("replica ID %d twice", rp.ReplicaID)
			}
		}
	}
	return nil
}

// RingHeader is the meta shard's small record of the ring as a whole (key
// "ring"). Every write of shard records raises Version by one and stamps
// the records it writes with it; one that adds a shard or changes a range
// also raises Generation, the generation of the router's ring. The change
// entries of versions LogStart..Version are kept (ring/change/<version>).
type RingHeader struct {
	Generation uint64 `json:"generation"`
	Shards     int    `json:"shards"`
	Version    uint64 `json:"version"`
	LogStart   uint64 `json:"log_start"`
	// Merging lists the shards whose records say they are frozen for a
	// merge (sorted by shard ID): few, and read with the header by every
	// write, which needs them to retire a merged shard's record.
	Merging []MergingShard `json:"merging,omitempty"`
}

// MergingShard is a shard whose record says it is frozen for a merge into
// its left neighbour Into at Into's generation IntoGeneration; Start is
// the first hash of its range (a shard's first hash never changes).
type MergingShard struct {
	ShardID        uint64 `json:"shard_id"`
	Start          uint64 `json:"start"`
	Into           uint64 `json:"into"`
	IntoGeneration uint64 `json:"into_generation"`
}

// MergedRecord is the tombstone of a shard merged into its left neighbour
// (key "merged/<shard ID>"): its record is gone, and no record of it is
// ever written again.
type MergedRecord struct {
	ShardID uint64 `json:"shard_id"`
	// Into is the shard that took its range, at IntoGeneration (the
	// generation of the record of Into that retired this one).
	Into           uint64 `json:"into"`
	IntoGeneration uint64 `json:"into_generation"`
	// Version is the ring version of the write that retired the shard.
	Version uint64 `json:"version"`
}

// RingChange is the change entry of one ring version: the shards whose
// records that write stored.
type RingChange struct {
	Version  uint64   `json:"version"`
	ShardIDs []uint64 `json:"shard_ids"`
}

// BuildRing builds the router's ring of the given generation from shard
// records (in any order); it fails with the router's *RingError unless
// their ranges tile the hash space.
func BuildRing(generation uint64, recs []ShardRecord) (*router.Ring, error) {
	ranges := make([]router.Range, len(recs))
	for i, r := range recs {
		ranges[i] = r.Range()
	}
	slices.SortFunc(ranges, func(a, b router.Range) int { return cmp.Compare(a.Start, b.Start) })
	return router.NewRing(generation, ranges)
}
