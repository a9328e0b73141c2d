package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/node/recovery"
	"github.com/spf13/cobra"
)

// errNotConfirmed: recover apply without --yes (nothing was touched).
var errNotConfirmed = errors.New("nothing recovered: rerun with --yes to recover the shards above")

// recoverCommands are the online recovery's: recover plan|apply.
func recoverCommands(e *env) []*cobra.Command {
	var shards []string
	var yes bool
	group := asGroup(&cobra.Command{
		Use:   "recover",
		Short: "recover shards that lost the majority of their voters: recover plan|apply",
		Long: `Recover, in a running cluster, the shards whose voters are mostly down for
good (the others keep serving). The node that answers plans from its view:
the meta shard's records and gossip's liveness. Nodes down when you apply
must never come back with their data directories (wipe them).`,
	})
	plan := &cobra.Command{
		Use:   "plan",
		Short: "list the shards without a live quorum and what apply would keep",
		Long: `List the shards whose live voters are no quorum: their range, voters, the
voters down, each live replica's last term, last index and applied index,
and the replica that apply would keep (the most up to date: highest last
term, then last index; a tie to the lower node ID). Writes acknowledged
after the kept replica's last index may be lost. Nothing is changed.`,
		Args: argNames(),
		RunE: func(c *cobra.Command, _ []string) error {
			ids, err := shardFlags(c, shards)
			if err != nil {
				return err
			}
			return e.recoverPlan(ids)
		},
	}
	apply := &cobra.Command{
		Use:   "apply [--shard SHARD ...] --yes",
		Short: "recover the shards of the plan (or those named) on their kept replicas",
		Long: `Plan again, then recover each shard of the plan (or each --shard): the node
of its kept replica rewrites that replica, while it runs, into the only voter
of its shard (fresh replica ID, its whole log committed), which elects
itself; the shard's record is updated, and the placement driver brings it
back to the replication factor. A shard named that has a live quorum (its
voters came back) or that does not exist fails the command before anything
is touched. Without --yes, the plan is shown and nothing is done.`,
		Args: argNames(),
		RunE: func(c *cobra.Command, _ []string) error {
			ids, err := shardFlags(c, shards)
			if err != nil {
				return err
			}
			return e.recoverApply(ids, yes)
		},
	}
	plan.Flags().StringArrayVar(&shards, "shard", nil, "only this `SHARD` (repeat for more)")
	apply.Flags().StringArrayVar(&shards, "shard", nil, "only this `SHARD` (repeat for more)")
	apply.Flags().BoolVar(&yes, "yes", false, "recover (without it, only show what would be)")
	group.AddCommand(plan, apply)
	return []*cobra.Command{group}
}

// shardFlags parses the --shard flags of c.
func shardFlags(c *cobra.Command, flags []string) ([]uint64, error) {
	var ids []uint64
	for _, s := range flags {
		id, err := parseShard(s)
		if err != nil {
			return nil, usageErrorf(c, "%s: --shard: %v", cmdPath(c), err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func (e *env) recoverPlan(ids []uint64) error {
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, true, func(ctx context.Context, c nodepb.AdminClient) (*nodepb.RecoverPlanResponse, error) {
		return c.RecoverPlan(ctx, &nodepb.RecoverPlanRequest{ShardIds: ids})
	})
	if err != nil {
		return err
	}
	var p recovery.Plan
	if err := json.Unmarshal(resp.GetPlanJson(), &p); err != nil {
		return fmt.Errorf("the node's plan does not decode: %w", err)
	}
	if p.Shards == nil {
		p.Shards = []recovery.LostShard{}
	}
	return e.emit(p, func(w io.Writer) { recoverTable(w, p.AnsweredBy, p.Shards, nil) })
}

func (e *env) recoverApply(ids []uint64, yes bool) error {
	if !yes {
		if err := e.recoverPlan(ids); err != nil {
			return err
		}
		return errNotConfirmed
	}
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, false, func(ctx context.Context, c nodepb.AdminClient) (*nodepb.RecoverApplyResponse, error) {
		return c.RecoverApply(ctx, &nodepb.RecoverApplyRequest{ShardIds: ids})
	})
	if err != nil {
		return err
	}
	var r recovery.Result
	if err := json.Unmarshal(resp.GetResultJson(), &r); err != nil {
		return fmt.Errorf("the node's result does not decode: %w", err)
	}
	if r.Shards == nil {
		r.Shards = []recovery.Applied{}
	}
	lost := make([]recovery.LostShard, len(r.Shards))
	errs := make([]string, len(r.Shards))
	failed := 0
	for i, s := range r.Shards {
		lost[i], errs[i] = s.LostShard, s.Err
		if s.Err != "" {
			failed++
		}
	}
	if err := e.emit(r, func(w io.Writer) { recoverTable(w, r.AnsweredBy, lost, errs) }); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d shards not recovered (see above)", failed, len(r.Shards))
	}
	return nil
}

// recoverTable shows shards without a quorum; errs (apply) is each one's
// outcome.
func recoverTable(w io.Writer, by uint64, shards []recovery.LostShard, errs []string) {
	if errs == nil {
		fmt.Fprintf(w, "shards without a live quorum, as node %s sees them (nothing is changed)\n", nodeName(by))
	} else {
		fmt.Fprintf(w, "recovery by node %s\n", nodeName(by))
	}
	if len(shards) == 0 {
		fmt.Fprintln(w, "none: every shard has a live quorum")
		return
	}
	head := "SHARD\tRANGE\tVOTERS\tDOWN\tLIVE REPLICAS (node/replica: last term/last index/applied)\tKEEP\tWARNING"
	if errs != nil {
		head += "\tOUTCOME"
	}
	fmt.Fprintln(w, head)
	for i, s := range shards {
		var reps []string
		for _, r := range s.Replicas {
			switch {
			case r.Err != "":
				reps = append(reps, fmt.Sprintf("%d: no answer", r.NodeID))
			case !r.Initialized:
				reps = append(reps, fmt.Sprintf("%d/%d: uninitialized", r.NodeID, r.ReplicaID))
			default:
				reps = append(reps, fmt.Sprintf("%d/%d: %d/%d/%d", r.NodeID, r.ReplicaID, r.LastTerm, r.LastIndex, r.Applied))
			}
		}
		keep := "-"
		if s.Keep != 0 {
			keep = fmt.Sprintf("%d/%d", s.Keep, s.KeepReplicaID)
		}
		line := fmt.Sprintf("%s\t[%016x, %016x]\t%s\t%s\t%s\t%s\t%s", shardName(s.ShardID), s.Start, s.Last, nodesText(s.Voters), nodesText(s.Down),
			orDash(strings.Join(reps, ", ")), keep, s.Warning())
		if errs != nil {
			outcome := "recovered"
			if errs[i] != "" {
				outcome = errs[i]
			}
			line += "\t" + outcome
		}
		fmt.Fprintln(w, line)
	}
}
