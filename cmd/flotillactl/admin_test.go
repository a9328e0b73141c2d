package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeAdmin answers the Admin service with canned responses and records
// the requests that change something.
type fakeAdmin struct {
	nodepb.UnimplementedAdminServer
	status *nodepb.StatusResponse
	shards *nodepb.ShardsResponse
	err    error // returned by every call if set
	block  bool  // changes wait for the caller to give up
	// notLeader: the first notLeader changes are answered NOT_LEADER.
	notLeader int

	mu        sync.Mutex
	transfers []*nodepb.TransferLeaderRequest
	changes   []*nodepb.ChangeReplicaRequest
}

func (f *fakeAdmin) Status(context.Context, *nodepb.StatusRequest) (*nodepb.StatusResponse, error) {
	return f.status, f.err
}

func (f *fakeAdmin) Shards(context.Context, *nodepb.ShardsRequest) (*nodepb.ShardsResponse, error) {
	return f.shards, f.err
}

// Compact answers for replicas on nodes 1 and 2, node 2's failed.
func (f *fakeAdmin) Compact(_ context.Context, req *nodepb.CompactRequest) (*nodepb.CompactResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &nodepb.CompactResponse{Replicas: []*nodepb.CompactedReplica{
		{NodeId: 1, FirstBefore: 5, FirstAfter: 41, Applied: 40},
		{NodeId: 2, Error: "engine: shard not found: shard " + fmt.Sprint(req.GetShardId())},
	}}, nil
}

func (f *fakeAdmin) TransferLeader(_ context.Context, req *nodepb.TransferLeaderRequest) (*nodepb.TransferLeaderResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.transfers = append(f.transfers, req)
	if f.err != nil {
		return nil, f.err
	}
	return &nodepb.TransferLeaderResponse{Leader: req.GetNodeId()}, nil
}

func (f *fakeAdmin) ChangeReplica(ctx context.Context, req *nodepb.ChangeReplicaRequest) (*nodepb.ChangeReplicaResponse, error) {
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes = append(f.changes, req)
	if f.err != nil {
		return nil, f.err
	}
	if len(f.changes) <= f.notLeader {
		return nil, nodeError(codes.Unavailable, &nodepb.Error{Reason: nodepb.Reason_REASON_NOT_LEADER, ShardId: req.GetShardId(),
			Message: "no leader found after 3 hops; retry"})
	}
	resp := &nodepb.ChangeReplicaResponse{Replicas: []*nodepb.Replica{
		{NodeId: 2, ReplicaId: 2, Role: "voter", Match: 10}, {NodeId: 1, ReplicaId: 1, Role: "voter", Match: 10},
	}}
	if op := req.GetOp(); op == nodepb.ReplicaOp_REPLICA_OP_ADD || op == nodepb.ReplicaOp_REPLICA_OP_DEMOTE {
		role := "voter"
		if req.GetLearner() || op == nodepb.ReplicaOp_REPLICA_OP_DEMOTE {
			role = "learner"
		}
		resp.Replicas = append(resp.Replicas, &nodepb.Replica{NodeId: req.GetNodeId(), ReplicaId: 5, Role: role, Match: 10})
	}
	return resp, nil
}

