package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/spf13/cobra"
)

// JSON document of split.
type (
	splitView struct {
		ShardID uint64 `json:"shard_id"`
		At      string `json:"at"`    // the child's first hash, hex
		Point   string `json:"point"` // how it was chosen: given, median, estimate, middle
		// The shard narrowed, then the new shard.
		Shards []rangeView `json:"shards"`
	}
	rangeView struct {
		ShardID    uint64        `json:"shard_id"`
		Start      string        `json:"start"` // hex
		Last       string        `json:"last"`  // hex, inclusive
		Generation uint64        `json:"generation"`
		Replicas   []replicaView `json:"replicas"`
	}
)

// rangeCommands are the commands that change the shards' hash ranges, on
// the shards' leaders (the node that answers forwards there): split and
// merge (merge.go).
func rangeCommands(e *env) []*cobra.Command {
	split := &cobra.Command{
		Use:   "split SHARD [--at HASH] [--generation N]",
		Short: "split a shard's hash range in two; the upper part becomes a new shard",
		Long: `Split SHARD's hash range on its leader: SHARD keeps [start, HASH-1], a new
shard (its ID from the meta shard) gets [HASH, last], on the same replicas;
no data moves. Without --at, the leader splits at the median hash of the
shard's rows (or, for a shard too large to count, where half of its data
is estimated to be, or else the middle of the range). A row's hash is its
partition's, so a split never divides a partition.

HASH is hexadecimal, as flotillactl shards shows ranges (0x optional);
start < HASH <= last. --generation N refuses the split if the shard's range
is no longer at generation N (STALE_GENERATION). The two new ranges are
printed; routers and clients follow the new ring within moments.`,
		Args: argNames("SHARD"),
	}
	at := split.Flags().String("at", "", "the new shard's first hash, in hex (default: chosen by the leader)")
	gen := split.Flags().Uint64("generation", 0, "the generation the shard's range must be at (default: any)")
	split.RunE = func(c *cobra.Command, args []string) error { return e.split(c, args, *at, *gen) }
	return []*cobra.Command{split, mergeCommand(e)}
}

// parseHash parses a HASH argument: 1 to 16 hex digits, 0x optional.
func parseHash(s string) (uint64, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	v, err := strconv.ParseUint(h, 16, 64)
	if err != nil || h == "" {
		return 0, fmt.Errorf("HASH must be a hash in hex (as flotillactl shards shows ranges, 0x optional), not %q", s)
	}
	return v, nil
}

func (e *env) split(c *cobra.Command, args []string, atFlag string, gen uint64) error {
	shard, err := parseShard(args[0])
	if err != nil {
		return usageErrorf(c, "%s: %v", cmdPath(c), err)
	}
	var at uint64
	if c.Flags().Changed("at") {
		if at, err = parseHash(atFlag); err != nil {
			return usageErrorf(c, "%s: %v", cmdPath(c), err)
		}
		if at == 0 {
			return usageErrorf(c, "%s: --at 0 is the first hash of the space: no range starts below it", cmdPath(c))
		}
	}
	ctx, cancel := e.context()
	defer cancel()
	resp, err := adminCall(ctx, e, false, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.SplitResponse, error) {
		return a.Split(ctx, &nodepb.SplitRequest{ShardId: shard, At: at, Generation: gen})
	})
	if err != nil {
		return changeErrorSee(err, "flotillactl shards")
	}
	v := splitOf(shard, resp)
	return e.emit(v, func(w io.Writer) { splitTable(w, v) })
}

func splitOf(shard uint64, resp *nodepb.SplitResponse) splitView {
	v := splitView{ShardID: shard, At: fmt.Sprintf("%016x", resp.GetChild().GetStart()), Point: resp.GetPoint()}
	for _, r := range []*nodepb.ShardRecord{resp.GetParent(), resp.GetChild()} {
		v.Shards = append(v.Shards, rangeOf(r))
	}
	return v
}

// rangeOf is the view of a shard's record.
func rangeOf(r *nodepb.ShardRecord) rangeView {
	rv := rangeView{ShardID: r.GetShardId(), Start: fmt.Sprintf("%016x", r.GetStart()), Last: fmt.Sprintf("%016x", r.GetLast()),
		Generation: r.GetGeneration(), Replicas: []replicaView{}}
	for _, rp := range r.GetReplicas() {
		rv.Replicas = append(rv.Replicas, replicaView{NodeID: rp.GetNodeId(), ReplicaID: rp.GetReplicaId(), Role: rp.GetRole()})
	}
	return rv
}

func splitTable(w io.Writer, v splitView) {
	fmt.Fprintf(w, "shard %s split at %s (%s point)\n", shardName(v.ShardID), v.At, v.Point)
	rangeTable(w, v.Shards)
}

// rangeTable prints shards' ranges, one a line.
func rangeTable(w io.Writer, shards []rangeView) {
	fmt.Fprintln(w, "SHARD\tRANGE\tGENERATION\tREPLICAS (NODE/REPLICA)")
	for _, s := range shards {
		fmt.Fprintf(w, "%s\t[%s, %s]\t%d\t%s\n", shardName(s.ShardID), s.Start, s.Last, s.Generation, replicasText(s.Replicas))
	}
}
