package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/gossip"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// adminService implements nodepb.AdminServer. A request that must run on a
// shard's leader (the meta shard's, for Join) is forwarded there, at most
// maxHops times, so any node answers any request.
type adminService struct {
	nodepb.UnimplementedAdminServer
	n *Node
	d dialer
}

const maxHops = 3

func newAdminService(n *Node) *adminService { return &adminService{n: n} }

func (a *adminService) close() { a.d.close() }

func adminError(code codes.Code, reason nodepb.Reason, shardID uint64, format string, args ...any) error {
	return StatusError(&nodepb.Error{Reason: reason, Code: uint32(code), ShardId: shardID, Message: fmt.Sprintf(format, args...)})
}

// adminErrorOf returns the Error detail of a gRPC status error, or nil.
func adminErrorOf(err error) *nodepb.Error {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if e, ok := d.(*nodepb.Error); ok {
			return e
		}
	}
	return nil
}

// engineAdminError maps an engine error on shardID.
func (a *adminService) engineAdminError(err error, shardID uint64) error {
	if _, ok := status.FromError(err); ok && adminErrorOf(err) != nil {
		return err
	}
	return StatusError(a.n.service.engineError(err, shardID, true))
}

// leaderOf returns the node this node believes leads shardID: its own
// replica's view, else the router's.
func (a *adminService) leaderOf(ctx context.Context, shardID uint64) (uint64, bool) {
	if st, err := a.n.Engine.Status(ctx, shardID); err == nil {
		if st.Leader != 0 {
			return st.Leader, true
		}
		return 0, true
	}
	if rt, err := a.n.Router.Route(shardID); err == nil && rt.Leader != 0 {
		return rt.Leader, false
	}
	return 0, false
}

// forwardTarget returns the client address of the node a request about
// shardID should go to, or "" if this node is the leader.
func (a *adminService) forwardTarget(ctx context.Context, shardID uint64, hops uint32) (string, error) {
	self := a.n.cfg.NodeID
	leader, local := a.leaderOf(ctx, shardID)
	if leader == self {
		return "", nil
	}
	if hops >= maxHops {
		return "", adminError(codes.Unavailable, nodepb.Reason_REASON_NOT_LEADER, shardID, "node %d: shard %d: no leader found after %d hops; retry", self, shardID, hops)
	}
	if leader == 0 && !local && shardID != MetaShardID {
		if _, err := a.n.Router.Route(shardID); err != nil {
			return "", adminError(codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND, shardID, "shard %d does not exist (see flotillactl shards)", shardID)
		}
	}
	if leader == 0 {
		if shardID == MetaShardID {
			// No replica of the meta shard here (a joining node), or one
			// that knows no leader (a node that was away): ask another
			// live node.
			if addr := a.anyMetaHolder(); addr != "" {
				return addr, nil
			}
		}
		return "", adminError(codes.Unavailable, nodepb.Reason_REASON_NOT_LEADER, shardID, "node %d: shard %d has no known leader; retry", self, shardID)
	}
	p, ok := a.n.peer(leader)
	if !ok || p.ClientAddr == "" {
		return "", adminError(codes.Unavailable, nodepb.Reason_REASON_NOT_LEADER, shardID, "node %d: the address of node %d, leader of shard %d, is unknown; retry", self, leader, shardID)
	}
	return p.ClientAddr, nil
}

// anyMetaHolder returns the client address of a live node of this cluster
// other than this one.
func (a *adminService) anyMetaHolder() string {
	if a.n.cl == nil {
		return ""
	}
	for _, m := range a.n.cl.g.Members() {
		if m.State == gossip.Alive && m.Meta.NodeID != a.n.cfg.NodeID && m.Meta.ClusterID == a.n.cfg.ClusterID && m.Meta.ClientAddr != "" {
			return m.Meta.ClientAddr
		}
	}
	return ""
}

