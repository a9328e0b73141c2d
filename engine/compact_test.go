package engine_test

import (
	"errors"
	"testing"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

// TestCompactLog: a replica's log compacted by hand starts right after its
// applied index; a follower cut off meanwhile catches up by a snapshot
// once the leader's log no longer holds what it lacks, and holds the same
// data; a shard not here is ErrShardNotFound.
func TestCompactLog(t *testing.T) {
	c, ctx, descs, want := twoShards(t, testcluster.Config{})
	d := descs[0]
	late := isolateFollower(t, ctx, c, 3, []uint64{1, 2})
	for k, v := range putKeys(t, ctx, c, d, 40, "v2") {
		want[k] = v
	}
	leader := c.Leader(ctx, d.ShardID)
	res, err := c.Engine(leader).CompactLog(ctx, d.ShardID)
	if err != nil {
		t.Fatal(err)
	}
	st := status(t, ctx, c, leader, d.ShardID)
	if res.FirstAfter != res.Applied+1 || res.FirstAfter <= res.FirstBefore || st.FirstIndex != res.FirstAfter {
		t.Fatalf("compacted %+v; the leader's log now starts at %d", res, st.FirstIndex)
	}
	before := c.Engine(late).Stats().SnapshotsRecv
	c.Heal()
	waitSettled(t, ctx, c, []uint64{d.ShardID})
	if got := c.Engine(late).Stats().SnapshotsRecv - before; got == 0 {
		t.Fatalf("node %d caught up without a snapshot", late)
	}
	checkAppliedAgree(t, ctx, c, descs)
	checkKeys(t, ctx, c, descs, want)
	if _, err := c.Engine(1).CompactLog(ctx, 99); !errors.Is(err, engine.ErrShardNotFound) {
		t.Fatalf("compact a shard not here: %v", err)
	}
}
