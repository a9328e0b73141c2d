package placement

import (
	"fmt"
	"slices"
)

// The steps of an operation, decided afresh from the shard as it is before
// each one (nextAction), so that an operation resumed by another driver, or
// one whose step was cut short with its outcome unknown, goes on from
// wherever the shard is.

type actionKind uint8

const (
	actDone         actionKind = iota + 1 // nothing left to do: succeeded
	actDrop                               // stale: stop, nothing to undo
	actRollback                           // stale before promotion: remove the learners the op added, stop
	actAddLearner                         // add a learner on node
	actChangeVoters                       // once promote's learners caught up: one joint change
	actTransfer                           // hand the leadership to node
	actLeaveJoint                         // leave the joint configuration
	actRemove                             // remove replica
	actSplit                              // split the shard
	actMerge                              // merge the shard with its right neighbour
)

// action is the next step of an operation.
type action struct {
	kind    actionKind
	node    uint64   // actAddLearner, actTransfer
	replica uint64   // actRemove
	promote []uint64 // actChangeVoters: learners' replica IDs
	demote  []uint64 // actChangeVoters: voters' replica IDs
	final   bool     // the operation is over once this step succeeds
	why     string   // actDrop, actRollback
}

func (a action) String() string {
	switch a.kind {
	case actDone:
		return "done"
	case actDrop, actRollback:
		return "dropped: " + a.why
	case actAddLearner:
		return fmt.Sprintf("add learner on n%d", a.node)
	case actChangeVoters:
		return fmt.Sprintf("promote %v demote %v", a.promote, a.demote)
	case actTransfer:
		return fmt.Sprintf("transfer leadership to n%d", a.node)
	case actLeaveJoint:
		return "leave joint"
	case actRemove:
		return fmt.Sprintf("remove replica %d", a.replica)
	case actSplit:
		return "split"
	case actMerge:
		return "merge"
	}
	return fmt.Sprintf("action(%d)", uint8(a.kind))
}

func drop(format string, args ...any) action {
	return action{kind: actDrop, why: fmt.Sprintf(format, args...)}
}

func rollback(format string, args ...any) action {
	return action{kind: actRollback, why: fmt.Sprintf(format, args...)}
}

