package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
	"github.com/flotilla-db/flotilla/transport/memtransport"
	"go.etcd.io/raft/v3/raftpb"
)

// Scenario tests of safe reconfiguration: each is named after what it
// proves, and each failed before the change it guards.

// oneShard creates shard 1 over the whole ring on voters and returns its
// descriptor and leader.
func oneShard(t *testing.T, ctx context.Context, c *testcluster.Cluster, voters []uint64) (storage.Descriptor, uint64) {
	t.Helper()
	desc := storage.Descriptor{ShardID: 1, Last: ^uint64(0)}
	if err := c.CreateShards(ctx, []storage.Descriptor{desc}, voters); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	return desc, c.Leader(ctx, 1)
}

// waitRemoved waits until node's replica of shard is gone. A removed
// replica does not always hear of its removal: its leader stops sending to
// it once the removal applies, on a loaded machine before the commit
// reached it. Then it is destroyed on the word of the leader's descriptor,
// as the node's stale-replica loop does from the shard's record.
func waitRemoved(t *testing.T, ctx context.Context, c *testcluster.Cluster, node, shard uint64) {
	t.Helper()
	if err := c.WaitFor(ctx, fmt.Sprintf("node %d's replica removed", node), func() bool {
		st, err := c.Engine(node).Status(ctx, shard)
		if errors.Is(err, engine.ErrShardNotFound) {
			return true
		}
		if l := c.Leader(ctx, shard); err == nil && l != 0 && l != node {
			ls, err := c.Engine(l).Status(ctx, shard)
			if _, member := ls.Desc.Replica(st.ReplicaID); err == nil && !member && st.ReplicaID < ls.Desc.NextReplicaID {
				_ = c.Engine(node).DestroyStaleReplica(ctx, shard, st.ReplicaID, ls.Desc.NextReplicaID)
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
}

// waitCaughtUp waits until node's replica of shard has applied what the
// leader has.
func waitCaughtUp(t *testing.T, ctx context.Context, c *testcluster.Cluster, shard, node uint64) {
	t.Helper()
	leader := c.Leader(ctx, shard)
	target := status(t, ctx, c, leader, shard).Applied
	if err := c.WaitFor(ctx, fmt.Sprintf("node %d caught up", node), func() bool {
		st, err := c.Engine(node).Status(ctx, shard)
		return err == nil && st.Applied >= target
	}); err != nil {
		t.Fatal(err)
	}
}

// TestReAddedReplicaIgnoresItsFormerIncarnationsVotes: a node removed from a
// shard and added back gets a fresh replica ID each time (strictly
// increasing, never reused), and a vote request addressed to its earlier
// incarnation is dropped and counted, never stepped: it cannot win a second
// vote in a term the node already voted in. (Before, raft's ID was the node
// ID: the re-added replica, its vote deleted with its HardState, would
// grant it.)
func TestReAddedReplicaIgnoresItsFormerIncarnationsVotes(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	_, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	victim := uint64(1)
	for victim == leader {
		victim++
	}
	ids := []uint64{status(t, ctx, c, victim, 1).ReplicaID}
	for round := 0; round < 3; round++ {
		leader = c.Leader(ctx, 1)
		if leader == victim {
			t.Fatal("the victim leads")
		}
		le := c.Engine(leader)
		if err := le.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.Remove, NodeID: victim}); err != nil {
			t.Fatal(err)
		}
		waitRemoved(t, ctx, c, victim, 1)
		if err := le.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: victim}); err != nil {
			t.Fatal(err)
		}
		waitCaughtUp(t, ctx, c, 1, victim)
		if err := le.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddVoter, NodeID: victim}); err != nil {
			t.Fatal(err)
		}
		waitCaughtUp(t, ctx, c, 1, victim)
		st := status(t, ctx, c, victim, 1)
		if st.ReplicaID <= ids[len(ids)-1] || st.Desc.NextReplicaID <= st.ReplicaID {
			t.Fatalf("round %d: replica ID %d after %v (next %d)", round, st.ReplicaID, ids, st.Desc.NextReplicaID)
		}
		ids = append(ids, st.ReplicaID)
	}
	// A delayed vote request of a later term for the first incarnation.
	ve := c.Engine(victim)
	before := status(t, ctx, c, victim, 1)
	dropped := ve.Stats().StaleDropped
	leaderReplica := before.LeaderReplica
	ve.HandleBatch(&engine.Batch{ClusterID: 7, From: c.Leader(ctx, 1), To: victim, Messages: []engine.Message{{
		ShardID: 1, Msg: raftpb.Message{Type: raftpb.MsgVote, From: leaderReplica, To: ids[0], Term: before.Term + 5, LogTerm: before.Term + 5, Index: 1 << 40},
	}}})
	if err := c.WaitFor(ctx, "stale vote dropped", func() bool { return ve.Stats().StaleDropped > dropped }); err != nil {
		t.Fatal(err)
	}
	if after := status(t, ctx, c, victim, 1); after.Term >= before.Term+5 {
		t.Fatalf("the removed incarnation's vote request was stepped: term %d -> %d", before.Term, after.Term)
	}
	t.Logf("replica IDs of node %d across incarnations: %v", victim, ids)
}

