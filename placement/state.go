package placement

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// State is the snapshot the planner decides from: every node the cluster
// knows (removed ones included while they still hold replicas), every
// shard, and the time of the snapshot. The planner never reads a clock:
// Now is the only time it knows. The order of Nodes and Shards does not
// matter. Plan does not change the State it is given.
type State struct {
	Nodes  []Node
	Shards []Shard
	// Now is when the snapshot was taken; required.
	Now time.Time
}

// Liveness is what failure detection (gossip) says of a node.
type Liveness uint8

// Liveness states. The zero value is Unknown: a node the caller knows
// nothing about is not live.
const (
	// Unknown: no information yet (say, right after the meta shard's
	// leader changed). Treated like Suspect: not a target, its replicas
	// still count, nothing is repaired because of it.
	Unknown Liveness = iota
	// Live: the node answers.
	Live
	// Suspect: the node missed probes and may be down. Not a target, not
	// counted as a live voter; its replicas still count towards the
	// replication factor.
	Suspect
	// Dead: failure detection gave up on the node. Once it has been dead
	// for Config.DownAfter (see Node.Since), its replicas stop counting and
	// are replaced; before that it is treated like Suspect.
	Dead
)

func (l Liveness) String() string {
	switch l {
	case Unknown:
		return "unknown"
	case Live:
		return "live"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	}
	return fmt.Sprintf("liveness(%d)", uint8(l))
}

// Node is one node as the planner sees it.
type Node struct {
	ID       uint64
	Liveness Liveness
	// Since is when the node entered its Liveness state; required for a
	// Dead node (how long it has been dead decides whether its replicas
	// are replaced).
	Since time.Time
	// Replicas and Leaders are the node's own counts as gossip carries
	// them, for display. The planner does not use them: it counts from
	// Shards, the authority, and projects the operations in flight.
	Replicas, Leaders int
	// DiskUsed and DiskCapacity in bytes. A capacity of 0 means unknown:
	// the node is never considered full, and replica counts are weighted
	// by capacity only when every candidate node reports one.
	DiskUsed, DiskCapacity uint64
	// WriteRate in bytes per second; informational (not used to decide
	// yet).
	WriteRate float64
	// Draining: the node is being decommissioned; its leaderships and
	// replicas move off, and it receives nothing.
	Draining bool
	// Removed: the node left the cluster for good (its record in the meta
	// shard is marked removed). Its replicas count as gone whatever its
	// Liveness says.
	Removed bool
}

// Role is a replica's part in its shard's configuration. It mirrors the
// storage package's roles: while a configuration is joint, a voter of the
// incoming configuration only is VoterIncoming, a voter of the outgoing one
// only is VoterOutgoing (being removed) or VoterDemoting (becoming a
// learner).
type Role uint8

// Roles; zero is not a role.
const (
	Voter Role = iota + 1
	Learner
	VoterIncoming
	VoterOutgoing
	VoterDemoting
)

