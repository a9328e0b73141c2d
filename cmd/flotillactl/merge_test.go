package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/internal/waitfor"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// fakeMerger answers Merge as a shard's leader would: shard 3 covers
// [0x4000000000000000, 0x5fffffffffffffff] at generation 2, its right
// neighbour 9 up to 0x7fffffffffffffff; shard 9 is the last.
type fakeMerger struct {
	nodepb.UnimplementedAdminServer
	mu   sync.Mutex
	reqs []*nodepb.MergeRequest
}

func (f *fakeMerger) Merge(_ context.Context, req *nodepb.MergeRequest) (*nodepb.MergeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	switch {
	case req.GetShardId() == 9:
		return nil, nodeError(codes.FailedPrecondition, &nodepb.Error{Reason: nodepb.Reason_REASON_NOT_ADJACENT, ShardId: 9,
			Message: "it is the last shard of the ring", Start: 0x6000000000000000, Last: ^uint64(0), Generation: 2})
	case req.GetShardId() == 4:
		return nil, nodeError(codes.FailedPrecondition, &nodepb.Error{Reason: nodepb.Reason_REASON_REPLICAS_DIFFER, ShardId: 4,
			Message: "shard 4's replicas [1 2 3], shard 5's [1 2 4]"})
	case req.GetShardId() != 3:
		return nil, nodeError(codes.NotFound, &nodepb.Error{Reason: nodepb.Reason_REASON_SHARD_NOT_FOUND, ShardId: req.GetShardId(),
			Message: fmt.Sprintf("shard %d does not exist", req.GetShardId())})
	case req.GetGeneration() != 0 && req.GetGeneration() != 2:
		return nil, nodeError(codes.FailedPrecondition, &nodepb.Error{Reason: nodepb.Reason_REASON_STALE_GENERATION, ShardId: 3,
			Message: "stale generation", Start: 0x4000000000000000, Last: 0x5fffffffffffffff, Generation: 2})
	}
	replicas := []*nodepb.ReplicaRecord{{NodeId: 2, ReplicaId: 4, Role: "voter"}, {NodeId: 1, ReplicaId: 1, Role: "voter"}}
	return &nodepb.MergeResponse{
		Shard:         &nodepb.ShardRecord{ShardId: 3, Start: 0x4000000000000000, Last: 0x7fffffffffffffff, Generation: 4, ConfIndex: 12, NextReplicaId: 5, Replicas: replicas},
		MergedShardId: 9,
	}, nil
}

func TestMergeCommand(t *testing.T) {
	f := &fakeMerger{}
	addr := serve(t, func(s *grpc.Server) { nodepb.RegisterAdminServer(s, f) })
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "merge", "3")
	want := `shard 9 merged into shard 3
SHARD  RANGE                                 GENERATION  REPLICAS (NODE/REPLICA)
3      [4000000000000000, 7fffffffffffffff]  4           2/4(voter) 1/1(voter)
`
	if code != exitOK || stdout != want {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}
	stdout, stderr, code = runCmd(t, "--endpoints", addr, "--output", "json", "merge", "3", "--generation", "2")
	var v mergeView
	if err := json.Unmarshal([]byte(stdout), &v); code != exitOK || err != nil {
		t.Fatalf("exit %d, stderr %q, JSON %q (%v)", code, stderr, stdout, err)
	}
	if v.ShardID != 3 || v.Merged != 9 || v.Shard.Start != "4000000000000000" || v.Shard.Last != "7fffffffffffffff" ||
		v.Shard.Generation != 4 || len(v.Shard.Replicas) != 2 {
		t.Errorf("JSON %+v", v)
	}

	// The node's refusals, with the range where it helps.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"merge", "9"}, "flotillactl: shard 9: it is the last shard of the ring (NOT_ADJACENT); the shard's range is [6000000000000000, ffffffffffffffff] at generation 2\n"},
		{[]string{"merge", "3", "--generation", "1"}, "flotillactl: shard 3: stale generation (STALE_GENERATION); the shard's range is [4000000000000000, 5fffffffffffffff] at generation 2\n"},
		{[]string{"merge", "4"}, "flotillactl: shard 4: shard 4's replicas [1 2 3], shard 5's [1 2 4] (REPLICAS_DIFFER)\n"},
	} {
		if _, stderr, code := runCmd(t, append([]string{"--endpoints", addr}, tc.args...)...); code != exitFailure || stderr != tc.want {
			t.Errorf("%q: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
	if _, stderr, code = runCmd(t, "--endpoints", addr, "merge", "8"); code != exitFailure || !strings.Contains(stderr, "(SHARD_NOT_FOUND)") {
		t.Errorf("unknown shard: exit %d, stderr %q", code, stderr)
	}
	// Used wrongly: nothing is sent.
	for _, args := range [][]string{{"merge"}, {"merge", "x"}, {"merge", "3", "4"}, {"merge", "3", "--generation", "x"}, {"merge", "3", "--at", "1"}} {
		if _, stderr, code := runCmd(t, append([]string{"--endpoints", addr}, args...)...); code != exitUsage {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != 6 || f.reqs[0].GetGeneration() != 0 || f.reqs[1].GetGeneration() != 2 {
		t.Errorf("requests: %v", f.reqs)
	}
}

// TestMergeOnACluster splits a shard of a real node with flotillactl and
// merges it back: shards lists the merged range, the keys written before
// read back, and a merge of the last shard is refused with its range.
func TestMergeOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctl, keys := ctlWithKeys(t, ctx)
	shards := func(want int) shardsView {
		t.Helper()
		var v shardsView
		waitfor.Until(t, ctx, fmt.Sprintf("shards to list %d user shards", want), func() error {
			stdout, stderr, code := ctl("--output", "json", "shards")
			if code != exitOK {
				return fmt.Errorf("exit %d: %s", code, stderr)
			}
			v = shardsView{}
			if err := json.Unmarshal([]byte(stdout), &v); err != nil {
				return err
			}
			return tiles(v, want)
		})
		return v
	}
	before := shards(8)
	var three, last shardView
	for _, s := range before.Shards {
		if s.ShardID == 3 {
			three = s
		}
		if s.Last == "ffffffffffffffff" && !s.System {
			last = s
		}
	}
	if _, stderr, code := ctl("split", "3"); code != exitOK {
		t.Fatalf("split 3: exit %d, %s", code, stderr)
	}
	shards(9)
	stdout, stderr, code := ctl("merge", "3")
	if code != exitOK || !strings.Contains(stdout, "["+three.Start+", "+three.Last+"]") {
		t.Fatalf("merge 3: exit %d, %s%s", code, stdout, stderr)
	}
	t.Logf("flotillactl merge 3:\n%s", stdout)
	after := shards(8)
	for _, s := range after.Shards {
		if s.ShardID == 3 && (s.Start != three.Start || s.Last != three.Last) {
			t.Errorf("shards lists shard 3 as [%s, %s], want [%s, %s]", s.Start, s.Last, three.Start, three.Last)
		}
	}
	for _, key := range keys {
		if stdout, stderr, code := ctl("get", key); code != exitOK || !strings.Contains(stdout, "v"+key) {
			t.Errorf("get %s after the merge: exit %d, %q %q", key, code, stdout, stderr)
		}
	}
	_, stderr, code = ctl("merge", fmt.Sprint(last.ShardID))
	if code != exitFailure || !strings.Contains(stderr, "(NOT_ADJACENT); the shard's range is ["+last.Start+", ffffffffffffffff]") {
		t.Errorf("merge of the last shard: exit %d, %s", code, stderr)
	}
}