// TestBadConfChangesRefusedAndNothingChanges: a conf change that is not
// valid against the shard's configuration is refused before it is
// proposed, with a typed error, and the descriptor does not change; a conf
// change while another is pending is refused at once with
// ErrConfChangeInProgress instead of waiting forever for an entry raft
// replaced with an empty one.
func TestBadConfChangesRefusedAndNothingChanges(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 5})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	half := uint64(1) << 63
	if err := c.CreateShards(ctx, []storage.Descriptor{{ShardID: 1, Last: half - 1}}, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	if leader := c.Leader(ctx, 1); leader != 1 {
		if err := c.Engine(leader).TransferLeader(ctx, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	solo := storage.Descriptor{ShardID: 2, Start: half, Last: ^uint64(0)}
	if err := c.CreateShards(ctx, []storage.Descriptor{solo}, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{2}); err != nil {
		t.Fatal(err)
	}
	e := c.Engine(1)
	for _, tc := range []struct {
		name    string
		shard   uint64
		changes []engine.ReplicaChange
		want    error
	}{
		{"remove the last voter", 2, []engine.ReplicaChange{{Type: engine.Remove, NodeID: 1}}, engine.ErrLastVoter},
		{"demote the last voter", 2, []engine.ReplicaChange{{Type: engine.AddLearner, NodeID: 1}}, engine.ErrLastVoter},
		{"add an existing voter", 1, []engine.ReplicaChange{{Type: engine.AddVoter, NodeID: 2}}, engine.ErrReplicaExists},
		{"remove a replica that does not exist", 1, []engine.ReplicaChange{{Type: engine.Remove, NodeID: 5}}, engine.ErrReplicaNotFound},
		{"name a node twice", 1, []engine.ReplicaChange{{Type: engine.AddLearner, NodeID: 4}, {Type: engine.Remove, NodeID: 4}}, engine.ErrBadRequest},
	} {
		before := status(t, ctx, c, 1, tc.shard).Desc
		err := e.ChangeReplicas(ctx, tc.shard, tc.changes...)
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if after := status(t, ctx, c, 1, tc.shard).Desc; !after.Equal(before) {
			t.Fatalf("%s: descriptor changed: %+v -> %+v", tc.name, before, after)
		}
	}
	// A change that cannot commit (the leader cut off from the others)
	// stays pending; a second one is refused at once.
	c.Partition([]uint64{1}, []uint64{2, 3, 4, 5})
	first := make(chan error, 1)
	go func() {
		first <- e.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4})
	}()
	if err := c.WaitFor(ctx, "first change appended", func() bool {
		st := status(t, ctx, c, 1, 1)
		return st.LastIndex > st.Commit
	}); err != nil {
		t.Fatal(err)
	}
	before := status(t, ctx, c, 1, 1).Desc
	if err := e.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 5}); !errors.Is(err, engine.ErrConfChangeInProgress) {
		t.Fatalf("second change while one is pending: %v", err)
	}
	if after := status(t, ctx, c, 1, 1).Desc; !after.Equal(before) {
		t.Fatalf("descriptor changed: %+v -> %+v", before, after)
	}
	c.Heal()
	// The first completes one way or another (the partition may have cost
	// the leadership); never hangs.
	select {
	case err := <-first:
		t.Logf("first change: %v", err)
	case <-ctx.Done():
		t.Fatal("the pending conf change never completed")
	}
}

