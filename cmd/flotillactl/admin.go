package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/spf13/cobra"
)

// JSON documents of the admin commands.
type (
	statusView struct {
		ClusterID  string     `json:"cluster_id"` // hex, as in the table
		AnsweredBy uint64     `json:"answered_by"`
		MetaLeader uint64     `json:"meta_leader"` // 0: unknown
		Nodes      []nodeView `json:"nodes"`
	}
	nodeView struct {
		NodeID     uint64 `json:"node_id"`
		Instance   uint64 `json:"instance,omitempty"`
		State      string `json:"state"`
		RaftAddr   string `json:"raft_addr"`
		ClientAddr string `json:"client_addr"`
		GossipAddr string `json:"gossip_addr"`
		HTTPAddr   string `json:"http_addr"`
		Replicas   uint32 `json:"replicas"`
		Leaders    uint32 `json:"leaders"`
		Draining   bool   `json:"draining"` // being decommissioned
	}
	shardsView struct {
		Shards      []shardView `json:"shards"`
		Unreachable []uint64    `json:"unreachable"`
	}
	shardView struct {
		ShardID    uint64        `json:"shard_id"`
		Name       string        `json:"name"`  // "meta", or the ID
		Start      string        `json:"start"` // first hash, hex
		Last       string        `json:"last"`  // last hash (inclusive), hex
		Generation uint64        `json:"generation"`
		Leader     uint64        `json:"leader"` // 0: unknown
		Term       uint64        `json:"term"`
		Commit     uint64        `json:"commit"`
		Applied    uint64        `json:"applied"`
		Replicas   []replicaView `json:"replicas"`
		ReportedBy uint64        `json:"reported_by"` // 0: no replica answered
		Quiesced   bool          `json:"quiesced"`
		System     bool          `json:"system"`
	}
	replicaView struct {
		NodeID    uint64 `json:"node_id"`
		ReplicaID uint64 `json:"replica_id"` // 0: unknown (no replica reported, static peers)
		Role      string `json:"role"`
		Match     uint64 `json:"match"`
	}
	transferView struct {
		ShardID uint64 `json:"shard_id"`
		Leader  uint64 `json:"leader"`
	}
	replicaChangeView struct {
		ShardID  uint64        `json:"shard_id"`
		Op       string        `json:"op"` // add, remove or demote
		NodeID   uint64        `json:"node_id"`
		Learner  bool          `json:"learner,omitempty"`
		Replicas []replicaView `json:"replicas"`
	}
)

// adminCommands are the commands of the nodes' Admin gRPC service: the
// first endpoint that answers serves a request, forwarding it where it
// must run.
func adminCommands(e *env) []*cobra.Command {
	addReplica := &cobra.Command{
		Use:   "add-replica SHARD NODE [--learner]",
		Short: "add a replica of a shard on a node",
		Long: `Add a replica of SHARD on NODE: a learner, promoted to voter once caught
up unless --learner is given.`,
		Args: argNames("SHARD", "NODE"),
	}
	learner := addReplica.Flags().Bool("learner", false, "stop at learner (do not promote to voter)")
	addReplica.RunE = func(c *cobra.Command, args []string) error {
		return e.changeReplica(c, args, nodepb.ReplicaOp_REPLICA_OP_ADD, *learner)
	}
	return []*cobra.Command{
		compactCommand(e),
		{
			Use:   "status",
			Short: "the cluster's nodes, their state and load",
			Long: `The cluster ID, the meta shard's leader, and per node its state
(live/suspect/dead/removed/unknown), addresses, replicas and leaderships,
and whether it is draining (decommission).`,
			Args: argNames(),
			RunE: e.status,
		},
		{
			Use:   "shards",
			Short: "every shard: range, leader, raft state, replicas",
			Long: `Per shard: hash range, leader, term, commit and applied index, replicas
(node ID/replica ID) with their roles, quiesced; then the nodes that did not
answer.`,
			Args: argNames(),
			RunE: e.shards,
		},
		{
			Use:   "transfer-leader SHARD NODE",
			Short: "move a shard's leadership to one of its voters",
			Long:  "Move SHARD's leadership to NODE, one of its voters.",
			Args:  argNames("SHARD", "NODE"),
			RunE:  e.transferLeader,
		},
		addReplica,
		{
			Use:   "remove-replica SHARD NODE",
			Short: "remove a node's replica of a shard",
			Long:  "Remove NODE's replica of SHARD.",
			Args:  argNames("SHARD", "NODE"),
			RunE: func(c *cobra.Command, args []string) error {
				return e.changeReplica(c, args, nodepb.ReplicaOp_REPLICA_OP_REMOVE, false)
			},
		},
		{
			Use:   "demote-replica SHARD NODE",
			Short: "make a node's voter of a shard a learner",
			Long: `Demote NODE's replica of SHARD from voter to learner: it keeps its data and
follows the log, but no longer counts in elections or commits. The last
voter is refused; a leader hands its leadership over first.`,
			Args: argNames("SHARD", "NODE"),
			RunE: func(c *cobra.Command, args []string) error {
				return e.changeReplica(c, args, nodepb.ReplicaOp_REPLICA_OP_DEMOTE, false)
			},
		},
		{
			Use:   "remove-node NODE",
			Short: "remove a stopped node that holds no replica (its ID is never reused)",
			Long: `Remove NODE, a stopped node that holds no replica, from the cluster; its ID
is never used again.`,
			Args: argNames("NODE"),
			RunE: e.removeNode,
		},
	}
}