// serve starts a gRPC server on a free local port with the services
// registered by reg, and returns its address.
func serve(t *testing.T, reg func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	reg(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func serveAdmin(t *testing.T, f *fakeAdmin) string {
	return serve(t, func(s *grpc.Server) { nodepb.RegisterAdminServer(s, f) })
}

// deadAddr returns the address of a closed listener: nothing listens there.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func cannedStatus() *nodepb.StatusResponse {
	return &nodepb.StatusResponse{
		ClusterId: 0xab, AnsweredBy: 2, MetaLeader: 1,
		Nodes: []*nodepb.NodeStatus{
			{Node: &nodepb.NodeRecord{NodeId: 3, RaftAddr: "127.0.0.1:8003", ClientAddr: "127.0.0.1:7003"}, State: "dead"},
			{Node: &nodepb.NodeRecord{NodeId: 1, Instance: 77, RaftAddr: "127.0.0.1:8001", ClientAddr: "127.0.0.1:7001", GossipAddr: "127.0.0.1:9001", HttpAddr: "127.0.0.1:6001"}, State: "live", Replicas: 5, Leaders: 3},
			{Node: &nodepb.NodeRecord{NodeId: 2, RaftAddr: "127.0.0.1:8002", ClientAddr: "127.0.0.1:7002", GossipAddr: "127.0.0.1:9002", HttpAddr: "127.0.0.1:6002"}, State: "suspect", Replicas: 4, Leaders: 1, Draining: true},
		},
	}
}

func cannedShards() *nodepb.ShardsResponse {
	return &nodepb.ShardsResponse{
		Shards: []*nodepb.ShardInfo{
			{ShardId: 1 << 63, Start: 0, Last: ^uint64(0), Generation: 1, Leader: 1, Term: 3, Commit: 40, Applied: 40, ReportedBy: 1, System: true,
				Replicas: []*nodepb.Replica{{NodeId: 1, ReplicaId: 1, Role: "voter", Match: 40}, {NodeId: 2, ReplicaId: 2, Role: "voter", Match: 40}, {NodeId: 3, ReplicaId: 6, Role: "learner", Match: 39}}},
			{ShardId: 7, Start: 0x8000000000000000, Last: ^uint64(0), Generation: 2, Leader: 2, Term: 5, Commit: 12, Applied: 11, ReportedBy: 2, Quiesced: true,
				Replicas: []*nodepb.Replica{{NodeId: 4, ReplicaId: 9, Role: "learner"}, {NodeId: 2, ReplicaId: 2, Role: "voter"}, {NodeId: 1, ReplicaId: 1, Role: "voter (outgoing)"}}},
			{ShardId: 6, Start: 0, Last: 0x7fffffffffffffff, Generation: 2, Leader: 0, Term: 4,
				Replicas: []*nodepb.Replica{{NodeId: 3, Role: "unknown"}}},
		},
		Unreachable: []uint64{5, 3},
	}
}

func TestStatusTable(t *testing.T) {
	addr := serveAdmin(t, &fakeAdmin{status: cannedStatus()})
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := `cluster 00000000000000ab, meta shard leader 1 (answered by node 2)
NODE  STATE    RAFT ADDR       CLIENT ADDR     GOSSIP ADDR     HTTP ADDR       REPLICAS  LEADERS  DRAINING
1     live     127.0.0.1:8001  127.0.0.1:7001  127.0.0.1:9001  127.0.0.1:6001  5         3        no
2     suspect  127.0.0.1:8002  127.0.0.1:7002  127.0.0.1:9002  127.0.0.1:6002  4         1        yes
3     dead     127.0.0.1:8003  127.0.0.1:7003  -               -               0         0        no
`
	if stdout != want {
		t.Errorf("status table:\n%s\nwant:\n%s", stdout, want)
	}
}

func TestStatusJSON(t *testing.T) {
	addr := serveAdmin(t, &fakeAdmin{status: cannedStatus()})
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "status", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var v statusView
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, stdout)
	}
	if v.ClusterID != "00000000000000ab" || v.MetaLeader != 1 || v.AnsweredBy != 2 || len(v.Nodes) != 3 {
		t.Fatalf("status JSON: %+v", v)
	}
	if n := v.Nodes[0]; n.NodeID != 1 || n.State != "live" || n.Instance != 77 || n.GossipAddr != "127.0.0.1:9001" || n.HTTPAddr != "127.0.0.1:6001" || n.Replicas != 5 || n.Leaders != 3 || n.Draining {
		t.Errorf("node 1: %+v", n)
	}
	if n := v.Nodes[1]; n.NodeID != 2 || !n.Draining {
		t.Errorf("node 2: %+v", n)
	}
}

func TestShardsTable(t *testing.T) {
	addr := serveAdmin(t, &fakeAdmin{shards: cannedShards()})
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "shards")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := `SHARD  RANGE                                 LEADER  TERM  COMMIT  APPLIED  REPLICAS (NODE/REPLICA)                      QUIESCED
6      [0000000000000000, 7fffffffffffffff]  -       4     ?       ?        3/?(unknown)                                 no
7      [8000000000000000, ffffffffffffffff]  2       5     12      11       1/1(voter/outgoing) 2/2(voter) 4/9(learner)  yes
meta   [0000000000000000, ffffffffffffffff]  1       3     40      40       1/1(voter) 2/2(voter) 3/6(learner)           no
? no replica of the shard answered: its replicas are those its meta record holds, its leader and term the router's
unreachable: 3, 5 (their replicas are shown as the other nodes see them)
`
	if stdout != want {
		t.Errorf("shards table:\n%s\nwant:\n%s", stdout, want)
	}
}