// TestTooFewLiveVotersRefusedUnlessForced: a change after which fewer
// voters than a quorum of the new configuration are live is refused.
func TestTooFewLiveVotersRefusedUnlessForced(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4})
	ctx := ctxT(t, 60*time.Second)
	_, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	if leader != 1 {
		if err := c.Engine(leader).TransferLeader(ctx, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	c.Crash(3)
	// Node 1 suspects node 3 down after an election timeout of silence,
	// while node 2 keeps node 1 leader.
	e := c.Engine(1)
	if err := c.WaitFor(ctx, "node 3 suspected down", func() bool { return e.TestingIsDown(3) }); err != nil {
		t.Fatal(err)
	}
	before := status(t, ctx, c, 1, 1).Desc
	err := e.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: 1, Changes: []engine.ReplicaChange{{Type: engine.Remove, NodeID: 2}}})
	if after := status(t, ctx, c, 1, 1).Desc; !after.Equal(before) {
		t.Fatalf("descriptor changed: %+v -> %+v", before, after)
	}
	var qe *engine.QuorumError
	if !errors.As(err, &qe) || len(qe.Voters) != 2 || len(qe.Live) != 1 {
		t.Fatalf("got %v", err)
	}
}

// TestCommittedLastVoterRemovalIsANoOp: a conf change that would remove
// the last voter, should one ever be committed (replayed, hand-made), is
// refused when it applies, on every replica alike, instead of panicking
// at apply on every restart.
func TestCommittedLastVoterRemovalIsANoOp(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 1})
	ctx := ctxT(t, 30*time.Second)
	c.RunClock(2 * time.Millisecond)
	oneShard(t, ctx, c, []uint64{1})
	cc := raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.ConfChangeRemoveNode, NodeID: 1}}}
	if err := c.Engine(1).TestingProposeRawConfChange(ctx, 1, cc); !errors.Is(err, engine.ErrConfChangeRejected) {
		t.Fatalf("got %v", err)
	}
	c.Stop(1)
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Propose(ctx, 1, engine.PutCommand([]byte("k"), []byte("v"))); err != nil {
		t.Fatal(err)
	}
}

// TestReadLocalNeverMissesKeysOfADestroyedReplica: a local read racing with
// the removal of the replica either sees the data or fails; it never
// answers "not found" for a key that exists (the range used to be released
// after the data was deleted).
func TestReadLocalNeverMissesKeysOfADestroyedReplica(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	desc, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	key := keysOf(desc, 1)[0]
	if _, err := c.Propose(ctx, 1, engine.PutCommand(key, []byte("v"))); err != nil {
		t.Fatal(err)
	}
	victim := uint64(1)
	for victim == leader {
		victim++
	}
	waitCaughtUp(t, ctx, c, 1, victim)
	var armed atomic.Bool
	armed.Store(true)
	inside, destroyed := make(chan struct{}), make(chan struct{})
	engine.SetReadLocalHook(func(uint64) {
		if armed.CompareAndSwap(true, false) {
			close(inside)
			<-destroyed
		}
	})
	t.Cleanup(func() { engine.SetReadLocalHook(nil) })
	type result struct {
		res []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		res, err := c.Engine(victim).ReadLocal(1, engine.GetQuery(key))
		got <- result{res, err}
	}()
	<-inside
	if err := c.Engine(leader).ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.Remove, NodeID: victim}); err != nil {
		t.Fatal(err)
	}
	waitRemoved(t, ctx, c, victim, 1)
	close(destroyed)
	r := <-got
	if r.err == nil {
		if _, found, _ := engine.DecodeGetResult(r.res); !found {
			t.Fatal("ReadLocal answered not found for a key that exists")
		}
	} else if !errors.Is(r.err, engine.ErrShardNotFound) {
		t.Fatalf("ReadLocal: %v", r.err)
	}
}