func (e *env) status(*cobra.Command, []string) error {
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, true, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.StatusResponse, error) {
		return a.Status(ctx, &nodepb.StatusRequest{})
	})
	if err != nil {
		return err
	}
	v := statusOf(resp)
	return e.emit(v, func(w io.Writer) { statusTable(w, v) })
}

func statusOf(resp *nodepb.StatusResponse) statusView {
	v := statusView{
		ClusterID:  fmt.Sprintf("%016x", resp.GetClusterId()),
		AnsweredBy: resp.GetAnsweredBy(),
		MetaLeader: resp.GetMetaLeader(),
		Nodes:      []nodeView{},
	}
	for _, ns := range resp.GetNodes() {
		n := ns.GetNode()
		state := ns.GetState()
		if state == "" {
			state = "unknown"
		}
		v.Nodes = append(v.Nodes, nodeView{
			NodeID: n.GetNodeId(), Instance: n.GetInstance(), State: state,
			RaftAddr: n.GetRaftAddr(), ClientAddr: n.GetClientAddr(), GossipAddr: n.GetGossipAddr(), HTTPAddr: n.GetHttpAddr(),
			Replicas: ns.GetReplicas(), Leaders: ns.GetLeaders(), Draining: ns.GetDraining(),
		})
	}
	slices.SortFunc(v.Nodes, func(a, b nodeView) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return v
}

func statusTable(w io.Writer, v statusView) {
	fmt.Fprintf(w, "cluster %s, meta shard leader %s (answered by node %s)\n", v.ClusterID, nodeName(v.MetaLeader), nodeName(v.AnsweredBy))
	fmt.Fprintln(w, "NODE\tSTATE\tRAFT ADDR\tCLIENT ADDR\tGOSSIP ADDR\tHTTP ADDR\tREPLICAS\tLEADERS\tDRAINING")
	for _, n := range v.Nodes {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", n.NodeID, n.State,
			orDash(n.RaftAddr), orDash(n.ClientAddr), orDash(n.GossipAddr), orDash(n.HTTPAddr), n.Replicas, n.Leaders, yesNo(n.Draining))
	}
}

func (e *env) shards(*cobra.Command, []string) error {
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, true, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.ShardsResponse, error) {
		return a.Shards(ctx, &nodepb.ShardsRequest{})
	})
	if err != nil {
		return err
	}
	v := shardsOf(resp)
	return e.emit(v, func(w io.Writer) { shardsTable(w, v) })
}

func shardsOf(resp *nodepb.ShardsResponse) shardsView {
	v := shardsView{Shards: []shardView{}, Unreachable: slices.Sorted(slices.Values(resp.GetUnreachable()))}
	if v.Unreachable == nil {
		v.Unreachable = []uint64{}
	}
	for _, si := range resp.GetShards() {
		v.Shards = append(v.Shards, shardView{
			ShardID: si.GetShardId(), Name: shardName(si.GetShardId()),
			Start: fmt.Sprintf("%016x", si.GetStart()), Last: fmt.Sprintf("%016x", si.GetLast()),
			Generation: si.GetGeneration(), Leader: si.GetLeader(), Term: si.GetTerm(),
			Commit: si.GetCommit(), Applied: si.GetApplied(), Replicas: replicasOf(si.GetReplicas()),
			ReportedBy: si.GetReportedBy(), Quiesced: si.GetQuiesced(), System: si.GetSystem(),
		})
	}
	slices.SortFunc(v.Shards, func(a, b shardView) int { return cmp.Compare(a.ShardID, b.ShardID) })
	return v
}