// Join implements nodepb.AdminServer.
func (a *adminService) Join(ctx context.Context, req *nodepb.JoinRequest) (*nodepb.JoinResponse, error) {
	rec := req.GetNode()
	if rec.GetNodeId() == 0 || rec.GetInstance() == 0 || rec.GetRaftAddr() == "" || rec.GetClientAddr() == "" {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: join: node ID, instance, raft and client addresses are required")
	}
	if req.GetClusterId() != a.n.cfg.ClusterID {
		return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_WRONG_CLUSTER, 0,
			"node: join: node %d belongs to cluster %016x, this is cluster %016x", rec.GetNodeId(), req.GetClusterId(), a.n.cfg.ClusterID)
	}
	store, err := a.store()
	if err != nil {
		return nil, err
	}
	resp, fw, err := forward(ctx, a, MetaShardID, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.JoinResponse, error) {
		return c.Join(ctx, &nodepb.JoinRequest{ClusterId: req.GetClusterId(), Node: req.GetNode(), Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	err = store.UpdateNode(ctx, rec.GetNodeId(), func(r *NodeRecord, found bool) (bool, error) {
		if found && r.Removed {
			return false, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_NODE_REMOVED, 0,
				"node %d was removed from the cluster and its ID is never reused: start with an empty data directory and no --node-id", r.NodeID)
		}
		if found && r.Instance != rec.GetInstance() {
			return false, adminError(codes.AlreadyExists, nodepb.Reason_REASON_DUPLICATE_NODE, 0,
				"node ID %d is already held by another node (another data directory, last at raft %s, client %s): pick another --node-id or none",
				r.NodeID, r.RaftAddr, r.ClientAddr)
		}
		next := NodeRecord{
			NodeID: rec.GetNodeId(), Instance: rec.GetInstance(), RaftAddr: rec.GetRaftAddr(), ClientAddr: rec.GetClientAddr(),
			GossipAddr: rec.GetGossipAddr(), HTTPAddr: rec.GetHttpAddr(), Joined: r.Joined,
		}
		if !found {
			next.Joined = time.Now().UTC()
		}
		if found && next == *r {
			return false, nil
		}
		*r = next
		return true, nil
	})
	if err != nil {
		return nil, a.engineAdminError(err, MetaShardID)
	}
	st, err := a.n.Engine.Status(ctx, MetaShardID)
	if err != nil {
		return nil, a.engineAdminError(err, MetaShardID)
	}
	id := rec.GetNodeId()
	if !slices.Contains(st.Voters, id) && !slices.Contains(st.Learners, id) && !slices.Contains(st.Outgoing, id) {
		if err := a.changeReplicas(ctx, MetaShardID, engine.ReplicaChange{Type: engine.AddLearner, NodeID: id}); err != nil {
			return nil, a.engineAdminError(err, MetaShardID)
		}
		a.n.cfg.Logger.Info("node joined: meta shard learner added", "joined", id)
	}
	return &nodepb.JoinResponse{ClusterId: a.n.cfg.ClusterID}, nil
}

// Status implements nodepb.AdminServer.
func (a *adminService) Status(ctx context.Context, _ *nodepb.StatusRequest) (*nodepb.StatusResponse, error) {
	resp := &nodepb.StatusResponse{ClusterId: a.n.cfg.ClusterID, AnsweredBy: a.n.cfg.NodeID}
	if st, err := a.n.Engine.Status(ctx, MetaShardID); err == nil {
		resp.MetaLeader = st.Leader
	}
	if a.n.cl == nil {
		for _, p := range a.n.cfg.Peers {
			resp.Nodes = append(resp.Nodes, &nodepb.NodeStatus{
				Node:  &nodepb.NodeRecord{NodeId: p.NodeID, RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr},
				State: "unknown",
			})
		}
		return resp, nil
	}
	cs := a.n.cl
	cs.syncMeta()
	for _, r := range cs.records() {
		ns := &nodepb.NodeStatus{Node: &nodepb.NodeRecord{
			NodeId: r.NodeID, Instance: r.Instance, RaftAddr: r.RaftAddr, ClientAddr: r.ClientAddr,
			GossipAddr: r.GossipAddr, HttpAddr: r.HTTPAddr,
		}, State: "unknown", Draining: r.Draining}
		if r.Removed {
			ns.State = "removed"
		} else if m, ok := cs.member(r.NodeID, r.Instance); ok {
			ns.State = m.State.String()
			ns.Replicas, ns.Leaders = m.Meta.Replicas, m.Meta.Leaders
		}
		resp.Nodes = append(resp.Nodes, ns)
	}
	return resp, nil
}

// LocalShards implements nodepb.AdminServer.
func (a *adminService) LocalShards(ctx context.Context, _ *nodepb.LocalShardsRequest) (*nodepb.LocalShardsResponse, error) {
	sts, err := a.n.Engine.Statuses(ctx)
	if err != nil {
		return nil, a.engineAdminError(err, 0)
	}
	resp := &nodepb.LocalShardsResponse{NodeId: a.n.cfg.NodeID}
	for _, st := range sts {
		resp.Shards = append(resp.Shards, shardInfo(st))
	}
	return resp, nil
}

func shardInfo(st engine.ShardStatus) *nodepb.ShardInfo {
	si := &nodepb.ShardInfo{
		ShardId: st.ShardID, Start: st.Desc.Start, Last: st.Desc.Last, Generation: st.Desc.Generation,
		Leader: st.Leader, Term: st.Term, Commit: st.Commit, Applied: st.Applied,
		ReportedBy: st.NodeID, Quiesced: st.Quiesced, System: st.ShardID >= MetaShardID,
	}
	match := map[uint64]uint64{}
	for _, p := range st.Progress {
		match[p.NodeID] = p.Match
	}
	add := func(id uint64, role string) {
		var replicaID uint64
		if rep, ok := st.Desc.ReplicaOfNode(id); ok {
			replicaID = rep.ReplicaID
		}
		si.Replicas = append(si.Replicas, &nodepb.Replica{NodeId: id, ReplicaId: replicaID, Role: role, Match: match[id]})
	}
	for _, v := range st.Voters {
		role := "voter"
		if len(st.Outgoing) > 0 && !slices.Contains(st.Outgoing, v) {
			role = "voter (incoming)"
		}
		add(v, role)
	}
	for _, v := range st.Outgoing {
		if !slices.Contains(st.Voters, v) {
			add(v, "voter (outgoing)")
		}
	}
	for _, l := range st.Learners {
		add(l, "learner")
	}
	slices.SortFunc(si.Replicas, func(x, y *nodepb.Replica) int { return cmp.Compare(x.NodeId, y.NodeId) })
	return si
}

// better reports whether report si describes its shard better than b (nil:
// none yet): see Shards.
func better(si, b *nodepb.ShardInfo) bool {
	switch {
	case b == nil:
		return true
	case si.Generation != b.Generation:
		return si.Generation > b.Generation
	}
	isLeader, bLeader := si.Leader == si.ReportedBy, b.Leader == b.ReportedBy
	return (isLeader && !bLeader) || (!isLeader && !bLeader && si.Term > b.Term)
}

// Shards implements nodepb.AdminServer: every live node reports its
// replicas; each shard is described by the report of the highest
// generation (the newest range: during a split or a merge the replicas,
// the leader's included, apply it at different moments, and the nodes
// answer at different moments), among those by its leader's report when
// there is one, else by the one with the highest term; a shard no live
// node reports, by its record in the meta shard.
func (a *adminService) Shards(ctx context.Context, _ *nodepb.ShardsRequest) (*nodepb.ShardsResponse, error) {
	best := map[uint64]*nodepb.ShardInfo{}
	resp := &nodepb.ShardsResponse{}
	for _, r := range a.localReports(ctx) {
		if r.err != nil {
			resp.Unreachable = append(resp.Unreachable, r.node)
			continue
		}
		for _, si := range r.shards {
			if better(si, best[si.ShardId]) {
				best[si.ShardId] = si
			}
		}
	}
	// The ring's shards that no live node reported still appear.
	if ring := a.n.Router.Ring(); ring != nil {
		for _, rt := range a.n.Router.Routes() {
			if best[rt.ShardID] == nil {
				best[rt.ShardID] = a.unreported(ctx, ring, rt)
			}
		}
	}
	for _, si := range best {
		resp.Shards = append(resp.Shards, si)
	}
	slices.SortFunc(resp.Shards, func(x, y *nodepb.ShardInfo) int { return cmp.Compare(x.ShardId, y.ShardId) })
	slices.Sort(resp.Unreachable)
	return resp, nil
}

// unreported describes a shard that no live node reported: by its record
// in the local copy of the meta shard, replica IDs and roles included,
// else (static peers) by what the router knows.
func (a *adminService) unreported(ctx context.Context, ring *router.Ring, rt router.Route) *nodepb.ShardInfo {
	si := &nodepb.ShardInfo{ShardId: rt.ShardID, Generation: rt.Generation, Leader: rt.Leader, Term: rt.Term}
	if a.n.cl != nil {
		if rec, err := a.n.cl.store.Shard(ctx, rt.ShardID, nodemeta.Local); err == nil {
			si.Start, si.Last, si.Generation = rec.Start, rec.Last, rec.Generation
			for _, rp := range rec.Replicas {
				si.Replicas = append(si.Replicas, &nodepb.Replica{NodeId: rp.NodeID, ReplicaId: rp.ReplicaID, Role: rp.Role.StorageRole().String()})
			}
			slices.SortFunc(si.Replicas, func(x, y *nodepb.Replica) int { return cmp.Compare(x.NodeId, y.NodeId) })
			return si
		}
	}
	rg, _ := ring.Range(rt.ShardID)
	si.Start, si.Last = rg.Start, rg.Last
	for _, id := range rt.Replicas {
		si.Replicas = append(si.Replicas, &nodepb.Replica{NodeId: id, Role: "unknown"})
	}
	return si
}

// nodeReport is one node's answer to LocalShards: the replicas it hosts.
type nodeReport struct {
	node   uint64
	alive  bool // gossip sees the node alive (with static peers: always)
	shards []*nodepb.ShardInfo
	err    error
}

// errGone: a node that gossip declares dead or gone is not asked.
var errGone = errors.New("node: dead or left, by gossip")

// localReports asks this node and every other node of the cluster that is
// not removed for the replicas it hosts (LocalShards), the others
// concurrently and for at most 2s each; a node that gossip declares dead or
// gone gets errGone without a call.
func (a *adminService) localReports(ctx context.Context) []nodeReport {
	type target struct {
		Peer
		alive, gone bool
	}
	var targets []target
	self := a.n.cfg.NodeID
	if a.n.cl != nil {
		a.n.cl.syncMeta()
		for _, r := range a.n.cl.records() {
			if r.NodeID == self || r.Removed {
				continue
			}
			if p, ok := a.n.peer(r.NodeID); ok && p.ClientAddr != "" {
				m, found := a.n.cl.member(r.NodeID, r.Instance)
				targets = append(targets, target{Peer: p, alive: found && m.State == gossip.Alive, gone: found && m.State.Gone()})
			}
		}
	} else {
		for _, p := range a.n.cfg.Peers {
			if p.NodeID != self {
				targets = append(targets, target{Peer: p, alive: true})
			}
		}
	}
	reports := make([]nodeReport, len(targets)+1)
	local, err := a.LocalShards(ctx, nil)
	reports[0] = nodeReport{node: self, alive: true, err: err}
	if err == nil {
		reports[0].shards = local.Shards
	}
	var wg sync.WaitGroup
	for i, t := range targets {
		rep := &reports[i+1]
		rep.node, rep.alive = t.NodeID, t.alive
		if t.gone {
			rep.err = errGone
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := a.d.admin(t.ClientAddr)
			if err != nil {
				rep.err = err
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			r, err := c.LocalShards(cctx, &nodepb.LocalShardsRequest{})
			if err != nil {
				rep.err = err
				return
			}
			rep.shards = r.Shards
		}()
	}
	wg.Wait()
	return reports
}

// forward runs call against the shard's leader if that is another node.
func forward[Resp any](ctx context.Context, a *adminService, shardID uint64, hops uint32, call func(nodepb.AdminClient) (Resp, error)) (resp Resp, forwarded bool, err error) {
	addr, err := a.forwardTarget(ctx, shardID, hops)
	if err != nil || addr == "" {
		return resp, false, err
	}
	c, err := a.d.admin(addr)
	if err != nil {
		return resp, true, err
	}
	resp, err = call(c)
	return resp, true, err
}

// TransferLeader implements nodepb.AdminServer.
func (a *adminService) TransferLeader(ctx context.Context, req *nodepb.TransferLeaderRequest) (*nodepb.TransferLeaderResponse, error) {
	shard, target := req.GetShardId(), req.GetNodeId()
	if shard == 0 || target == 0 {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shard, "node: transfer-leader needs a shard ID and a node ID")
	}
	resp, fw, err := forward(ctx, a, shard, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.TransferLeaderResponse, error) {
		next := &nodepb.TransferLeaderRequest{ShardId: shard, NodeId: target, Hops: req.GetHops() + 1}
		return c.TransferLeader(ctx, next)
	})
	if fw || err != nil {
		return resp, err
	}
	st, err := a.n.Engine.Status(ctx, shard)
	if err != nil {
		return nil, a.engineAdminError(err, shard)
	}
	if !slices.Contains(st.Voters, target) {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_NODE_NOT_FOUND, shard, "node %d is not a voter of shard %d (voters %v)", target, shard, st.Voters)
	}
	if err := a.n.Engine.TransferLeader(ctx, shard, target); err != nil {
		return nil, a.engineAdminError(err, shard)
	}
	return &nodepb.TransferLeaderResponse{Leader: target}, nil
}