// TestFollowerThatRejectsAStaleCandidateCampaigns: a follower with no
// leader that rejects a staler candidate's pre-vote campaigns itself at the
// next tick (it used to schedule the campaign without marking itself the
// candidate, so the shard waited a whole election timeout).
func TestFollowerThatRejectsAStaleCandidateCampaigns(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 10*time.Second)
	_, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	f := uint64(1)
	for f == leader {
		f++
	}
	fe := c.Engine(f)
	before := fe.Stats().SuccessorCampaigns
	c.Partition([]uint64{f}, []uint64{leader}) // it hears no leader
	if err := fe.TestingForgetLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := fe.TestingRejectedCampaign(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Only this path counts as a successor campaign (an ordinary election
	// after the election timeout does not).
	if err := c.WaitFor(ctx, "the follower campaigns", func() bool { return fe.Stats().SuccessorCampaigns > before }); err != nil {
		t.Fatal(err)
	}
}

// TestUnreachablePeerDoesNotDeposeLiveLeader: a failed transport stream to
// the leader's node is not the leader's death: the followers keep it (only
// liveness, an election timeout of silence or gossip, makes them forget
// it).
func TestUnreachablePeerDoesNotDeposeLiveLeader(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 30*time.Second)
	_, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	f := uint64(1)
	for f == leader {
		f++
	}
	if err := c.WaitFor(ctx, "follower knows the leader", func() bool { return status(t, ctx, c, f, 1).Leader == leader }); err != nil {
		t.Fatal(err)
	}
	term := status(t, ctx, c, f, 1).Term
	c.Engine(f).PeerUnreachable(leader)
	status(t, ctx, c, f, 1) // a worker cycle after the report: its Ready was handled
	if st := status(t, ctx, c, f, 1); st.Leader != leader {
		t.Fatalf("follower forgot its live leader: leader %d, want %d", st.Leader, leader)
	}
	// The report is only a hint: the live leader's per-tick message keeps
	// it alive past the few ticks after which a silent node is suspected.
	for i := 0; i < 12; i++ {
		settledTick(t, ctx, c)
	}
	if st := status(t, ctx, c, f, 1); st.Leader != leader || st.Term != term || c.Engine(f).TestingIsDown(leader) {
		t.Fatalf("after the report and 12 ticks: leader %d term %d (want %d, %d), suspected %v", st.Leader, st.Term, leader, term, c.Engine(f).TestingIsDown(leader))
	}
}

// TestRefusedRequestsDoNotWakeQuiescedFollowers: proposals and reads sent
// to followers of a quiesced shard are refused (NotLeader) without waking
// them: two woken followers of a quiesced leader would tick, hear nothing,
// and elect one of them, deposing a healthy leader.
func TestRefusedRequestsDoNotWakeQuiescedFollowers(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 60*time.Second)
	desc := storage.Descriptor{ShardID: 1, Last: ^uint64(0)}
	if err := c.CreateShards(ctx, []storage.Descriptor{desc}, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	// Settled ticks only: a fast clock on a loaded machine can make a live
	// node look dead, which wakes its shards for reasons of its own.
	var leader uint64
	if err := tickUntil(t, ctx, c, "a leader", func() bool { leader = c.Leader(ctx, 1); return leader != 0 }); err != nil {
		t.Fatal(err)
	}
	put := make(chan error, 1)
	go func() {
		_, err := c.Engine(leader).Propose(ctx, 1, engine.PutCommand(keysOf(desc, 1)[0], []byte("v")))
		put <- err
	}()
	if err := tickUntil(t, ctx, c, "the write", func() bool { return len(put) > 0 }); err != nil {
		t.Fatal(err)
	}
	if err := <-put; err != nil {
		t.Fatal(err)
	}
	if err := tickUntil(t, ctx, c, "quiesced", quiescedEverywhere(c, 1)); err != nil {
		t.Fatal(err)
	}
	term := status(t, ctx, c, leader, 1).Term
	for _, f := range c.IDs() {
		if f == leader {
			continue
		}
		var nl *engine.NotLeaderError
		if _, err := c.Engine(f).Propose(ctx, 1, engine.PutCommand([]byte("x"), nil)); !errors.As(err, &nl) {
			t.Fatalf("propose on follower %d: %v", f, err)
		}
		if _, err := c.Engine(f).Read(ctx, 1, engine.GetQuery([]byte("x"))); !errors.As(err, &nl) {
			t.Fatalf("read on follower %d: %v", f, err)
		}
	}
	for i := 0; i < 40; i++ { // four election timeouts
		settledTick(t, ctx, c)
	}
	for _, id := range c.IDs() {
		st := status(t, ctx, c, id, 1)
		if st.Leader != leader || st.Term != term || !st.Quiesced {
			t.Fatalf("node %d: leader %d term %d quiesced %v, want leader %d term %d quiesced", id, st.Leader, st.Term, st.Quiesced, leader, term)
		}
	}
}

