package engine_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// backupHas reads the whole of b and reports whether the stored value of
// the user key key contains want.
func backupHas(t *testing.T, b *engine.ShardBackup, key, want []byte) bool {
	t.Helper()
	dec := storage.NewSnapshotDecoder(b.Desc)
	found := false
	for {
		chunk, err := b.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := dec.Decode(chunk, func(k, v []byte) error {
			if _, uk, ok := b.Desc.DecodeDataKey(k); ok && bytes.Equal(uk, key) {
				found = bytes.Contains(v, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if dec.Keys != b.Keys() || dec.Keys == 0 {
		t.Fatalf("decoded %d pairs, the backup counted %d", dec.Keys, b.Keys())
	}
	return found
}

// TestBackupShardReadBarrier: a backup taken from a follower that is cut
// off from its leader does not hand out the follower's stale state (which
// lacks an acknowledged write) but waits; healed, it holds the write, at an
// applied index at least the leader's when the write was acknowledged.
func TestBackupShardReadBarrier(t *testing.T) {
	c, ctx, descs, _ := twoShards(t, testcluster.Config{})
	d := descs[0]
	k := keysOf(d, 1)[0]
	put := func(v string) (applied uint64) {
		t.Helper()
		if err := onLeaderOf(t, ctx, c, d.ShardID, func(e *engine.Engine) error {
			if _, err := e.Propose(ctx, d.ShardID, engine.PutCommand(k, []byte(v))); err != nil {
				return err
			}
			st, err := e.Status(ctx, d.ShardID)
			applied = st.Applied
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return applied
	}
	put("first")
	late := isolateFollower(t, ctx, c, 3, []uint64{d.ShardID})
	c.Heal()
	if err := c.WaitFor(ctx, "node 3 has the first write", func() bool {
		v, _, _ := engine.DecodeGetResult(must(c.Engine(late).ReadLocal(d.ShardID, engine.GetQuery(k))))
		return string(v) == "first"
	}); err != nil {
		t.Fatal(err)
	}
	c.Isolate(late)
	acked := put("second")

	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	b, err := c.Engine(late).BackupShard(sctx, d.ShardID, 512)
	cancel()
	if err == nil {
		stale := backupHas(t, b, k, []byte("first"))
		b.Close()
		t.Fatalf("cut off from its leader, node 3 handed out a backup at index %d (first write only: %v)", b.AppliedIndex, stale)
	}
	c.Heal()
	var got *engine.ShardBackup
	if err := c.WaitFor(ctx, "a backup from node 3", func() bool {
		got, err = c.Engine(late).BackupShard(ctx, d.ShardID, 512)
		return err == nil
	}); err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if got.AppliedIndex < acked || got.Desc.ShardID != d.ShardID || got.Desc.Start != d.Start || got.Desc.Last != d.Last {
		t.Fatalf("backup at index %d of %+v, want at least %d of shard %d", got.AppliedIndex, got.Desc, acked, d.ShardID)
	}
	if !backupHas(t, got, k, []byte("second")) {
		t.Fatal("the backup lacks the write acknowledged before it was taken")
	}
	if _, err := c.Engine(late).BackupShard(ctx, 99, 0); !errors.Is(err, engine.ErrShardNotFound) {
		var nl *engine.NotLeaderError
		if !errors.As(err, &nl) {
			t.Fatalf("a shard not here: %v", err)
		}
	}
}