func (r Role) String() string {
	switch r {
	case Voter:
		return "voter"
	case Learner:
		return "learner"
	case VoterIncoming:
		return "voter-incoming"
	case VoterOutgoing:
		return "voter-outgoing"
	case VoterDemoting:
		return "voter-demoting"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

func (r Role) valid() bool { return r >= Voter && r <= VoterDemoting }

// joint reports whether the role exists only while a configuration is
// joint.
func (r Role) joint() bool { return r == VoterIncoming || r == VoterOutgoing || r == VoterDemoting }

// Replica is one replica of a shard: raft knows it by ReplicaID, a node
// by NodeID. Replica IDs are never reused within a shard.
type Replica struct {
	NodeID    uint64
	ReplicaID uint64
	Role      Role
}

// Shard is one shard as the planner sees it: its descriptor (the
// authority on its replicas) and what its leader reports.
type Shard struct {
	ID uint64
	// Start and Last bound the shard's hash range, both inclusive.
	Start, Last uint64
	// Generation of the range (splits and merges bump it).
	Generation uint64
	Replicas   []Replica
	// Leader is the node that leads the shard, 0 if unknown. A leader that
	// is not a voter of the shard is taken as unknown.
	Leader uint64
	// Joint: the configuration is joint (it may be even with no joint
	// role, when only learners changed). A replica with a joint role makes
	// the shard joint too.
	Joint bool
	// Size of the shard's data in bytes; what a new replica costs its node's
	// disk.
	Size uint64
	// WriteRate in bytes per second; a tie-breaker (colder shards move
	// first).
	WriteRate float64
	// WritesPerSecond: write requests a second, averaged over the source's
	// load window; splits and merges decide on it.
	WritesPerSecond float64
	// RangeChanged is when the shard's range last changed (it was created
	// by a split, split, or merged), as far as the source knows; zero:
	// unknown, and the shard is not merged until the source knows.
	RangeChanged time.Time
	// Merging: the shard is frozen for a merge into its left neighbour;
	// nothing is planned for it.
	Merging bool
	// Meta: the meta shard. It has voters on up to Config.MetaVoters nodes
	// and a learner on every other node; it is placed by its own duty and
	// left out of the replica and leader counts that are balanced.
	Meta bool
}

// Validate checks that s is a state the planner can decide from: Now set;
// non-zero, distinct node IDs with a known liveness, and a Since for dead
// nodes; non-zero, distinct shard IDs, each with a range, replicas on
// known nodes, distinct replica IDs, at most one replica per node and known
// roles; at most one meta shard; and at least one live node. It returns a
// *BadStateError (matching ErrBadState) for the first problem it finds, in
// the order of node and shard IDs, or ErrNoLiveNodes. It does not change
// s.
func (s State) Validate() error {
	if s.Now.IsZero() {
		return &BadStateError{Reason: "Now is not set"}
	}
	nodes := make(map[uint64]*Node, len(s.Nodes))
	for i := range sortedNodes(s.Nodes) {
		n := &s.Nodes[i]
		switch {
		case n.ID == 0:
			return &BadStateError{Reason: "a node with ID 0"}
		case nodes[n.ID] != nil:
			return &BadStateError{NodeID: n.ID, Reason: "node ID listed twice"}
		case n.Liveness > Dead:
			return &BadStateError{NodeID: n.ID, Reason: fmt.Sprintf("unknown liveness %d", uint8(n.Liveness))}
		case n.Liveness == Dead && n.Since.IsZero():
			return &BadStateError{NodeID: n.ID, Reason: "dead with no Since: how long it has been dead decides repairs"}
		}
		nodes[n.ID] = n
	}
	seen := make(map[uint64]bool, len(s.Shards))
	var meta uint64
	for i := range sortedShards(s.Shards) {
		sh := &s.Shards[i]
		bad := func(nodeID uint64, format string, args ...any) error {
			return &BadStateError{ShardID: sh.ID, NodeID: nodeID, Reason: fmt.Sprintf(format, args...)}
		}
		switch {
		case sh.ID == 0:
			return &BadStateError{Reason: "a shard with ID 0"}
		case seen[sh.ID]:
			return bad(0, "shard ID listed twice")
		case sh.Start > sh.Last:
			return bad(0, "empty range: start %#x > last %#x", sh.Start, sh.Last)
		case len(sh.Replicas) == 0:
			return bad(0, "no replicas")
		case sh.Meta && meta != 0:
			return bad(0, "a second meta shard (shard %d is one)", meta)
		}
		seen[sh.ID] = true
		if sh.Meta {
			meta = sh.ID
		}
		for j, r := range sh.Replicas {
			switch {
			case r.NodeID == 0 || r.ReplicaID == 0:
				return bad(r.NodeID, "replica %d on node %d: zero is not an ID", r.ReplicaID, r.NodeID)
			case nodes[r.NodeID] == nil:
				return bad(r.NodeID, "replica %d on a node not in the state", r.ReplicaID)
			case !r.Role.valid():
				return bad(r.NodeID, "replica %d has unknown role %d", r.ReplicaID, uint8(r.Role))
			}
			for _, prev := range sh.Replicas[:j] {
				if prev.ReplicaID == r.ReplicaID {
					return bad(r.NodeID, "replica ID %d twice", r.ReplicaID)
				}
				if prev.NodeID == r.NodeID {
					return bad(r.NodeID, "two replicas on one node (%d and %d)", prev.ReplicaID, r.ReplicaID)
				}
			}
		}
	}
	for _, n := range s.Nodes {
		if n.Liveness == Live && !n.Removed {
			return nil
		}
	}
	return ErrNoLiveNodes
}

// sortedNodes returns the indices of nodes in the order of their IDs, so
// that what Validate reports first does not depend on the input order.
func sortedNodes(nodes []Node) func(yield func(int) bool) {
	return sortedBy(len(nodes), func(i int) uint64 { return nodes[i].ID })
}

func sortedShards(shards []Shard) func(yield func(int) bool) {
	return sortedBy(len(shards), func(i int) uint64 { return shards[i].ID })
}

// sortedBy returns 0..n-1 in the order of key, ties in index order.
func sortedBy(n int, key func(int) uint64) func(yield func(int) bool) {
	type entry struct {
		key uint64
		i   int
	}
	es := make([]entry, n)
	for i := range es {
		es[i] = entry{key(i), i}
	}
	slices.SortFunc(es, func(a, b entry) int { return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.i, b.i)) })
	idx := make([]int, n)
	for i, e := range es {
		idx[i] = e.i
	}
	return func(yield func(int) bool) {
		for _, i := range idx {
			if !yield(i) {
				return
			}
		}
	}
}

// MarshalText makes a Role its name in JSON.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a Role's name, as MarshalText writes it; the zero
// Role's too (the Remove of an Op that removes nothing).
func (r *Role) UnmarshalText(b []byte) error {
	for c := Role(0); c <= VoterDemoting; c++ {
		if c.String() == string(b) {
			*r = c
			return nil
		}
	}
	return fmt.Errorf("placement: unknown role %q", b)
}

// MarshalText makes a Liveness its name in JSON.
func (l Liveness) MarshalText() ([]byte, error) { return []byte(l.String()), nil }