func TestShardsJSON(t *testing.T) {
	addr := serveAdmin(t, &fakeAdmin{shards: cannedShards()})
	stdout, stderr, code := runCmd(t, "--output", "json", "--endpoints", addr, "shards")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var v shardsView
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, stdout)
	}
	if len(v.Shards) != 3 || len(v.Unreachable) != 2 || v.Unreachable[0] != 3 {
		t.Fatalf("shards JSON: %+v", v)
	}
	m := v.Shards[2]
	if m.ShardID != 1<<63 || m.Name != "meta" || m.Start != "0000000000000000" || m.Last != "ffffffffffffffff" || !m.System ||
		m.Leader != 1 || m.Term != 3 || m.Commit != 40 || len(m.Replicas) != 3 || m.Replicas[2] != (replicaView{NodeID: 3, ReplicaID: 6, Role: "learner", Match: 39}) {
		t.Errorf("meta shard: %+v", m)
	}
	if s := v.Shards[1]; s.ShardID != 7 || s.Name != "7" || !s.Quiesced || s.Applied != 11 || s.Replicas[2].ReplicaID != 9 {
		t.Errorf("shard 7: %+v", s)
	}
	if s := v.Shards[0]; len(s.Replicas) != 1 || s.Replicas[0].ReplicaID != 0 || !strings.Contains(stdout, `"replica_id": 0`) {
		t.Errorf("shard 6 (replica ID unknown): %+v", s)
	}
}

func TestShardsNoneUnreachable(t *testing.T) {
	resp := cannedShards()
	resp.Unreachable = nil
	addr := serveAdmin(t, &fakeAdmin{shards: resp})
	stdout, _, _ := runCmd(t, "--endpoints", addr, "shards")
	if !strings.HasSuffix(stdout, "unreachable: none\n") {
		t.Errorf("shards table does not end with unreachable: none:\n%s", stdout)
	}
	stdout, _, _ = runCmd(t, "--endpoints", addr, "--output", "json", "shards")
	if !strings.Contains(stdout, `"unreachable": []`) {
		t.Errorf("JSON unreachable is not an empty list:\n%s", stdout)
	}
}

func TestTransferLeader(t *testing.T) {
	f := &fakeAdmin{}
	addr := serveAdmin(t, f)
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "transfer-leader", "meta", "2")
	if code != 0 || stdout != "shard meta: the leader is now node 2\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, _, code = runCmd(t, "--endpoints", addr, "transfer-leader", "7", "3", "--output", "json")
	var v transferView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil || v != (transferView{ShardID: 7, Leader: 3}) {
		t.Fatalf("exit %d, JSON %q (%v)", code, stdout, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.transfers) != 2 || f.transfers[0].GetShardId() != 1<<63 || f.transfers[0].GetNodeId() != 2 || f.transfers[1].GetShardId() != 7 {
		t.Errorf("requests: %v", f.transfers)
	}
}

func TestAddReplica(t *testing.T) {
	f := &fakeAdmin{}
	addr := serveAdmin(t, f)
	// --learner after the positional arguments, and between them.
	for _, args := range [][]string{
		{"--endpoints", addr, "add-replica", "7", "4", "--learner"},
		{"add-replica", "7", "--learner", "4", "--endpoints", addr},
	} {
		stdout, stderr, code := runCmd(t, args...)
		if code != 0 || stdout != "shard 7: replicas 1/1(voter) 2/2(voter) 4/5(learner)\n" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	stdout, _, code := runCmd(t, "--endpoints", addr, "--output", "json", "add-replica", "7", "4")
	var v replicaChangeView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil || v.Op != "add" || v.Learner || len(v.Replicas) != 3 || v.Replicas[2].Role != "voter" || v.Replicas[2].ReplicaID != 5 {
		t.Errorf("exit %d, JSON %q (%v)", code, stdout, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.changes) != 3 {
		t.Fatalf("requests: %v", f.changes)
	}
	for i, learner := range []bool{true, true, false} {
		r := f.changes[i]
		if r.GetShardId() != 7 || r.GetNodeId() != 4 || r.GetOp() != nodepb.ReplicaOp_REPLICA_OP_ADD || r.GetLearner() != learner {
			t.Errorf("request %d: %v", i, r)
		}
	}
}

func TestRemoveReplica(t *testing.T) {
	f := &fakeAdmin{}
	addr := serveAdmin(t, f)
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "remove-replica", "meta", "3")
	if code != 0 || stdout != "shard meta: replicas 1/1(voter) 2/2(voter)\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.changes[0]; r.GetShardId() != 1<<63 || r.GetNodeId() != 3 || r.GetOp() != nodepb.ReplicaOp_REPLICA_OP_REMOVE || r.GetLearner() {
		t.Errorf("request: %v", r)
	}
}

