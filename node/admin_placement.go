package node

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/placement"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc/codes"
)

// The Admin requests of the placement driver (package node/placer runs
// it): the steps of its operations on a shard's leader, and the operators'
// view and controls on the meta shard's leader.

// caughtUpSlack is how far behind the leader's commit index a learner may
// be and still count as caught up: it received its snapshot and follows
// the log, a few entries behind under load.
const caughtUpSlack = 64

// ReplicaStep implements nodepb.AdminServer.
func (a *adminService) ReplicaStep(ctx context.Context, req *nodepb.ReplicaStepRequest) (*nodepb.ReplicaStepResponse, error) {
	shard, kind := req.GetShardId(), req.GetKind()
	if shard == 0 || kind == nodepb.StepKind_STEP_KIND_UNSPECIFIED || nodepb.StepKind_name[int32(kind)] == "" {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shard, "node: replica-step needs a shard ID and a known step kind (got %v)", kind)
	}
	resp, fw, err := forward(ctx, a, shard, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.ReplicaStepResponse, error) {
		return c.ReplicaStep(ctx, &nodepb.ReplicaStepRequest{ShardId: shard, Kind: kind, NodeId: req.GetNodeId(), ReplicaId: req.GetReplicaId(),
			Promote: req.GetPromote(), Demote: req.GetDemote(), Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	e := a.n.Engine
	st, err := e.Status(ctx, shard)
	if err != nil {
		return nil, a.engineAdminError(err, shard)
	}
	out := &nodepb.ReplicaStepResponse{}
	replica := func(id uint64) (storage.Replica, error) {
		r, ok := st.Desc.Replica(id)
		if !ok {
			return r, adminError(codes.NotFound, nodepb.Reason_REASON_NODE_NOT_FOUND, shard, "shard %d has no replica %d (replicas %v)", shard, id, st.Desc.Replicas)
		}
		return r, nil
	}
	switch kind {
	case nodepb.StepKind_STEP_KIND_ADD_LEARNER:
		id := req.GetNodeId()
		if r, ok := st.Desc.ReplicaOfNode(id); ok {
			if r.Role != storage.RoleLearner {
				return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, shard, "node %d holds replica %d of shard %d as a %s", id, r.ReplicaID, shard, r.Role)
			}
			out.ReplicaId = r.ReplicaID
			break
		}
		if rec, ok := a.n.cl.nodeRecord(ctx, id); !ok || rec.Removed {
			return nil, adminError(codes.NotFound, nodepb.Reason_REASON_NODE_NOT_FOUND, shard, "node %d is not a member of the cluster", id)
		}
		if err := a.changeReplicasWith(ctx, engine.ChangeRequest{ShardID: shard, Changes: []engine.ReplicaChange{{Type: engine.AddLearner, NodeID: id}}}); err != nil {
			return nil, a.engineAdminError(err, shard)
		}
	case nodepb.StepKind_STEP_KIND_CAUGHT_UP:
		if _, err := replica(req.GetReplicaId()); err != nil {
			return nil, err
		}
		for _, p := range st.Progress {
			if p.ReplicaID == req.GetReplicaId() && p.State == "StateReplicate" && p.Match+caughtUpSlack >= st.Commit {
				out.CaughtUp = true
			}
		}
	case nodepb.StepKind_STEP_KIND_CHANGE_VOTERS:
		var changes []engine.ReplicaChange
		for _, id := range req.GetPromote() {
			r, err := replica(id)
			if err != nil {
				return nil, err
			}
			changes = append(changes, engine.ReplicaChange{Type: engine.AddVoter, NodeID: r.NodeID, ReplicaID: id})
		}
		for _, id := range req.GetDemote() {
			r, err := replica(id)
			if err != nil {
				return nil, err
			}
			changes = append(changes, engine.ReplicaChange{Type: engine.AddLearner, NodeID: r.NodeID, ReplicaID: id})
		}
		if len(changes) == 0 {
			return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shard, "node: change-voters needs a replica to promote or demote")
		}
		simple := len(req.GetPromote()) == 1 && len(req.GetDemote()) == 0
		if err := a.changeReplicasWith(ctx, engine.ChangeRequest{ShardID: shard, Changes: changes, Explicit: !simple}); err != nil {
			return nil, a.engineAdminError(err, shard)
		}
	case nodepb.StepKind_STEP_KIND_LEAVE_JOINT:
		if err := a.changeReplicasWith(ctx, engine.ChangeRequest{ShardID: shard, LeaveJoint: true}); err != nil {
			return nil, a.engineAdminError(err, shard)
		}
	case nodepb.StepKind_STEP_KIND_REMOVE_REPLICA:
		r, ok := st.Desc.Replica(req.GetReplicaId())
		if !ok {
			break // removed already
		}
		if r.NodeID == a.n.cfg.NodeID && r.Role.IsVoter() {
			return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, shard, "replica %d of shard %d leads: transfer the leadership first", r.ReplicaID, shard)
		}
		err := a.changeReplicasWith(ctx, engine.ChangeRequest{ShardID: shard, Changes: []engine.ReplicaChange{{Type: engine.Remove, NodeID: r.NodeID, ReplicaID: r.ReplicaID}}})
		if err != nil {
			return nil, a.engineAdminError(err, shard)
		}
	case nodepb.StepKind_STEP_KIND_TRANSFER_LEADER:
		if st.Leader != req.GetNodeId() {
			if err := e.TransferLeader(ctx, shard, req.GetNodeId()); err != nil {
				return nil, a.engineAdminError(err, shard)
			}
		}
	}
	// What the shard looks like now, for the driver's next step. The
	// leader may have handed its leadership over (a transfer, or the
	// removal of this node's replica): then the new leader is reported and
	// the descriptor is this replica's, which applied the step.
	if after, err := e.Status(ctx, shard); err == nil {
		st = after
	} else if !errors.Is(err, engine.ErrShardNotFound) {
		return nil, a.engineAdminError(err, shard)
	}
	if kind == nodepb.StepKind_STEP_KIND_ADD_LEARNER && out.ReplicaId == 0 {
		r, ok := st.Desc.ReplicaOfNode(req.GetNodeId())
		if !ok || r.Role != storage.RoleLearner {
			return nil, adminError(codes.Internal, nodepb.Reason_REASON_INTERNAL, shard, "node %d's learner of shard %d is not in the descriptor after it was added: %v", req.GetNodeId(), shard, st.Desc)
		}
		out.ReplicaId = r.ReplicaID
	}
	if raw, err := json.Marshal(nodemeta.RecordOf(st.Desc)); err == nil {
		out.RecordJson = raw
	}
	out.Leader = st.Leader
	return out, nil
}

