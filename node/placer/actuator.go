package placer

import (
	"context"
	"encoding/json"
	"fmt"

	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
)

// actuator implements placement.Actuator with Admin ReplicaStep requests
// to this node's own Admin service, which forwards each to the shard's
// leader. What each step returns of the shard goes to the source.
type actuator struct {
	admin nodepb.AdminClient
	src   *source
}

func (a *actuator) step(ctx context.Context, req *nodepb.ReplicaStepRequest) (*nodepb.ReplicaStepResponse, error) {
	resp, err := a.admin.ReplicaStep(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("placer: %s of shard %d: %w", req.GetKind(), req.GetShardId(), err)
	}
	if raw := resp.GetRecordJson(); len(raw) > 0 {
		var rec nodemeta.ShardRecord
		if err := json.Unmarshal(raw, &rec); err == nil && rec.ShardID == req.GetShardId() {
			a.src.noteStep(rec, resp.GetLeader())
		}
	}
	return resp, nil
}

func (a *actuator) AddLearner(ctx context.Context, shardID, nodeID uint64) (uint64, error) {
	resp, err := a.step(ctx, &nodepb.ReplicaStepRequest{ShardId: shardID, Kind: nodepb.StepKind_STEP_KIND_ADD_LEARNER, NodeId: nodeID})
	if err != nil {
		return 0, err
	}
	return resp.GetReplicaId(), nil
}

func (a *actuator) CaughtUp(ctx context.Context, shardID, replicaID uint64) (bool, error) {
	resp, err := a.step(ctx, &nodepb.ReplicaStepRequest{ShardId: shardID, Kind: nodepb.StepKind_STEP_KIND_CAUGHT_UP, ReplicaId: replicaID})
	if err != nil {
		return false, err
	}
	return resp.GetCaughtUp(), nil
}

func (a *actuator) ChangeVoters(ctx context.Context, shardID uint64, promote, demote []uint64) error {
	_, err := a.step(ctx, &nodepb.ReplicaStepRequest{ShardId: shardID, Kind: nodepb.StepKind_STEP_KIND_CHANGE_VOTERS, Promote: promote, Demote: demote})
	return err
}

func (a *actuator) LeaveJoint(ctx context.Context, shardID uint64) error {
	_, err := a.step(ctx, &nodepb.ReplicaStepRequest{ShardId: shardID, Kind: nodepb.StepKind_STEP_KIND_LEAVE_JOINT})
	return err
}

func (a *actuator) RemoveReplica(ctx context.Context, shardID, replicaID uint64) error {
	_, err := a.step(ctx, &nodepb.ReplicaStepRequest{ShardId: shardID, Kind: nodepb.StepKind_STEP_KIND_REMOVE_REPLICA, ReplicaId: replicaID})
	return err
}

func (a *actuator) TransferLeader(ctx context.Context, shardID, nodeID uint64) error {
	_, err := a.step(ctx, &nodepb.ReplicaStepRequest{ShardId: shardID, Kind: nodepb.StepKind_STEP_KIND_TRANSFER_LEADER, NodeId: nodeID})
	return err
}

func (a *actuator) Split(ctx context.Context, shardID, generation uint64) error {
	if _, err := a.admin.Split(ctx, &nodepb.SplitRequest{ShardId: shardID, Generation: generation}); err != nil {
		return fmt.Errorf("placer: split of shard %d: %w", shardID, err)
	}
	return nil
}

func (a *actuator) Merge(ctx context.Context, left, leftGen, right, rightGen uint64) error {
	if _, err := a.admin.Merge(ctx, &nodepb.MergeRequest{ShardId: left, Generation: leftGen, RightGeneration: rightGen}); err != nil {
		return fmt.Errorf("placer: merge of shard %d into shard %d: %w", right, left, err)
	}
	return nil
}