func TestDemoteReplica(t *testing.T) {
	f := &fakeAdmin{}
	addr := serveAdmin(t, f)
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "--output", "json", "demote-replica", "7", "4")
	var v replicaChangeView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil || v.Op != "demote" || len(v.Replicas) != 3 || v.Replicas[2].Role != "learner" {
		t.Fatalf("exit %d, stdout %q (%v), stderr %q", code, stdout, err, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.changes[0]; r.GetShardId() != 7 || r.GetNodeId() != 4 || r.GetOp() != nodepb.ReplicaOp_REPLICA_OP_DEMOTE || r.GetLearner() {
		t.Errorf("request: %v", r)
	}
}

func TestCompactCommand(t *testing.T) {
	addr := serveAdmin(t, &fakeAdmin{})
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "compact", "7")
	want := "NODE  FIRST INDEX BEFORE  AFTER  APPLIED  ERROR\n" +
		"1     5                   41     40       \n" +
		"2     0                   0      0        engine: shard not found: shard 7\n"
	if code != 1 || stdout != want || !strings.Contains(stderr, "shard 7: 1 of 2 replicas not compacted") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, _, code = runCmd(t, "--endpoints", addr, "--output", "json", "compact", "meta")
	var v compactView
	if err := json.Unmarshal([]byte(stdout), &v); code != 1 || err != nil || v.ShardID != metaShardID || len(v.Replicas) != 2 || v.Replicas[0].FirstAfter != 41 {
		t.Fatalf("exit %d, JSON %q (%v)", code, stdout, err)
	}
	if _, stderr, code := runCmd(t, "--endpoints", addr, "compact", "x"); code != 2 || !strings.Contains(stderr, "SHARD must be") {
		t.Fatalf("bad SHARD: exit %d, stderr %q", code, stderr)
	}
}

// nodeError is a status error as a node sends it: its nodepb.Error detail.
// A NOT_LEADER answer (the leadership moving under the request; nothing
// changed) is asked again until the change is made, and returned when the
// time runs out.
func TestChangeRetriedAfterNotLeader(t *testing.T) {
	f := &fakeAdmin{notLeader: 3}
	addr := serveAdmin(t, f)
	stdout, stderr, code := runCmd(t, "--endpoints", addr, "remove-replica", "7", "3")
	if code != 0 || stdout != "shard 7: replicas 1/1(voter) 2/2(voter)\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	f.mu.Lock()
	if n := len(f.changes); n != 4 {
		t.Errorf("%d requests, want 4 (3 answered NOT_LEADER)", n)
	}
	f.mu.Unlock()

	f = &fakeAdmin{notLeader: 1 << 30}
	addr = serveAdmin(t, f)
	_, stderr, code = runCmd(t, "--endpoints", addr, "--timeout", "400ms", "remove-replica", "7", "3")
	if want := "flotillactl: shard 7: no leader found after 3 hops; retry (NOT_LEADER); the leader is unknown\n"; code != exitFailure || stderr != want {
		t.Errorf("exit %d, stderr %q, want %q", code, stderr, want)
	}
	f.mu.Lock()
	if n := len(f.changes); n < 2 {
		t.Errorf("%d requests within the timeout, want several", n)
	}
	f.mu.Unlock()
}

func nodeError(code codes.Code, d *nodepb.Error) error {
	d.Code = uint32(code)
	st, err := status.New(code, d.GetMessage()).WithDetails(d)
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestNodeErrorIsASentence(t *testing.T) {
	f := &fakeAdmin{err: nodeError(codes.InvalidArgument, &nodepb.Error{
		Reason: nodepb.Reason_REASON_NODE_NOT_FOUND, ShardId: 7, Message: "node 5 is not a voter of shard 7",
	})}
	addr := serveAdmin(t, f)
	for _, args := range [][]string{{"transfer-leader", "7", "5"}, {"remove-replica", "7", "5"}, {"status"}} {
		stdout, stderr, code := runCmd(t, append([]string{"--endpoints", addr}, args...)...)
		if code != exitFailure || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q", args, code, stdout)
		}
		if want := "flotillactl: shard 7: node 5 is not a voter of shard 7 (NODE_NOT_FOUND)\n"; stderr != want {
			t.Errorf("%q: stderr %q, want %q", args, stderr, want)
		}
	}
}