func shardsTable(w io.Writer, v shardsView) {
	fmt.Fprintln(w, "SHARD\tRANGE\tLEADER\tTERM\tCOMMIT\tAPPLIED\tREPLICAS (NODE/REPLICA)\tQUIESCED")
	unreported := false
	for _, s := range v.Shards {
		commit, applied := fmt.Sprint(s.Commit), fmt.Sprint(s.Applied)
		if s.ReportedBy == 0 {
			commit, applied, unreported = "?", "?", true
		}
		fmt.Fprintf(w, "%s\t[%s, %s]\t%s\t%d\t%s\t%s\t%s\t%s\n", s.Name, s.Start, s.Last, nodeName(s.Leader),
			s.Term, commit, applied, replicasText(s.Replicas), yesNo(s.Quiesced))
	}
	if unreported {
		fmt.Fprintln(w, "? no replica of the shard answered: its replicas are those its meta record holds, its leader and term the router's")
	}
	if len(v.Unreachable) == 0 {
		fmt.Fprintln(w, "unreachable: none")
		return
	}
	ids := make([]string, len(v.Unreachable))
	for i, id := range v.Unreachable {
		ids[i] = fmt.Sprint(id)
	}
	fmt.Fprintf(w, "unreachable: %s (their replicas are shown as the other nodes see them)\n", strings.Join(ids, ", "))
}

func (e *env) transferLeader(c *cobra.Command, args []string) error {
	shard, node, err := parseShardNode(c, args)
	if err != nil {
		return err
	}
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, false, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.TransferLeaderResponse, error) {
		return a.TransferLeader(ctx, &nodepb.TransferLeaderRequest{ShardId: shard, NodeId: node})
	})
	if err != nil {
		return changeError(err)
	}
	v := transferView{ShardID: shard, Leader: resp.GetLeader()}
	return e.emit(v, func(w io.Writer) {
		fmt.Fprintf(w, "shard %s: the leader is now node %s\n", shardName(shard), nodeName(v.Leader))
	})
}

func (e *env) removeNode(c *cobra.Command, args []string) error {
	node, err := parseNodeArg(c, args[0])
	if err != nil {
		return err
	}
	ctx, cancel := e.context()
	defer cancel()
	if _, err := adminCall(ctx, e, false, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.RemoveNodeResponse, error) {
		return a.RemoveNode(ctx, &nodepb.RemoveNodeRequest{NodeId: node})
	}); err != nil {
		return changeError(err)
	}
	return e.emit(map[string]any{"removed": node}, func(w io.Writer) {
		fmt.Fprintf(w, "node %s removed from the cluster; its ID will not be used again\n", nodeName(node))
	})
}

// changeReplica runs add-replica or remove-replica on the SHARD NODE
// arguments args.
func (e *env) changeReplica(c *cobra.Command, args []string, op nodepb.ReplicaOp, learner bool) error {
	shard, node, err := parseShardNode(c, args)
	if err != nil {
		return err
	}
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, false, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.ChangeReplicaResponse, error) {
		return a.ChangeReplica(ctx, &nodepb.ChangeReplicaRequest{ShardId: shard, NodeId: node, Op: op, Learner: learner})
	})
	if err != nil {
		return changeError(err)
	}
	v := replicaChangeView{ShardID: shard, Op: "add", NodeID: node, Learner: learner, Replicas: replicasOf(resp.GetReplicas())}
	switch op {
	case nodepb.ReplicaOp_REPLICA_OP_REMOVE:
		v.Op = "remove"
	case nodepb.ReplicaOp_REPLICA_OP_DEMOTE:
		v.Op = "demote"
	}
	return e.emit(v, func(w io.Writer) {
		fmt.Fprintf(w, "shard %s: replicas %s\n", shardName(shard), replicasText(v.Replicas))
	})
}

func replicasOf(rs []*nodepb.Replica) []replicaView {
	out := make([]replicaView, 0, len(rs))
	for _, r := range rs {
		out = append(out, replicaView{NodeID: r.GetNodeId(), ReplicaID: r.GetReplicaId(), Role: r.GetRole(), Match: r.GetMatch()})
	}
	slices.SortFunc(out, func(a, b replicaView) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return out
}

// replicasText renders replicas as node/replica(role):
// "1/1(voter) 2/5(voter) 4/7(learner)"; "?" stands for an unknown replica ID.
func replicasText(rs []replicaView) string {
	if len(rs) == 0 {
		return "-"
	}
	roles := strings.NewReplacer(" (", "/", "(", "/", ")", "", " ", "-")
	parts := make([]string, len(rs))
	for i, r := range rs {
		role := roles.Replace(r.Role)
		if role == "" {
			role = "?"
		}
		id := "?"
		if r.ReplicaID != 0 {
			id = fmt.Sprint(r.ReplicaID)
		}
		parts[i] = fmt.Sprintf("%d/%s(%s)", r.NodeID, id, role)
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
