package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/node/recovery"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc/codes"
)

// The Admin requests of the online recovery from the loss of a majority
// (`flotillactl recover plan|apply`; package node/recovery plans and
// drives it): the node asked plans from its view (the meta shard's local
// copy, gossip's liveness) and asks the nodes of the live replicas, node
// to node, for their replicas' state (RecoverReplicas) and, on apply, the
// node of each kept replica to rewrite it (RecoverReplica).

// stepDownWait bounds how long RecoverReplica waits for a replica here
// that still leads a shard without a quorum to step down (raft's
// CheckQuorum deposes it within an election timeout once woken).
const stepDownWait = 10 * time.Second

// RecoverPlan implements nodepb.AdminServer.
func (a *adminService) RecoverPlan(ctx context.Context, req *nodepb.RecoverPlanRequest) (*nodepb.RecoverPlanResponse, error) {
	c, err := a.recoveryCluster()
	if err != nil {
		return nil, err
	}
	plan, err := recovery.PlanOnline(ctx, c, req.GetShardIds())
	if err != nil {
		return nil, recoveryError(err)
	}
	plan.AnsweredBy = a.n.cfg.NodeID
	raw, err := json.Marshal(plan)
	if err != nil {
		return nil, recoveryError(err)
	}
	return &nodepb.RecoverPlanResponse{PlanJson: raw}, nil
}

// RecoverApply implements nodepb.AdminServer.
func (a *adminService) RecoverApply(ctx context.Context, req *nodepb.RecoverApplyRequest) (*nodepb.RecoverApplyResponse, error) {
	c, err := a.recoveryCluster()
	if err != nil {
		return nil, err
	}
	res, err := recovery.ApplyOnline(ctx, c, req.GetShardIds())
	if err != nil {
		return nil, recoveryError(err)
	}
	res.AnsweredBy = a.n.cfg.NodeID
	for _, s := range res.Shards {
		if s.Err != "" {
			a.n.cfg.Logger.Warn("recover: shard not recovered", "shard", s.ShardID, "keep", s.Keep, "err", s.Err)
		}
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, recoveryError(err)
	}
	return &nodepb.RecoverApplyResponse{ResultJson: raw}, nil
}

// RecoverReplicas implements nodepb.AdminServer.
func (a *adminService) RecoverReplicas(ctx context.Context, req *nodepb.RecoverReplicasRequest) (*nodepb.RecoverReplicasResponse, error) {
	reps, err := a.localReplicas(ctx, req.GetShardIds())
	if err != nil {
		return nil, a.engineAdminError(err, 0)
	}
	raw, err := json.Marshal(reps)
	if err != nil {
		return nil, recoveryError(err)
	}
	return &nodepb.RecoverReplicasResponse{ReplicasJson: raw}, nil
}

// RecoverReplica implements nodepb.AdminServer.
func (a *adminService) RecoverReplica(ctx context.Context, req *nodepb.RecoverReplicaRequest) (*nodepb.RecoverReplicaResponse, error) {
	var s recovery.LostShard
	if err := json.Unmarshal(req.GetShardJson(), &s); err != nil || s.ShardID == 0 || s.Keep != a.n.cfg.NodeID {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, s.ShardID,
			"node %d: recover-replica needs a shard whose kept replica is on this node (got shard %d kept on node %d, %v)", a.n.cfg.NodeID, s.ShardID, s.Keep, err)
	}
	d, err := a.recoverHere(ctx, s)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, recoveryError(err)
	}
	return &nodepb.RecoverReplicaResponse{DescJson: raw}, nil
}

// localReplicas returns this node's replicas of ids (those it holds).
func (a *adminService) localReplicas(ctx context.Context, ids []uint64) ([]recovery.Replica, error) {
	var out []recovery.Replica
	for _, id := range ids {
		ri, err := a.n.Engine.ReplicaInfo(ctx, id)
		if errors.Is(err, engine.ErrShardNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, recovery.Replica{NodeID: a.n.cfg.NodeID, ReplicaID: ri.ReplicaID, Initialized: ri.Initialized,
			LastTerm: ri.LastTerm, LastIndex: ri.LastIndex, Applied: ri.Applied, Desc: ri.Desc})
	}
	return out, nil
}

// recoverHere rewrites this node's replica of s into the only voter of its
// shard, waiting (stepDownWait) for a replica here that still leads to
// step down, then writes the shard's record (a user shard's).
func (a *adminService) recoverHere(ctx context.Context, s recovery.LostShard) (storage.Descriptor, error) {
	self := a.n.cfg.NodeID
	req := engine.ForceSoleVoterRequest{ShardID: s.ShardID, ReplicaID: s.KeepReplicaID, MinReplicaID: s.MinReplicaID}
	var sv storage.SoleVoter
	wctx, cancel := context.WithTimeout(ctx, stepDownWait)
	err := backoff.Retry(wctx, backoff.DefaultConfig(), func(ctx context.Context) error {
		var err error
		sv, err = a.n.Engine.ForceSoleVoter(ctx, req)
		var lq *engine.LiveQuorumError
		if errors.As(err, &lq) && lq.Leader == self && len(lq.Live) < len(lq.Voters)/2+1 {
			return err // leads without a quorum: steps down once woken
		}
		if err != nil {
			return backoff.Permanent(err)
		}
		return nil
	})
	cancel()
	if err != nil {
		return storage.Descriptor{}, recoveryError(err)
	}
	a.n.cfg.Logger.Warn("recover: shard recovered on this node, its only voter", "shard", s.ShardID,
		"replica", sv.NewReplicaID, "was", sv.OldReplicaID, "replicas_were", sv.Before.Replicas,
		"last_index", sv.LastIndex, "last_term", sv.LastTerm)
	if storage.IsSystemShard(s.ShardID) {
		return sv.After, nil
	}
	// The record, so that routing and placement see the new
	// configuration now (the reconciler would write it once the replica
	// leads). The meta shard may be electing (recovered just before).
	recs := shardRecordsToProto([]nodemeta.ShardRecord{nodemeta.RecordOf(sv.After)})
	err = backoff.Retry(ctx, backoff.DefaultConfig(), func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		_, err := a.PutShardRecords(actx, &nodepb.PutShardRecordsRequest{Records: recs})
		return err
	})
	if err != nil {
		return sv.After, fmt.Errorf("node: recover: shard %d was recovered but its record not written (the reconciler writes it once the meta shard answers): %w", s.ShardID, err)
	}
	if a.n.cl != nil {
		a.n.cl.notifyChange()
	}
	return sv.After, nil
}