// ChangeReplica implements nodepb.AdminServer. Adding a replica adds a
// learner, waits until it has caught up with the leader's commit index,
// then promotes it. Demoting one makes a voter a learner (a learner
// already is left as it is); like a removal, never the last voter. The
// shard's record in the meta shard follows the descriptor each change
// applies (the reconciler, records.go), shortly after the call returns.
//
// The leadership may move in the middle (an election, the leader hand-back
// after a start, or the transfer with which a leader removing its own
// replica begins): each step is checked against the configuration afresh,
// so the change goes on where the shard is led now, up to maxLeaderMoves
// times.
func (a *adminService) ChangeReplica(ctx context.Context, req *nodepb.ChangeReplicaRequest) (*nodepb.ChangeReplicaResponse, error) {
	shard, id := req.GetShardId(), req.GetNodeId()
	switch op := req.GetOp(); {
	case shard == 0 || id == 0 || (op != nodepb.ReplicaOp_REPLICA_OP_ADD && op != nodepb.ReplicaOp_REPLICA_OP_REMOVE && op != nodepb.ReplicaOp_REPLICA_OP_DEMOTE):
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shard, "node: change-replica needs a shard ID, a node ID and an operation (add, remove or demote)")
	case op == nodepb.ReplicaOp_REPLICA_OP_DEMOTE && req.GetLearner():
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shard, "node: learner applies to add only")
	}
	for moves := 0; ; moves++ {
		resp, err := a.changeReplica(ctx, req)
		var nl *engine.NotLeaderError
		if err == nil {
			return resp, nil
		}
		if !errors.As(err, &nl) || nl.Leader == 0 || nl.Leader == a.n.cfg.NodeID || moves == maxLeaderMoves || ctx.Err() != nil {
			return nil, a.engineAdminError(err, shard)
		}
		a.n.cfg.Logger.Info("change-replica: the shard's leadership moved; going on there", "shard", shard, "target", id, "op", req.GetOp().String(), "leader", nl.Leader)
	}
}

