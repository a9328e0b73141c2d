package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Drain hands the leadership of every shard this node leads to another of
// its voters (the most caught-up one), so that a planned stop costs no
// election timeout. It returns when every transfer finished or ctx ended;
// the shards still led here then elect elsewhere after the stop.
func (n *Node) Drain(ctx context.Context) error {
	sts, err := n.Engine.Statuses(ctx)
	if err != nil {
		return err
	}
	self := n.cfg.NodeID
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		sem    = make(chan struct{}, 64)
	)
	for _, st := range sts {
		if st.Leader != self {
			continue
		}
		var target, best uint64
		for _, p := range st.Progress {
			if p.NodeID != self && !p.Learner && slices.Contains(st.Voters, p.NodeID) && (target == 0 || p.Match > best) {
				target, best = p.NodeID, p.Match
			}
		}
		if target == 0 {
			continue // a single voter: nowhere to go
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := n.Engine.TransferLeader(ctx, st.ShardID, target); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("node %d: drain: %d leadership transfers did not complete: %w", self, f, ctx.Err())
	}
	return nil
}