// changeReplicasWith makes req on this node, the shard's leader, retrying
// a change refused as one in progress (see changeReplicas).
func (a *adminService) changeReplicasWith(ctx context.Context, req engine.ChangeRequest) error {
	return retryInProgress(ctx, func() error { return a.n.Engine.ChangeReplicasWith(ctx, req) })
}

// Placement implements nodepb.AdminServer.
func (a *adminService) Placement(ctx context.Context, req *nodepb.PlacementRequest) (*nodepb.PlacementResponse, error) {
	act := req.GetAction()
	if act == nodepb.PlacementAction_PLACEMENT_ACTION_UNSPECIFIED || nodepb.PlacementAction_name[int32(act)] == "" {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: placement needs an action (plan, moves, pause, resume, status), got %v", act)
	}
	if a.n.cl == nil {
		return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: this cluster has static membership: no placement driver")
	}
	resp, fw, err := forward(ctx, a, MetaShardID, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.PlacementResponse, error) {
		return c.Placement(ctx, &nodepb.PlacementRequest{Action: act, Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	if a.n.cl.placer.Load() == nil {
		return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: the meta shard's leader (node %d) runs no placement driver (--no-placement, or still starting)", a.n.cfg.NodeID)
	}
	p := a.n.cl.placer.Load()
	out := &nodepb.PlacementResponse{NodeId: a.n.cfg.NodeID}
	switch act {
	case nodepb.PlacementAction_PLACEMENT_ACTION_PLAN:
		ops, err := p.Plan(ctx)
		if err != nil {
			return nil, placementError(err)
		}
		if out.OpsJson, err = json.Marshal(ops); err != nil {
			return nil, placementError(err)
		}
	case nodepb.PlacementAction_PLACEMENT_ACTION_MOVES:
		if out.MovesJson, err = json.Marshal(p.Moves()); err != nil {
			return nil, placementError(err)
		}
	case nodepb.PlacementAction_PLACEMENT_ACTION_PAUSE:
		p.Pause()
	case nodepb.PlacementAction_PLACEMENT_ACTION_RESUME:
		p.Resume()
	}
	if out.StatsJson, err = json.Marshal(p.Stats()); err != nil {
		return nil, placementError(err)
	}
	out.Paused = p.Paused()
	return out, nil
}

// placementError maps the planner's errors.
func placementError(err error) error {
	switch {
	case errors.Is(err, placement.ErrUnknownNode), errors.Is(err, nodemeta.ErrNotFound):
		return adminError(codes.NotFound, nodepb.Reason_REASON_NODE_NOT_FOUND, 0, "%v", err)
	case errors.Is(err, placement.ErrNodeRemoved), errors.Is(err, nodemeta.ErrNodeRemoved):
		return adminError(codes.FailedPrecondition, nodepb.Reason_REASON_NODE_REMOVED, 0, "%v", err)
	case errors.Is(err, placement.ErrLastNode), errors.Is(err, placement.ErrNoLiveNodes), errors.Is(err, placement.ErrBadState):
		return adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, 0, "%v", err)
	}
	return adminError(codes.Unavailable, nodepb.Reason_REASON_UNSPECIFIED, 0, "%v", err)
}

// SetDraining implements nodepb.AdminServer.
func (a *adminService) SetDraining(ctx context.Context, req *nodepb.SetDrainingRequest) (*nodepb.SetDrainingResponse, error) {
	id := req.GetNodeId()
	if id == 0 {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: decommission needs a node ID")
	}
	store, err := a.store()
	if err != nil {
		return nil, err
	}
	resp, fw, err := forward(ctx, a, MetaShardID, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.SetDrainingResponse, error) {
		return c.SetDraining(ctx, &nodepb.SetDrainingRequest{NodeId: id, Draining: req.GetDraining(), Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	if p := a.n.cl.placer.Load(); req.GetDraining() && p != nil {
		if err := p.CanDecommission(ctx, id); err != nil {
			return nil, placementError(err)
		}
	}
	if err := store.SetDraining(ctx, id, req.GetDraining()); err != nil {
		if errors.Is(err, nodemeta.ErrNotFound) || errors.Is(err, nodemeta.ErrNodeRemoved) {
			return nil, placementError(err)
		}
		return nil, a.engineAdminError(err, MetaShardID)
	}
	a.n.cfg.Logger.Info("node draining changed", "target", id, "draining", req.GetDraining())
	a.n.cl.notifyChange()
	return &nodepb.SetDrainingResponse{}, nil
}
