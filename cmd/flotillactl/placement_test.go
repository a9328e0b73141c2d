package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/placement"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// fakePlacer answers the Admin service's Placement and SetDraining as the
// meta shard's leader would, with canned operations, and records the
// requests.
type fakePlacer struct {
	nodepb.UnimplementedAdminServer
	ops   []placement.Op
	moves []placement.Move
	stats placement.Stats
	block bool // SetDraining waits for the caller to give up

	mu       sync.Mutex
	paused   bool
	actions  []nodepb.PlacementAction
	drainReq []*nodepb.SetDrainingRequest
}

func (f *fakePlacer) Placement(_ context.Context, req *nodepb.PlacementRequest) (*nodepb.PlacementResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, req.GetAction())
	switch req.GetAction() {
	case nodepb.PlacementAction_PLACEMENT_ACTION_PAUSE:
		f.paused = true
	case nodepb.PlacementAction_PLACEMENT_ACTION_RESUME:
		f.paused = false
	}
	resp := &nodepb.PlacementResponse{NodeId: 1, Paused: f.paused}
	resp.OpsJson, _ = json.Marshal(f.ops)
	resp.MovesJson, _ = json.Marshal(f.moves)
	stats := f.stats
	stats.Paused = f.paused
	resp.StatsJson, _ = json.Marshal(stats)
	return resp, nil
}

func (f *fakePlacer) SetDraining(ctx context.Context, req *nodepb.SetDrainingRequest) (*nodepb.SetDrainingResponse, error) {
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drainReq = append(f.drainReq, req)
	switch {
	case req.GetNodeId() == 99:
		return nil, nodeError(codes.NotFound, &nodepb.Error{Reason: nodepb.Reason_REASON_NODE_NOT_FOUND, Message: "node: node 99 not found"})
	case req.GetNodeId() == 1 && req.GetDraining():
		return nil, nodeError(codes.FailedPrecondition, &nodepb.Error{Reason: nodepb.Reason_REASON_BAD_REQUEST, Message: "placement: node 1 is the last live node"})
	}
	return &nodepb.SetDrainingResponse{}, nil
}

var movesStart = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func cannedPlacer() *fakePlacer {
	rebalance := placement.Op{Kind: placement.RebalanceReplica, ShardID: 7, Add: []uint64{4}, Remove: placement.Replica{NodeID: 2, ReplicaID: 5, Role: placement.Voter},
		Reason: "node 2 holds 9 replicas, node 4 holds 3 (share 6 ± 2)"}
	transfer := placement.Op{Kind: placement.TransferLeader, ShardID: 1 << 63, Leader: 3, Reason: "node 2 is draining"}
	return &fakePlacer{
		ops: []placement.Op{transfer, rebalance},
		moves: []placement.Move{
			{Op: rebalance, Step: "add learner on n4", Started: movesStart},
			{Op: transfer, Step: "transfer to n3", Started: movesStart.Add(-time.Minute), Finished: movesStart.Add(-time.Minute + 250*time.Millisecond), Outcome: placement.Succeeded},
			{Op: placement.Op{Kind: placement.Repair, ShardID: 3, Add: []uint64{1, 5}}, Started: movesStart.Add(-time.Hour),
				Finished: movesStart.Add(-time.Hour + 12340*time.Millisecond), Outcome: placement.Failed, Err: "learner did not catch up", Resumed: true},
		},
		stats: placement.Stats{
			Started: map[placement.Kind]uint64{placement.Repair: 1, placement.TransferLeader: 3}, Succeeded: map[placement.Kind]uint64{placement.TransferLeader: 3},
			Failed: map[placement.Kind]uint64{placement.Repair: 1}, Dropped: map[placement.Kind]uint64{},
			QuorumLost: 2, Plans: 40, InFlight: 1, ReplicaSpread: 6, LeaderSpread: 1,
		},
	}
}

func servePlacer(t *testing.T, f *fakePlacer) string {
	return serve(t, func(s *grpc.Server) { nodepb.RegisterAdminServer(s, f) })
}

