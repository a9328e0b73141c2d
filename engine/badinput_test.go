package engine_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestBadInput: typed errors, nothing changed, nothing panics.
func TestBadInput(t *testing.T) {
	c := newCluster(t, testcluster.Config{Nodes: 3, Engine: func(cfg *engine.Config) {
		cfg.MaxProposalBytes = 1024
	}})
	ctx := ctxT(t, 30*time.Second)
	descs := testcluster.EvenDescriptors(1, 2)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	c.RunClock(2 * time.Millisecond)
	if err := c.WaitLeaders(ctx, []uint64{1, 2}); err != nil {
		t.Fatal(err)
	}
	leader := c.Leader(ctx, 1)
	e := c.Engine(leader)
	key := keysOf(descs[0], 1)[0]
	if _, err := c.Propose(ctx, 1, engine.PutCommand(key, []byte("v1"))); err != nil {
		t.Fatal(err)
	}
	before := e.Stats().Applied

	cases := []struct {
		name string
		do   func() error
		want error
	}{
		{"unknown shard propose", func() error { _, err := e.Propose(ctx, 99, engine.PutCommand(key, nil)); return err }, engine.ErrShardNotFound},
		{"unknown shard read", func() error { _, err := e.Read(ctx, 99, engine.GetQuery(key)); return err }, engine.ErrShardNotFound},
		{"unknown shard local read", func() error { _, err := e.ReadLocal(99, engine.GetQuery(key)); return err }, engine.ErrShardNotFound},
		{"unknown shard status", func() error { _, err := e.Status(ctx, 99); return err }, engine.ErrShardNotFound},
		{"proposal over limit", func() error {
			_, err := e.Propose(ctx, 1, engine.PutCommand(key, bytes.Repeat([]byte("x"), 2048)))
			return err
		}, engine.ErrProposalTooLarge},
		{"empty command", func() error { _, err := e.Propose(ctx, 1, nil); return err }, engine.ErrBadRequest},
		{"garbage command", func() error { _, err := e.Propose(ctx, 1, []byte{0xee, 1, 2}); return err }, engine.ErrBadRequest},
		{"engine command", func() error { _, err := e.Propose(ctx, 1, []byte{0xf3, 1, 2}); return err }, engine.ErrBadRequest},
		{"empty key", func() error { _, err := e.Propose(ctx, 1, engine.PutCommand(nil, []byte("v"))); return err }, engine.ErrEmptyKey},
		{"garbage query", func() error { _, err := e.Read(ctx, 1, []byte{0xee}); return err }, engine.ErrBadRequest},
		{"overlapping shard", func() error {
			return e.CreateShard(ctx, engine.ShardSpec{Desc: storage.Descriptor{ShardID: 50, Start: 5, Last: 10}, Voters: []uint64{leader}})
		}, engine.ErrRangeOverlap},
		{"shard overlapping the next one", func() error {
			return e.CreateShard(ctx, engine.ShardSpec{Desc: storage.Descriptor{ShardID: 51, Start: descs[0].Last - 5, Last: descs[1].Start + 5}, Voters: []uint64{leader}})
		}, engine.ErrRangeOverlap},
		{"shard covering both", func() error {
			return e.CreateShard(ctx, engine.ShardSpec{Desc: storage.Descriptor{ShardID: 52, Start: 0, Last: ^uint64(0)}, Voters: []uint64{leader}})
		}, engine.ErrRangeOverlap},
		{"existing shard", func() error {
			return e.CreateShard(ctx, engine.ShardSpec{Desc: descs[0], Voters: c.IDs()})
		}, engine.ErrShardExists},
		{"no change", func() error { return e.ChangeReplicas(ctx, 1) }, engine.ErrBadRequest},
	}
	for _, tc := range cases {
		if err := tc.do(); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// A key of another shard, routed to shard 1 (a stale ring).
	other := keysOf(descs[1], 1)[0]
	var kns *engine.KeyNotInShardError
	if _, err := e.Propose(ctx, 1, engine.PutCommand(other, []byte("x"))); !errors.As(err, &kns) {
		t.Errorf("wrong shard: %v", err)
	}
	// A follower answers NotLeader with the leader as hint.
	var follower uint64
	for _, id := range c.IDs() {
		if id != leader {
			follower = id
		}
	}
	var nl *engine.NotLeaderError
	if _, err := c.Engine(follower).Propose(ctx, 1, engine.PutCommand(key, []byte("x"))); !errors.As(err, &nl) || nl.Leader != leader {
		t.Errorf("follower propose: %v", err)
	}
	// Nothing was changed by any of it.
	res, err := e.Read(ctx, 1, engine.GetQuery(key))
	if v, _, _ := engine.DecodeGetResult(res); err != nil || string(v) != "v1" {
		t.Errorf("value changed: %q %v", v, err)
	}
	if res, _ := e.ReadLocal(2, engine.GetQuery(other)); !bytes.Equal(res, []byte{0}) {
		t.Errorf("other shard's key written: %q", res)
	}
	// Rejected commands are applied as rejections (no state change) on
	// every replica: the garbage, empty-key and wrong-shard ones.
	if got := e.Stats().Applied - before; got != 3 {
		t.Errorf("%d commands reached the state machine, want 3 rejections", got)
	}
	// A frame of another cluster is dropped.
	e.HandleBatch(&engine.Batch{ClusterID: 12345, From: follower, To: leader})
	// A closed engine answers ErrClosed.
	c.Stop(follower)
	fe, err := engine.New(engine.Config{NodeID: 9, ClusterID: 7, Dir: "/x", FS: vfs.NewMem()}, c.Net.Endpoint(9))
	if err == nil {
		fe.Close()
		if _, err := fe.Propose(ctx, 1, engine.PutCommand(key, nil)); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("closed propose: %v", err)
		}
		if _, err := fe.Read(ctx, 1, engine.GetQuery(key)); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("closed read: %v", err)
		}
		if err := fe.Close(); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("second close: %v", err)
		}
	} else {
		t.Fatal(err)
	}
	// Invalid configs are refused.
	if _, err := engine.New(engine.Config{}, c.Net.Endpoint(10)); err == nil {
		t.Error("empty config accepted")
	}
}
