package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/placement"
	"github.com/spf13/cobra"
)

// JSON documents of the placement commands. The node sends the placement
// package's own types (as JSON); they are shown in the words of the other
// commands.
type (
	planView struct {
		AnsweredBy uint64   `json:"answered_by"` // the meta shard's leader, whose driver planned
		Paused     bool     `json:"paused"`
		Ops        []opView `json:"ops"`
	}
	opView struct {
		Kind    string         `json:"kind"`
		ShardID uint64         `json:"shard_id"`
		Add     []uint64       `json:"add"`    // the nodes that gain a voter
		Remove  *opReplicaView `json:"remove"` // null: none
		Leader  uint64         `json:"leader"` // the node that receives the leadership; 0: none
		Reason  string         `json:"reason"`
	}
	opReplicaView struct {
		NodeID    uint64 `json:"node_id"`
		ReplicaID uint64 `json:"replica_id"`
		Role      string `json:"role"`
	}
	movesView struct {
		AnsweredBy uint64     `json:"answered_by"`
		Paused     bool       `json:"paused"`
		Moves      []moveView `json:"moves"` // in flight by shard, then finished, newest first
	}
	moveView struct {
		Op       opView     `json:"op"`
		Step     string     `json:"step"`    // the last step taken or waited on
		Outcome  string     `json:"outcome"` // running, succeeded, failed, dropped, abandoned
		Started  time.Time  `json:"started"`
		Finished *time.Time `json:"finished"` // null while running
		Err      string     `json:"err"`
		Resumed  bool       `json:"resumed"` // recovered from an earlier leader's intent
	}
	placementStatusView struct {
		AnsweredBy    uint64      `json:"answered_by"`
		Paused        bool        `json:"paused"`
		InFlight      int         `json:"in_flight"`
		Plans         uint64      `json:"plans"`
		QuorumLost    uint64      `json:"quorum_lost"` // reports of shards without a quorum of live voters
		ReplicaSpread int         `json:"replica_spread"`
		LeaderSpread  int         `json:"leader_spread"`
		Kinds         []kindCount `json:"kinds"` // the kinds of operation started or ended so far
	}
	kindCount struct {
		Kind      string `json:"kind"`
		Started   uint64 `json:"started"`
		Succeeded uint64 `json:"succeeded"`
		Failed    uint64 `json:"failed"`
		Dropped   uint64 `json:"dropped"`
	}
	drainingView struct {
		NodeID   uint64 `json:"node_id"`
		Draining bool   `json:"draining"`
	}
)

// placementCommands are the commands of the placement driver, which runs
// on the meta shard's leader (the node that answers forwards them there).
func placementCommands(e *env) []*cobra.Command {
	group := asGroup(&cobra.Command{
		Use:   "placement",
		Short: "pause, resume or show the placement driver: placement pause|resume|status",
	})
	group.AddCommand(
		&cobra.Command{
			Use:   "pause",
			Short: "stop the placement driver from starting operations",
			Long: `Stop the placement driver from starting operations; those in flight go on to
their end. The pause is held in the memory of the meta shard's leader: a
new leader, or the same node restarted, places again.`,
			Args: argNames(),
			RunE: func(*cobra.Command, []string) error {
				return e.pauseResume(nodepb.PlacementAction_PLACEMENT_ACTION_PAUSE)
			},
		},
		&cobra.Command{
			Use:   "resume",
			Short: "let the placement driver start operations again",
			Long:  "Undo placement pause: the driver starts the operations its plan asks for.",
			Args:  argNames(),
			RunE: func(*cobra.Command, []string) error {
				return e.pauseResume(nodepb.PlacementAction_PLACEMENT_ACTION_RESUME)
			},
		},
		&cobra.Command{
			Use:   "status",
			Short: "the placement driver's state and counters",
			Long: `Whether the driver is paused, its operations in flight, the plans it made,
its operations by kind (started, succeeded, failed, dropped), and the
spreads of replica and leader counts over live, non-draining nodes.`,
			Args: argNames(),
			RunE: e.placementStatus,
		},
	)
	return []*cobra.Command{
		{
			Use:   "plan",
			Short: "the operations the placement driver would start now (dry run)",
			Long: `The operations the planner would issue now, with their reasons; nothing is
started. Per operation: kind, shard, the nodes that gain a voter (ADD), the
replica removed (node/replica(role)), the node that receives the
leadership, and why.`,
			Args: argNames(),
			RunE: e.plan,
		},
		{
			Use:   "moves",
			Short: "the placement operations in flight and the last ones done",
			Long: `The operations the placement driver runs, by shard, then the last ones it
finished, newest first: the step an operation in flight is at, or how it
ended; when it started, how long it took, and why it failed.`,
			Args: argNames(),
			RunE: e.moves,
		},
		{
			Use:   "decommission NODE",
			Short: "drain a node: placement moves its replicas and leaderships off",
			Long: `Mark NODE draining: placement moves its leaderships, then its replicas, to
other nodes, and places nothing new on it. flotillactl status shows its
replicas fall to 0; stop it then, and remove it with remove-node. Refused
for the last live node that does not drain.`,
			Args: argNames("NODE"),
			RunE: func(c *cobra.Command, args []string) error { return e.setDraining(c, args, true) },
		},
		{
			Use:   "recommission NODE",
			Short: "undo decommission: a node receives replicas again",
			Long:  "Mark NODE no longer draining: placement may place replicas and leaderships on it again.",
			Args:  argNames("NODE"),
			RunE:  func(c *cobra.Command, args []string) error { return e.setDraining(c, args, false) },
		},
		group,
	}
}