func TestPlan(t *testing.T) {
	f := cannedPlacer()
	addr := servePlacer(t, f)
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "plan")
	want := `plan of node 1, the meta shard's leader (a dry run: nothing is started)
KIND               SHARD  ADD  REMOVE      LEADER  REASON
transfer-leader    meta   -    -           3       node 2 is draining
rebalance-replica  7      4    2/5(voter)  -       node 2 holds 9 replicas, node 4 holds 3 (share 6 ± 2)
`
	if code != 0 || stdout != want {
		t.Errorf("exit %d, stderr %q, plan table:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}
	stdout, stderr, code = runCmd(t, "--endpoints", addr, "plan", "--output", "json")
	var v planView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("exit %d, stderr %q, JSON %q (%v)", code, stderr, stdout, err)
	}
	if v.AnsweredBy != 1 || v.Paused || len(v.Ops) != 2 {
		t.Fatalf("plan JSON: %+v", v)
	}
	if op := v.Ops[0]; op.Kind != "transfer-leader" || op.ShardID != 1<<63 || len(op.Add) != 0 || op.Remove != nil || op.Leader != 3 {
		t.Errorf("op 0: %+v", op)
	}
	if op := v.Ops[1]; op.Kind != "rebalance-replica" || op.Add[0] != 4 || *op.Remove != (opReplicaView{NodeID: 2, ReplicaID: 5, Role: "voter"}) || op.Leader != 0 {
		t.Errorf("op 1: %+v", op)
	}
	if !strings.Contains(stdout, `"add": []`) || !strings.Contains(stdout, `"remove": null`) {
		t.Errorf("no add and no remove are not [] and null:\n%s", stdout)
	}

	// Nothing to do, paused.
	f.ops = nil
	runCmd(t, "--endpoints", addr, "placement", "pause")
	stdout, _, _ = runCmd(t, "--endpoints", addr, "plan")
	want = `plan of node 1, the meta shard's leader (a dry run: nothing is started)
nothing to do: replicas and leaderships are where the planner wants them
placement is paused: nothing starts until flotillactl placement resume
`
	if stdout != want {
		t.Errorf("empty plan:\n%s\nwant:\n%s", stdout, want)
	}
}

func TestMoves(t *testing.T) {
	f := cannedPlacer()
	addr := servePlacer(t, f)
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "moves", "--output", "json")
	var v movesView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("exit %d, stderr %q, JSON %q (%v)", code, stderr, stdout, err)
	}
	if len(v.Moves) != 3 || v.AnsweredBy != 1 {
		t.Fatalf("moves JSON: %+v", v)
	}
	if m := v.Moves[0]; m.Outcome != "running" || m.Finished != nil || m.Step != "add learner on n4" || !m.Started.Equal(movesStart) || m.Op.Remove.NodeID != 2 {
		t.Errorf("move 0: %+v", m)
	}
	if m := v.Moves[2]; m.Outcome != "failed" || m.Finished == nil || m.Err != "learner did not catch up" || !m.Resumed || len(m.Op.Add) != 2 {
		t.Errorf("move 2: %+v", m)
	}
	if !strings.Contains(stdout, `"finished": null`) {
		t.Errorf("a move in flight has a finish time:\n%s", stdout)
	}

	// The table, the time being 3.21s after the move in flight started.
	var b strings.Builder
	tw := tableWriter(&b)
	movesTable(tw, v, movesStart.Add(3210*time.Millisecond))
	tw.Flush()
	at := func(d time.Duration) string { return movesStart.Add(d).Local().Format(time.DateTime) }
	want := "SHARD  KIND               STEP/OUTCOME                STARTED              TOOK         ERR\n" +
		"7      rebalance-replica  running: add learner on n4  " + at(0) + "  3.2s so far  -\n" +
		"meta   transfer-leader    succeeded                   " + at(-time.Minute) + "  250ms        -\n" +
		"3      repair             failed (resumed)            " + at(-time.Hour) + "  12.3s        learner did not catch up\n"
	if b.String() != want {
		t.Errorf("moves table:\n%s\nwant:\n%s", b.String(), want)
	}

	f.moves = nil
	stdout, _, _ = runCmd(t, "--endpoints", addr, "moves")
	if stdout != "no operation in flight or done by the driver of node 1, the meta shard's leader\n" {
		t.Errorf("no moves: %q", stdout)
	}
}