// maxLeaderMoves bounds how many times one ChangeReplica follows the
// shard's leadership to another node.
const maxLeaderMoves = 3

// changeReplica makes req's change from this node: forwarded to the leader,
// or made here. An error of this node's engine is returned as it is (a
// *engine.NotLeaderError when the leadership moved); the caller converts it.
func (a *adminService) changeReplica(ctx context.Context, req *nodepb.ChangeReplicaRequest) (*nodepb.ChangeReplicaResponse, error) {
	shard, id := req.GetShardId(), req.GetNodeId()
	resp, fw, err := forward(ctx, a, shard, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.ChangeReplicaResponse, error) {
		next := &nodepb.ChangeReplicaRequest{ShardId: shard, NodeId: id, Op: req.GetOp(), Learner: req.GetLearner(), Hops: req.GetHops() + 1}
		return c.ChangeReplica(ctx, next)
	})
	if fw || err != nil {
		return resp, err
	}
	e := a.n.Engine
	st, err := e.Status(ctx, shard)
	if err != nil {
		return nil, err
	}
	if a.n.cl != nil && req.GetOp() == nodepb.ReplicaOp_REPLICA_OP_ADD {
		r, ok := a.n.cl.nodeRecord(ctx, id)
		if !ok || r.Removed {
			return nil, adminError(codes.NotFound, nodepb.Reason_REASON_NODE_NOT_FOUND, shard, "node %d is not a member of the cluster (see flotillactl status)", id)
		}
	}
	switch req.GetOp() {
	case nodepb.ReplicaOp_REPLICA_OP_ADD:
		if !slices.Contains(st.Voters, id) && !slices.Contains(st.Learners, id) {
			if err := a.changeReplicas(ctx, shard, engine.ReplicaChange{Type: engine.AddLearner, NodeID: id}); err != nil {
				return nil, err
			}
		}
		if !req.GetLearner() && !slices.Contains(st.Voters, id) {
			if err := a.waitCaughtUp(ctx, shard, id); err != nil {
				return nil, err
			}
			if err := a.changeReplicas(ctx, shard, engine.ReplicaChange{Type: engine.AddVoter, NodeID: id}); err != nil {
				return nil, err
			}
		}
	case nodepb.ReplicaOp_REPLICA_OP_REMOVE, nodepb.ReplicaOp_REPLICA_OP_DEMOTE:
		demote := req.GetOp() == nodepb.ReplicaOp_REPLICA_OP_DEMOTE
		if !slices.Contains(st.Voters, id) && !slices.Contains(st.Learners, id) {
			return nil, adminError(codes.NotFound, nodepb.Reason_REASON_NODE_NOT_FOUND, shard, "node %d holds no replica of shard %d", id, shard)
		}
		if demote && !slices.Contains(st.Voters, id) {
			break // a learner already
		}
		if slices.Contains(st.Voters, id) && len(st.Voters) == 1 {
			return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, shard, "node %d is the last voter of shard %d: add another first", id, shard)
		}
		if id == a.n.cfg.NodeID && slices.Contains(st.Voters, id) {
			// A leader does not remove or demote itself: hand the
			// leadership over first, and go on there.
			for _, v := range st.Voters {
				if v != id {
					if err := e.TransferLeader(ctx, shard, v); err != nil {
						return nil, err
					}
					return nil, &engine.NotLeaderError{ShardID: shard, Leader: v, Term: st.Term}
				}
			}
		}
		change := engine.ReplicaChange{Type: engine.Remove, NodeID: id}
		if demote {
			change.Type = engine.AddLearner // a voter's: demoted
		}
		if err := a.changeReplicas(ctx, shard, change); err != nil {
			return nil, err
		}
	}
	st, err = e.Status(ctx, shard)
	if err != nil {
		return nil, err
	}
	return &nodepb.ChangeReplicaResponse{Replicas: shardInfo(st).Replicas}, nil
}

