package main

import (
	"context"
	"fmt"
	"io"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/spf13/cobra"
)

// JSON document of merge.
type mergeView struct {
	ShardID uint64 `json:"shard_id"`
	// Merged is the right neighbour merged into it, gone now.
	Merged uint64 `json:"merged_shard_id"`
	// Shard is the shard after the merge, its range widened.
	Shard rangeView `json:"shard"`
}

// mergeCommand is "merge SHARD": SHARD takes its right neighbour's range,
// on SHARD's leader (the node that answers forwards there).
func mergeCommand(e *env) *cobra.Command {
	merge := &cobra.Command{
		Use:   "merge SHARD [--generation N]",
		Short: "merge a shard with its right neighbour: the shard takes the neighbour's range",
		Long: `Merge SHARD with its right neighbour in the ring (the shard whose range
starts where SHARD's ends) on SHARD's leader: SHARD's range widens over
the neighbour's, and the neighbour is gone; no data moves. Both shards must
have their replicas on the same nodes in the same roles (move one first
with add-replica and remove-replica otherwise), and neither may be in a
replica move. The neighbour serves nothing for the moment the merge takes;
clients retry meanwhile. A merge that fails half way is abandoned: both
shards serve as before.

--generation N refuses the merge if SHARD's range is no longer at
generation N (STALE_GENERATION). The merged range is printed; routers and
clients follow the new ring within moments.`,
		Args: argNames("SHARD"),
	}
	gen := merge.Flags().Uint64("generation", 0, "the generation SHARD's range must be at (default: any)")
	merge.RunE = func(c *cobra.Command, args []string) error { return e.merge(c, args, *gen) }
	return merge
}

func (e *env) merge(c *cobra.Command, args []string, gen uint64) error {
	shard, err := parseShard(args[0])
	if err != nil {
		return usageErrorf(c, "%s: %v", cmdPath(c), err)
	}
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, false, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.MergeResponse, error) {
		return a.Merge(ctx, &nodepb.MergeRequest{ShardId: shard, Generation: gen})
	})
	if err != nil {
		return changeErrorSee(err, "flotillactl shards")
	}
	v := mergeView{ShardID: shard, Merged: resp.GetMergedShardId(), Shard: rangeOf(resp.GetShard())}
	return e.emit(v, func(w io.Writer) {
		fmt.Fprintf(w, "shard %s merged into shard %s\n", shardName(v.Merged), shardName(v.ShardID))
		rangeTable(w, []rangeView{v.Shard})
	})
}
