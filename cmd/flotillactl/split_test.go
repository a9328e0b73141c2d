package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/internal/waitfor"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// fakeSplitter answers Split as a shard's leader would: shard 3 covers
// [0x4000000000000000, 0x7fffffffffffffff] at generation 2; the new shard
// is 9.
type fakeSplitter struct {
	nodepb.UnimplementedAdminServer
	mu   sync.Mutex
	reqs []*nodepb.SplitRequest
}

func (f *fakeSplitter) Split(_ context.Context, req *nodepb.SplitRequest) (*nodepb.SplitResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	const start, last = 0x4000000000000000, 0x7fffffffffffffff
	if req.GetShardId() != 3 {
		return nil, nodeError(codes.NotFound, &nodepb.Error{Reason: nodepb.Reason_REASON_SHARD_NOT_FOUND, ShardId: req.GetShardId(),
			Message: fmt.Sprintf("shard %d does not exist", req.GetShardId())})
	}
	at, point := req.GetAt(), "given"
	if at == 0 {
		at, point = 0x5000000000000000, "median"
	}
	if at <= start || at > last {
		return nil, nodeError(codes.OutOfRange, &nodepb.Error{Reason: nodepb.Reason_REASON_OUT_OF_RANGE, ShardId: 3,
			Message: "split point outside the range", Start: start, Last: last, Generation: 2})
	}
	replicas := []*nodepb.ReplicaRecord{{NodeId: 2, ReplicaId: 4, Role: "voter"}, {NodeId: 1, ReplicaId: 1, Role: "voter"}}
	return &nodepb.SplitResponse{
		Parent: &nodepb.ShardRecord{ShardId: 3, Start: start, Last: at - 1, Generation: 3, ConfIndex: 12, NextReplicaId: 5, Replicas: replicas},
		Child:  &nodepb.ShardRecord{ShardId: 9, Start: at, Last: last, Generation: 3, NextReplicaId: 5, Replicas: replicas},
		Point:  point,
	}, nil
}

