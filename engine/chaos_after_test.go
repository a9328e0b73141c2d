package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// The chaos test's checks of the cluster once the nemesis stopped.

// settleTimeout bounds the wait for the shards to settle after the chaos,
// and the checks of the replicas; finalReadsTimeout the final reads of the
// counters after them.
const (
	settleTimeout     = 30 * time.Second
	finalReadsTimeout = 30 * time.Second
)

// checkAfterChaos waits until no shard is joint or has a conf change
// pending and every replica named by a descriptor has caught up, then
// checks that replicas at the same applied index hold the same data, the
// descriptors seen, and the CAS counters.
func checkAfterChaos(t *testing.T, ctx context.Context, c *testcluster.Cluster, descs []storage.Descriptor,
	cnt *counters, hist *descHistory, snaps *snapshotCounts) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	var shards []uint64
	for _, d := range descs {
		shards = append(shards, d.ShardID)
	}
	start := time.Now()
	waitSettled(t, sctx, c, shards)
	settledIn := time.Since(start)
	groups := checkAppliedAgree(t, sctx, c, descs)
	hist.observeAll(sctx, c)
	errs, n, incarnations := hist.check()
	for _, e := range errs {
		t.Error(e)
	}
	for _, id := range c.IDs() {
		snaps.add(c.Engine(id).Stats())
	}
	t.Logf("settled in %v; %d replicas in %d (shard, applied index) groups agree; %d descriptors, %d later incarnations of a node's replica checked; %s",
		settledIn.Round(time.Millisecond), groups.replicas, groups.groups, n, incarnations, snaps)
	// The final reads have a bound of their own: a settle that took most
	// of settleTimeout (under the race detector on a loaded machine) left
	// them a moment, in which a leader change (the election timeout is
	// 10 ms) failed the read.
	rctx, rcancel := context.WithTimeout(ctx, finalReadsTimeout)
	defer rcancel()
	for _, key := range cnt.keys {
		var shard uint64
		for _, d := range descs {
			if d.Contains(hashOf([]byte(key))) {
				shard = d.ShardID
			}
		}
		res, err := readOnLeader(rctx, c, shard, engine.GetQuery([]byte(key)))
		if err != nil {
			t.Errorf("counter %q: final read of shard %d (the shards settled in %v): %v", key, shard, settledIn.Round(time.Millisecond), err)
			continue
		}
		v, found, _ := engine.DecodeGetResult(res)
		count, acked, unknown, err := cnt.check(key, string(v), found)
		if err != nil {
			t.Errorf("counter %s", err)
			continue
		}
		t.Logf("counter %q = %d: %d acknowledged swaps and %d of the %d with an unknown outcome", key, count, acked, unknown, cnt.unknownSwaps(key))
	}
}

