package placement

import (
	"cmp"
	"fmt"
	"slices"
)

const epsilon = 1e-9

// balanceReplicas is the third duty: replica counts of user shards on
// eligible nodes converge on each node's share of their total (by disk
// capacity when capacities differ; a node that is full keeps at most what
// it has). A move goes from a node to another only by the rule of balance.
func (p *planner) balanceReplicas() {
	nodes, total := p.eligibleNodes(func(n *pnode) int { return n.replicas })
	if len(nodes) < 2 {
		return
	}
	users := float64(len(p.shards))
	if p.meta != nil {
		users--
	}
	weights, caps := make([]float64, len(nodes)), make([]float64, len(nodes))
	for i, n := range nodes {
		weights[i], caps[i] = n.weight, users
		if p.full(n) {
			caps[i] = min(users, float64(n.replicas))
		}
	}
	targets := waterFill(total, weights, caps)
	// Shards the node does not lead first (a move of the leader's replica
	// moves its leadership too), then the smallest and coldest: they cost
	// the least to move. Sorted when a node is first a source.
	order := make(map[uint64][]*pshard, len(nodes))
	sources := func(n *pnode) []*pshard {
		if o, ok := order[n.ID]; ok {
			return o
		}
		o := slices.Clone(n.shards)
		leads := func(sh *pshard) int {
			if sh.leader == n.ID {
				return 1
			}
			return 0
		}
		slices.SortFunc(o, func(a, b *pshard) int {
			return cmp.Or(cmp.Compare(leads(a), leads(b)), cmp.Compare(a.Size, b.Size),
				cmp.Compare(a.WriteRate, b.WriteRate), cmp.Compare(a.ID, b.ID))
		})
		order[n.ID] = o
		return o
	}
	p.balance(nodes, func(n *pnode) int { return n.replicas }, targets, "replicas",
		func(s *pnode, ts []*pnode, why func(t *pnode) string) bool {
			for _, sh := range sources(s) {
				if !p.movable(sh, s) {
					continue
				}
				for _, t := range ts {
					if _, holds := sh.on(t.ID); holds || !p.canReceive(sh, t) || !p.safe(sh, []uint64{t.ID}, s.ID) {
						continue
					}
					r, _ := sh.on(s.ID)
					return p.add(Op{Kind: RebalanceReplica, ShardID: sh.ID, Add: []uint64{t.ID}, Remove: r, Reason: why(t)})
				}
			}
			return false
		})
}

// movable reports whether sh's replica on s may move for balance: the
// shard is idle, not joint, and has only voters, all of them live. The
// replica on s may lead: its leadership then goes to the new voter.
func (p *planner) movable(sh *pshard, s *pnode) bool {
	if sh.busy || sh.joint || sh.Meta {
		return false
	}
	for _, r := range sh.Replicas {
		if r.Role != Voter || !p.node[r.NodeID].up {
			return false
		}
	}
	return true
}

// balanceLeaders is the fourth duty: leaderships of user shards on
// eligible nodes converge on their mean, by transfers to a voter, by the
// same rule of balance as replicas. The target is the plain mean, not
// capped by how many voters a node has: a node that has just joined has
// none yet, and a target that rose as it gets them would move leaderships
// back and forth. Leadership transfers are planned before replica moves:
// they are cheap.
//
// Leaderships are not balanced while more user shards than the band
// (Tolerance of them, at least MinTolerance) have no known leader: the
// counts would be of part of the shards, and the transfers would fight
// whatever is giving them leaders. A cluster's start is such a time: its
// nodes hand the leaderships of the initial shards to their designated
// voters as the elections end, and a driver that balanced the leaders it
// knew of meanwhile left 10,000 shards at 3,201 / 3,645 / 3,155 leaders a
// minute and a half after the start, after 375 transfers.
func (p *planner) balanceLeaders() {
	if float64(p.leaderless) > max(p.cfg.Tolerance*float64(p.users), float64(p.cfg.MinTolerance)) {
		return
	}
	nodes, total := p.eligibleNodes(func(n *pnode) int { return n.leaders })
	if len(nodes) < 2 {
		return
	}
	targets := make([]float64, len(nodes))
	for i := range targets {
		targets[i] = total / float64(len(nodes))
	}
	band := make(map[uint64]float64, len(nodes))
	for i, n := range nodes {
		band[n.ID] = max(p.cfg.Tolerance*targets[i], float64(p.cfg.MinTolerance))
	}
	p.balance(nodes, func(n *pnode) int { return n.leaders }, targets, "leaderships",
		func(s *pnode, ts []*pnode, why func(t *pnode) string) bool {
			if sh, t := p.transferable(s, ts, nil); sh != nil {
				return p.add(Op{Kind: TransferLeader, ShardID: sh.ID, Leader: t.ID, Reason: why(t)})
			}
			if p.left < 2 {
				return false
			}
			// No shard s leads has a voter on a destination. If s is above
			// its band and a destination t below its band, hand a shard to
			// a voter m that leads one with a voter on t: m's count does
			// not change, s and t move as if directly. m stays within its
			// band even if the second transfer fails. The rule of balance
			// still holds: a node above its band never received, one below
			// its band never gave, so neither transfer undoes an earlier
			// one.
			if dev := float64(s.leaders) - targets[0]; dev <= band[s.ID]+epsilon {
				return false
			}
			var below []*pnode
			for _, t := range ts {
				if float64(t.leaders)-targets[0] < -band[t.ID]-epsilon {
					below = append(below, t)
				}
			}
			if len(below) == 0 {
				return false
			}
			for _, x := range s.shards {
				if x.busy || x.joint || x.leader != s.ID {
					continue
				}
				for _, r := range x.voters() {
					m := p.node[r.NodeID]
					dm := float64(m.leaders) - targets[0]
					if m == s || !m.eligible() || dm < -band[m.ID]-epsilon || dm+1 > band[m.ID]+epsilon {
						continue
					}
					if y, t := p.transferable(m, below, x); y != nil {
						reason := fmt.Sprintf("%s; through node %d", why(t), m.ID)
						p.add(Op{Kind: TransferLeader, ShardID: x.ID, Leader: m.ID, Reason: reason})
						return p.add(Op{Kind: TransferLeader, ShardID: y.ID, Leader: t.ID, Reason: reason})
					}
				}
			}
			return false
		})
}