func TestSplitCommand(t *testing.T) {
	f := &fakeSplitter{}
	addr := serve(t, func(s *grpc.Server) { nodepb.RegisterAdminServer(s, f) })
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "split", "3")
	want := `shard 3 split at 5000000000000000 (median point)
SHARD  RANGE                                 GENERATION  REPLICAS (NODE/REPLICA)
3      [4000000000000000, 4fffffffffffffff]  3           2/4(voter) 1/1(voter)
9      [5000000000000000, 7fffffffffffffff]  3           2/4(voter) 1/1(voter)
`
	if code != exitOK || stdout != want {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}
	stdout, stderr, code = runCmd(t, "--endpoints", addr, "--output", "json", "split", "3", "--at", "0x6000000000000000", "--generation", "2")
	var v splitView
	if err := json.Unmarshal([]byte(stdout), &v); code != exitOK || err != nil {
		t.Fatalf("exit %d, stderr %q, JSON %q (%v)", code, stderr, stdout, err)
	}
	if v.At != "6000000000000000" || v.Point != "given" || len(v.Shards) != 2 || v.Shards[1].ShardID != 9 ||
		v.Shards[0].Last != "5fffffffffffffff" || v.Shards[1].Generation != 3 || len(v.Shards[1].Replicas) != 2 {
		t.Errorf("JSON %+v", v)
	}
	// Without 0x, as flotillactl shards prints a range.
	if _, stderr, code := runCmd(t, "--endpoints", addr, "split", "3", "--at", "6000000000000000"); code != exitOK {
		t.Errorf("--at without 0x: exit %d, %s", code, stderr)
	}
	f.mu.Lock()
	if len(f.reqs) != 3 || f.reqs[0].GetAt() != 0 || f.reqs[0].GetGeneration() != 0 ||
		f.reqs[1].GetAt() != 0x6000000000000000 || f.reqs[1].GetGeneration() != 2 || f.reqs[2].GetAt() != 0x6000000000000000 {
		t.Errorf("requests: %v", f.reqs)
	}
	f.mu.Unlock()

	// The node's refusals, with the range where it helps.
	_, stderr, code = runCmd(t, "--endpoints", addr, "split", "3", "--at", "ffffffffffffffff")
	if want := "flotillactl: shard 3: split point outside the range (OUT_OF_RANGE); the shard's range is [4000000000000000, 7fffffffffffffff] at generation 2\n"; code != exitFailure || stderr != want {
		t.Errorf("point outside: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code = runCmd(t, "--endpoints", addr, "split", "8"); code != exitFailure || !strings.Contains(stderr, "(SHARD_NOT_FOUND)") {
		t.Errorf("unknown shard: exit %d, stderr %q", code, stderr)
	}
	// Used wrongly: nothing is sent.
	for _, args := range [][]string{{"split"}, {"split", "x"}, {"split", "3", "--at", "zz"}, {"split", "3", "--at", ""}, {"split", "3", "--at", "0"},
		{"split", "3", "--at", "10000000000000000"}, {"split", "3", "4"}} {
		if _, stderr, code := runCmd(t, append([]string{"--endpoints", addr}, args...)...); code != exitUsage {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != 5 {
		t.Errorf("%d requests sent, want 5", len(f.reqs))
	}
}

func TestParseHash(t *testing.T) {
	for in, want := range map[string]uint64{"1": 1, "0x10": 16, "0X10": 16, "ffffffffffffffff": ^uint64(0), "8000000000000000": 1 << 63} {
		if got, err := parseHash(in); err != nil || got != want {
			t.Errorf("parseHash(%q) = %#x, %v; want %#x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0x", "g", "-1", "10000000000000000", "1 2"} {
		if got, err := parseHash(in); err == nil {
			t.Errorf("parseHash(%q) = %#x, want an error", in, got)
		}
	}
}

// TestSplitOnACluster splits a shard of a real node with flotillactl:
// shards lists the two new ranges, the keys written before read back, and
// a point outside the range is refused with the range.
func TestSplitOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctl, keys := ctlWithKeys(t, ctx)
	var before shardsView
	stdout, stderr, code := ctl("--output", "json", "shards")
	if err := json.Unmarshal([]byte(stdout), &before); code != exitOK || err != nil {
		t.Fatalf("shards: exit %d, %s (%v)", code, stderr, err)
	}
	stdout, stderr, code = ctl("split", "3")
	if code != exitOK {
		t.Fatalf("split 3: exit %d, %s", code, stderr)
	}
	t.Logf("flotillactl split 3:\n%s", stdout)
	var after shardsView
	waitfor.Until(t, ctx, "shards to list the new ranges", func() error {
		stdout, stderr, code := ctl("--output", "json", "shards")
		if code != exitOK {
			return fmt.Errorf("exit %d: %s", code, stderr)
		}
		after = shardsView{}
		if err := json.Unmarshal([]byte(stdout), &after); err != nil {
			return err
		}
		return tiles(after, userShards(before)+1)
	})
	t.Logf("flotillactl shards:\n%s", func() string { s, _, _ := ctl("shards"); return s }())
	var three shardView
	for _, s := range after.Shards {
		if s.ShardID == 3 {
			three = s
		}
	}
	for _, key := range keys {
		if stdout, stderr, code := ctl("get", key); code != exitOK || !strings.Contains(stdout, "v"+key) {
			t.Errorf("get %s after the split: exit %d, %q %q", key, code, stdout, stderr)
		}
	}
	_, stderr, code = ctl("split", "3", "--at", three.Start)
	if code != exitFailure || !strings.Contains(stderr, "(OUT_OF_RANGE); the shard's range is ["+three.Start+", "+three.Last+"]") {
		t.Errorf("split at the first hash: exit %d, %s", code, stderr)
	}
}

// ctlWithKeys starts a node, writes 20 keys key-N with values vkey-N
// through flotillactl, and returns the keys and a function that runs
// flotillactl against the node.
func ctlWithKeys(t *testing.T, ctx context.Context) (ctl func(args ...string) (string, string, int), keys []string) {
	t.Helper()
	n := startNode(t, ctx, t.TempDir(), 0)
	ctl = func(args ...string) (string, string, int) {
		t.Helper()
		return runCmd(t, append([]string{"--endpoints", n.ClientAddr()}, args...)...)
	}
	keys = make([]string, 20)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
		if _, stderr, code := ctl("put", keys[i], "v"+keys[i]); code != exitOK {
			t.Fatalf("put: %s", stderr)
		}
	}
	return ctl, keys
}

func userShards(v shardsView) (n int) {
	for _, s := range v.Shards {
		if !s.System {
			n++
		}
	}
	return n
}

// tiles checks that v lists want user shards, which cover the hash space
// without a gap or an overlap.
func tiles(v shardsView, want int) error {
	var shards []shardView
	for _, s := range v.Shards {
		if !s.System {
			shards = append(shards, s)
		}
	}
	if len(shards) != want {
		return fmt.Errorf("%d user shards, want %d", len(shards), want)
	}
	slices.SortFunc(shards, func(a, b shardView) int { return strings.Compare(a.Start, b.Start) })
	next := fmt.Sprintf("%016x", 0)
	for _, s := range shards {
		if s.Start != next {
			return fmt.Errorf("shard %d starts at %s, want %s", s.ShardID, s.Start, next)
		}
		var last uint64
		if _, err := fmt.Sscanf(s.Last, "%x", &last); err != nil {
			return err
		}
		next = fmt.Sprintf("%016x", last+1)
	}
	if next != fmt.Sprintf("%016x", 0) {
		return fmt.Errorf("the last shard ends before %s", next)
	}
	return nil
}
