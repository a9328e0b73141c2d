package node

import (
	"context"
	"errors"

	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/node/splitter"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc/codes"
)

// The Admin requests of splits: Split runs on the shard's leader (package
// node/splitter decides and sequences), AllocateShardID on the meta
// shard's leader (its allocator, package node/meta). Both need the meta
// shard: a cluster with static membership has none, and no router there
// would ever learn of a new shard.

// Split implements nodepb.AdminServer.
func (a *adminService) Split(ctx context.Context, req *nodepb.SplitRequest) (*nodepb.SplitResponse, error) {
	shard := req.GetShardId()
	if err := a.checkRangeShard(shard, "split"); err != nil {
		return nil, err
	}
	resp, fw, err := forward(ctx, a, shard, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.SplitResponse, error) {
		return c.Split(ctx, &nodepb.SplitRequest{ShardId: shard, At: req.GetAt(), Generation: req.GetGeneration(), Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	s, err := splitter.New(splitter.Config{NodeID: a.n.cfg.NodeID, DB: a.n.Engine.Store().DB(), Logger: a.n.cfg.Logger},
		a.n.Engine, splitMeta{a})
	if err != nil {
		return nil, adminError(codes.Internal, nodepb.Reason_REASON_INTERNAL, shard, "node: %v", err)
	}
	res, err := s.Split(ctx, splitter.Request{ShardID: shard, At: req.GetAt(), Generation: req.GetGeneration()})
	if err != nil {
		return nil, a.splitError(err, shard)
	}
	// This node's router follows at once rather than at the next poll.
	a.n.cl.syncMeta()
	recs := shardRecordsToProto([]nodemeta.ShardRecord{nodemeta.RecordOf(res.Parent), nodemeta.RecordOf(res.Child)})
	return &nodepb.SplitResponse{Parent: recs[0], Child: recs[1], Point: string(res.Point)}, nil
}

// checkRangeShard refuses a request to split or merge (what) no shard, or
// a system shard, and any on a cluster with static membership, which has
// no meta shard: no router there would learn of the change.
func (a *adminService) checkRangeShard(shard uint64, what string) error {
	switch {
	case shard == 0:
		return adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: %s needs a shard ID", what)
	case storage.IsSystemShard(shard):
		return adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shard, "node: shard %d is a system shard: it has no range to %s", shard, what)
	}
	_, err := a.store()
	return err
}

// splitError maps an error of splitter.Split on shardID.
func (a *adminService) splitError(err error, shardID uint64) error {
	var (
		pe    *splitter.PointError
		stale *engine.StaleGenerationError
		e     *nodepb.Error
	)
	switch {
	case errors.As(err, &pe):
		e = &nodepb.Error{Code: uint32(codes.OutOfRange), Reason: nodepb.Reason_REASON_OUT_OF_RANGE,
			Generation: pe.Generation, Start: pe.Start, Last: pe.Last}
	case errors.As(err, &stale):
		e = &nodepb.Error{Code: uint32(codes.FailedPrecondition), Reason: nodepb.Reason_REASON_STALE_GENERATION,
			Generation: stale.Generation, Start: stale.Start, Last: stale.Last}
	case errors.Is(err, splitter.ErrJointConfig):
		e = &nodepb.Error{Code: uint32(codes.FailedPrecondition), Reason: nodepb.Reason_REASON_JOINT_CONFIG}
	case errors.Is(err, splitter.ErrMetaUnavailable):
		e = &nodepb.Error{Code: uint32(codes.Unavailable), Reason: nodepb.Reason_REASON_META_UNAVAILABLE}
	case errors.Is(err, splitter.ErrSystemShard):
		e = &nodepb.Error{Code: uint32(codes.InvalidArgument), Reason: nodepb.Reason_REASON_BAD_REQUEST}
	case errors.Is(err, engine.ErrShardNotFound):
		e = &nodepb.Error{Code: uint32(codes.NotFound), Reason: nodepb.Reason_REASON_SHARD_NOT_FOUND}
	default:
		return a.engineAdminError(err, shardID)
	}
	e.ShardId, e.Message, e.NotApplied = shardID, "node: "+err.Error(), true
	return StatusError(e)
}

// AllocateShardID implements nodepb.AdminServer.
func (a *adminService) AllocateShardID(ctx context.Context, req *nodepb.AllocateShardIDRequest) (*nodepb.AllocateShardIDResponse, error) {
	store, err := a.store()
	if err != nil {
		return nil, err
	}
	resp, fw, err := forward(ctx, a, MetaShardID, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.AllocateShardIDResponse, error) {
		return c.AllocateShardID(ctx, &nodepb.AllocateShardIDRequest{Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	id, err := store.AllocateShardID(ctx)
	switch {
	case errors.Is(err, nodemeta.ErrShardIDsExhausted):
		return nil, adminError(codes.ResourceExhausted, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: %v", err)
	case err != nil:
		return nil, a.engineAdminError(err, MetaShardID)
	}
	return &nodepb.AllocateShardIDResponse{ShardId: id}, nil
}

// splitMeta is a splitter's way to the meta shard: this node's Admin
// service, which serves on the meta shard's leader and forwards there
// from anywhere else.
type splitMeta struct{ a *adminService }

func (m splitMeta) AllocateShardID(ctx context.Context) (uint64, error) {
	resp, err := m.a.AllocateShardID(ctx, &nodepb.AllocateShardIDRequest{})
	return resp.GetShardId(), err
}

func (m splitMeta) PutShards(ctx context.Context, recs []nodemeta.ShardRecord) error {
	return recordWriter{m.a}.PutShards(ctx, recs)
}