// transferable returns a shard that s leads, other than skip, with a voter
// on one of ts (the first such destination), that may change leader now.
func (p *planner) transferable(s *pnode, ts []*pnode, skip *pshard) (*pshard, *pnode) {
	for _, sh := range s.shards {
		if sh == skip || sh.busy || sh.joint || sh.leader != s.ID {
			continue
		}
		for _, t := range ts {
			if r, ok := sh.on(t.ID); ok && r.Role == Voter {
				return sh, t
			}
		}
	}
	return nil, nil
}

// balance moves one unit at a time (a replica or a leadership, through
// try) from the node furthest above its target to the furthest below that
// try can serve, as long as the plan has room and a pair of nodes
// qualifies. The rule of balance: with band ±max(Tolerance × target,
// MinTolerance), a unit moves from s to t only if s is above its band and
// t below its target, or s above its target and t below its band. So a
// node only ever receives while below its target and only ever gives while
// above it: it ends a receipt less than one unit above its target and a
// gift less than one below. A node that received from another can then
// never give back to it (it would have to be above its band, or the other
// below its band), and while targets stay put no move is ever undone. Each
// move also lowers the sum of squared deviations by more than zero (the
// two nodes were more than one unit apart), so balancing ends. try gets
// the source, the qualifying destinations from the furthest below, and a
// function that words the reason; it reports whether it planned an
// operation.
func (p *planner) balance(nodes []*pnode, count func(*pnode) int, targets []float64, what string,
	try func(s *pnode, ts []*pnode, why func(t *pnode) string) bool) {
	idx := make(map[uint64]int, len(nodes))
	band := make([]float64, len(nodes))
	for i, n := range nodes {
		idx[n.ID] = i
		band[i] = max(p.cfg.Tolerance*targets[i], float64(p.cfg.MinTolerance))
	}
	dev := func(n *pnode) float64 { return float64(count(n)) - targets[idx[n.ID]] }
	for p.left > 0 {
		src := slices.Clone(nodes)
		slices.SortStableFunc(src, func(a, b *pnode) int { return cmp.Compare(dev(b), dev(a)) })
		dst := slices.Clone(nodes)
		slices.SortStableFunc(dst, func(a, b *pnode) int { return cmp.Compare(dev(a), dev(b)) })
		moved := false
		for _, s := range src {
			ds, bs := dev(s), band[idx[s.ID]]
			var ts []*pnode
			if ds <= epsilon {
				break // no source is above its target any more
			}
			for _, t := range dst {
				dt := dev(t)
				if dt >= -epsilon {
					break // no destination is below its target any more
				}
				if t != s && (ds > bs+epsilon || dt < -band[idx[t.ID]]-epsilon) {
					ts = append(ts, t)
				}
			}
			if len(ts) == 0 {
				continue
			}
			why := func(t *pnode) string {
				i, j := idx[s.ID], idx[t.ID]
				return fmt.Sprintf("node %d has %d %s, target %.1f±%.1f; node %d has %d, target %.1f±%.1f",
					s.ID, count(s), what, targets[i], band[i], t.ID, count(t), targets[j], band[j])
			}
			if try(s, ts, why) {
				moved = true
				break
			}
		}
		if !moved {
			return
		}
	}
}

// waterFill shares total among nodes in proportion to their weights, no
// node above its cap: t_i = min(cap_i, λ·w_i) with Σ t_i = total (or every
// node at its cap when the caps add up to less).
func waterFill(total float64, weights, caps []float64) []float64 {
	n := len(weights)
	out := make([]float64, n)
	idx := make([]int, n)
	var wsum float64
	for i := range idx {
		idx[i] = i
		wsum += weights[i]
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(caps[a]/weights[a], caps[b]/weights[b]) })
	left := total
	for k, i := range idx {
		if share := left * weights[i] / wsum; caps[i] >= share {
			for _, j := range idx[k:] {
				out[j] = left * weights[j] / wsum
			}
			return out
		}
		out[i] = caps[i]
		left -= caps[i]
		wsum -= weights[i]
	}
	return out
}

// eligibleNodes returns the nodes that may take replicas and leaderships,
// in the planner's order, and the sum of count over them.
func (p *planner) eligibleNodes(count func(*pnode) int) ([]*pnode, float64) {
	var nodes []*pnode
	var total float64
	for _, n := range p.nodes {
		if n.eligible() {
			nodes = append(nodes, n)
			total += float64(count(n))
		}
	}
	return nodes, total
}