func TestPlacementPauseResumeStatus(t *testing.T) {
	f := cannedPlacer()
	addr := servePlacer(t, f)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"placement", "pause"}, "placement paused on node 1, the meta shard's leader: no operation starts; 1 in flight go on to their end\n"},
		{[]string{"placement", "status"}, `placement on node 1, the meta shard's leader: paused
in flight: 1, plans made: 40, shards reported without a quorum: 2
spread over live, non-draining nodes (largest minus smallest count): replicas 6, leaders 1
KIND             STARTED  SUCCEEDED  FAILED  DROPPED
repair           1        0          1       0
transfer-leader  3        3          0       0
`},
		{[]string{"placement", "resume"}, "placement running on node 1, the meta shard's leader\n"},
	} {
		stdout, stderr, code := runCmd(t, append([]string{"--endpoints", addr}, tc.args...)...)
		if code != 0 || stdout != tc.want {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", tc.args, code, stderr, stdout, tc.want)
		}
	}
	stdout, _, code := runCmd(t, "--endpoints", addr, "--output", "json", "placement", "status")
	var v placementStatusView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil || v.Paused || v.Plans != 40 || v.QuorumLost != 2 || len(v.Kinds) != 2 ||
		v.Kinds[0] != (kindCount{Kind: "repair", Started: 1, Failed: 1}) {
		t.Errorf("exit %d, JSON %q (%v)", code, stdout, err)
	}
	f.stats = placement.Stats{}
	stdout, _, _ = runCmd(t, "--endpoints", addr, "placement", "status")
	if !strings.HasSuffix(stdout, "\nno operation started yet\n") {
		t.Errorf("no counters:\n%s", stdout)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []nodepb.PlacementAction{nodepb.PlacementAction_PLACEMENT_ACTION_PAUSE, nodepb.PlacementAction_PLACEMENT_ACTION_STATUS,
		nodepb.PlacementAction_PLACEMENT_ACTION_RESUME, nodepb.PlacementAction_PLACEMENT_ACTION_STATUS, nodepb.PlacementAction_PLACEMENT_ACTION_STATUS}
	if !slices.Equal(f.actions, want) {
		t.Errorf("actions %v, want %v", f.actions, want)
	}
}

func TestDecommission(t *testing.T) {
	f := cannedPlacer()
	addr := servePlacer(t, f)
	for _, tc := range []struct {
		args         []string
		code         int
		stdout, want string // want: stderr
	}{
		{[]string{"decommission", "4"}, exitOK, "node 4 is draining: its leaderships and replicas move off (see flotillactl status and moves)\n", ""},
		{[]string{"recommission", "4"}, exitOK, "node 4 is no longer draining: it may receive replicas and leaderships again\n", ""},
		{[]string{"decommission", "4", "--output", "json"}, exitOK, "{\n  \"node_id\": 4,\n  \"draining\": true\n}\n", ""},
		{[]string{"decommission", "99"}, exitFailure, "", "flotillactl: node 99 not found (NODE_NOT_FOUND)\n"},
		{[]string{"decommission", "1"}, exitFailure, "", "flotillactl: placement: node 1 is the last live node (BAD_REQUEST)\n"},
	} {
		stdout, stderr, code := runCmd(t, append([]string{"--endpoints", addr}, tc.args...)...)
		if code != tc.code || stdout != tc.stdout || stderr != tc.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, stdout, stderr, tc.code, tc.stdout, tc.want)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.drainReq) != 5 || f.drainReq[0].GetNodeId() != 4 || !f.drainReq[0].GetDraining() || f.drainReq[1].GetDraining() {
		t.Errorf("requests: %v", f.drainReq)
	}
}

// TestDecommissionTimesOut: a decommission the node does not answer in
// time may or may not have been made, and the error says where to look.
func TestDecommissionTimesOut(t *testing.T) {
	addr := servePlacer(t, &fakePlacer{block: true})
	_, stderr, code := runCmd(t, "--endpoints", addr, "--timeout", "300ms", "decommission", "4")
	want := "flotillactl: no answer within the timeout (300ms; see --timeout); the change may or may not have been made (see flotillactl status)\n"
	if code != exitFailure || stderr != want {
		t.Errorf("exit %d, stderr %q, want %q", code, stderr, want)
	}
}