// nextAction decides op's next step from st. acted says whether the
// operation has taken a step already (a removal whose replica is gone is
// then done, not stale).
func nextAction(op Op, st State, acted bool) action {
	i := slices.IndexFunc(st.Shards, func(s Shard) bool { return s.ID == op.ShardID })
	if i < 0 {
		return drop("shard %d is gone", op.ShardID)
	}
	sh := &st.Shards[i]
	nodes := make(map[uint64]Node, len(st.Nodes))
	for _, n := range st.Nodes {
		nodes[n.ID] = n
	}
	live := func(id uint64) bool { n, ok := nodes[id]; return ok && n.Liveness == Live && !n.Removed }
	eligible := func(id uint64) bool { return live(id) && !nodes[id].Draining }
	joint := isJoint(sh)
	on := func(nodeID uint64) (Replica, bool) { return replicaOn(sh, nodeID) }

	switch {
	case op.Kind == QuorumLost:
		return drop("a report, not an operation")
	case op.Kind == Split:
		switch {
		case sh.Generation != op.Generation && acted:
			return action{kind: actDone}
		case sh.Generation != op.Generation:
			return drop("shard %d's range changed since the plan (generation %d, planned on %d)", sh.ID, sh.Generation, op.Generation)
		case joint:
			return drop("shard %d is joint", sh.ID)
		}
		return action{kind: actSplit, final: true}
	case op.Kind == Merge && len(op.Add) == 0 && op.Remove.NodeID == 0:
		j := slices.IndexFunc(st.Shards, func(s Shard) bool { return s.ID == op.MergeRight })
		switch {
		case acted && (j < 0 || sh.Last >= st.Shards[j].Last):
			return action{kind: actDone}
		case j < 0:
			return drop("shard %d is gone", op.MergeRight)
		case sh.Generation != op.Generation || (st.Shards[j].Generation != op.RightGeneration && !st.Shards[j].Merging):
			return drop("the ranges of shards %d and %d changed since the plan", sh.ID, op.MergeRight)
		case joint || isJoint(&st.Shards[j]):
			return drop("shard %d or %d is joint", sh.ID, op.MergeRight)
		}
		return action{kind: actMerge, final: true}
	case op.Kind == LeaveJoint:
		if !joint {
			return action{kind: actDone}
		}
		if !jointQuorum(sh, live) {
			return drop("shard %d has no quorum of live voters in both halves of its joint configuration", sh.ID)
		}
		return action{kind: actLeaveJoint, final: true}
	case len(op.Add) == 0 && op.Remove.NodeID == 0: // a leadership transfer
		if op.Leader == 0 {
			return drop("nothing to do")
		}
		if sh.Leader == op.Leader {
			return action{kind: actDone}
		}
		if joint {
			return drop("shard %d is joint", sh.ID)
		}
		if r, ok := on(op.Leader); !ok || r.Role != Voter || !eligible(op.Leader) {
			return drop("node %d is no longer a live voter of shard %d", op.Leader, sh.ID)
		}
		return action{kind: actTransfer, node: op.Leader, final: true}
	}

	rm, rmOK := Replica{}, false
	if op.Remove.NodeID != 0 {
		if r, ok := on(op.Remove.NodeID); ok && r.ReplicaID == op.Remove.ReplicaID {
			rm, rmOK = r, true
		}
	}
	if len(op.Add) == 0 { // a removal by a simple change
		switch {
		case !rmOK && acted:
			return action{kind: actDone}
		case !rmOK:
			return drop("shard %d no longer has replica %d on node %d", sh.ID, op.Remove.ReplicaID, op.Remove.NodeID)
		case joint:
			return drop("shard %d is joint", sh.ID)
		case rm.Role == Voter && sh.Leader == rm.NodeID:
			return drop("replica %d of shard %d leads", rm.ReplicaID, sh.ID)
		case rm.Role == Voter && !safeChange(sh, live, nil, rm.NodeID):
			return drop("removing replica %d would leave shard %d no quorum of live voters", rm.ReplicaID, sh.ID)
		}
		return action{kind: actRemove, replica: rm.ReplicaID, final: true}
	}

	// A move: learners on Add, caught up, one joint change, leadership
	// handed over if Remove leads, leave joint, remove the demoted replica.
	promoted := true
	for _, id := range op.Add {
		if r, ok := on(id); !ok || (r.Role != Voter && r.Role != VoterIncoming) {
			promoted = false
		}
	}
	if !promoted {
		if joint {
			return rollback("shard %d is joint", sh.ID)
		}
		if op.Remove.NodeID != 0 && !rmOK {
			return rollback("shard %d no longer has replica %d on node %d", sh.ID, op.Remove.ReplicaID, op.Remove.NodeID)
		}
		for _, id := range op.Add {
			if !eligible(id) {
				return rollback("target node %d is no longer live or drains", id)
			}
		}
		var promote, adding []uint64
		for _, id := range op.Add {
			r, ok := on(id)
			if !ok {
				return action{kind: actAddLearner, node: id}
			}
			if r.Role == Learner {
				promote = append(promote, r.ReplicaID)
				adding = append(adding, id)
			}
		}
		a := action{kind: actChangeVoters, promote: promote}
		demoted := uint64(0)
		if rmOK && rm.Role == Voter {
			a.demote = []uint64{rm.ReplicaID}
			demoted = rm.NodeID
		}
		if !safeChange(sh, live, adding, demoted) {
			return rollback("the change would leave shard %d no quorum of live voters", sh.ID)
		}
		return a
	}
	if rmOK && sh.Leader == rm.NodeID && live(op.Add[0]) {
		return action{kind: actTransfer, node: op.Add[0]}
	}
	if joint {
		return action{kind: actLeaveJoint}
	}
	if !rmOK {
		return action{kind: actDone}
	}
	if rm.Role == Voter && !safeChange(sh, live, nil, rm.NodeID) {
		return drop("removing replica %d would leave shard %d no quorum of live voters", rm.ReplicaID, sh.ID)
	}
	return action{kind: actRemove, replica: rm.ReplicaID, final: true}
}

func isJoint(sh *Shard) bool {
	return sh.Joint || slices.ContainsFunc(sh.Replicas, func(r Replica) bool { return r.Role.joint() })
}

func replicaOn(sh *Shard, nodeID uint64) (Replica, bool) {
	for _, r := range sh.Replicas {
		if r.NodeID == nodeID {
			return r, true
		}
	}
	return Replica{}, false
}

// safeChange reports whether the change of a shard that is not joint that
// gives the nodes in add a voter and removes the voter on remove (0: none)
// keeps a quorum of live voters in the old configuration and in the new
// one.
func safeChange(sh *Shard, live func(uint64) bool, add []uint64, remove uint64) bool {
	var old, oldLive, nw, nwLive int
	for _, r := range sh.Replicas {
		if r.Role != Voter {
			continue
		}
		old++
		if live(r.NodeID) {
			oldLive++
		}
		if r.NodeID != remove {
			nw++
			if live(r.NodeID) {
				nwLive++
			}
		}
	}
	for _, id := range add {
		nw++
		if live(id) {
			nwLive++
		}
	}
	return old > 0 && oldLive >= quorum(old) && nw > 0 && nwLive >= quorum(nw)
}

// jointQuorum reports whether both halves of a joint configuration have a
// quorum of live voters, so that leaving it can commit.
func jointQuorum(sh *Shard, live func(uint64) bool) bool {
	var in, inLive, out, outLive int
	for _, r := range sh.Replicas {
		up := live(r.NodeID)
		if r.Role == Voter || r.Role == VoterIncoming {
			in++
			if up {
				inLive++
			}
		}
		if r.Role == Voter || r.Role == VoterOutgoing || r.Role == VoterDemoting {
			out++
			if up {
				outLive++
			}
		}
	}
	return in > 0 && inLive >= quorum(in) && (out == 0 || outLive >= quorum(out))
}
