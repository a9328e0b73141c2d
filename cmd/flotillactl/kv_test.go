package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// fakeKV is a one-node, one-shard KV service over a map.
type fakeKV struct {
	nodepb.UnimplementedKVServer
	addr string
	mu   sync.Mutex
	data map[string]string
	gets []*nodepb.GetRequest
}

func (f *fakeKV) Routes(context.Context, *nodepb.RoutesRequest) (*nodepb.RoutesResponse, error) {
	return &nodepb.RoutesResponse{
		NodeId: 1, Generation: 1,
		Shards: []*nodepb.ShardRoute{{ShardId: 1, Start: 0, Last: ^uint64(0), Replicas: []uint64{1}, Leader: 1, Term: 1}},
		Nodes:  []*nodepb.NodeAddress{{NodeId: 1, Addr: f.addr}},
	}, nil
}

func (f *fakeKV) Put(_ context.Context, req *nodepb.PutRequest) (*nodepb.PutResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if string(req.GetValue()) == "refuse" {
		return nil, nodeError(codes.InvalidArgument, &nodepb.Error{Reason: nodepb.Reason_REASON_BAD_REQUEST, ShardId: 1, Message: "the value refuse is refused", NotApplied: true})
	}
	f.data[string(req.GetKey())] = string(req.GetValue())
	return &nodepb.PutResponse{ShardId: 1}, nil
}

func (f *fakeKV) Get(_ context.Context, req *nodepb.GetRequest) (*nodepb.GetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, req)
	v, ok := f.data[string(req.GetKey())]
	return &nodepb.GetResponse{ShardId: 1, Found: ok, Value: []byte(v)}, nil
}

func (f *fakeKV) Delete(_ context.Context, req *nodepb.DeleteRequest) (*nodepb.DeleteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.data[string(req.GetKey())]
	delete(f.data, string(req.GetKey()))
	return &nodepb.DeleteResponse{ShardId: 1, Existed: ok}, nil
}

func serveKV(t *testing.T) string {
	f := &fakeKV{data: map[string]string{}}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addr = serve(t, func(s *grpc.Server) { nodepb.RegisterKVServer(s, f) })
	return f.addr
}

// TestGetReadOptions: --stale, --replica, --lease and --read-index reach
// the node as the request's options; two together are a usage error.
func TestGetReadOptions(t *testing.T) {
	f := &fakeKV{data: map[string]string{"k": "v"}}
	f.mu.Lock()
	f.addr = serve(t, func(s *grpc.Server) { nodepb.RegisterKVServer(s, f) })
	f.mu.Unlock()
	for _, args := range [][]string{{"get", "k"}, {"get", "k", "--stale"}, {"get", "k", "--replica"}, {"get", "k", "--lease"}, {"get", "k", "--read-index"}} {
		if stdout, stderr, code := runCmd(t, append([]string{"--endpoints", f.addr}, args...)...); code != 0 || stdout != "v\n" {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	for _, two := range [][]string{{"--stale", "--replica"}, {"--lease", "--read-index"}, {"--replica", "--lease"}} {
		if _, stderr, code := runCmd(t, append([]string{"--endpoints", f.addr, "get", "k"}, two...)...); code != 2 || !strings.Contains(stderr, "exclude each other") {
			t.Fatalf("%v: exit %d, stderr %q", two, code, stderr)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.gets) != 5 || f.gets[0].GetStale() || f.gets[0].GetReplica() || f.gets[0].GetMode() != nodepb.ReadMode_READ_MODE_DEFAULT ||
		!f.gets[1].GetStale() || !f.gets[2].GetReplica() || f.gets[2].GetStale() ||
		f.gets[3].GetMode() != nodepb.ReadMode_READ_MODE_LEASE || f.gets[4].GetMode() != nodepb.ReadMode_READ_MODE_READ_INDEX {
		t.Fatalf("requests: %v", f.gets)
	}
}

func TestKV(t *testing.T) {
	addr := serveKV(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "hello"}, "(not found)\n"},
		{[]string{"put", "hello", "world\twide"}, "OK\n"},
		{[]string{"get", "hello"}, "world\twide\n"},
		{[]string{"get", "hello", "--stale"}, "world\twide\n"},
		{[]string{"--output", "json", "get", "hello"}, `{"found":true,"key":"hello","value":"world\twide"}`},
		{[]string{"del", "hello"}, "OK\n"},
		{[]string{"del", "hello"}, "OK (key did not exist)\n"},
		{[]string{"del", "hello", "--output", "json"}, `{"existed":false,"key":"hello"}`},
		{[]string{"put", "--", "-k", "-v"}, "OK\n"},
		{[]string{"get", "--", "-k"}, "-v\n"},
	} {
		stdout, stderr, code := runCmd(t, append([]string{"--endpoints", addr}, tc.args...)...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", tc.args, code, stderr)
		}
		if strings.HasPrefix(tc.want, "{") {
			var v, w any
			if json.Unmarshal([]byte(stdout), &v) != nil || json.Unmarshal([]byte(tc.want), &w) != nil || !jsonEqual(v, w) {
				t.Errorf("%q: stdout %q, want %s", tc.args, stdout, tc.want)
			}
			continue
		}
		if stdout != tc.want {
			t.Errorf("%q: stdout %q, want %q", tc.args, stdout, tc.want)
		}
	}
	_, stderr, code := runCmd(t, "--endpoints", addr, "put", "k", "refuse")
	if code != exitFailure || stderr != "flotillactl: shard 1: the value refuse is refused (BAD_REQUEST)\n" {
		t.Errorf("refused put: exit %d, stderr %q", code, stderr)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