// TestSnapshotCreatedReplicaKnowsItsPeers: a replica created by a snapshot
// registers the nodes of its shard for liveness, like a bootstrapped one.
func TestSnapshotCreatedReplicaKnowsItsPeers(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4, Engine: func(cfg *engine.Config) { cfg.LogTruncateEntries = 20 }})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	desc, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	for i, k := range keysOf(desc, 60) {
		if _, err := c.Propose(ctx, 1, engine.PutCommand(k, []byte(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Engine(c.Leader(ctx, 1)).ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, c, 1, 4)
	if err := c.WaitFor(ctx, "snapshot counted", func() bool { return c.Engine(4).Stats().SnapshotsRecv > 0 }); err != nil {
		t.Fatal(err)
	}
	if got := c.Engine(4).TestingPeers(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("peers of the snapshot-created replica's node: %v (leader %d)", got, leader)
	}
}

// TestDefaultsFilledBeforeValidationAndManyWorkers: engine.New fills the
// defaults before it validates (a config that is only invalid once filled
// is refused, not handed to raft), and more than 256 workers route every
// message to its shard's worker (worker indexes used to be packed in a
// byte).
func TestDefaultsFilledBeforeValidationAndManyWorkers(t *testing.T) {
	net := memtransport.NewNetwork(memtransport.Config{})
	cfg := engine.Config{ClusterID: 7, NodeID: 1, Dir: "/d", FS: vfs.NewMem(), ElectionTicks: 1}
	if _, err := engine.New(cfg, net.Endpoint(1)); err == nil || !strings.Contains(err.Error(), "must exceed HeartbeatTicks") {
		t.Fatalf("ElectionTicks 1 with the default HeartbeatTicks 1: %v", err)
	}
	c := newCluster(t, testcluster.Config{Nodes: 3, Engine: func(cfg *engine.Config) { cfg.Workers = 300 }})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	descs := testcluster.EvenDescriptors(1, 40)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	for _, d := range descs {
		if _, err := c.Propose(ctx, d.ShardID, engine.PutCommand(keysOf(d, 1)[0], []byte("v"))); err != nil {
			t.Fatalf("shard %d: %v", d.ShardID, err)
		}
	}
}

// TestSnapshotCoveredProposalIsAmbiguous: a proposal whose entry index a
// snapshot covered has an unknown outcome, reported as such (it used to
// be reported as dropped, which invites a retry of a write that may have
// applied).
func TestSnapshotCoveredProposalIsAmbiguous(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3, Engine: func(cfg *engine.Config) { cfg.LogTruncateEntries = 10 }})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	desc, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	keys := keysOf(desc, 100)
	c.Isolate(leader)
	before := status(t, ctx, c, leader, 1).LastIndex
	res := make(chan error, 1)
	go func() {
		_, err := c.Engine(leader).Propose(ctx, 1, engine.PutCommand(keys[0], []byte("lost?")))
		res <- err
	}()
	if err := c.WaitFor(ctx, "proposal appended", func() bool { return status(t, ctx, c, leader, 1).LastIndex > before }); err != nil {
		t.Fatal(err)
	}
	var others []*engine.Engine
	for _, id := range c.IDs() {
		if id != leader {
			others = append(others, c.Engine(id))
		}
	}
	for i, k := range keys[1:] {
		for {
			l := testcluster.LeadersOf(ctx, others)[1]
			if l != 0 && l != leader {
				if _, err := c.Engine(l).Propose(ctx, 1, engine.PutCommand(k, []byte(fmt.Sprint(i)))); err == nil {
					break
				}
			}
			if ctx.Err() != nil {
				t.Fatal(ctx.Err())
			}
		}
	}
	c.Heal()
	select {
	case err := <-res:
		if !errors.Is(err, engine.ErrAmbiguous) {
			t.Fatalf("proposal covered by a snapshot: %v, want ambiguous", err)
		}
	case <-ctx.Done():
		t.Fatal("the proposal never completed")
	}
}