// recoveryError maps the errors of the recovery.
func recoveryError(err error) error {
	var hq *recovery.HasQuorumError
	var lq *engine.LiveQuorumError
	switch {
	case adminErrorOf(err) != nil:
		return err
	case errors.As(err, &hq):
		return adminError(codes.FailedPrecondition, nodepb.Reason_REASON_QUORUM_ALIVE, hq.ShardID, "%v", err)
	case errors.As(err, &lq):
		return adminError(codes.FailedPrecondition, nodepb.Reason_REASON_QUORUM_ALIVE, lq.ShardID, "%v", err)
	case errors.Is(err, recovery.ErrUnknownShard), errors.Is(err, engine.ErrShardNotFound):
		return adminError(codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND, 0, "%v", err)
	case errors.Is(err, engine.ErrBadRequest), errors.Is(err, storage.ErrNotRecoverable), errors.Is(err, recovery.ErrNoSurvivor):
		return adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, 0, "%v", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return adminError(codes.DeadlineExceeded, nodepb.Reason_REASON_DEADLINE, 0, "%v", err)
	}
	return adminError(codes.Unavailable, nodepb.Reason_REASON_UNSPECIFIED, 0, "%v", err)
}

// recoveryCluster is recovery.Cluster as this node sees it.
func (a *adminService) recoveryCluster() (recoveryCluster, error) {
	if _, err := a.store(); err != nil {
		return recoveryCluster{}, err
	}
	return recoveryCluster{a: a}, nil
}

type recoveryCluster struct{ a *adminService }

func (c recoveryCluster) Shards(ctx context.Context) ([]storage.Descriptor, error) {
	recs, _, err := c.a.n.cl.store.Shards(ctx, nodemeta.Local)
	if err != nil {
		return nil, err
	}
	out := make([]storage.Descriptor, 0, len(recs)+1)
	for _, r := range recs {
		out = append(out, r.Descriptor())
	}
	if st, err := c.a.n.Engine.Status(ctx, MetaShardID); err == nil && st.Initialized {
		out = append(out, st.Desc)
	}
	return out, nil
}

func (c recoveryCluster) Live(id uint64) bool {
	if id == c.a.n.cfg.NodeID {
		return true
	}
	for _, m := range c.a.n.cl.g.Members() {
		// A node that joined advertises no cluster ID (0).
		cluster := m.Meta.ClusterID == 0 || m.Meta.ClusterID == c.a.n.cl.id.ClusterID
		if m.MetaErr == nil && m.Meta.NodeID == id && cluster && !m.State.Gone() {
			return true
		}
	}
	return false
}

func (c recoveryCluster) Replicas(ctx context.Context, id uint64, shardIDs []uint64) ([]recovery.Replica, error) {
	if id == c.a.n.cfg.NodeID {
		return c.a.localReplicas(ctx, shardIDs)
	}
	ac, err := c.client(id)
	if err != nil {
		return nil, err
	}
	resp, err := ac.RecoverReplicas(ctx, &nodepb.RecoverReplicasRequest{ShardIds: shardIDs})
	if err != nil {
		return nil, err
	}
	var out []recovery.Replica
	if err := json.Unmarshal(resp.GetReplicasJson(), &out); err != nil {
		return nil, fmt.Errorf("node %d: replicas: %w", id, err)
	}
	return out, nil
}

func (c recoveryCluster) Recover(ctx context.Context, id uint64, s recovery.LostShard) (storage.Descriptor, error) {
	if id == c.a.n.cfg.NodeID {
		return c.a.recoverHere(ctx, s)
	}
	ac, err := c.client(id)
	if err != nil {
		return storage.Descriptor{}, err
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return storage.Descriptor{}, err
	}
	resp, err := ac.RecoverReplica(ctx, &nodepb.RecoverReplicaRequest{ShardJson: raw})
	if err != nil {
		return storage.Descriptor{}, err
	}
	var d storage.Descriptor
	if err := json.Unmarshal(resp.GetDescJson(), &d); err != nil {
		return storage.Descriptor{}, fmt.Errorf("node %d: descriptor: %w", id, err)
	}
	return d, nil
}

func (c recoveryCluster) client(id uint64) (nodepb.AdminClient, error) {
	p, ok := c.a.n.peer(id)
	if !ok || p.ClientAddr == "" {
		return nil, fmt.Errorf("node: the address of node %d is unknown", id)
	}
	return c.a.d.admin(p.ClientAddr)
}
