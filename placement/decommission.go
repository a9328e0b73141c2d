package placement

import "fmt"

// CanDecommission reports whether nodeID may start draining: it fails with
// ErrUnknownNode if the state has no such node, ErrNodeRemoved if it was
// removed, ErrLastNode if no other node is live and not draining (its
// replicas would have nowhere to go), or with the state's own error.
// Draining a node that already drains is allowed. With fewer nodes left
// than the replication factor, the drained node's voters are removed
// without replacement once no other node can take them: the shards keep
// fewer voters until nodes join.
func CanDecommission(state State, nodeID uint64) error {
	if err := state.Validate(); err != nil {
		return err
	}
	var found *Node
	others := 0
	for i, n := range state.Nodes {
		switch {
		case n.ID == nodeID:
			found = &state.Nodes[i]
		case n.Liveness == Live && !n.Removed && !n.Draining:
			others++
		}
	}
	switch {
	case found == nil:
		return fmt.Errorf("%w: node %d", ErrUnknownNode, nodeID)
	case found.Removed:
		return fmt.Errorf("%w: node %d", ErrNodeRemoved, nodeID)
	case others == 0:
		return fmt.Errorf("%w: node %d: no other live node that is not draining would be left to take its replicas", ErrLastNode, nodeID)
	}
	return nil
}

// drainLeaders hands every leadership off live draining nodes first, to
// the voter on an eligible node that leads the fewest shards. A shard whose
// only voter drains gets a second voter from drainReplicas first.
func (p *planner) drainLeaders() {
	for _, d := range p.nodes {
		if !d.Draining || !d.up {
			continue
		}
		for _, sh := range p.shardsOn(d) {
			if sh.busy || sh.joint || sh.leader != d.ID {
				continue
			}
			var to *pnode
			for _, r := range sh.voters() {
				n := p.node[r.NodeID]
				if n.eligible() && (to == nil || n.leaders < to.leaders) {
					to = n
				}
			}
			if to == nil {
				continue
			}
			p.add(Op{Kind: TransferLeader, ShardID: sh.ID, Leader: to.ID,
				Reason: fmt.Sprintf("node %d is draining: leadership of shard %d moves to node %d", d.ID, sh.ID, to.ID)})
		}
	}
}

// drainReplicas moves the replicas off draining nodes: a learner is
// removed; a voter the shard can spare (it has the replication factor
// elsewhere) is removed; any other voter moves to the best target, or is
// removed if no node could ever take it and the shard has other voters.
// A voter that leads waits for its leadership to move, unless it is the
// shard's only voter.
func (p *planner) drainReplicas() {
	rf := p.cfg.ReplicationFactor
	for _, d := range p.nodes {
		if !d.Draining || d.Removed {
			continue
		}
		for _, sh := range p.shardsOn(d) {
			if sh.busy || sh.joint || !p.hasQuorum(sh) {
				continue
			}
			r, _ := sh.on(d.ID)
			draining := fmt.Sprintf("node %d is draining", d.ID)
			if r.Role == Learner {
				p.add(Op{Kind: Decommission, ShardID: sh.ID, Remove: r, Reason: draining + ": learner removed"})
				continue
			}
			voters := sh.voters()
			if sh.leader == d.ID && len(voters) > 1 {
				continue // drainLeaders moves it first
			}
			elsewhere := 0
			for _, v := range voters {
				if v.NodeID != d.ID && !p.node[v.NodeID].gone {
					elsewhere++
				}
			}
			if !sh.Meta && elsewhere >= rf {
				if p.safe(sh, nil, d.ID) {
					p.add(Op{Kind: Decommission, ShardID: sh.ID, Remove: r, Reason: fmt.Sprintf(
						"%s: shard %d keeps %d of %d replicas without it", draining, sh.ID, elsewhere, rf)})
				}
				continue
			}
			if t := p.target(sh); t != nil {
				if p.safe(sh, []uint64{t.ID}, d.ID) {
					p.add(Op{Kind: Decommission, ShardID: sh.ID, Add: []uint64{t.ID}, Remove: r, Reason: fmt.Sprintf(
						"%s: its replica %d of shard %d moves to node %d", draining, r.ReplicaID, sh.ID, t.ID)})
				}
				continue
			}
			if len(voters) > 1 && !p.anyHome(sh, d.ID) && p.safe(sh, nil, d.ID) {
				p.add(Op{Kind: Decommission, ShardID: sh.ID, Remove: r, Reason: fmt.Sprintf(
					"%s: no other node can take its replica of shard %d, which keeps %d voters", draining, sh.ID, len(voters)-1)})
			}
		}
	}
}

// shardsOn returns the shards with a replica on n: the meta shard first,
// then user shards by ID.
func (p *planner) shardsOn(n *pnode) []*pshard {
	out := n.shards
	if p.meta != nil {
		if _, ok := p.meta.on(n.ID); ok {
			out = append([]*pshard{p.meta}, out...)
		}
	}
	return out
}
