package engine_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestTruncationThenSnapshot: a follower truncates its log right after it
// applied (the truncation follows raft's own record of the apply, so it is
// written after the pass that applied), is cut off, and then catches up by a
// snapshot. Its durable state must stay consistent: a truncation written
// after the snapshot's ingest would put back the older truncation point
// below the snapshot's entries, which the ingest deleted, and the node would
// not restart (its commit index beyond its last index). Checked on the
// durable store, then across a restart, on both paths. (The worker commits
// its truncations at the end of their pass, so no later write can come
// between; this test does not force the snapshot to be the very next write,
// the interleaving that the chaos test hit once when truncations waited for
// the next pass's batch.)
func TestTruncationThenSnapshot(t *testing.T) {
	for _, mode := range []string{"async", "sync-in-worker"} {
		t.Run(mode, func(t *testing.T) { runTruncationThenSnapshot(t, mode == "sync-in-worker") })
	}
}

func runTruncationThenSnapshot(t *testing.T, syncInWorker bool) {
	c := newCluster(t, testcluster.Config{Nodes: 3, Engine: func(cfg *engine.Config) {
		cfg.SyncInWorker = syncInWorker
		cfg.Workers = 1
		cfg.LogTruncateEntries = 20
	}})
	ctx := ctxT(t, 60*time.Second)
	desc := storage.Descriptor{ShardID: 1, Last: ^uint64(0)}
	if err := c.CreateShards(ctx, []storage.Descriptor{desc}, c.IDs()); err != nil {
		t.Fatal(err)
	}
	var leader uint64
	if err := tickUntil(t, ctx, c, "a leader", func() bool { leader = c.Leader(ctx, 1); return leader != 0 }); err != nil {
		t.Fatal(err)
	}
	f := leader%3 + 1 // a follower
	keys := keysOf(desc, 100)
	put := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := c.Engine(leader).Propose(ctx, 1, engine.PutCommand(keys[i], []byte(fmt.Sprint(i)))); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 30)
	lst := status(t, ctx, c, leader, 1)
	// The heartbeat that brings the follower the commit index makes it
	// apply, and then truncate; it is cut off right after.
	if err := tickUntil(t, ctx, c, "the follower applied", func() bool {
		return status(t, ctx, c, f, 1).Applied >= lst.Applied
	}); err != nil {
		t.Fatal(err)
	}
	c.Isolate(f)
	st := status(t, ctx, c, f, 1)
	if st.FirstIndex <= 1 {
		t.Fatalf("node %d did not truncate: first index %d, applied %d", f, st.FirstIndex, st.Applied)
	}
	t.Logf("node %d truncated its log to %d at applied %d, then was cut off", f, st.FirstIndex-1, st.Applied)
	put(30, 100) // the leader truncates past what the follower has
	c.Heal()
	recv := c.Engine(f).Stats().SnapshotsRecv
	if err := tickUntil(t, ctx, c, "the follower caught up by snapshot", func() bool {
		return c.Engine(f).Stats().SnapshotsRecv > recv && status(t, ctx, c, f, 1).Applied >= status(t, ctx, c, leader, 1).Applied
	}); err != nil {
		t.Fatal(err)
	}
	dumps, err := c.Engine(f).Store().Dump()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dumps {
		if d.ShardID != 1 {
			continue
		}
		t.Logf("node %d (leader %d), durable after the snapshot: truncated at %d, log to %d, applied %d, commit %d; snapshots received %d",
			f, leader, d.TruncatedIndex, d.LastIndex, d.Applied, d.HardState.Commit, c.Engine(f).Stats().SnapshotsRecv)
		if d.TruncatedIndex > d.Applied || d.LastIndex < d.Applied || d.HardState.Commit > d.LastIndex {
			t.Fatalf("node %d's durable state of shard 1 is inconsistent after the snapshot: truncated at %d, log to %d, applied %d, commit %d",
				f, d.TruncatedIndex, d.LastIndex, d.Applied, d.HardState.Commit)
		}
	}
	c.Stop(f)
	if err := c.Start(f); err != nil {
		t.Fatal(err)
	}
	put(0, 1)
	if err := tickUntil(t, ctx, c, "the restarted follower caught up", func() bool {
		return status(t, ctx, c, f, 1).Applied >= status(t, ctx, c, leader, 1).Applied
	}); err != nil {
		t.Fatal(err)
	}
}
