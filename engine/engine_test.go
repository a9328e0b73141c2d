package engine_test

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestBasicPutGet(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3})
	ctx := ctxT(t, 30*time.Second)
	descs := testcluster.EvenDescriptors(1, 4)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	c.RunClock(2 * time.Millisecond)
	ids := []uint64{1, 2, 3, 4}
	if err := c.WaitLeaders(ctx, ids); err != nil {
		t.Fatal(err)
	}
	rule := engine.DefaultConfig(1, 1, "x").PartitionRule
	for i := 0; i < 100; i++ {
		key := []byte(fmt.Sprintf("key-%d", i))
		h := rule.Hash(key)
		var shard uint64
		for _, d := range descs {
			if d.Contains(h) {
				shard = d.ShardID
			}
		}
		if _, err := c.Propose(ctx, shard, engine.PutCommand(key, []byte(fmt.Sprint(i)))); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		leader := c.Leader(ctx, shard)
		res, err := c.Engine(leader).Read(ctx, shard, engine.GetQuery(key))
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		v, found, _ := engine.DecodeGetResult(res)
		if !found || string(v) != fmt.Sprint(i) {
			t.Fatalf("read %d: %q %v", i, v, found)
		}
	}
}

var grpcFlag = flag.Bool("grpc", false, "run the cluster tests over the gRPC transport on loopback")

// newCluster starts a test cluster on the transport chosen by -grpc.
func newCluster(t testing.TB, cfg testcluster.Config) *testcluster.Cluster {
	cfg.GRPC = *grpcFlag
	return testcluster.New(t, cfg)
}