// placementAnswer runs act on the placement driver of the meta shard's
// leader and decodes the part of its answer that part picks (JSON of the
// placement package's types; what names it in errors).
func placementAnswer[T any](e *env, act nodepb.PlacementAction, what string, part func(*nodepb.PlacementResponse) []byte) (*nodepb.PlacementResponse, T, error) {
	var v T
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, true, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.PlacementResponse, error) {
		return a.Placement(ctx, &nodepb.PlacementRequest{Action: act})
	})
	if err != nil {
		return nil, v, err
	}
	if err := json.Unmarshal(part(resp), &v); err != nil {
		return nil, v, fmt.Errorf("the node's %s cannot be read (is it another version?): %w", what, err)
	}
	return resp, v, nil
}

func (e *env) plan(*cobra.Command, []string) error {
	resp, ops, err := placementAnswer[[]placement.Op](e, nodepb.PlacementAction_PLACEMENT_ACTION_PLAN, "plan", (*nodepb.PlacementResponse).GetOpsJson)
	if err != nil {
		return err
	}
	v := planView{AnsweredBy: resp.GetNodeId(), Paused: resp.GetPaused(), Ops: make([]opView, 0, len(ops))}
	for _, op := range ops {
		v.Ops = append(v.Ops, opOf(op))
	}
	return e.emit(v, func(w io.Writer) { planTable(w, v) })
}

func opOf(op placement.Op) opView {
	v := opView{Kind: op.Kind.String(), ShardID: op.ShardID, Add: op.Add, Leader: op.Leader, Reason: op.Reason}
	if v.Add == nil {
		v.Add = []uint64{}
	}
	if r := op.Remove; r.NodeID != 0 {
		v.Remove = &opReplicaView{NodeID: r.NodeID, ReplicaID: r.ReplicaID, Role: r.Role.String()}
	}
	return v
}

func planTable(w io.Writer, v planView) {
	fmt.Fprintf(w, "plan of node %s, the meta shard's leader (a dry run: nothing is started)\n", nodeName(v.AnsweredBy))
	if len(v.Ops) == 0 {
		fmt.Fprintln(w, "nothing to do: replicas and leaderships are where the planner wants them")
	} else {
		fmt.Fprintln(w, "KIND\tSHARD\tADD\tREMOVE\tLEADER\tREASON")
		for _, op := range v.Ops {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", op.Kind, shardName(op.ShardID), nodesText(op.Add),
				removeText(op.Remove), nodeName(op.Leader), orDash(op.Reason))
		}
	}
	if v.Paused {
		fmt.Fprintln(w, "placement is paused: nothing starts until flotillactl placement resume")
	}
}