// confChangeRetry bounds how long changeReplicas tries a change again that
// the leader refused as another one in progress: about two election timeouts
// at the default tick.
const confChangeRetry = 2 * time.Second

// changeReplicas makes change on this node, shard's leader. A leader refuses
// a conf change (engine.ErrConfChangeInProgress, nothing proposed) until it
// has applied every entry it held on becoming leader, raft's pendingConfIndex:
// a leader that has just taken over, as after the transfer that removing the
// leader's own replica starts with, refuses for about a round trip, until the
// empty entry of its term commits. So does a leader whose previous change is
// not yet applied. The change is tried again every 20ms for up to
// confChangeRetry, and checked against the configuration afresh each time;
// then the refusal is returned.
func (a *adminService) changeReplicas(ctx context.Context, shard uint64, change engine.ReplicaChange) error {
	return retryInProgress(ctx, func() error { return a.n.Engine.ChangeReplicas(ctx, shard, change) })
}

// retryInProgress calls change until it is not refused as a change in
// progress or dropped by raft (a leadership transfer under way: the nodes
// hand leaderships back after a start), every 20ms for up to
// confChangeRetry.
func retryInProgress(ctx context.Context, change func() error) error {
	deadline := time.Now().Add(confChangeRetry)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := change()
		// A change in progress, or a proposal raft dropped (a leadership
		// transfer under way): neither applied anything, both pass.
		if !(errors.Is(err, engine.ErrConfChangeInProgress) || errors.Is(err, engine.ErrProposalDropped)) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-t.C:
		}
	}
}

