package main

import (
	"context"
	"fmt"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// How the replicas' settling is awaited: polled every settlePoll until
// every replica has applied its leader's whole log and the WALs have not
// grown for settleQuiet, for up to settleTimeout (after --split-data is
// written the followers may have a lot to apply).
const (
	settlePoll    = 10 * time.Millisecond
	settleQuiet   = 50 * time.Millisecond
	settleTimeout = 2 * time.Minute
)

// statuses are the replicas' statuses by node, then by shard.
type statuses map[uint64]map[uint64]engine.ShardStatus

// settle waits until every shard of the ring has settled: a leader, a
// replica on each node of its descriptor that has applied the leader's
// whole log, and the stores' WALs quiet (no byte in for settleQuiet). It
// returns the statuses then.
func (sp *splitter) settle(ctx context.Context) (statuses, error) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	t := time.NewTicker(settlePoll)
	defer t.Stop()
	var (
		quietSince time.Time
		lastIn     uint64
	)
	for {
		sts, why := sp.caughtUp(ctx)
		in, _ := sp.c.walBytes()
		switch {
		case why != "":
			quietSince = time.Time{}
		case quietSince.IsZero() || in != lastIn:
			quietSince, why = time.Now(), "the WALs still growing"
		case time.Since(quietSince) >= settleQuiet:
			return sts, nil
		}
		lastIn = in
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the replicas to settle (%s): %w", why, ctx.Err())
		case <-t.C:
		}
	}
}

// caughtUp reads every replica's status and returns them, and what keeps
// the ring's shards from having settled ("" if nothing).
func (sp *splitter) caughtUp(ctx context.Context) (statuses, string) {
	sts := statuses{}
	for _, id := range sp.c.ids() {
		list, err := sp.c.engine(id).Statuses(ctx)
		if err != nil {
			return nil, fmt.Sprintf("node %d: %v", id, err)
		}
		sts[id] = make(map[uint64]engine.ShardStatus, len(list))
		for _, st := range list {
			sts[id][st.ShardID] = st
		}
	}
	for _, d := range sp.rt.descs() {
		lead, ok := leaderOfStatuses(sts, d.ShardID)
		if !ok {
			return sts, fmt.Sprintf("shard %d has no leader", d.ShardID)
		}
		last := lead.LastIndex
		for _, r := range lead.Desc.Replicas {
			st, ok := sts[r.NodeID][d.ShardID]
			switch {
			case !ok || !st.Initialized:
				return sts, fmt.Sprintf("shard %d has no replica on node %d yet", d.ShardID, r.NodeID)
			case st.Applied != last || st.Commit != last || st.LastIndex != last:
				return sts, fmt.Sprintf("shard %d on node %d: applied %d, commit %d, last index %d; the leader's last index %d",
					d.ShardID, r.NodeID, st.Applied, st.Commit, st.LastIndex, last)
			}
		}
	}
	return sts, ""
}

// leaderOfStatuses returns the status of shardID's leader, if exactly one
// replica leads it.
func leaderOfStatuses(sts statuses, shardID uint64) (engine.ShardStatus, bool) {
	var lead engine.ShardStatus
	n := 0
	for _, byShard := range sts {
		if st, ok := byShard[shardID]; ok && st.State == "StateLeader" {
			lead = st
			n++
		}
	}
	return lead, n == 1
}

// walBytes returns what the running nodes' stores have written to their
// write-ahead logs: the bytes in (the batches committed, Pebble's
// Metrics().WAL.BytesIn) and those written to the files (with the
// records' framing).
func (c *cluster) walBytes() (in, written uint64) {
	for _, id := range c.ids() {
		if e := c.engine(id); e != nil {
			m := e.Store().DB().Metrics()
			in += m.WAL.BytesIn
			written += m.WAL.BytesWritten
		}
	}
	return in, written
}
