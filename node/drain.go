package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/tracker"
)

// Drain hands the leadership of every shard this node leads to another of
// its voters (the most caught-up one that it replicates to now), so that a planned stop costs no
// election timeout. It returns when every transfer finished or ctx ended;
// the shards still led here then elect elsewhere after the stop.
func (n *Node) Drain(ctx context.Context) error {
	sts, err := n.Engine.Statuses(ctx)
	if err != nil {
		return err
	}
	self := n.cfg.NodeID
	var moves []leaderMove
	for _, st := range sts {
		if st.Leader != self {
			continue
		}
		// The most caught-up voter not suspected down, preferring those the
		// leader replicates to now (one in probe may be down too: a node
		// stopping with the others).
		var target, best uint64
		replicating := false
		for _, p := range st.Progress {
			if p.NodeID == self || p.Learner || !slices.Contains(st.Voters, p.NodeID) || n.Engine.PeerSuspected(p.NodeID) {
				continue
			}
			r := p.State == tracker.StateReplicate.String()
			if target == 0 || (r && !replicating) || (r == replicating && p.Match > best) {
				target, best, replicating = p.NodeID, p.Match, r
			}
		}
		if target == 0 {
			continue // a single voter, or none other up: nowhere to go
		}
		moves = append(moves, leaderMove{st.ShardID, target})
	}
	if f := n.transferLeaders(ctx, moves, 0); f > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("node %d: drain: %d of %d leadership transfers did not complete: %w", self, f, len(moves), err)
		}
		return fmt.Errorf("node %d: drain: %d of %d leadership transfers failed (the shards elect elsewhere after the stop)", self, f, len(moves))
	}
	return nil
}

// leaderMove is a leadership transfer: shardID's to node target.
type leaderMove struct{ shardID, target uint64 }

// transferLeaders makes the transfers of moves, at most 64 at a time, each
// bounded by timeout (0: by ctx only), and returns how many did not
// complete.
func (n *Node) transferLeaders(ctx context.Context, moves []leaderMove, timeout time.Duration) int {
	return boundedEach(ctx, len(moves), timeout, func(ctx context.Context, i int) error {
		return n.Engine.TransferLeader(ctx, moves[i].shardID, moves[i].target)
	})
}

// boundedEach calls fn for 0..n-1, at most 64 calls at a time, each with a
// context bounded by timeout (0: by ctx only), and returns how many failed
// (those that ctx's end kept from starting included).
func boundedEach(ctx context.Context, n int, timeout time.Duration, fn func(ctx context.Context, i int) error) int {
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		sem    = make(chan struct{}, 64)
	)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return int(failed.Load()) + n - i
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			tctx, cancel := ctx, context.CancelFunc(func() {})
			if timeout > 0 {
				tctx, cancel = context.WithTimeout(ctx, timeout)
			}
			defer cancel()
			if err := fn(tctx, i); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(failed.Load())
}