func TestErrorWithoutDetail(t *testing.T) {
	addr := serveAdmin(t, &fakeAdmin{err: status.Error(codes.PermissionDenied, "go away")})
	_, stderr, code := runCmd(t, "--endpoints", addr, "shards")
	if code != exitFailure || stderr != "flotillactl: the node failed (PermissionDenied): go away\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	// A node that lacks the service (an older version).
	addr = serve(t, func(*grpc.Server) {})
	_, stderr, code = runCmd(t, "--endpoints", addr, "status")
	if code != exitFailure || !strings.Contains(stderr, "does not support this request") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestDescribeDetail(t *testing.T) {
	for _, tc := range []struct {
		d    *nodepb.Error
		want string
	}{
		{&nodepb.Error{Reason: nodepb.Reason_REASON_NOT_LEADER, ShardId: 1 << 63, Message: "not the leader", LeaderId: 2, LeaderAddr: "127.0.0.1:7002"},
			"shard meta: not the leader (NOT_LEADER); the leader is node 2 at 127.0.0.1:7002"},
		{&nodepb.Error{Reason: nodepb.Reason_REASON_NOT_LEADER, ShardId: 4, Message: "not the leader"},
			"shard 4: not the leader (NOT_LEADER); the leader is unknown"},
		{&nodepb.Error{Reason: nodepb.Reason_REASON_BAD_REQUEST, Message: "node: transfer-leader needs a shard ID and a node ID"},
			"transfer-leader needs a shard ID and a node ID (BAD_REQUEST)"},
		{&nodepb.Error{}, "fallback message"},
	} {
		if got := describeDetail(tc.d, "fallback message"); got != tc.want {
			t.Errorf("describeDetail(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// TestDeadEndpoint: every network command fails fast, with the reason,
// when nothing listens at the endpoint.
func TestDeadEndpoint(t *testing.T) {
	addr := deadAddr(t)
	for _, args := range [][]string{
		{"status"}, {"shards"}, {"transfer-leader", "meta", "2"}, {"add-replica", "7", "4", "--learner"},
		{"remove-replica", "7", "4"}, {"put", "k", "v"}, {"get", "k"}, {"del", "k"},
	} {
		start := time.Now()
		stdout, stderr, code := runCmd(t, append([]string{"--endpoints", addr, "--timeout", "5s"}, args...)...)
		if elapsed := time.Since(start); elapsed > 3*time.Second {
			t.Errorf("%q: took %v", args, elapsed)
		}
		if code != exitFailure || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q", args, code, stdout)
		}
		want := "flotillactl: cannot reach any node at " + addr + ": "
		if !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, "refused") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: stderr %q, want %q and the reason", args, stderr, want)
		}
	}
}

// TestNextEndpoint: the first endpoint that answers serves the command.
func TestNextEndpoint(t *testing.T) {
	dead := deadAddr(t)
	addr := serveAdmin(t, &fakeAdmin{status: cannedStatus()})
	stdout, stderr, code := runCmd(t, "--endpoints", dead+","+addr, "status")
	if code != 0 || !strings.HasPrefix(stdout, "cluster 00000000000000ab") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestSilentEndpoint: an endpoint that accepts connections but never
// answers gets its share of the timeout, then the next one is tried.
func TestSilentEndpoint(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	addr := serveAdmin(t, &fakeAdmin{shards: cannedShards()})
	start := time.Now()
	stdout, stderr, code := runCmd(t, "--timeout", "1s", "--endpoints", lis.Addr().String()+","+addr, "shards")
	if code != 0 || !strings.HasPrefix(stdout, "SHARD") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if elapsed := time.Since(start); elapsed > 900*time.Millisecond {
		t.Errorf("took %v, want about half the timeout", elapsed)
	}
	// Alone, the silent endpoint fails the command within the timeout.
	start = time.Now()
	_, stderr, code = runCmd(t, "--timeout", "300ms", "--endpoints", lis.Addr().String(), "status")
	// The budget is what is left of the 300ms once connecting began: 300ms,
	// or a millisecond less on a loaded machine.
	if code != exitFailure || !regexp.MustCompile(`cannot reach any node at `+regexp.QuoteMeta(lis.Addr().String())+`: no connection within (300|29\d)ms`).MatchString(stderr) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("took %v with a 300ms timeout", elapsed)
	}
}

// TestChangeTimesOut: a change the node does not answer in time may or may
// not have been made, and the error says so.
func TestChangeTimesOut(t *testing.T) {
	addr := serveAdmin(t, &fakeAdmin{block: true})
	start := time.Now()
	_, stderr, code := runCmd(t, "--endpoints", addr, "--timeout", "300ms", "add-replica", "7", "4")
	want := "flotillactl: no answer within the timeout (300ms; see --timeout); the change may or may not have been made (see flotillactl shards)\n"
	if code != exitFailure || stderr != want {
		t.Errorf("exit %d, stderr %q, want %q", code, stderr, want)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("took %v with a 300ms timeout", elapsed)
	}
}