// readOnLeader reads query from shard on its leader, following leadership
// (which moves now and then even in a healed cluster: the test clusters'
// election timeout is 10 ms) until ctx ends.
func readOnLeader(ctx context.Context, c *testcluster.Cluster, shard uint64, query []byte) (res []byte, err error) {
	werr := c.WaitFor(ctx, fmt.Sprintf("a read of shard %d", shard), func() bool {
		e := c.Engine(c.Leader(ctx, shard))
		if e == nil {
			return false
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		res, err = e.Read(rctx, shard, query)
		cancel()
		return err == nil
	})
	return res, errors.Join(werr, err)
}

// waitSettled waits until every shard has a leader whose configuration is
// not joint (it leaves a joint state entered explicitly) and whose log is applied to its end (so no conf change is
// pending), and every replica its descriptor names has applied as far,
// under the same replica ID and descriptor.
func waitSettled(t *testing.T, ctx context.Context, c *testcluster.Cluster, shards []uint64) {
	t.Helper()
	why, stuck := "", uint64(0)
	if err := c.WaitFor(ctx, "shards settled", func() bool {
		for _, shard := range shards {
			w := settled(ctx, c, shard)
			if w != "" && ctx.Err() == nil {
				why, stuck = w, shard // the last reason seen while ctx lived
			}
			if w != "" {
				return false
			}
		}
		return true
	}); err != nil {
		for _, id := range c.IDs() {
			if c.Engine(id) == nil {
				continue
			}
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Engine(id).Status(sctx, stuck)
			cancel()
			t.Logf("node %d: replica %d %s term %d leader %d, applied %d commit %d index %d..%d, %v progress %+v quiesced %t: %v",
				id, st.ReplicaID, st.State, st.Term, st.Leader, st.Applied, st.Commit, st.FirstIndex, st.LastIndex, st.Desc, st.Progress, st.Quiesced, err)
		}
		// A stale replica whose range overlaps the stuck replica's keeps
		// its snapshot out.
		logReplicas(t, c)
		t.Fatalf("%v: %s", err, why)
	}
}

// settled returns why shard has not settled ("" if it has).
func settled(ctx context.Context, c *testcluster.Cluster, shard uint64) string {
	l := c.Leader(ctx, shard)
	if l == 0 {
		return fmt.Sprintf("shard %d has no leader", shard)
	}
	st, err := c.Engine(l).Status(ctx, shard)
	switch {
	case err != nil:
		return fmt.Sprintf("shard %d: leader %d: %v", shard, l, err)
	case isJoint(st.Desc):
		// A joint state entered explicitly stays until it is left, as the
		// placement driver's repair would (one left automatically is
		// refused as a change in progress: nothing to do).
		lctx, cancel := context.WithTimeout(ctx, changeTimeout)
		_ = c.Engine(l).ChangeReplicasWith(lctx, engine.ChangeRequest{ShardID: shard, LeaveJoint: true})
		cancel()
		return fmt.Sprintf("shard %d is joint: %v", shard, st.Desc)
	case st.Applied != st.Commit || st.LastIndex != st.Applied:
		return fmt.Sprintf("shard %d: leader %d applied %d, commit %d, last index %d", shard, l, st.Applied, st.Commit, st.LastIndex)
	}
	for _, rep := range st.Desc.Replicas {
		e := c.Engine(rep.NodeID)
		if e == nil {
			return fmt.Sprintf("shard %d: node %d is down", shard, rep.NodeID)
		}
		rs, err := e.Status(ctx, shard)
		if err != nil || rs.ReplicaID != rep.ReplicaID || rs.Applied != st.Applied || !rs.Desc.Equal(st.Desc) {
			return fmt.Sprintf("shard %d: replica %d on node %d (replica %d applied %d, descriptor %v, %v) not caught up with leader %d (applied %d, descriptor %v)",
				shard, rep.ReplicaID, rep.NodeID, rs.ReplicaID, rs.Applied, rs.Desc, err, l, st.Applied, st.Desc)
		}
	}
	return ""
}

type agreement struct{ replicas, groups int }

// checkAppliedAgree checks that the replicas of a shard at the same applied
// index hold the same data (the hash of the shard's range), on every node:
// replicas removed while cut off, which never learnt it, included.
func checkAppliedAgree(t *testing.T, ctx context.Context, c *testcluster.Cluster, descs []storage.Descriptor) agreement {
	t.Helper()
	type at struct{ shard, applied uint64 }
	type seen struct{ node, hash uint64 }
	var a agreement
	var differ []string
	// A replica that applies more while it is hashed is hashed again.
	if err := c.WaitFor(ctx, "replicas hashed at rest", func() bool {
		a, differ = agreement{}, nil
		groups := map[at]seen{}
		for _, id := range c.IDs() {
			e := c.Engine(id)
			for _, d := range descs {
				st, err := e.Status(ctx, d.ShardID)
				if err != nil || !st.Initialized {
					continue
				}
				h := rangeHash(t, e, d)
				if again, err := e.Status(ctx, d.ShardID); err != nil || again.Applied != st.Applied || again.ReplicaID != st.ReplicaID {
					return false
				}
				a.replicas++
				k := at{d.ShardID, st.Applied}
				if s, ok := groups[k]; !ok {
					groups[k] = seen{id, h}
				} else if s.hash != h {
					differ = append(differ, fmt.Sprintf("shard %d at applied index %d: node %d's range hash %x differs from node %d's %x",
						d.ShardID, st.Applied, id, h, s.node, s.hash))
				}
			}
		}
		a.groups = len(groups)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range differ {
		t.Error(d)
	}
	return a
}

// snapshotCounts adds up the snapshot and stale message counters of
// engines, over their restarts.
type snapshotCounts struct {
	mu                       sync.Mutex
	sent, recv, staleDropped uint64
	// of the engines crashed: lease reads served from a lease, vote
	// requests the vote gate dropped (lease.go)
	leaseReads, votesHeld uint64
}

func (s *snapshotCounts) add(st engine.Stats) {
	s.mu.Lock()
	s.sent += st.SnapshotsSent
	s.recv += st.SnapshotsRecv
	s.staleDropped += st.StaleDropped
	s.leaseReads += st.LeaseReads
	s.votesHeld += st.VotesHeld
	s.mu.Unlock()
}

// leases returns the lease reads served from a lease and the vote
// requests held, by the engines crashed and those running now.
func (s *snapshotCounts) leases(c *testcluster.Cluster) (reads, held uint64) {
	s.mu.Lock()
	reads, held = s.leaseReads, s.votesHeld
	s.mu.Unlock()
	for _, id := range c.IDs() {
		if e := c.Engine(id); e != nil {
			st := e.Stats()
			reads, held = reads+st.LeaseReads, held+st.VotesHeld
		}
	}
	return reads, held
}

func (s *snapshotCounts) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d snapshots sent, %d received, %d messages to stale replica IDs dropped", s.sent, s.recv, s.staleDropped)
}

// logReplicas logs every replica that each live node holds.
func logReplicas(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	for _, id := range c.IDs() {
		if c.Engine(id) == nil {
			continue
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		sts, err := c.Engine(id).Statuses(sctx)
		cancel()
		var held []string
		for _, st := range sts {
			held = append(held, fmt.Sprintf("%d/r%d %s applied %d leader %d %v", st.ShardID, st.ReplicaID, st.State, st.Applied, st.Leader, st.Desc))
		}
		t.Logf("node %d holds (%v):\n\t%s", id, err, strings.Join(held, "\n\t"))
	}
}
