package storage

import (
	"encoding/binary"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3/raftpb"
)

// Descriptor is a shard's replicated description of itself, the authority on
// the shard: the hash range [Start, Last] of the user data it owns, the
// generation of that range (bumped by splits and merges), and its replicas.
// It changes only when the shard applies one of its own entries (a conf
// change, a split or a merge), in the same batch, so every replica at the
// same applied index holds the same descriptor.
//
// Replica IDs are not node IDs. raft only ever sees replica IDs; a replica
// is the pair (node ID, replica ID). NextReplicaID is the ID the next added
// replica gets: a node removed from the shard and added back comes back
// under a fresh ID, so that a vote or an acknowledgement addressed to its
// earlier incarnation can never count. Replica IDs are never reused within a
// shard.
type Descriptor struct {
	ShardID    uint64
	Start      uint64
	Last       uint64
	Generation uint64
	// NextReplicaID is greater than every replica ID the shard ever had.
	NextReplicaID uint64
	// ConfIndex is the log index of the last conf change applied (0 for the
	// bootstrap configuration).
	ConfIndex uint64
	// Replicas, sorted by replica ID.
	Replicas []Replica
	// MergeInto, when not 0, is the left neighbour this shard is frozen to
	// be merged into (a merge in progress): the shard applies nothing more
	// and serves nothing until the merge completes (the left neighbour
	// applies it, and this shard's replicas go) or is abandoned (the shard
	// is unfrozen). MergeIntoGeneration is the left neighbour's generation
	// the merge was planned against.
	MergeInto, MergeIntoGeneration uint64
}

// Frozen reports whether the shard is frozen for a merge.
func (d Descriptor) Frozen() bool { return d.MergeInto != 0 }

// Replica is one replica of a shard.
type Replica struct {
	NodeID    uint64
	ReplicaID uint64
	Role      ReplicaRole
}

// ReplicaRole is a replica's part in the shard's configuration.
type ReplicaRole uint8

// Replica roles. While a configuration is joint, a voter of the incoming
// configuration only is VoterIncoming, a voter of the outgoing one only is
// VoterOutgoing (being removed) or VoterDemoting (becoming a learner).
const (
	RoleVoter ReplicaRole = iota + 1
	RoleLearner
	RoleVoterIncoming
	RoleVoterOutgoing
	RoleVoterDemoting
)