// nodesText renders node IDs as "3,5"; "-" for none.
func nodesText(ids []uint64) string {
	if len(ids) == 0 {
		return "-"
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	return strings.Join(parts, ",")
}

// removeText renders a replica to remove as replicasText does,
// "2/5(voter)"; "-" for none.
func removeText(r *opReplicaView) string {
	if r == nil {
		return "-"
	}
	return replicasText([]replicaView{{NodeID: r.NodeID, ReplicaID: r.ReplicaID, Role: r.Role}})
}

func (e *env) moves(*cobra.Command, []string) error {
	resp, moves, err := placementAnswer[[]placement.Move](e, nodepb.PlacementAction_PLACEMENT_ACTION_MOVES, "moves", (*nodepb.PlacementResponse).GetMovesJson)
	if err != nil {
		return err
	}
	v := movesView{AnsweredBy: resp.GetNodeId(), Paused: resp.GetPaused(), Moves: make([]moveView, 0, len(moves))}
	for _, m := range moves {
		mv := moveView{Op: opOf(m.Op), Step: m.Step, Outcome: m.Outcome.String(), Started: m.Started, Err: m.Err, Resumed: m.Resumed}
		if !m.Finished.IsZero() {
			mv.Finished = &m.Finished
		}
		v.Moves = append(v.Moves, mv)
	}
	now := time.Now()
	return e.emit(v, func(w io.Writer) { movesTable(w, v, now) })
}

// movesTable renders v, the time being now (for the moves in flight).
func movesTable(w io.Writer, v movesView, now time.Time) {
	if len(v.Moves) == 0 {
		fmt.Fprintf(w, "no operation in flight or done by the driver of node %s, the meta shard's leader\n", nodeName(v.AnsweredBy))
	} else {
		fmt.Fprintln(w, "SHARD\tKIND\tSTEP/OUTCOME\tSTARTED\tTOOK\tERR")
		for _, m := range v.Moves {
			state, took := m.Outcome, ""
			if m.Finished == nil {
				state = "running"
				if m.Step != "" {
					state += ": " + m.Step
				}
				took = durationText(now.Sub(m.Started)) + " so far"
			} else {
				took = durationText(m.Finished.Sub(m.Started))
			}
			if m.Resumed {
				state += " (resumed)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", shardName(m.Op.ShardID), m.Op.Kind, state,
				m.Started.Local().Format(time.DateTime), took, orDash(m.Err))
		}
	}
	if v.Paused {
		fmt.Fprintln(w, "placement is paused: the operations in flight go on to their end, no new one starts")
	}
}

// durationText rounds d for people: to the millisecond below a second,
// to the tenth of a second above.
func durationText(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func (e *env) placementStatus(*cobra.Command, []string) error {
	v, err := e.placementStats(nodepb.PlacementAction_PLACEMENT_ACTION_STATUS)
	if err != nil {
		return err
	}
	return e.emit(v, func(w io.Writer) { placementStatusTable(w, v) })
}

// placementStats runs act (status, pause or resume) and returns the
// driver's state and counters after it.
func (e *env) placementStats(act nodepb.PlacementAction) (placementStatusView, error) {
	resp, st, err := placementAnswer[placement.Stats](e, act, "placement counters", (*nodepb.PlacementResponse).GetStatsJson)
	if err != nil {
		return placementStatusView{}, err
	}
	v := placementStatusView{
		AnsweredBy: resp.GetNodeId(), Paused: resp.GetPaused(), InFlight: st.InFlight, Plans: st.Plans,
		QuorumLost: st.QuorumLost, ReplicaSpread: st.ReplicaSpread, LeaderSpread: st.LeaderSpread, Kinds: []kindCount{},
	}
	var kinds []placement.Kind
	for _, m := range []map[placement.Kind]uint64{st.Started, st.Succeeded, st.Failed, st.Dropped} {
		for k := range m {
			if !slices.Contains(kinds, k) {
				kinds = append(kinds, k)
			}
		}
	}
	slices.SortFunc(kinds, func(a, b placement.Kind) int { return cmp.Compare(a, b) })
	for _, k := range kinds {
		v.Kinds = append(v.Kinds, kindCount{Kind: k.String(), Started: st.Started[k], Succeeded: st.Succeeded[k], Failed: st.Failed[k], Dropped: st.Dropped[k]})
	}
	return v, nil
}

func placementStatusTable(w io.Writer, v placementStatusView) {
	fmt.Fprintf(w, "placement on node %s, the meta shard's leader: %s\n", nodeName(v.AnsweredBy), pausedText(v.Paused))
	fmt.Fprintf(w, "in flight: %d, plans made: %d, shards reported without a quorum: %d\n", v.InFlight, v.Plans, v.QuorumLost)
	fmt.Fprintf(w, "spread over live, non-draining nodes (largest minus smallest count): replicas %d, leaders %d\n", v.ReplicaSpread, v.LeaderSpread)
	if len(v.Kinds) == 0 {
		fmt.Fprintln(w, "no operation started yet")
		return
	}
	fmt.Fprintln(w, "KIND\tSTARTED\tSUCCEEDED\tFAILED\tDROPPED")
	for _, k := range v.Kinds {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\n", k.Kind, k.Started, k.Succeeded, k.Failed, k.Dropped)
	}
}

func pausedText(paused bool) string {
	if paused {
		return "paused"
	}
	return "running"
}

// pauseResume runs placement pause or resume.
func (e *env) pauseResume(act nodepb.PlacementAction) error {
	v, err := e.placementStats(act)
	if err != nil {
		return changeErrorSee(err, "flotillactl placement status")
	}
	return e.emit(v, func(w io.Writer) {
		fmt.Fprintf(w, "placement %s on node %s, the meta shard's leader", pausedText(v.Paused), nodeName(v.AnsweredBy))
		if v.Paused {
			fmt.Fprintf(w, ": no operation starts; %d in flight go on to their end", v.InFlight)
		}
		fmt.Fprintln(w)
	})
}

// setDraining runs decommission (draining) or recommission on the NODE
// argument args.
func (e *env) setDraining(c *cobra.Command, args []string, draining bool) error {
	node, err := parseNodeArg(c, args[0])
	if err != nil {
		return err
	}
	ctx, cancel := e.context()
	defer cancel()
	if _, err := adminCall(ctx, e, true, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.SetDrainingResponse, error) {
		return a.SetDraining(ctx, &nodepb.SetDrainingRequest{NodeId: node, Draining: draining})
	}); err != nil {
		return changeErrorSee(err, "flotillactl status")
	}
	return e.emit(drainingView{NodeID: node, Draining: draining}, func(w io.Writer) {
		if draining {
			fmt.Fprintf(w, "node %d is draining: its leaderships and replicas move off (see flotillactl status and moves)\n", node)
			return
		}
		fmt.Fprintf(w, "node %d is no longer draining: it may receive replicas and leaderships again\n", node)
	})
}
