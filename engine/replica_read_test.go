package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

// TestReadOnReplica: a follower answers a linearizable read from its own
// state once it has applied the leader's read index: after a write it has
// not applied yet (cut off), it does not answer the old value, as its local
// state would, but waits; healed, it answers the new one.
func TestReadOnReplica(t *testing.T) {
	c, ctx, descs, _ := twoShards(t, testcluster.Config{})
	d := descs[0]
	k := keysOf(d, 1)[0]
	put := func(v string) {
		t.Helper()
		if err := onLeaderOf(t, ctx, c, d.ShardID, func(e *engine.Engine) error {
			_, err := e.Propose(ctx, d.ShardID, engine.PutCommand(k, []byte(v)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(ctx context.Context, e *engine.Engine) (string, error) {
		res, err := e.ReadOnReplica(ctx, d.ShardID, engine.GetQuery(k))
		v, _, _ := engine.DecodeGetResult(res)
		return string(v), err
	}
	put("a")
	late := isolateFollower(t, ctx, c, 3, []uint64{d.ShardID})
	c.Heal()
	if err := c.WaitFor(ctx, "node 3 reads a", func() bool { v, err := get(ctx, c.Engine(late)); return err == nil && v == "a" }); err != nil {
		t.Fatal(err)
	}
	c.Isolate(late)
	put("b")
	if v, _, _ := engine.DecodeGetResult(must(c.Engine(late).ReadLocal(d.ShardID, engine.GetQuery(k)))); string(v) != "a" {
		t.Fatalf("node 3's local state has %q, want the old a (the test needs it stale)", v)
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	v, err := get(sctx, c.Engine(late))
	cancel()
	if err == nil {
		t.Fatalf("cut off, node 3 answered %q", v)
	}
	c.Heal()
	if err := c.WaitFor(ctx, "node 3 reads b", func() bool { v, err := get(ctx, c.Engine(late)); return err == nil && v == "b" }); err != nil {
		t.Fatal(err)
	}
	var nl *engine.NotLeaderError
	if _, err := c.Engine(late).ReadOnReplica(ctx, 99, engine.GetQuery(k)); !errors.Is(err, engine.ErrShardNotFound) && !errors.As(err, &nl) {
		t.Fatalf("a shard not here: %v", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
