package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestForceSoleVoterServes is the engine's side of the recovery from the
// loss of a majority: every replica of node 1 is rewritten offline into the
// only voter of its shard (storage.Store.ForceSoleVoter) while nodes 2 and
// 3 are down; node 1 alone then elects, serves every acknowledged write
// and takes new ones. Nodes 2 and 3 then come back with their old state
// and old configuration: they may elect among themselves (they are a
// majority of it: the operator must not bring them back), but they cannot
// disturb node 1, whose replicas have fresh IDs that their messages do not
// name (dropped as stale): node 1 keeps leading at the same term, with its
// configuration unchanged.
func TestForceSoleVoterServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := testcluster.New(t, testcluster.Config{Nodes: 3})
	descs := testcluster.EvenDescriptors(1, 4)
	ids, acked := ackedOnNode1(t, ctx, c, descs, 25)
	for _, id := range []uint64{1, 2, 3} {
		c.Crash(id)
	}
	s, err := storage.Open(storage.Config{Dir: "/data", FS: c.StoreFS(1)})
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	newIDs := map[uint64]uint64{}
	for _, id := range ids {
		res, err := s.ForceSoleVoter(b, id, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		newIDs[id] = res.NewReplicaID
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	e1 := c.Engine(1)
	read := func() {
		t.Helper()
		for _, d := range descs {
			for _, k := range keysOf(d, 25) {
				res, err := e1.Read(ctx, d.ShardID, engine.GetQuery(k))
				if err != nil {
					t.Fatal(err)
				}
				v, found, err := engine.DecodeGetResult(res)
				if err != nil || !found || string(v) != acked[string(k)] {
					t.Fatalf("key %q: %q found %v err %v, acknowledged %q", k, v, found, err, acked[string(k)])
				}
			}
		}
	}
	read()
	terms := map[uint64]uint64{}
	for _, id := range ids {
		st, err := e1.Status(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.ReplicaID != newIDs[id] || len(st.Voters) != 1 || st.Voters[0] != 1 {
			t.Fatalf("shard %d: replica %d voters %v", id, st.ReplicaID, st.Voters)
		}
		terms[id] = st.Term
	}

	// The old members come back with their old state.
	dropped := e1.Stats().StaleDropped
	for _, id := range []uint64{2, 3} {
		if err := c.Start(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitFor(ctx, "old members to elect among themselves and be dropped by node 1", func() bool {
		for _, id := range ids {
			led := false
			for _, n := range []uint64{2, 3} {
				if st, err := c.Engine(n).Status(ctx, id); err == nil && st.State == "StateLeader" {
					led = true
				}
			}
			if !led {
				return false
			}
		}
		return e1.Stats().StaleDropped > dropped
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ { // many election timeouts of the old members
		c.Tick()
	}
	for _, d := range descs {
		k := []byte(fmt.Sprintf("after-%d", d.ShardID))
		for {
			st, err := e1.Status(ctx, d.ShardID)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != "StateLeader" || st.Term != terms[d.ShardID] || len(st.Desc.Replicas) != 1 {
				t.Fatalf("shard %d disturbed: %s at term %d (was %d), replicas %v", d.ShardID, st.State, st.Term, terms[d.ShardID], st.Desc.Replicas)
			}
			if d.Contains(engine.DefaultConfig(1, 1, "x").PartitionRule.Hash(k)) {
				break
			}
			k = append(k, 'x')
		}
		if _, err := e1.Propose(ctx, d.ShardID, engine.PutCommand(k, []byte("new"))); err != nil {
			t.Fatalf("shard %d: write after the old members came back: %v", d.ShardID, err)
		}
	}
	read()
}

// ackedOnNode1 creates descs on nodes 1, 2 and 3, writes n keys to each
// shard and waits until node 1 has applied everything its shards' leaders
// acknowledged (it could lag: a survivor without a write loses it, which
// the recovery documents). It returns the shard IDs and the writes.
func ackedOnNode1(t *testing.T, ctx context.Context, c *testcluster.Cluster, descs []storage.Descriptor, n int) ([]uint64, map[string]string) {
	t.Helper()
	ids := make([]uint64, len(descs))
	for i, d := range descs {
		ids[i] = d.ShardID
	}
	if err := c.CreateShards(ctx, descs, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	acked := map[string]string{}
	for _, d := range descs {
		for i, k := range keysOf(d, n) {
			v := fmt.Sprintf("v%d", i)
			if _, err := c.Propose(ctx, d.ShardID, engine.PutCommand(k, []byte(v))); err != nil {
				t.Fatal(err)
			}
			acked[string(k)] = v
		}
	}
	if err := c.WaitFor(ctx, "node 1 caught up", func() bool {
		for _, id := range ids {
			l := c.Leader(ctx, id)
			if l == 0 {
				return false
			}
			lst, err1 := c.Engine(l).Status(ctx, id)
			st, err2 := c.Engine(1).Status(ctx, id)
			if err1 != nil || err2 != nil || st.Applied < lst.Applied {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return ids, acked
}