// waitCaughtUp waits until node id's replica of shard has the leader's
// commit index. Only the leader knows its followers' progress: once another
// node is known to lead the shard, it returns a *engine.NotLeaderError
// naming that node, for the caller to go on there; while no leader is known
// it waits.
func (a *adminService) waitCaughtUp(ctx context.Context, shard, id uint64) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	self := a.n.cfg.NodeID
	for {
		st, err := a.n.Engine.Status(ctx, shard)
		if err != nil {
			return err
		}
		if st.Leader != 0 && st.Leader != self {
			return &engine.NotLeaderError{ShardID: shard, Leader: st.Leader, Term: st.Term}
		}
		for _, p := range st.Progress {
			if p.NodeID == id && p.Match >= st.Commit {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return adminError(codes.DeadlineExceeded, nodepb.Reason_REASON_DEADLINE, shard, "node %d's replica of shard %d has not caught up; it stays a learner: %v", id, shard, ctx.Err())
		case <-t.C:
		}
	}
}

// PrepareReplica implements nodepb.AdminServer.
func (a *adminService) PrepareReplica(ctx context.Context, req *nodepb.PrepareReplicaRequest) (*nodepb.PrepareReplicaResponse, error) {
	shard := req.GetShardId()
	if shard == 0 {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: prepare-replica needs a shard ID")
	}
	if _, err := a.n.Engine.Status(ctx, shard); err == nil {
		return &nodepb.PrepareReplicaResponse{}, nil // a replica is here already
	}
	// Nothing to prepare: a node added back to a shard gets a fresh replica
	// ID, which its tombstone allows. Kept for admin tools that still call it.
	return &nodepb.PrepareReplicaResponse{}, nil
}

