package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/flotilla-db/flotilla/node/merger"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The Admin requests of merges: Merge runs on the left shard's leader
// (package node/merger decides and sequences), MergeStep runs one step of
// a merge on the shard's leader (WAIT_FROZEN on the node asked). Like
// splits, merges need the meta shard: the records of a merge retire the
// merged shard, and the routers learn of it from them.

// Merge implements nodepb.AdminServer.
func (a *adminService) Merge(ctx context.Context, req *nodepb.MergeRequest) (*nodepb.MergeResponse, error) {
	shard := req.GetShardId()
	if err := a.checkRangeShard(shard, "merge"); err != nil {
		return nil, err
	}
	resp, fw, err := forward(ctx, a, shard, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.MergeResponse, error) {
		return c.Merge(ctx, &nodepb.MergeRequest{ShardId: shard, Generation: req.GetGeneration(), RightGeneration: req.GetRightGeneration(), Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	m, err := a.merger()
	if err != nil {
		return nil, adminError(codes.Internal, nodepb.Reason_REASON_INTERNAL, shard, "node: %v", err)
	}
	res, err := m.Merge(ctx, merger.Request{Left: shard, Generation: req.GetGeneration(), RightGeneration: req.GetRightGeneration()})
	if err != nil {
		return nil, a.mergeError(err, shard)
	}
	// This node's router follows at once rather than at the next poll.
	a.n.cl.syncMeta()
	return &nodepb.MergeResponse{Shard: shardRecordsToProto([]nodemeta.ShardRecord{nodemeta.RecordOf(res.Left)})[0], MergedShardId: res.Right.ShardID}, nil
}

// merger returns a merger on this node.
func (a *adminService) merger() (*merger.Merger, error) {
	cfg := merger.Config{NodeID: a.n.cfg.NodeID, Logger: a.n.cfg.Logger}
	if a.n.cl != nil && a.n.cl.cfg.Merger != nil {
		a.n.cl.cfg.Merger(&cfg)
	}
	return merger.New(cfg, a.n.Engine, mergeCluster{a})
}

// mergeError maps an error of merger.Merge on shardID.
func (a *adminService) mergeError(err error, shardID uint64) error {
	var (
		refusal   *merger.RefusalError
		abandoned *merger.AbandonedError
		stale     *engine.StaleGenerationError
		e         *nodepb.Error
	)
	switch {
	case errors.As(err, &refusal):
		e = &nodepb.Error{Code: uint32(codes.FailedPrecondition), Generation: refusal.Left.Generation, Start: refusal.Left.Start, Last: refusal.Left.Last}
		switch {
		case errors.Is(err, merger.ErrNotAdjacent):
			e.Reason = nodepb.Reason_REASON_NOT_ADJACENT
		case errors.Is(err, merger.ErrReplicasDiffer):
			e.Reason = nodepb.Reason_REASON_REPLICAS_DIFFER
		case errors.Is(err, merger.ErrJointConfig):
			e.Reason = nodepb.Reason_REASON_JOINT_CONFIG
		case errors.Is(err, merger.ErrMerging):
			e.Code, e.Reason = uint32(codes.Unavailable), nodepb.Reason_REASON_SHARD_MERGING
		default: // a system shard
			e.Code, e.Reason = uint32(codes.InvalidArgument), nodepb.Reason_REASON_BAD_REQUEST
		}
	case errors.As(err, &abandoned) && errors.Is(err, merger.ErrMetaUnavailable):
		e = &nodepb.Error{Code: uint32(codes.Unavailable), Reason: nodepb.Reason_REASON_META_UNAVAILABLE}
	case errors.As(err, &abandoned):
		e = &nodepb.Error{Code: uint32(codes.Aborted), Reason: nodepb.Reason_REASON_MERGE_ABANDONED}
	case errors.As(err, &stale):
		e = &nodepb.Error{Code: uint32(codes.FailedPrecondition), Reason: nodepb.Reason_REASON_STALE_GENERATION,
			Generation: stale.Generation, Start: stale.Start, Last: stale.Last}
		shardID = stale.ShardID
	case errors.Is(err, engine.ErrShardMerging):
		e = &nodepb.Error{Code: uint32(codes.Unavailable), Reason: nodepb.Reason_REASON_SHARD_MERGING}
	case errors.Is(err, engine.ErrShardNotFound):
		e = &nodepb.Error{Code: uint32(codes.NotFound), Reason: nodepb.Reason_REASON_SHARD_NOT_FOUND}
	default:
		return a.engineAdminError(err, shardID)
	}
	e.ShardId, e.Message, e.NotApplied = shardID, "node: "+err.Error(), true
	return StatusError(e)
}

// MergeStep implements nodepb.AdminServer.
func (a *adminService) MergeStep(ctx context.Context, req *nodepb.MergeStepRequest) (*nodepb.MergeStepResponse, error) {
	shard, kind, gen := req.GetShardId(), req.GetKind(), req.GetGeneration()
	if shard == 0 || storage.IsSystemShard(shard) || kind == nodepb.MergeStepKind_MERGE_STEP_KIND_UNSPECIFIED || nodepb.MergeStepKind_name[int32(kind)] == "" {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shard, "node: merge-step needs a user shard's ID and a known step kind (got %v)", kind)
	}
	e := a.n.Engine
	if kind == nodepb.MergeStepKind_MERGE_STEP_KIND_WAIT_FROZEN {
		if err := e.WaitFrozen(ctx, shard, gen); err != nil {
			return nil, a.engineAdminError(err, shard)
		}
		return &nodepb.MergeStepResponse{}, nil
	}
	resp, fw, err := forward(ctx, a, shard, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.MergeStepResponse, error) {
		return c.MergeStep(ctx, &nodepb.MergeStepRequest{Kind: kind, ShardId: shard, Generation: gen, Into: req.GetInto(),
			IntoGeneration: req.GetIntoGeneration(), Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	var d storage.Descriptor
	switch kind {
	case nodepb.MergeStepKind_MERGE_STEP_KIND_FREEZE:
		d, err = e.FreezeForMerge(ctx, engine.FreezeRequest{Right: shard, RightGeneration: gen, Left: req.GetInto(), LeftGeneration: req.GetIntoGeneration()})
	case nodepb.MergeStepKind_MERGE_STEP_KIND_UNFREEZE:
		d, err = e.Unfreeze(ctx, shard, gen)
	case nodepb.MergeStepKind_MERGE_STEP_KIND_BUMP_GENERATION:
		d, err = e.BumpGeneration(ctx, shard, gen)
	}
	if err != nil {
		return nil, a.engineAdminError(err, shard)
	}
	return &nodepb.MergeStepResponse{Shard: shardRecordsToProto([]nodemeta.ShardRecord{nodemeta.RecordOf(d)})[0]}, nil
}

// mergeCluster is a merger's way to the shards' leaders, the right
// shard's nodes and the meta shard: this node's Admin service, which runs
// a step here or forwards it to the shard's leader.
type mergeCluster struct{ a *adminService }

func (c mergeCluster) ShardAt(hash uint64) (uint64, bool) {
	ring := c.a.n.Router.Ring()
	if ring == nil {
		return 0, false
	}
	return ring.Lookup(hash), true
}

// step runs a MergeStep here (or where it forwards) and returns the
// shard's descriptor after it.
func (c mergeCluster) step(ctx context.Context, req *nodepb.MergeStepRequest) (storage.Descriptor, error) {
	resp, err := c.a.MergeStep(ctx, req)
	if err != nil {
		return storage.Descriptor{}, engineErrorOf(err)
	}
	return shardRecordsFromProto([]*nodepb.ShardRecord{resp.GetShard()})[0].Descriptor(), nil
}

func (c mergeCluster) Freeze(ctx context.Context, req engine.FreezeRequest) (storage.Descriptor, error) {
	return c.step(ctx, &nodepb.MergeStepRequest{Kind: nodepb.MergeStepKind_MERGE_STEP_KIND_FREEZE, ShardId: req.Right,
		Generation: req.RightGeneration, Into: req.Left, IntoGeneration: req.LeftGeneration})
}

func (c mergeCluster) Unfreeze(ctx context.Context, shardID, generation uint64) (storage.Descriptor, error) {
	return c.step(ctx, &nodepb.MergeStepRequest{Kind: nodepb.MergeStepKind_MERGE_STEP_KIND_UNFREEZE, ShardId: shardID, Generation: generation})
}

func (c mergeCluster) BumpGeneration(ctx context.Context, shardID, generation uint64) (storage.Descriptor, error) {
	return c.step(ctx, &nodepb.MergeStepRequest{Kind: nodepb.MergeStepKind_MERGE_STEP_KIND_BUMP_GENERATION, ShardId: shardID, Generation: generation})
}

// WaitFrozen asks node nodeID, retrying while it cannot be reached (a
// node restarting) until ctx ends.
func (c mergeCluster) WaitFrozen(ctx context.Context, nodeID, shardID, generation uint64) error {
	if nodeID == c.a.n.cfg.NodeID {
		return c.a.n.Engine.WaitFrozen(ctx, shardID, generation)
	}
	req := &nodepb.MergeStepRequest{Kind: nodepb.MergeStepKind_MERGE_STEP_KIND_WAIT_FROZEN, ShardId: shardID, Generation: generation}
	return backoff.Retry(ctx, backoff.Config{Initial: 20 * time.Millisecond, Max: 500 * time.Millisecond}, func(ctx context.Context) error {
		p, ok := c.a.n.peer(nodeID)
		if !ok || p.ClientAddr == "" {
			return fmt.Errorf("node: the address of node %d is unknown", nodeID)
		}
		ac, err := c.a.d.admin(p.ClientAddr)
		if err != nil {
			return err
		}
		_, err = ac.MergeStep(ctx, req)
		if adminErrorOf(err) != nil {
			return backoff.Permanent(engineErrorOf(err)) // the node answered
		}
		return err
	})
}

func (c mergeCluster) PutShards(ctx context.Context, recs []nodemeta.ShardRecord) error {
	return recordWriter{c.a}.PutShards(ctx, recs)
}

// MergedAway reads shard shardID's tombstone from this node's copy of the
// meta shard (a tombstone is never removed: a stale copy may only miss a
// recent one).
func (c mergeCluster) MergedAway(ctx context.Context, shardID uint64) (uint64, bool, error) {
	store, err := c.a.store()
	if err != nil {
		return 0, false, err
	}
	tomb, err := store.Merged(ctx, shardID, nodemeta.Local)
	switch {
	case errors.Is(err, nodemeta.ErrNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	return tomb.Into, true, nil
}

// engineErrorOf turns an Admin error back into the engine's error it
// reports, for code that decides by the engine's errors (a merger):
// *engine.StaleGenerationError (with the shard's range now),
// *engine.ShardMergingError, *engine.NotLeaderError, engine.ErrBadRequest,
// engine.ErrShardNotFound, engine.ErrProposalDropped, and an unknown
// outcome as engine.ErrAmbiguous. Other errors come back as they are.
func engineErrorOf(err error) error {
	d := adminErrorOf(err)
	if d == nil {
		return err
	}
	msg := d.GetMessage()
	switch d.GetReason() {
	case nodepb.Reason_REASON_STALE_GENERATION:
		return &engine.StaleGenerationError{ShardID: d.GetShardId(), Generation: d.GetGeneration(), Start: d.GetStart(), Last: d.GetLast()}
	case nodepb.Reason_REASON_SHARD_MERGING:
		return &engine.ShardMergingError{ShardID: d.GetShardId()}
	case nodepb.Reason_REASON_NOT_LEADER:
		return &engine.NotLeaderError{ShardID: d.GetShardId(), Leader: d.GetLeaderId(), Term: d.GetTerm()}
	case nodepb.Reason_REASON_BAD_REQUEST:
		return fmt.Errorf("%w: %s", engine.ErrBadRequest, msg)
	case nodepb.Reason_REASON_SHARD_NOT_FOUND:
		return fmt.Errorf("%w: %s", engine.ErrShardNotFound, msg)
	case nodepb.Reason_REASON_PROPOSAL_DROPPED:
		return fmt.Errorf("%w: %s", engine.ErrProposalDropped, msg)
	case nodepb.Reason_REASON_AMBIGUOUS, nodepb.Reason_REASON_DEADLINE, nodepb.Reason_REASON_CLOSED:
		return fmt.Errorf("%w: %s", engine.ErrAmbiguous, msg)
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("node: %s (%s)", st.Message(), d.GetReason())
	}
	return err
}
