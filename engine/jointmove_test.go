package engine_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestExplicitJointMoveHandsLeadershipOverBeforeLeaving is the placement
// driver's move of a leader's replica: a learner on the new node, one joint
// change (promote it, demote the leader) that stays joint until asked, the
// leadership handed to the incoming voter while both configurations must
// agree, then leaving the joint state and removing the demoted replica.
// Every step is fenced by replica ID, and the steps that must not happen
// (a transfer to a learner, a change while joint, a change of a replica
// that was replaced) are refused with nothing proposed. Before, a joint
// change was always left by the leader that applied it, so a demoted
// leader stepped down and the shard had to elect.
func TestExplicitJointMoveHandsLeadershipOverBeforeLeaving(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	desc, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	le := c.Engine(leader)
	if err := le.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, c, 1, 4)
	st := status(t, ctx, c, leader, 1)
	learner, _ := st.Desc.ReplicaOfNode(4)
	old, _ := st.Desc.ReplicaOfNode(leader)

	// Refused, nothing proposed: a transfer to a learner (raft would ignore
	// it and the caller wait for ever), a change fenced by a replica ID the
	// node does not hold.
	if err := le.TransferLeader(ctx, 1, 4); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("transfer to a learner: %v", err)
	}
	err := le.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: 1, Changes: []engine.ReplicaChange{
		{Type: engine.AddVoter, NodeID: 4, ReplicaID: learner.ReplicaID + 1},
	}})
	if !errors.Is(err, engine.ErrReplicaNotFound) {
		t.Fatalf("promotion fenced by a wrong replica ID: %v", err)
	}
	if err := le.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: 1, LeaveJoint: true, Explicit: true}); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("leave joint with Explicit: %v", err)
	}
	if got := status(t, ctx, c, leader, 1).Desc.ConfIndex; got != st.Desc.ConfIndex {
		t.Fatalf("a refused change applied: conf index %d, was %d", got, st.Desc.ConfIndex)
	}

	// One joint change: promote the learner, demote the leader.
	err = le.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: 1, Explicit: true, Changes: []engine.ReplicaChange{
		{Type: engine.AddVoter, NodeID: 4, ReplicaID: learner.ReplicaID},
		{Type: engine.AddLearner, NodeID: leader, ReplicaID: old.ReplicaID},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// It stays joint: a write proposed and applied after it finds it so
	// (an automatic leave is proposed as soon as the joint entry applies).
	if _, err := le.Propose(ctx, 1, engine.PutCommand(keysOf(desc, 1)[0], []byte("v"))); err != nil {
		t.Fatal(err)
	}
	st = status(t, ctx, c, leader, 1)
	if len(st.Outgoing) == 0 || st.Leader != leader {
		t.Fatalf("after the explicit joint change: outgoing %v, leader %d (want joint, led by %d)", st.Outgoing, st.Leader, leader)
	}
	if r, _ := st.Desc.ReplicaOfNode(leader); r.Role != storage.RoleVoterDemoting {
		t.Fatalf("the leader's role while joint: %v", r.Role)
	}
	if err := le.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.Remove, NodeID: 4}); !errors.Is(err, engine.ErrConfChangeInProgress) {
		t.Fatalf("a change while joint: %v", err)
	}

	// The leadership goes to the incoming voter while joint.
	if err := le.TransferLeader(ctx, 1, 4); err != nil {
		t.Fatal(err)
	}
	ne := c.Engine(4)
	if err := ne.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: 1, LeaveJoint: true}); err != nil {
		t.Fatal(err)
	}
	st = status(t, ctx, c, 4, 1)
	if len(st.Outgoing) != 0 || st.Leader != 4 {
		t.Fatalf("after leaving: outgoing %v, leader %d", st.Outgoing, st.Leader)
	}
	if r, _ := st.Desc.ReplicaOfNode(leader); r.Role != storage.RoleLearner || r.ReplicaID != old.ReplicaID {
		t.Fatalf("the demoted replica after leaving: %+v", r)
	}
	// Leaving again is a no-op, not an error.
	conf := st.Desc.ConfIndex
	if err := ne.ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: 1, LeaveJoint: true}); err != nil {
		t.Fatal(err)
	}
	if got := status(t, ctx, c, 4, 1).Desc.ConfIndex; got != conf {
		t.Fatalf("leaving a configuration that is not joint changed it: conf index %d, was %d", got, conf)
	}
	// The demoted replica goes, fenced by its ID.
	if err := ne.ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.Remove, NodeID: leader, ReplicaID: old.ReplicaID}); err != nil {
		t.Fatal(err)
	}
	waitRemoved(t, ctx, c, leader, 1)
}

// TestReplicaRemovedWhileCutOffIsDestroyedByItsRecord: a learner removed
// while it could not hear of it keeps its replica (its leader no longer
// sends to it); DestroyStaleReplica, given the shard's NextReplicaID from
// the shard's record, destroys it, and refuses a replica ID the record
// cannot know about.
func TestReplicaRemovedWhileCutOffIsDestroyedByItsRecord(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 4})
	ctx := ctxT(t, 60*time.Second)
	c.RunClock(2 * time.Millisecond)
	_, leader := oneShard(t, ctx, c, []uint64{1, 2, 3})
	if err := c.Engine(leader).ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.AddLearner, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, c, 1, 4)
	rid := status(t, ctx, c, 4, 1).ReplicaID
	c.Isolate(4)
	leader = c.Leader(ctx, 1)
	if err := c.Engine(leader).ChangeReplicas(ctx, 1, engine.ReplicaChange{Type: engine.Remove, NodeID: 4, ReplicaID: rid}); err != nil {
		t.Fatal(err)
	}
	// The leader's last messages to the learner, sent in the pass that
	// applied its removal, must be lost to the cut, not delivered after it.
	if err := c.Flush(ctx, 4); err != nil {
		t.Fatal(err)
	}
	c.Heal()
	desc := status(t, ctx, c, leader, 1).Desc
	if _, err := c.Engine(4).Status(ctx, 1); err != nil {
		t.Fatalf("the cut-off learner's replica: %v", err)
	}
	if err := c.Engine(4).DestroyStaleReplica(ctx, 1, desc.NextReplicaID, desc.NextReplicaID); !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("a replica ID the record cannot know: %v", err)
	}
	if err := c.Engine(4).DestroyStaleReplica(ctx, 1, rid, desc.NextReplicaID); err != nil {
		t.Fatal(err)
	}
	waitRemoved(t, ctx, c, 4, 1)
	// Its messages no longer create it: a tombstone is left.
	if err := c.Engine(4).DestroyStaleReplica(ctx, 1, rid, desc.NextReplicaID); err != nil {
		t.Fatalf("again: %v", err)
	}
}
