package node

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/node/recovery"
	"github.com/flotilla-db/flotilla/storage"
)

// TestRecoverOnline: 5 nodes, 8 shards of 3 replicas placed by the
// driver; two nodes sharing shards are closed for good (the meta shard,
// on 5 voters, keeps its quorum). RecoverPlan lists exactly the shards
// that had 2 of their 3 voters there; RecoverApply refuses a shard with a
// live quorum and an unknown shard (nothing touched), then recovers the
// lost ones on their surviving replica: every key acknowledged before the
// kill reads back (the cluster was idle and caught up), and placement
// brings every shard back to 3 voters on the live nodes.
func TestRecoverOnline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	dir := t.TempDir()
	nodes := startClusterNodes(t, ctx, dir, 5, 3, placementConfig, func(_ int, cfg *ClusterConfig) { cfg.InitialShards = 8 })
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, "8 shards of 3 voters over 5 nodes, the meta shard on 5", func() error {
		reps, _, err := hosted(ctx, nodes, 3)
		if err != nil {
			return err
		}
		for id, n := range reps {
			if n == 0 {
				return fmt.Errorf("node %d holds no replica yet", id)
			}
		}
		st, err := nodes[0].Engine.Status(ctx, MetaShardID)
		if err != nil || len(st.Voters) != MaxMetaVoters || len(st.Outgoing) > 0 {
			return fmt.Errorf("meta shard voters %v (%v)", st.Voters, err)
		}
		return nil
	})
	cl, err := client.New(ctx, client.Config{Endpoints: []string{nodes[0].ClientAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	acked := map[string]string{}
	for i := range 200 {
		k, v := fmt.Sprint("key-", i), fmt.Sprint("v", i)
		if err := cl.Put(ctx, []byte(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
		acked[k] = v
	}
	// The shards' voters, and every replica caught up with its leader.
	voters := map[uint64][]uint64{}
	waitFor(t, ctx, "every replica caught up", func() error {
		commit := map[uint64]uint64{}
		clear(voters)
		for _, n := range nodes {
			sts, err := n.Engine.Statuses(ctx)
			if err != nil {
				return err
			}
			for _, st := range sts {
				if st.State == "StateLeader" {
					commit[st.ShardID] = st.Commit
					voters[st.ShardID] = st.Voters
				}
			}
		}
		for _, n := range nodes {
			sts, _ := n.Engine.Statuses(ctx)
			for _, st := range sts {
				if c, ok := commit[st.ShardID]; !ok || st.Applied < c || st.LastIndex < c {
					return fmt.Errorf("node %d shard %d: applied %d, leader's commit %d", n.NodeID(), st.ShardID, st.Applied, c)
				}
			}
		}
		return nil
	})
	// Two nodes to kill, not nodes[0] (it answers the admin requests):
	// the pair that loses the quorum of the most shards.
	var kill []uint64
	var lost []uint64
	for i := 1; i < len(nodes); i++ {
		for j := i + 1; j < len(nodes); j++ {
			a, b := nodes[i].NodeID(), nodes[j].NodeID()
			var l []uint64
			for id, vs := range voters {
				if id != MetaShardID && slices.Contains(vs, a) && slices.Contains(vs, b) {
					l = append(l, id)
				}
			}
			if len(l) > len(lost) {
				kill, lost = []uint64{min(a, b), max(a, b)}, l
			}
		}
	}
	if len(lost) == 0 || len(lost) == len(voters)-1 {
		t.Fatalf("no pair of nodes makes some shards but not all lose their quorum: voters %v", voters)
	}
	slices.Sort(lost)
	var healthy uint64
	for id, vs := range voters {
		if id != MetaShardID && !slices.Contains(lost, id) && slices.Contains(vs, nodes[0].NodeID()) {
			healthy = id
		}
	}
	if healthy == 0 {
		t.Fatalf("node %d holds no replica of a shard that keeps its quorum: voters %v", nodes[0].NodeID(), voters)
	}
	t.Logf("killing nodes %v: shards %v lose their quorum", kill, lost)
	var live []*Node
	for _, n := range nodes {
		if slices.Contains(kill, n.NodeID()) {
			n.Close()
		} else {
			live = append(live, n)
		}
	}
	admin := nodes[0].admin
	start := time.Now()
	var plan recovery.Plan
	waitFor(t, ctx, "the plan to list the lost shards", func() error {
		resp, err := admin.RecoverPlan(ctx, &nodepb.RecoverPlanRequest{})
		if err != nil {
			return err
		}
		plan = recovery.Plan{}
		if err := json.Unmarshal(resp.GetPlanJson(), &plan); err != nil {
			return err
		}
		var got []uint64
		for _, s := range plan.Shards {
			got = append(got, s.ShardID)
		}
		if !slices.Equal(got, lost) {
			return fmt.Errorf("plan lists %v, want %v", got, lost)
		}
		return nil
	})
	t.Logf("plan after %v", time.Since(start).Round(time.Millisecond))
	for _, s := range plan.Shards {
		if s.Keep == 0 || !slices.Equal(s.Down, kill) || len(s.Replicas) != 1 || s.Replicas[0].NodeID != s.Keep {
			t.Fatalf("shard %d: %+v", s.ShardID, s)
		}
	}

	// Bad input: nothing touched.
	before, err := nodes[0].Engine.Status(ctx, healthy)
	if err != nil {
		t.Fatalf("shard %d: %v", healthy, err)
	}
	_, err = admin.RecoverApply(ctx, &nodepb.RecoverApplyRequest{ShardIds: []uint64{lost[0], healthy}})
	if r := adminErrorOf(err).GetReason(); r != nodepb.Reason_REASON_QUORUM_ALIVE {
		t.Fatalf("apply with shard %d, which has a live quorum: %v (%v)", healthy, err, r)
	}
	_, err = admin.RecoverApply(ctx, &nodepb.RecoverApplyRequest{ShardIds: []uint64{lost[0], 999}})
	if r := adminErrorOf(err).GetReason(); r != nodepb.Reason_REASON_SHARD_NOT_FOUND {
		t.Fatalf("apply with an unknown shard: %v (%v)", err, r)
	}
	for _, n := range live {
		st, err := n.Engine.Status(ctx, lost[0])
		if err == nil && len(st.Desc.Replicas) != 3 {
			t.Fatalf("refused apply touched shard %d on node %d: %v", lost[0], n.NodeID(), st.Desc)
		}
	}
	if after, err := nodes[0].Engine.Status(ctx, healthy); err != nil || after.ReplicaID != before.ReplicaID {
		t.Fatalf("refused apply touched shard %d: replica %d, was %d (%v)", healthy, after.ReplicaID, before.ReplicaID, err)
	}

	start = time.Now()
	resp, err := admin.RecoverApply(ctx, &nodepb.RecoverApplyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var res recovery.Result
	if err := json.Unmarshal(resp.GetResultJson(), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Shards) != len(lost) {
		t.Fatalf("applied %d shards, want %d: %+v", len(res.Shards), len(lost), res)
	}
	for _, s := range res.Shards {
		if s.Err != "" || len(s.Desc.Replicas) != 1 || s.Desc.Replicas[0].NodeID != s.Keep || s.Desc.Replicas[0].Role != storage.RoleVoter {
			t.Fatalf("shard %d: %+v", s.ShardID, s)
		}
	}
	t.Logf("applied in %v", time.Since(start).Round(time.Millisecond))
	// Applying again: those shards have a quorum now.
	_, err = admin.RecoverApply(ctx, &nodepb.RecoverApplyRequest{ShardIds: lost[:1]})
	if r := adminErrorOf(err).GetReason(); r != nodepb.Reason_REASON_QUORUM_ALIVE {
		t.Fatalf("apply again: %v (%v)", err, r)
	}
	cl2, err := client.New(ctx, client.Config{Endpoints: []string{live[0].ClientAddr(), live[1].ClientAddr(), live[2].ClientAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	for _, k := range slices.Sorted(maps.Keys(acked)) {
		waitFor(t, ctx, "key "+k, func() error {
			v, found, err := cl2.Get(ctx, []byte(k))
			if err != nil {
				return err
			}
			if !found || string(v) != acked[k] {
				t.Fatalf("key %s: %q found %v, acknowledged %q", k, v, found, acked[k])
			}
			return nil
		})
	}
	t.Logf("every acknowledged key read back after %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, ctx, "every shard back to 3 voters on the live nodes", func() error {
		_, _, err := hosted(ctx, live, 3)
		return err
	})
	t.Logf("re-replicated %v after the apply", time.Since(start).Round(time.Millisecond))
}
