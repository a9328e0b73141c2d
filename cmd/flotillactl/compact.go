package main

import (
	"context"
	"fmt"
	"io"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/spf13/cobra"
)

// JSON documents of compact.
type (
	compactView struct {
		ShardID  uint64             `json:"shard_id"`
		Replicas []compactedReplica `json:"replicas"`
	}
	compactedReplica struct {
		NodeID      uint64 `json:"node_id"`
		FirstBefore uint64 `json:"first_before"`
		FirstAfter  uint64 `json:"first_after"`
		Applied     uint64 `json:"applied"`
		Error       string `json:"error,omitempty"`
	}
)

// compactCommand is "compact SHARD".
func compactCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "compact SHARD",
		Short: "truncate a shard's raft log up to its applied index on every replica",
		Long: `Truncate SHARD's raft log up to its applied index on every replica, as the
nodes do by themselves once a log grows past its limits: the applied state
is in the store, so a log needs only what replicas behind still lack, and
those catch up by a snapshot instead. Prints each replica's first log index
before and after; a replica that could not be compacted says why, and the
command then exits 1.`,
		Args: argNames("SHARD"),
		RunE: e.compact,
	}
}

func (e *env) compact(c *cobra.Command, args []string) error {
	shard, err := parseShard(args[0])
	if err != nil {
		return usageErrorf(c, "%s: %v", cmdPath(c), err)
	}
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, false, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.CompactResponse, error) {
		return a.Compact(ctx, &nodepb.CompactRequest{ShardId: shard})
	})
	if err != nil {
		return changeErrorSee(err, "flotillactl shards")
	}
	v := compactView{ShardID: shard}
	failed := 0
	for _, r := range resp.GetReplicas() {
		v.Replicas = append(v.Replicas, compactedReplica{NodeID: r.GetNodeId(), FirstBefore: r.GetFirstBefore(), FirstAfter: r.GetFirstAfter(),
			Applied: r.GetApplied(), Error: r.GetError()})
		if r.GetError() != "" {
			failed++
		}
	}
	if err := e.emit(v, func(w io.Writer) {
		tw := tableWriter(w)
		fmt.Fprintln(tw, "NODE\tFIRST INDEX BEFORE\tAFTER\tAPPLIED\tERROR")
		for _, r := range v.Replicas {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\n", r.NodeID, r.FirstBefore, r.FirstAfter, r.Applied, r.Error)
		}
		tw.Flush()
	}); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("shard %s: %d of %d replicas not compacted", shardName(shard), failed, len(v.Replicas))
	}
	return nil
}
