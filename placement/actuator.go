package placement

import (
	"context"
	"time"
)

// The driver's view of the world: three small interfaces that the node
// implements (Source from the meta shard's records and gossip, Actuator on
// top of the engine's membership changes and leadership transfers,
// IntentStore in the meta shard). The driver calls Source and IntentStore
// from the goroutine that runs Step (or Run), one call at a time. It calls
// the Actuator concurrently, one call per operation in flight, each of a
// different shard (never two calls for one shard at once), while the
// stepping goroutine waits for them all: the calls wait on raft and the
// network, not on each other.

// Source gives the driver the cluster as it is now.
type Source interface {
	// State returns a fresh snapshot: the meta shard's records of shards
	// (their applied descriptors: replicas, replica IDs, roles, joint)
	// and nodes (removed ones included), with liveness, load and leaders
	// from gossip, and Now. The driver calls it before every plan and
	// again before every step of every operation, so it should be cheap
	// (served from records kept current, not rebuilt from disk). An error
	// skips the step; nothing is executed on an old snapshot.
	State(ctx context.Context) (State, error)
}

// Actuator executes the primitive steps of an operation on one shard. Each
// call blocks until the step has applied (or failed) and returns ctx's
// error, wrapped, if ctx ends first; the outcome of a step cut short is
// then unknown, and the driver re-reads the shard before deciding what
// comes next. Each call is checked against the shard's current
// configuration by the implementation (the shard is the authority): a
// call that names a replica the shard no longer has, or that the shard
// cannot take now (another change pending, joint when it must not be),
// fails without changing anything. An error is reported, the operation
// fails, and a later plan may issue it again; no call is retried by the
// driver within one operation.
type Actuator interface {
	// AddLearner adds a learner of shardID on nodeID with a fresh replica
	// ID (from the shard's NextReplicaID: never reused) and returns that
	// ID; the learner is caught up by a snapshot. Idempotent: if nodeID
	// already holds a learner of the shard, its replica ID is returned and
	// nothing changes.
	AddLearner(ctx context.Context, shardID, nodeID uint64) (replicaID uint64, err error)
	// CaughtUp reports whether learner replicaID of shardID has caught up
	// with the leader's log (received its snapshot and applied close to
	// the commit index), so that promoting it costs the shard no
	// availability. It does not block waiting for that: the driver asks
	// again on its next step, until DriverConfig.CatchUpTimeout.
	CaughtUp(ctx context.Context, shardID, replicaID uint64) (bool, error)
	// ChangeVoters makes one joint configuration change of shardID:
	// every learner in promote becomes a voter (incoming) and every voter
	// in demote becomes a learner (outgoing, demoting). The joint state is
	// left by LeaveJoint, not here. With one promotion and no demotion the
	// implementation may make a simple change instead (no joint state).
	// Replica IDs fence the change: one that is not a learner (promote)
	// or a voter (demote) of the shard fails it, and it fails when the
	// shard is joint or has a change pending.
	ChangeVoters(ctx context.Context, shardID uint64, promote, demote []uint64) error
	// LeaveJoint takes shardID out of its joint configuration. Idempotent:
	// a shard that is not joint is left as it is, without error.
	LeaveJoint(ctx context.Context, shardID uint64) error
	// RemoveReplica removes replica replicaID of shardID (a learner, or a
	// voter by a simple change) and has its node delete the replica's data.
	// Idempotent: a replica the shard no longer has is not an error.
	RemoveReplica(ctx context.Context, shardID, replicaID uint64) error
	// TransferLeader hands shardID's leadership to its voter on nodeID and
	// returns once nodeID leads. Idempotent: nil if nodeID leads already.
	TransferLeader(ctx context.Context, shardID, nodeID uint64) error
	// Split splits shardID's range in two, if its range is still at
	// generation (the implementation picks the split point: the median of
	// the shard's data by hash), and returns once the split applied.
	Split(ctx context.Context, shardID, generation uint64) error
	// Merge folds right into left (its right neighbour, on the same nodes
	// in the same roles), if their ranges are still at the generations
	// given, and returns once the merge applied. A merge that fails after
	// it froze right is abandoned by the implementation (right thawed).
	Merge(ctx context.Context, left, leftGeneration, right, rightGeneration uint64) error
}

// Intent is what the driver records before the first step of a
// multi-step operation (one that adds replicas), so that the next leader
// of the meta shard can finish it or roll it back.
type Intent struct {
	Op Op
	// Learners are the replica IDs of the learners this operation added,
	// recorded after each AddLearner returns: a rollback removes them and
	// nothing else. A learner whose AddLearner returned but was not
	// recorded (a crash in between) is a stray learner: the planner's
	// repair removes it.
	Learners []uint64
	// Started is when the operation started (the driver's clock).
	Started time.Time
}

// IntentStore keeps the intents of operations in flight, at most one per
// shard (the planner never runs two operations on one shard), keyed by
// Op.ShardID. It lives in the meta shard: a write that returns nil is
// durable and seen by the next leader; a write by a node that no longer
// leads must fail.
type IntentStore interface {
	// Save records in, replacing the shard's earlier intent if any.
	Save(ctx context.Context, in Intent) error
	// Delete clears shardID's intent. Idempotent.
	Delete(ctx context.Context, shardID uint64) error
	// Load returns every recorded intent, in any order.
	Load(ctx context.Context) ([]Intent, error)
}