// RemoveNode implements nodepb.AdminServer. It refuses to remove a node
// that is not stopped, or that holds a replica of a user shard by the
// shards' records or by any live node's view (heldReplicas); it removes the
// node's replica of the meta shard, then marks its record removed.
func (a *adminService) RemoveNode(ctx context.Context, req *nodepb.RemoveNodeRequest) (*nodepb.RemoveNodeResponse, error) {
	id := req.GetNodeId()
	if id == 0 {
		return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: remove-node needs a node ID")
	}
	store, err := a.store()
	if err != nil {
		return nil, err
	}
	resp, fw, err := forward(ctx, a, MetaShardID, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.RemoveNodeResponse, error) {
		return c.RemoveNode(ctx, &nodepb.RemoveNodeRequest{NodeId: id, Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	rec, err := store.Node(ctx, id, nodemeta.Linearizable)
	switch {
	case errors.Is(err, nodemeta.ErrNotFound):
		return nil, adminError(codes.NotFound, nodepb.Reason_REASON_NODE_NOT_FOUND, 0, "node %d is not a member of the cluster", id)
	case err != nil:
		return nil, a.engineAdminError(err, MetaShardID)
	case rec.Removed:
		return &nodepb.RemoveNodeResponse{}, nil
	}
	if mb, ok := a.n.cl.member(id, rec.Instance); ok && !mb.State.Gone() {
		return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, 0, "node %d is %s: stop it first", id, mb.State)
	}
	held, err := a.heldReplicas(ctx, store, id)
	if err != nil {
		return nil, err
	}
	if len(held) > 0 {
		return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, 0,
			"node %d still holds replicas of shards %v: move them first (add-replica elsewhere, remove-replica there)", id, held)
	}
	st, err := a.n.Engine.Status(ctx, MetaShardID)
	if err != nil {
		return nil, a.engineAdminError(err, MetaShardID)
	}
	if slices.Contains(st.Voters, id) && len(st.Voters) <= 3 {
		return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, MetaShardID,
			"node %d is one of the %d voters of the meta shard: add another voter first (add-replica meta NODE)", id, len(st.Voters))
	}
	if slices.Contains(st.Voters, id) || slices.Contains(st.Learners, id) {
		if err := a.changeReplicas(ctx, MetaShardID, engine.ReplicaChange{Type: engine.Remove, NodeID: id}); err != nil {
			return nil, a.engineAdminError(err, MetaShardID)
		}
	}
	err = store.UpdateNode(ctx, id, func(r *NodeRecord, found bool) (bool, error) {
		if !found || r.Removed {
			return false, nil
		}
		r.Removed = true
		return true, nil
	})
	if err != nil {
		return nil, a.engineAdminError(err, MetaShardID)
	}
	a.n.cfg.Logger.Info("node removed from the cluster", "removed", id)
	return &nodepb.RemoveNodeResponse{}, nil
}

