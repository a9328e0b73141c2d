package node

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc/codes"
)

// Compact implements nodepb.AdminServer: the node asked compacts its own
// replica of the shard and asks every other replica's node to compact
// theirs (Local), in parallel; each replica's outcome is reported, a
// failure as its error. The replicas are the shard's descriptor's, as this
// node's replica has it, else the router's.
func (a *adminService) Compact(ctx context.Context, req *nodepb.CompactRequest) (*nodepb.CompactResponse, error) {
	shard := req.GetShardId()
	if shard == 0 {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: compact needs a shard ID")
	}
	self := a.n.cfg.NodeID
	if req.GetLocal() {
		return &nodepb.CompactResponse{Replicas: []*nodepb.CompactedReplica{a.compactHere(ctx, shard)}}, nil
	}
	var nodes []uint64
	if st, err := a.n.Engine.Status(ctx, shard); err == nil && st.Initialized {
		for _, r := range st.Desc.Replicas {
			nodes = append(nodes, r.NodeID)
		}
	} else if rt, err := a.n.Router.Route(shard); err == nil {
		nodes = slices.Clone(rt.Replicas)
	}
	if len(nodes) == 0 {
		return nil, adminError(codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND, shard, "shard %d has no replica that this node knows of (see flotillactl shards)", shard)
	}
	slices.Sort(nodes)
	out := make([]*nodepb.CompactedReplica, len(nodes))
	var wg sync.WaitGroup
	for i, id := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id == self {
				out[i] = a.compactHere(ctx, shard)
				return
			}
			out[i] = a.compactOn(ctx, id, shard)
		}()
	}
	wg.Wait()
	return &nodepb.CompactResponse{Replicas: out}, nil
}

// compactHere compacts this node's replica of shard.
func (a *adminService) compactHere(ctx context.Context, shard uint64) *nodepb.CompactedReplica {
	out := &nodepb.CompactedReplica{NodeId: a.n.cfg.NodeID}
	res, err := a.n.Engine.CompactLog(ctx, shard)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.FirstBefore, out.FirstAfter, out.Applied = res.FirstBefore, res.FirstAfter, res.Applied
	return out
}

// compactOn asks node id to compact its replica of shard.
func (a *adminService) compactOn(ctx context.Context, id, shard uint64) *nodepb.CompactedReplica {
	fail := func(err error) *nodepb.CompactedReplica {
		return &nodepb.CompactedReplica{NodeId: id, Error: err.Error()}
	}
	p, ok := a.n.peer(id)
	if !ok || p.ClientAddr == "" {
		return fail(errors.New("its address is unknown"))
	}
	c, err := a.d.admin(p.ClientAddr)
	if err != nil {
		return fail(err)
	}
	resp, err := c.Compact(ctx, &nodepb.CompactRequest{ShardId: shard, Local: true})
	if err != nil {
		return fail(err)
	}
	if len(resp.GetReplicas()) != 1 {
		return fail(errors.New("no answer for its replica"))
	}
	r := resp.GetReplicas()[0]
	r.NodeId = id
	return r
}
