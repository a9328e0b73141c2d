package node

import (
	"context"
	"slices"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/gossip"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
)

// handBackLeaders hands the leadership of every user shard this node leads
// to the shard's designated leader (engine.DesignatedVoter) when that is another
// node that is alive, at most 64 transfers at a time. A node runs it once
// when every shard it hosts is led after its start: the elections of a
// start are won by whichever replica's timeout fires first (on a saturated
// machine, the nodes that created or opened their replicas first), which
// leaves leaders lopsided, e.g. 319 / 2,000 / 7,999 of 10,000; the
// placement driver would even them out only slowly, a few moves a second.
// It returns the transfers tried and those that failed.
func (n *Node) handBackLeaders(ctx context.Context) (tried, failed int, err error) {
	sts, err := n.Engine.Statuses(ctx)
	if err != nil {
		return 0, 0, err
	}
	self := n.cfg.NodeID
	var moves []leaderMove
	for _, st := range sts {
		if st.Leader != self || storage.IsSystemShard(st.ShardID) || len(st.Outgoing) > 0 {
			continue
		}
		target := engine.DesignatedVoter(st.ShardID, st.Voters)
		if target != 0 && target != self && n.alive(target) {
			moves = append(moves, leaderMove{st.ShardID, target})
		}
	}
	return len(moves), n.transferLeaders(ctx, moves, handBackTimeout), ctx.Err()
}

// takeBackLeaders asks the leader of every user shard whose designated
// leader is this node, when that is another node that is alive, to hand
// the leadership over (the Admin TransferLeader request, forwarded to the
// leader), at most 64 at a time. A node runs it once when every shard it
// hosts is led after its start: a node restarted alone finds its shards
// led by the others, whose own hand-back ran at their start, and the
// placement driver would take them back to it only slowly. It returns the
// requests made and those that failed.
func (n *Node) takeBackLeaders(ctx context.Context) (tried, failed int, err error) {
	sts, err := n.Engine.Statuses(ctx)
	if err != nil {
		return 0, 0, err
	}
	self := n.cfg.NodeID
	var shards []uint64
	for _, st := range sts {
		if storage.IsSystemShard(st.ShardID) || st.Leader == 0 || st.Leader == self || len(st.Outgoing) > 0 ||
			!slices.Contains(st.Voters, self) || engine.DesignatedVoter(st.ShardID, st.Voters) != self || !n.alive(st.Leader) {
			continue
		}
		shards = append(shards, st.ShardID)
	}
	failed = boundedEach(ctx, len(shards), handBackTimeout, func(ctx context.Context, i int) error {
		_, err := n.admin.TransferLeader(ctx, &nodepb.TransferLeaderRequest{ShardId: shards[i], NodeId: self})
		return err
	})
	return len(shards), failed, ctx.Err()
}

// handBackTimeout bounds one transfer of handBackLeaders: the engine asks
// again every election timeout until the target leads, which a target
// that went down never does.
const handBackTimeout = 10 * time.Second

// alive reports whether node id is up as far as this node knows: gossip
// says so, or, with static peers, always.
func (n *Node) alive(id uint64) bool {
	if n.cl == nil {
		return true
	}
	m, ok := n.cl.member(id, 0)
	return ok && m.State == gossip.Alive
}
