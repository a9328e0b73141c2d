package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Kind is what an operation does, named after the duty that asks for it.
type Kind uint8

// Operation kinds, in the order of the duties.
const (
	// Repair replaces a replica that is gone (on a node dead for
	// DownAfter, or removed), adds one to a shard with fewer voters than
	// the replication factor, or removes a gone replica, a stray learner
	// or a voter beyond the replication factor.
	Repair Kind = iota + 1
	// Decommission moves a replica off a draining node (or removes it when
	// the shard has enough elsewhere, or when no other node can take it).
	Decommission
	// RebalanceReplica moves a replica from a node above its share to one
	// below it.
	RebalanceReplica
	// TransferLeader hands a shard's leadership to another of its voters:
	// off a draining node, or from a node that leads more than its share.
	TransferLeader
	// MetaVoter replaces a gone voter of the meta shard or adds voters to
	// it as nodes join (two at a time, so that the count stays odd).
	MetaVoter
	// LeaveJoint takes a shard that is joint with no operation in flight
	// (an interrupted move) out of the joint configuration.
	LeaveJoint
	// Split splits a shard larger or hotter than the thresholds in two
	// (ranges.go).
	Split
	// Merge merges a shard with its right neighbour (MergeRight) when both
	// are small and cold; with Add and Remove, it first moves a replica of
	// the right shard so that both have their replicas on the same nodes.
	Merge
	// QuorumLost reports a shard whose live voters are no quorum: no
	// configuration change can commit, so the planner can do nothing for
	// it. Not an operation to execute.
	QuorumLost
)