// heldReplicas returns the user shards that hold a replica on node id by
// the authority: the shard records, read linearizably, and, should a
// record lag its shard's descriptor (written a moment after the change
// applies), the replicas the live nodes report, this node's own included.
// A node that gossip sees alive and that does not answer fails the check,
// since what it holds is unknown; a node that is not alive has no say.
func (a *adminService) heldReplicas(ctx context.Context, store *nodemeta.Store, id uint64) ([]uint64, error) {
	recs, _, err := store.Shards(ctx, nodemeta.Linearizable)
	if err != nil {
		return nil, a.engineAdminError(err, MetaShardID)
	}
	held := map[uint64]bool{}
	for _, r := range recs {
		if slices.Contains(r.NodeIDs(), id) {
			held[r.ShardID] = true
		}
	}
	for _, rep := range a.localReports(ctx) {
		if rep.err != nil {
			if rep.alive {
				return nil, adminError(codes.Unavailable, nodepb.Reason_REASON_UNSPECIFIED, 0,
					"node %d is alive but did not list its replicas (%v): whether it holds one on node %d is unknown; retry", rep.node, rep.err, id)
			}
			continue
		}
		for _, si := range rep.shards {
			if si.GetSystem() {
				continue
			}
			for _, r := range si.GetReplicas() {
				if r.GetNodeId() == id {
					held[si.GetShardId()] = true
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(held)), nil
}

// store returns the meta shard's records; a cluster with static membership
// has none.
func (a *adminService) store() (*nodemeta.Store, error) {
	if a.n.cl == nil {
		return nil, adminError(codes.FailedPrecondition, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: this cluster has static membership: no meta shard")
	}
	return a.n.cl.store, nil
}