func (r ReplicaRole) String() string {
	switch r {
	case RoleVoter:
		return "voter"
	case RoleLearner:
		return "learner"
	case RoleVoterIncoming:
		return "voter (incoming)"
	case RoleVoterOutgoing:
		return "voter (outgoing)"
	case RoleVoterDemoting:
		return "voter (demoting)"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// IsVoter reports whether the role votes in the incoming configuration.
func (r ReplicaRole) IsVoter() bool { return r == RoleVoter || r == RoleVoterIncoming }

// Voters returns the nodes of d's voters: incoming (voters of the
// configuration d moves to, or of d if it is not joint) and outgoing (of
// the configuration a joint d leaves; none if d is not joint).
func (d Descriptor) Voters() (incoming, outgoing []uint64) {
	joint := false
	for _, r := range d.Replicas {
		joint = joint || r.Role == RoleVoterIncoming || r.Role == RoleVoterOutgoing || r.Role == RoleVoterDemoting
	}
	for _, r := range d.Replicas {
		if r.Role.IsVoter() {
			incoming = append(incoming, r.NodeID)
		}
		if joint && (r.Role == RoleVoter || r.Role == RoleVoterOutgoing || r.Role == RoleVoterDemoting) {
			outgoing = append(outgoing, r.NodeID)
		}
	}
	return incoming, outgoing
}

// HasQuorum reports whether the nodes live says are live hold a quorum of
// d's voters: a majority of the incoming voters and, if d is joint, of
// the outgoing ones too (what raft needs to commit or elect).
func (d Descriptor) HasQuorum(live func(nodeID uint64) bool) bool {
	majority := func(nodes []uint64) bool {
		n := 0
		for _, id := range nodes {
			if live(id) {
				n++
			}
		}
		return n > len(nodes)/2
	}
	in, out := d.Voters()
	return len(in) > 0 && majority(in) && (len(out) == 0 || majority(out))
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

// Clone returns a deep copy of d.
func (d Descriptor) Clone() Descriptor {
	d.Replicas = slices.Clone(d.Replicas)
	return d
}

// Equal reports whether d and o are the same descriptor.
func (d Descriptor) Equal(o Descriptor) bool {
	return d.ShardID == o.ShardID && d.Start == o.Start && d.Last == o.Last && d.Generation == o.Generation &&
		d.NextReplicaID == o.NextReplicaID && d.ConfIndex == o.ConfIndex && slices.Equal(d.Replicas, o.Replicas) &&
		d.MergeInto == o.MergeInto && d.MergeIntoGeneration == o.MergeIntoGeneration
}

// ReplicaOfNode returns the replica on nodeID.
func (d Descriptor) ReplicaOfNode(nodeID uint64) (Replica, bool) {
	for _, r := range d.Replicas {
		if r.NodeID == nodeID {
			return r, true
		}
	}
	return Replica{}, false
}

// Replica returns the replica with replicaID.
func (d Descriptor) Replica(replicaID uint64) (Replica, bool) {
	for _, r := range d.Replicas {
		if r.ReplicaID == replicaID {
			return r, true
		}
	}
	return Replica{}, false
}

// ConfState returns the raft configuration the descriptor describes.
func (d Descriptor) ConfState() raftpb.ConfState {
	var cs raftpb.ConfState
	joint := false
	for _, r := range d.Replicas {
		switch r.Role {
		case RoleVoter:
			cs.Voters = append(cs.Voters, r.ReplicaID)
		case RoleLearner:
			cs.Learners = append(cs.Learners, r.ReplicaID)
		case RoleVoterIncoming:
			cs.Voters = append(cs.Voters, r.ReplicaID)
			joint = true
		case RoleVoterOutgoing:
			cs.VotersOutgoing = append(cs.VotersOutgoing, r.ReplicaID)
			joint = true
		case RoleVoterDemoting:
			cs.VotersOutgoing = append(cs.VotersOutgoing, r.ReplicaID)
			cs.LearnersNext = append(cs.LearnersNext, r.ReplicaID)
			joint = true
		}
	}
	if joint {
		// Voters of both configurations are in both lists.
		for _, r := range d.Replicas {
			if r.Role == RoleVoter {
				cs.VotersOutgoing = append(cs.VotersOutgoing, r.ReplicaID)
			}
		}
		slices.Sort(cs.VotersOutgoing)
	}
	return cs
}

// WithConfState returns d with its replicas set from cs: replica IDs that
// d knows keep their node; others take theirs from added (replica ID ->
// node ID). Roles follow cs. It fails if a replica of cs has no node, or if
// a replica ID below d.NextReplicaID that d does not hold is added back.
func (d Descriptor) WithConfState(cs raftpb.ConfState, added map[uint64]uint64) (Descriptor, error) {
	out := d
	out.Replicas = nil
	roles := map[uint64]ReplicaRole{}
	inOutgoing := map[uint64]bool{}
	for _, id := range cs.VotersOutgoing {
		inOutgoing[id] = true
	}
	joint := len(cs.VotersOutgoing) > 0
	for _, id := range cs.Voters {
		if joint && !inOutgoing[id] {
			roles[id] = RoleVoterIncoming
		} else {
			roles[id] = RoleVoter
		}
	}
	for _, id := range cs.Learners {
		roles[id] = RoleLearner
	}
	for _, id := range cs.LearnersNext {
		roles[id] = RoleVoterDemoting
	}
	for _, id := range cs.VotersOutgoing {
		if _, ok := roles[id]; !ok {
			roles[id] = RoleVoterOutgoing
		}
	}
	for id, role := range roles {
		node := uint64(0)
		if r, ok := d.Replica(id); ok {
			node = r.NodeID
		} else if n, ok := added[id]; ok {
			if id < d.NextReplicaID {
				return Descriptor{}, fmt.Errorf("storage: shard %d: replica ID %d reused (next is %d)", d.ShardID, id, d.NextReplicaID)
			}
			node = n
		}
		if node == 0 {
			return Descriptor{}, fmt.Errorf("storage: shard %d: replica %d has no node", d.ShardID, id)
		}
		out.Replicas = append(out.Replicas, Replica{NodeID: node, ReplicaID: id, Role: role})
		if id >= out.NextReplicaID {
			out.NextReplicaID = id + 1
		}
	}
	slices.SortFunc(out.Replicas, func(a, b Replica) int { return compareU64(a.ReplicaID, b.ReplicaID) })
	return out, nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// NewDescriptor returns the descriptor of a new shard whose first replicas
// are voters and learners (node IDs): replica IDs 1, 2, ... in that order.
func NewDescriptor(shardID, start, last, generation uint64, voters, learners []uint64) Descriptor {
	d := Descriptor{ShardID: shardID, Start: start, Last: last, Generation: generation, NextReplicaID: 1}
	for _, n := range voters {
		d.Replicas = append(d.Replicas, Replica{NodeID: n, ReplicaID: d.NextReplicaID, Role: RoleVoter})
		d.NextReplicaID++
	}
	for _, n := range learners {
		d.Replicas = append(d.Replicas, Replica{NodeID: n, ReplicaID: d.NextReplicaID, Role: RoleLearner})
		d.NextReplicaID++
	}
	return d
}

// descriptorVersion is the first byte of an encoded descriptor.
const descriptorVersion = 2

// Marshal encodes d: a version byte, ShardID, Start, Last, Generation,
// NextReplicaID, ConfIndex (8 bytes each, big-endian), the number of
// replicas (uvarint), then per replica its node ID and replica ID (uvarint
// each) and role (one byte); then, for a frozen shard only, the tag byte
// mergeTag and MergeInto and MergeIntoGeneration (uvarint each), so that
// the descriptors of shards that are not frozen read as they always did.
func (d Descriptor) Marshal() []byte {
	b := make([]byte, 0, 1+6*8+1+len(d.Replicas)*8)
	b = append(b, descriptorVersion)
	for _, v := range [...]uint64{d.ShardID, d.Start, d.Last, d.Generation, d.NextReplicaID, d.ConfIndex} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(d.Replicas)))
	for _, r := range d.Replicas {
		b = binary.AppendUvarint(b, r.NodeID)
		b = binary.AppendUvarint(b, r.ReplicaID)
		b = append(b, byte(r.Role))
	}
	if d.Frozen() {
		b = append(b, mergeTag)
		b = binary.AppendUvarint(b, d.MergeInto)
		b = binary.AppendUvarint(b, d.MergeIntoGeneration)
	}
	return b
}

// mergeTag starts the optional merge section of an encoded descriptor.
const mergeTag = byte(0x4d)

// UnmarshalDescriptor decodes what Marshal encoded and checks it: a range
// that is not empty, replicas with node and replica IDs, no replica ID at or
// above NextReplicaID, no node twice, known roles.
func UnmarshalDescriptor(b []byte) (Descriptor, error) {
	const fixed = 1 + 6*8
	if len(b) < fixed+1 || b[0] != descriptorVersion {
		return Descriptor{}, fmt.Errorf("%w: descriptor of %d bytes (version %d, want %d)", ErrCorrupt, len(b), firstByte(b), descriptorVersion)
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(b[1+8*i:]) }
	d := Descriptor{ShardID: u(0), Start: u(1), Last: u(2), Generation: u(3), NextReplicaID: u(4), ConfIndex: u(5)}
	if d.Start > d.Last {
		return Descriptor{}, fmt.Errorf("%w: descriptor range [%d, %d]", ErrCorrupt, d.Start, d.Last)
	}
	rest := b[fixed:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || n > uint64(len(rest)) {
		return Descriptor{}, fmt.Errorf("%w: descriptor replica count", ErrCorrupt)
	}
	rest = rest[w:]
	for i := uint64(0); i < n; i++ {
		node, w1 := binary.Uvarint(rest)
		if w1 <= 0 {
			return Descriptor{}, fmt.Errorf("%w: descriptor replica %d", ErrCorrupt, i)
		}
		id, w2 := binary.Uvarint(rest[w1:])
		if w2 <= 0 || len(rest) < w1+w2+1 {
			return Descriptor{}, fmt.Errorf("%w: descriptor replica %d", ErrCorrupt, i)
		}
		role := ReplicaRole(rest[w1+w2])
		rest = rest[w1+w2+1:]
		if node == 0 || id == 0 || id >= d.NextReplicaID || role < RoleVoter || role > RoleVoterDemoting {
			return Descriptor{}, fmt.Errorf("%w: descriptor of shard %d: replica (node %d, id %d, role %d), next ID %d", ErrCorrupt, d.ShardID, node, id, role, d.NextReplicaID)
		}
		if _, dup := d.ReplicaOfNode(node); dup {
			return Descriptor{}, fmt.Errorf("%w: descriptor of shard %d: node %d twice", ErrCorrupt, d.ShardID, node)
		}
		if len(d.Replicas) > 0 && d.Replicas[len(d.Replicas)-1].ReplicaID >= id {
			return Descriptor{}, fmt.Errorf("%w: descriptor of shard %d: replicas out of order", ErrCorrupt, d.ShardID)
		}
		d.Replicas = append(d.Replicas, Replica{NodeID: node, ReplicaID: id, Role: role})
	}
	if len(rest) > 0 && rest[0] == mergeTag {
		into, w1 := binary.Uvarint(rest[1:])
		if w1 <= 0 || into == 0 {
			return Descriptor{}, fmt.Errorf("%w: descriptor of shard %d: merge section", ErrCorrupt, d.ShardID)
		}
		gen, w2 := binary.Uvarint(rest[1+w1:])
		if w2 <= 0 {
			return Descriptor{}, fmt.Errorf("%w: descriptor of shard %d: merge section", ErrCorrupt, d.ShardID)
		}
		d.MergeInto, d.MergeIntoGeneration = into, gen
		rest = rest[1+w1+w2:]
	}
	if len(rest) != 0 {
		return Descriptor{}, fmt.Errorf("%w: descriptor of shard %d: %d trailing bytes", ErrCorrupt, d.ShardID, len(rest))
	}
	return d, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}