func (k Kind) String() string {
	switch k {
	case Repair:
		return "repair"
	case Decommission:
		return "decommission"
	case RebalanceReplica:
		return "rebalance-replica"
	case TransferLeader:
		return "transfer-leader"
	case MetaVoter:
		return "meta-voter"
	case LeaveJoint:
		return "leave-joint"
	case Split:
		return "split"
	case Merge:
		return "merge"
	case QuorumLost:
		return "quorum-lost"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText makes a Kind its name in JSON.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Op is one operation on one shard. What to execute follows from its
// fields, not its kind:
//
//   - Add and/or Remove: a configuration change. Each node in Add gains a
//     voter: one that already holds a learner of the shard has it
//     promoted; any other gets a learner first, caught up by a snapshot.
//     Then one joint change promotes the new voters and removes Remove's
//     replica (if any), the joint configuration is left, and the removed
//     replica is deleted. With only Remove, the replica is removed by a
//     simple change. The planner decides source and targets only; the
//     driver executes the steps.
//   - Leader: a leadership transfer to that node, which holds a voter.
//   - Kind LeaveJoint: leave the joint configuration.
//   - Kind QuorumLost: nothing; a report.
//
// Remove may be the shard's leader (a balance move picks it last; a
// single voter has no other choice): the driver then hands leadership to
// the first node of Add while the configuration is joint, before it leaves
// it, and the planner counts the leadership there.
type Op struct {
	Kind    Kind
	ShardID uint64
	// Add lists the nodes that gain a voter: one, or two when the meta
	// shard grows from 1 to 3 or 3 to 5 voters in one joint change.
	Add []uint64
	// Remove is the replica to remove (NodeID 0: none). Its ReplicaID
	// fences the operation: if the shard no longer has that replica, the
	// operation is stale.
	Remove Replica
	// Leader is the node that receives the leadership (0: none).
	Leader uint64
	// Generation fences a split or merge: the shard's range generation it
	// was planned on (a merge: the left shard's). RightGeneration is the
	// right shard's, for a merge.
	Generation, RightGeneration uint64
	// MergeRight is the right neighbour a merge folds into ShardID.
	MergeRight uint64
	// Reason says why, for people: "node 4 dead for 6m12s; shard 17 has 2
	// of 3 replicas".
	Reason string
}

// Executable reports whether the op is something to do (every kind but
// QuorumLost).
func (o Op) Executable() bool { return o.Kind != QuorumLost }

func (o Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s shard %d", o.Kind, o.ShardID)
	for _, id := range o.Add {
		fmt.Fprintf(&b, " +n%d", id)
	}
	if o.Remove.NodeID != 0 {
		fmt.Fprintf(&b, " -n%d(r%d %s)", o.Remove.NodeID, o.Remove.ReplicaID, o.Remove.Role)
	}
	if o.Leader != 0 {
		fmt.Fprintf(&b, " leader->n%d", o.Leader)
	}
	if o.MergeRight != 0 && len(o.Add) == 0 {
		fmt.Fprintf(&b, " <-shard %d", o.MergeRight)
	}
	if o.Reason != "" {
		fmt.Fprintf(&b, ": %s", o.Reason)
	}
	return b.String()
}

// Plan decides what to do next: the operations the duties ask for, at
// most one per shard and none on a shard that an operation in inflight
// already works on, in priority order (repairs, then leadership transfers,
// then decommission moves, then splits, then replica balance, then meta
// shard growth, then merges).
// Operations in inflight count as done for the balance (a replica they
// add counts on its new node) and hold their target's snapshot slots. An
// empty plan means there is nothing to do. Plan is pure and deterministic:
// the same state, config and inflight give the same plan whatever the
// order of their slices. It fails with ErrBadConfig, ErrBadState (a
// *BadStateError) or ErrNoLiveNodes, and plans nothing then.
func Plan(state State, cfg Config, inflight []Op) ([]Op, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := state.Validate(); err != nil {
		return nil, err
	}
	p := newPlanner(state, cfg)
	for _, op := range sortedOps(inflight) {
		p.project(op, true)
	}
	p.repair()
	p.drainLeaders()
	p.balanceLeaders()
	p.drainReplicas()
	p.splits()
	p.balanceReplicas()
	p.growMeta()
	p.merges()
	return p.ops, nil
}

// planner is one Plan call: the state as projected through the operations
// in flight and those planned so far.
type planner struct {
	cfg    Config
	now    time.Time
	nodes  []*pnode // by ID
	node   map[uint64]*pnode
	shards []*pshard // by ID
	shard  map[uint64]*pshard
	meta   *pshard
	ops    []Op
	left   int // executable operations this plan may still return
	// users and leaderless count the user shards and those of them with no
	// known leader (balanceLeaders).
	users, leaderless int
}

// pnode is a node with its projected load.
type pnode struct {
	Node
	up      bool // Live and not Removed
	gone    bool // Removed, or Dead for DownAfter: its replicas do not count
	deadFor time.Duration
	weight  float64 // its share of replicas relative to the others (1 unweighted)
	// Projected counts over user shards (the meta shard is left out).
	replicas, leaders, voters int
	disk                      uint64 // projected bytes used
	snapshots                 int    // replicas being received, in flight and planned
	shards                    []*pshard
}

// eligible reports whether the node may receive replicas and leaderships.
func (n *pnode) eligible() bool { return n.up && !n.Draining }

// pshard is a shard with its projected leader.
type pshard struct {
	Shard  // Replicas sorted by replica ID
	leader uint64
	joint  bool
	busy   bool // an operation works on it (in flight or planned)
}

func newPlanner(s State, cfg Config) *planner {
	p := &planner{cfg: cfg, now: s.Now, node: make(map[uint64]*pnode, len(s.Nodes)),
		shard: make(map[uint64]*pshard, len(s.Shards)), left: cfg.MaxOpsPerPlan}
	for i := range sortedNodes(s.Nodes) {
		n := &pnode{Node: s.Nodes[i], weight: 1}
		n.up = n.Liveness == Live && !n.Removed
		if n.Liveness == Dead {
			n.deadFor = max(s.Now.Sub(n.Since), 0)
		}
		n.gone = n.Removed || (n.Liveness == Dead && n.deadFor >= cfg.DownAfter)
		n.disk = n.DiskUsed
		p.nodes = append(p.nodes, n)
		p.node[n.ID] = n
	}
	p.setWeights()
	byReplicaID := func(a, b Replica) int { return cmp.Compare(a.ReplicaID, b.ReplicaID) }
	all := make([]pshard, len(s.Shards))
	p.shards = make([]*pshard, 0, len(s.Shards))
	perNode := make(map[uint64]int, len(p.nodes))
	for _, sh := range s.Shards {
		if !sh.Meta {
			for _, r := range sh.Replicas {
				perNode[r.NodeID]++
			}
		}
	}
	for _, n := range p.nodes {
		n.shards = make([]*pshard, 0, perNode[n.ID])
	}
	k := 0
	for i := range sortedShards(s.Shards) {
		sh := &all[k]
		k++
		sh.Shard = s.Shards[i]
		if !slices.IsSortedFunc(sh.Replicas, byReplicaID) { // never sort the caller's slice
			sh.Replicas = slices.Clone(sh.Replicas)
			slices.SortFunc(sh.Replicas, byReplicaID)
		}
		sh.joint = sh.Joint
		leaderOK := false
		for _, r := range sh.Replicas {
			sh.joint = sh.joint || r.Role.joint()
			leaderOK = leaderOK || (r.NodeID == sh.Leader && r.Role != Learner)
		}
		if leaderOK {
			sh.leader = sh.Leader
		}
		p.shards = append(p.shards, sh)
		p.shard[sh.ID] = sh
		if sh.Meta {
			p.meta = sh
			continue
		}
		for _, r := range sh.Replicas {
			n := p.node[r.NodeID]
			n.replicas++
			if r.Role == Voter {
				n.voters++
			}
			n.shards = append(n.shards, sh)
		}
		p.users++
		if sh.leader != 0 {
			p.node[sh.leader].leaders++
		} else {
			p.leaderless++
		}
	}
	return p
}

// setWeights weighs replica counts by disk capacity when every node that
// may receive replicas reports a capacity and they differ; otherwise every
// node weighs 1. Weights are relative to the mean capacity.
func (p *planner) setWeights() {
	var caps []uint64
	for _, n := range p.nodes {
		if n.eligible() {
			if n.DiskCapacity == 0 {
				return
			}
			caps = append(caps, n.DiskCapacity)
		}
	}
	if len(caps) == 0 || slices.Min(caps) == slices.Max(caps) {
		return
	}
	var sum float64
	for _, c := range caps {
		sum += float64(c)
	}
	mean := sum / float64(len(caps))
	for _, n := range p.nodes {
		if n.DiskCapacity > 0 {
			n.weight = float64(n.DiskCapacity) / mean
		}
	}
}

// sortedOps returns ops in a canonical order (by shard, then content), so
// that their projection does not depend on the caller's order.
func sortedOps(ops []Op) []Op {
	ops = slices.Clone(ops)
	slices.SortStableFunc(ops, func(a, b Op) int {
		return cmp.Or(cmp.Compare(a.ShardID, b.ShardID), cmp.Compare(a.Kind, b.Kind),
			slices.Compare(a.Add, b.Add), cmp.Compare(a.Remove.NodeID, b.Remove.NodeID),
			cmp.Compare(a.Remove.ReplicaID, b.Remove.ReplicaID), cmp.Compare(a.Leader, b.Leader),
			strings.Compare(a.Reason, b.Reason))
	})
	return ops
}

// add plans op if the plan has room for it, and projects it.
func (p *planner) add(op Op) bool {
	if op.Executable() {
		if p.left == 0 {
			return false
		}
		p.left--
	}
	p.ops = append(p.ops, op)
	p.project(op, false)
	return true
}

// project updates the projected state as if op were done, and marks its
// shard busy. An operation in flight may be half done: what the state
// already shows is not counted twice. Its targets' snapshot slots stay
// taken until the caller stops passing it (a planned promotion of a
// learner takes none).
func (p *planner) project(op Op, inflight bool) {
	sh := p.shard[op.ShardID]
	if sh != nil {
		sh.busy = true
	}
	if r := p.shard[op.MergeRight]; r != nil {
		r.busy = true // a merge's right shard, or the one moved for it
	}
	for _, id := range op.Add {
		n := p.node[id]
		if n == nil {
			continue
		}
		r, has := Replica{}, false
		if sh != nil {
			r, has = sh.on(id)
		}
		if inflight || !has {
			n.snapshots++
		}
		if sh == nil || sh.Meta {
			continue
		}
		if !has {
			n.replicas++
			n.disk += sh.Size
		}
		if !has || r.Role == Learner {
			n.voters++
		}
	}
	if sh == nil {
		return
	}
	if rm := op.Remove; rm.NodeID != 0 {
		if r, ok := sh.on(rm.NodeID); ok && r.ReplicaID == rm.ReplicaID && !sh.Meta {
			n := p.node[rm.NodeID]
			n.replicas--
			if r.Role == Voter {
				n.voters--
			}
		}
		if sh.leader == rm.NodeID && len(op.Add) > 0 {
			p.moveLeader(sh, op.Add[0])
		}
	}
	if op.Leader != 0 {
		p.moveLeader(sh, op.Leader)
	}
}

func (p *planner) moveLeader(sh *pshard, to uint64) {
	if sh.leader == to || p.node[to] == nil {
		return
	}
	if !sh.Meta {
		if sh.leader != 0 {
			p.node[sh.leader].leaders--
		}
		p.node[to].leaders++
	}
	sh.leader = to
}

// on returns sh's replica on nodeID.
func (sh *pshard) on(nodeID uint64) (Replica, bool) {
	for _, r := range sh.Replicas {
		if r.NodeID == nodeID {
			return r, true
		}
	}
	return Replica{}, false
}

// voters returns the voters of a shard that is not joint.
func (sh *pshard) voters() []Replica {
	var out []Replica
	for _, r := range sh.Replicas {
		if r.Role == Voter {
			out = append(out, r)
		}
	}
	return out
}

func quorum(voters int) int { return voters/2 + 1 }

// liveVoters counts the voters of sh on live nodes.
func (p *planner) liveVoters(sh *pshard) (live, all int) {
	for _, r := range sh.Replicas {
		if r.Role == Voter {
			all++
			if p.node[r.NodeID].up {
				live++
			}
		}
	}
	return live, all
}

// hasQuorum reports whether a quorum of sh's voters is live, so that a
// configuration change can commit.
func (p *planner) hasQuorum(sh *pshard) bool {
	live, all := p.liveVoters(sh)
	return all > 0 && live >= quorum(all)
}

// safe reports whether the change that gives the nodes in add a voter and
// removes the replica on remove keeps a quorum of live voters in the old
// configuration and in the new one: during the joint change both must
// agree, and the new one must stand alone after it. The nodes in add are
// live (the planner only adds onto live nodes).
func (p *planner) safe(sh *pshard, add []uint64, remove uint64) bool {
	var old, oldLive, nw, nwLive int
	for _, r := range sh.Replicas {
		if r.Role != Voter {
			continue
		}
		up := p.node[r.NodeID].up
		old++
		if up {
			oldLive++
		}
		if r.NodeID != remove {
			nw++
			if up {
				nwLive++
			}
		}
	}
	for _, id := range add {
		nw++
		if p.node[id].up {
			nwLive++
		}
	}
	return old > 0 && oldLive >= quorum(old) && nw > 0 && nwLive >= quorum(nw)
}

// canReceive reports whether n may take a voter of sh now: live, not
// draining, holding no voter of sh, and, unless it holds a learner to
// promote, a free snapshot slot and room on its disk for the shard.
func (p *planner) canReceive(sh *pshard, n *pnode) bool {
	if !n.eligible() {
		return false
	}
	if r, ok := sh.on(n.ID); ok {
		return r.Role == Learner
	}
	return n.snapshots < p.cfg.MaxSnapshotsPerNode && p.diskRoom(n, sh.Size)
}

// diskRoom reports whether n stays within MaxDiskFraction after receiving
// size bytes; a node that reports no capacity always has room.
func (p *planner) diskRoom(n *pnode, size uint64) bool {
	return n.DiskCapacity == 0 || float64(n.disk+size) <= p.cfg.MaxDiskFraction*float64(n.DiskCapacity)
}

// full reports whether n is above MaxDiskFraction already.
func (p *planner) full(n *pnode) bool {
	return n.DiskCapacity > 0 && float64(n.disk) > p.cfg.MaxDiskFraction*float64(n.DiskCapacity)
}

// target returns the best node for a new voter of sh, skipping the nodes
// in skip: one that can receive it, preferring one that holds a learner of
// sh (promoted in place, no snapshot), then the fewest replicas for its
// weight, then the emptiest disk, then the lowest ID. Nil if none can.
func (p *planner) target(sh *pshard, skip ...uint64) *pnode {
	var best *pnode
	var bestLearner bool
	for _, n := range p.nodes {
		if slices.Contains(skip, n.ID) || !p.canReceive(sh, n) {
			continue
		}
		_, learner := sh.on(n.ID)
		if best == nil || better(n, learner, best, bestLearner) {
			best, bestLearner = n, learner
		}
	}
	return best
}

func better(n *pnode, nLearner bool, o *pnode, oLearner bool) bool {
	if nLearner != oLearner {
		return nLearner
	}
	if a, b := float64(n.replicas)/n.weight, float64(o.replicas)/o.weight; a != b {
		return a < b
	}
	if a, b := diskFraction(n), diskFraction(o); a != b {
		return a < b
	}
	return n.ID < o.ID
}

func diskFraction(n *pnode) float64 {
	if n.DiskCapacity == 0 {
		return 0
	}
	return float64(n.disk) / float64(n.DiskCapacity)
}

// anyHome reports whether some node could ever take a voter of sh:
// eligible and holding no voter of it, whatever its disk and snapshots.
func (p *planner) anyHome(sh *pshard, skip uint64) bool {
	for _, n := range p.nodes {
		if n.ID == skip || !n.eligible() {
			continue
		}
		if r, ok := sh.on(n.ID); !ok || r.Role == Learner {
			return true
		}
	}
	return false
}

// why says what is wrong with a node that is not live, for reasons.
func (p *planner) why(n *pnode) string {
	switch {
	case n.Removed:
		return fmt.Sprintf("node %d removed", n.ID)
	case n.Liveness == Dead:
		return fmt.Sprintf("node %d dead for %v", n.ID, n.deadFor.Round(time.Second))
	case n.Draining:
		return fmt.Sprintf("node %d draining", n.ID)
	}
	return fmt.Sprintf("node %d %s", n.ID, n.Liveness)
}

// UnmarshalText reads a Kind's name, as MarshalText writes it.
func (k *Kind) UnmarshalText(b []byte) error {
	for c := Repair; c <= QuorumLost; c++ {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("placement: unknown operation kind %q", b)
}
