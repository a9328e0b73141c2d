package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// repair is the first duty: every shard that is not busy gets looked at,
// the meta shard first, then user shards with the thinnest margin of live
// voters over their quorum. A joint shard is taken out of the joint state
// (or reported); a shard without a quorum of live voters is reported; any
// other shard gets the first of: a replacement or an extra voter if it has
// fewer countable voters than the replication factor, the removal of a
// gone voter it can spare, of a stray learner, of a voter beyond the
// replication factor.
func (p *planner) repair() {
	type cand struct {
		sh     *pshard
		margin int
	}
	var order []cand
	for _, sh := range p.shards {
		live, all := p.liveVoters(sh)
		margin := live - quorum(all)
		if sh.Meta {
			margin = -1 << 30
		}
		order = append(order, cand{sh, margin})
	}
	slices.SortStableFunc(order, func(a, b cand) int { return cmp.Compare(a.margin, b.margin) })
	for _, c := range order {
		sh := c.sh
		switch {
		case sh.busy:
		case sh.joint:
			p.leaveJoint(sh)
		case !p.hasQuorum(sh):
			p.report(sh)
		case sh.Meta:
			p.repairMeta(sh)
		default:
			p.repairUser(sh)
		}
	}
}

// leaveJoint plans leaving the joint configuration of sh, which commits
// only with a quorum of live voters in both halves, or reports the shard.
func (p *planner) leaveJoint(sh *pshard) {
	var in, inLive, out, outLive int
	for _, r := range sh.Replicas {
		up := p.node[r.NodeID].up
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
	if in == 0 || inLive < quorum(in) || (out > 0 && outLive < quorum(out)) {
		p.add(Op{Kind: QuorumLost, ShardID: sh.ID, Reason: fmt.Sprintf(
			"shard %d is joint and cannot leave it: %d of %d incoming and %d of %d outgoing voters live; %s",
			sh.ID, inLive, in, outLive, out, p.downVoters(sh))})
		return
	}
	p.add(Op{Kind: LeaveJoint, ShardID: sh.ID,
		Reason: fmt.Sprintf("shard %d is joint with no operation in flight", sh.ID)})
}

// report records that sh has lost the quorum of its live voters.
func (p *planner) report(sh *pshard) {
	live, all := p.liveVoters(sh)
	p.add(Op{Kind: QuorumLost, ShardID: sh.ID, Reason: fmt.Sprintf(
		"shard %d has %d of %d voters live, quorum is %d: %s; no change can commit",
		sh.ID, live, all, quorum(all), p.downVoters(sh))})
}

// downVoters lists the voters of sh that are not live, with why.
func (p *planner) downVoters(sh *pshard) string {
	var parts []string
	for _, r := range sh.Replicas {
		if r.Role != Learner && !p.node[r.NodeID].up {
			parts = append(parts, p.why(p.node[r.NodeID]))
		}
	}
	if len(parts) == 0 {
		return "no voters"
	}
	return strings.Join(parts, ", ")
}

// repairUser plans the first repair a user shard with a quorum needs.
func (p *planner) repairUser(sh *pshard) {
	var voters int
	var gone, learner Replica // the first of each, if any (NodeID 0: none)
	for _, r := range sh.Replicas {
		switch {
		case r.Role == Learner && learner.NodeID == 0:
			learner = r
		case r.Role != Voter:
		case p.node[r.NodeID].gone:
			if gone.NodeID == 0 {
				gone = r
			}
		default:
			voters++
		}
	}
	countable, rf := voters, p.cfg.ReplicationFactor
	if countable == rf && gone.NodeID == 0 && learner.NodeID == 0 {
		return // the common case: nothing to repair
	}
	if countable < rf {
		if t := p.target(sh); t != nil {
			have := fmt.Sprintf("shard %d has %d of %d replicas", sh.ID, countable, rf)
			op := Op{Kind: Repair, ShardID: sh.ID, Add: []uint64{t.ID}, Reason: have}
			if gone.NodeID != 0 {
				op.Remove = gone
				op.Reason = p.why(p.node[gone.NodeID]) + "; " + have
			}
			if p.safe(sh, op.Add, op.Remove.NodeID) && p.add(op) {
				return
			}
		}
	}
	if gone.NodeID != 0 && countable >= rf && p.safe(sh, nil, gone.NodeID) {
		p.add(Op{Kind: Repair, ShardID: sh.ID, Remove: gone,
			Reason: fmt.Sprintf("%s; shard %d has %d of %d replicas without it", p.why(p.node[gone.NodeID]), sh.ID, countable, rf)})
		return
	}
	if learner.NodeID != 0 {
		p.add(Op{Kind: Repair, ShardID: sh.ID, Remove: learner,
			Reason: fmt.Sprintf("shard %d has a learner on node %d with no operation in flight", sh.ID, learner.NodeID)})
		return
	}
	if countable > rf {
		if r, ok := p.extraVoter(sh, sh.voters()); ok && p.safe(sh, nil, r.NodeID) {
			p.add(Op{Kind: Repair, ShardID: sh.ID, Remove: r,
				Reason: fmt.Sprintf("shard %d has %d voters, %d wanted", sh.ID, countable, rf)})
		}
	}
}

// extraVoter picks the voter to drop from a shard with more than the
// replication factor: one on a node that is not live first, then one on a
// draining node, then the most loaded node for its weight; never the
// leader.
func (p *planner) extraVoter(sh *pshard, voters []Replica) (Replica, bool) {
	rank := func(n *pnode) int {
		switch {
		case !n.up:
			return 0
		case n.Draining:
			return 1
		}
		return 2
	}
	var best Replica
	var bn *pnode
	for _, r := range voters {
		n := p.node[r.NodeID]
		if r.NodeID == sh.leader || n.gone {
			continue
		}
		if bn == nil || rank(n) < rank(bn) ||
			(rank(n) == rank(bn) && float64(n.replicas)/n.weight > float64(bn.replicas)/bn.weight) {
			best, bn = r, n
		}
	}
	return best, bn != nil
}

// repairMeta replaces a gone voter of the meta shard (by promoting a
// learner where it can), or removes a learner from a gone node. A gone
// voter with no replacement is kept while the voters are odd: removing it
// would not make the shard more available, and the node may come back.
// Among an even count it is removed: 4 voters with one gone need all 3
// others, 3 voters need 2 of them (a decommission that found no node for
// a meta voter, with another voter gone, leaves such a shard).
func (p *planner) repairMeta(sh *pshard) {
	voters := sh.voters()
	for _, r := range voters {
		n := p.node[r.NodeID]
		if !n.gone {
			continue
		}
		if t := p.target(sh); t != nil && p.safe(sh, []uint64{t.ID}, r.NodeID) {
			p.add(Op{Kind: MetaVoter, ShardID: sh.ID, Add: []uint64{t.ID}, Remove: r,
				Reason: fmt.Sprintf("meta voter on %s: node %d takes its place", p.why(n), t.ID)})
			return
		}
		if len(voters)%2 == 0 && p.safe(sh, nil, r.NodeID) {
			p.add(Op{Kind: MetaVoter, ShardID: sh.ID, Remove: r,
				Reason: fmt.Sprintf("meta voter on %s: no node can take its place, and %d voters are even", p.why(n), len(voters))})
			return
		}
		break
	}
	for _, r := range sh.Replicas {
		if n := p.node[r.NodeID]; r.Role == Learner && n.gone {
			p.add(Op{Kind: Repair, ShardID: sh.ID, Remove: r, Reason: fmt.Sprintf("meta learner on %s", p.why(n))})
			return
		}
	}
}

// growMeta is the last duty: the meta shard gets voters up to the largest
// odd count not above MetaVoters and the eligible nodes, two at a time
// from an odd count (one joint change, so that it is never even), one
// from an even count.
func (p *planner) growMeta() {
	sh := p.meta
	if sh == nil || sh.busy || sh.joint || !p.hasQuorum(sh) {
		return
	}
	eligible := 0
	for _, n := range p.nodes {
		if n.eligible() {
			eligible++
		}
	}
	want := min(p.cfg.MetaVoters, eligible)
	if want%2 == 0 {
		want--
	}
	voters := sh.voters()
	for _, r := range voters {
		if p.node[r.NodeID].gone {
			return // repair's business
		}
	}
	k := want - len(voters)
	if k <= 0 {
		return
	}
	if len(voters)%2 == 0 {
		k = 1
	} else {
		k = min(k, 2)
	}
	var add []uint64
	for range k {
		t := p.target(sh, add...)
		if t == nil {
			return
		}
		add = append(add, t.ID)
	}
	if p.safe(sh, add, 0) {
		p.add(Op{Kind: MetaVoter, ShardID: sh.ID, Add: add, Reason: fmt.Sprintf(
			"meta shard has %d voters; %d eligible nodes want %d", len(voters), eligible, want)})
	}
}
