package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestForceSoleVoterOnline is the engine's side of the online recovery
// (`flotillactl recover apply`): nodes 2 and 3 of a 3-node cluster crash
// for good; while node 1's engine runs, one of its shards is recovered
// (Engine.ForceSoleVoter): it elects alone, serves every acknowledged
// write and takes new ones, while node 1's other shards stay as they were
// (same replica, same configuration, no leader). The refusals come first:
// a shard with a live quorum (every node up, then one down), an unknown
// shard, a replica ID that is not the replica's.
func TestForceSoleVoterOnline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := testcluster.New(t, testcluster.Config{Nodes: 3})
	descs := testcluster.EvenDescriptors(1, 3)
	ids, acked := ackedOnNode1(t, ctx, c, descs, 20)
	e1 := c.Engine(1)
	const target = 2
	var lq *engine.LiveQuorumError
	if _, err := e1.ForceSoleVoter(ctx, engine.ForceSoleVoterRequest{ShardID: target}); !errors.As(err, &lq) {
		t.Fatalf("ForceSoleVoter with every node up: %v, want a *LiveQuorumError", err)
	}
	if _, err := e1.ForceSoleVoter(ctx, engine.ForceSoleVoterRequest{ShardID: 99}); !errors.Is(err, engine.ErrShardNotFound) {
		t.Fatalf("ForceSoleVoter of an unknown shard: %v, want ErrShardNotFound", err)
	}
	c.Crash(3)
	if err := c.WaitFor(ctx, "node 3 suspected down by node 1", func() bool { return e1.PeerSuspected(3) }); err != nil {
		t.Fatal(err)
	}
	if _, err := e1.ForceSoleVoter(ctx, engine.ForceSoleVoterRequest{ShardID: target}); !errors.Is(err, engine.ErrLiveQuorum) {
		t.Fatalf("ForceSoleVoter with 2 of 3 voters up: %v, want ErrLiveQuorum", err)
	}
	c.Crash(2)
	if err := c.WaitFor(ctx, "node 1's replicas to lose their leaders", func() bool {
		if !e1.PeerSuspected(2) {
			return false
		}
		for _, id := range ids {
			// A quiesced leader here keeps leading until it is woken.
			st, err := e1.Status(ctx, id)
			if err != nil || (st.Leader != 0 && st.Leader != 1) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	before := map[uint64]engine.ShardStatus{}
	for _, id := range ids {
		st, err := e1.Status(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		before[id] = st
	}
	old := before[target].ReplicaID
	if _, err := e1.ForceSoleVoter(ctx, engine.ForceSoleVoterRequest{ShardID: target, ReplicaID: old + 7}); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("ForceSoleVoter fenced by another replica ID: %v, want ErrBadRequest", err)
	}
	// A replica here that still leads is refused, and steps down once
	// woken (it has no quorum): the retry goes through.
	var sv storage.SoleVoter
	if err := c.WaitFor(ctx, "the recovery", func() bool {
		var err error
		sv, err = e1.ForceSoleVoter(ctx, engine.ForceSoleVoterRequest{ShardID: target, ReplicaID: old, MinReplicaID: 10})
		if err != nil && (!errors.As(err, &lq) || lq.Leader != 1) {
			t.Fatalf("ForceSoleVoter: %v, want nil or a refusal of the leader here", err)
		}
		return err == nil
	}); err != nil {
		t.Fatal(err)
	}
	if sv.NewReplicaID < 10 || sv.OldReplicaID != old || len(sv.After.Replicas) != 1 || sv.After.Replicas[0].NodeID != 1 {
		t.Fatalf("recovered: %+v", sv)
	}
	if err := c.WaitFor(ctx, "the recovered shard to elect", func() bool {
		st, err := e1.Status(ctx, target)
		return err == nil && st.State == "StateLeader"
	}); err != nil {
		t.Fatal(err)
	}
	st, err := e1.Status(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if st.ReplicaID != sv.NewReplicaID || len(st.Voters) != 1 || st.Voters[0] != 1 || !st.Desc.Equal(sv.After) {
		t.Fatalf("recovered shard: replica %d voters %v desc %v, want %+v", st.ReplicaID, st.Voters, st.Desc, sv.After)
	}
	d := descs[target-1]
	for _, k := range keysOf(d, 20) {
		res, err := e1.Read(ctx, target, engine.GetQuery(k))
		if err != nil {
			t.Fatal(err)
		}
		v, found, err := engine.DecodeGetResult(res)
		if err != nil || !found || string(v) != acked[string(k)] {
			t.Fatalf("key %q: %q found %v err %v, acknowledged %q", k, v, found, err, acked[string(k)])
		}
	}
	k := keysOf(d, 21)[20]
	if _, err := e1.Propose(ctx, target, engine.PutCommand(k, []byte("new"))); err != nil {
		t.Fatalf("write after the recovery: %v", err)
	}
	// Node 1's other shards: untouched.
	for _, id := range ids {
		if id == target {
			continue
		}
		st, err := e1.Status(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		b := before[id]
		if st.ReplicaID != b.ReplicaID || !st.Desc.Equal(b.Desc) || st.LastIndex != b.LastIndex || st.Term != b.Term {
			t.Fatalf("shard %d touched: replica %d desc %v term %d last %d, was replica %d desc %v term %d last %d",
				id, st.ReplicaID, st.Desc, st.Term, st.LastIndex, b.ReplicaID, b.Desc, b.Term, b.LastIndex)
		}
		// Every shard here can be recovered the same way.
		if err := c.WaitFor(ctx, "the recovery", func() bool {
			_, err := e1.ForceSoleVoter(ctx, engine.ForceSoleVoterRequest{ShardID: id, ReplicaID: st.ReplicaID})
			if err != nil && (!errors.As(err, &lq) || lq.Leader != 1) {
				t.Fatalf("shard %d: %v", id, err)
			}
			return err == nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// A restart keeps the recovered configuration.
	c.Stop(1)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	st, err = c.Engine(1).Status(ctx, target)
	if err != nil || st.ReplicaID != sv.NewReplicaID || len(st.Voters) != 1 {
		t.Fatalf("after a restart: replica %d voters %v err %v", st.ReplicaID, st.Voters, err)
	}
	if _, err := c.Engine(1).Read(ctx, target, engine.GetQuery(k)); err != nil {
		t.Fatal(err)
	}
}
