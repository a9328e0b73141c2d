package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc/codes"
)

// startHTTPKVNodes starts three static nodes on loopback (4 shards, each on
// every node), each with its HTTP endpoint, waits until they are ready and
// returns them with an HTTP client; the test's cleanup closes both. The
// leaders stay where the start's elections put them (no hand-back), so
// that a test knows which nodes do not lead a shard.
func startHTTPKVNodes(t *testing.T, ctx context.Context) ([]*Node, *http.Client) {
	t.Helper()
	nodes := startStatic(t, ctx, loopbackPeers(t, 3), func(cfg *Config) {
		cfg.HTTPAddr, cfg.NoLeaderHandBack = "127.0.0.1:0", true
	})
	// A client of its own, so its idle connections can be closed for
	// goleak; it sends large bodies as curl does, after a 100 Continue.
	hc := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}, Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	return nodes, hc
}

// kvURL is the URL of key (path-escaped: a '/' is sent as %2F) on n's
// HTTP endpoint, with query (e.g. "?stale=true").
func kvURL(n *Node, key, query string) string {
	return "http://" + n.HTTPAddr() + kvPathPrefix + url.PathEscape(key) + query
}

type kvReply struct {
	code   int
	header http.Header
	body   []byte
}

// errorBody decodes the reply as a JSON error.
func (r kvReply) errorBody(t *testing.T) kvErrorBody {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error reply %d: Content-Type %q, want application/json (%q)", r.code, ct, r.body)
	}
	var e kvErrorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error reply %d %q: %v", r.code, r.body, err)
	}
	return e
}

// wantError checks that the reply is an error of HTTP status code with
// the given gRPC code and reason.
func (r kvReply) wantError(t *testing.T, code int, grpcCode codes.Code, reason string) kvErrorBody {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d (%q), want %d", r.code, r.body, code)
	}
	e := r.errorBody(t)
	if e.Code != grpcCode.String() || e.Reason != reason || e.Error == "" {
		t.Fatalf("error %+v, want code %s, reason %s and a message", e, grpcCode, reason)
	}
	return e
}

// kvDo sends a request; body may be nil. A *bytes.Reader body is sent
// with its length (and Expect: 100-continue), any other reader chunked.
func kvDo(t *testing.T, hc *http.Client, method, u string, body io.Reader) kvReply {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return kvReply{code: resp.StatusCode, header: resp.Header, body: b}
}

// kvPut puts value under key through n's HTTP endpoint and checks the
// answer.
func kvPut(t *testing.T, hc *http.Client, n *Node, key, value string) {
	t.Helper()
	r := kvDo(t, hc, http.MethodPut, kvURL(n, key, ""), bytes.NewReader([]byte(value)))
	if r.code != http.StatusOK {
		t.Fatalf("PUT %q on node %d: %d %q", key, n.NodeID(), r.code, r.body)
	}
	var resp struct {
		ShardID uint64 `json:"shard_id"`
	}
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatalf("PUT %q: %q: %v", key, r.body, err)
	}
	rt, err := n.Router.Lookup([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	if resp.ShardID != rt.ShardID || r.header.Get("X-Flotilla-Shard-Id") != strconv.FormatUint(rt.ShardID, 10) {
		t.Fatalf("PUT %q: shard %d (header %q), want %d", key, resp.ShardID, r.header.Get("X-Flotilla-Shard-Id"), rt.ShardID)
	}
}

// kvGet reads key through n's HTTP endpoint and checks that it holds value.
func kvGet(t *testing.T, hc *http.Client, n *Node, key, query, value string) {
	t.Helper()
	r := kvDo(t, hc, http.MethodGet, kvURL(n, key, query), nil)
	if r.code != http.StatusOK || string(r.body) != value {
		t.Fatalf("GET %q%s on node %d: %d %q, want 200 %q", key, query, n.NodeID(), r.code, r.body, value)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Fatalf("GET %q: Content-Type %q", key, ct)
	}
}

// keyLeader returns the node that leads key's shard and the others.
func keyLeader(t *testing.T, ctx context.Context, nodes []*Node, key string) (*Node, []*Node) {
	t.Helper()
	rt, err := nodes[0].Router.Lookup([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	var leader *Node
	var others []*Node
	waitFor(t, ctx, fmt.Sprintf("a leader of shard %d", rt.ShardID), func() error {
		leader, others = nil, nil
		for _, n := range nodes {
			st, err := n.Engine.Status(ctx, rt.ShardID)
			if err != nil {
				return err
			}
			if st.Leader == n.NodeID() {
				leader = n
			} else {
				others = append(others, n)
			}
		}
		if leader == nil {
			return errors.New("no node leads it")
		}
		return nil
	})
	return leader, others
}

// storedValue reads key on its leader's ClientService (the gRPC path), so
// that a test sees the key's exact bytes, not what the HTTP layer makes
// of them twice.
func storedValue(t *testing.T, ctx context.Context, nodes []*Node, key string) (string, bool) {
	t.Helper()
	leader, _ := keyLeader(t, ctx, nodes, key)
	resp, err := leader.service.Get(ctx, &nodepb.GetRequest{Key: []byte(key)})
	if err != nil {
		t.Fatalf("gRPC Get %q on node %d: %v", key, leader.NodeID(), err)
	}
	return string(resp.GetValue()), resp.GetFound()
}

// TestHTTPKV drives the key-value HTTP API of three nodes: round trips
// (keys with '/', "//", ".." and spaces), missing keys, deletes, empty
// keys, size limits, methods, query parameters, deadlines, and requests to
// nodes that do not lead the key's shard.
func TestHTTPKV(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes, hc := startHTTPKVNodes(t, ctx)
	cfg := nodes[0].service.cfg

	t.Run("RoundTrip", func(t *testing.T) {
		for _, key := range []string{"hello", "dir/a b", "x//y/../z", "100% sure", "."} {
			value := "value of " + key
			kvPut(t, hc, nodes[0], key, value)
			kvGet(t, hc, nodes[0], key, "", value)
			if got, found := storedValue(t, ctx, nodes, key); !found || got != value {
				t.Fatalf("key %q as stored: %q (found %v), want %q", key, got, found, value)
			}
		}
		// A '/' may also be sent as itself: the key is the rest of the
		// path as sent, not cleaned (no redirect to another key).
		for _, key := range []string{"plain/slash", "a//b/./c/../d", ".."} {
			r := kvDo(t, hc, http.MethodPut, "http://"+nodes[1].HTTPAddr()+kvPathPrefix+key, strings.NewReader("v"))
			if r.code != http.StatusOK {
				t.Fatalf("PUT %s: %d %q", key, r.code, r.body)
			}
			if got, found := storedValue(t, ctx, nodes, key); !found || got != "v" {
				t.Fatalf("%s as stored: %q (found %v)", key, got, found)
			}
		}
		// An empty value is a value.
		kvPut(t, hc, nodes[0], "empty-value", "")
		kvGet(t, hc, nodes[0], "empty-value", "", "")
	})

	t.Run("Missing", func(t *testing.T) {
		r := kvDo(t, hc, http.MethodGet, kvURL(nodes[0], "never written", ""), nil)
		r.wantError(t, http.StatusNotFound, codes.NotFound, "UNSPECIFIED")
	})

	t.Run("Delete", func(t *testing.T) {
		kvPut(t, hc, nodes[0], "doomed", "x")
		for _, existed := range []bool{true, false} { // idempotent
			r := kvDo(t, hc, http.MethodDelete, kvURL(nodes[0], "doomed", ""), nil)
			var resp struct {
				ShardID uint64 `json:"shard_id"`
				Existed bool   `json:"existed"`
			}
			if r.code != http.StatusOK || json.Unmarshal(r.body, &resp) != nil || resp.Existed != existed || resp.ShardID == 0 {
				t.Fatalf("DELETE: %d %q, want 200 with existed %v", r.code, r.body, existed)
			}
			kvDo(t, hc, http.MethodGet, kvURL(nodes[0], "doomed", ""), nil).wantError(t, http.StatusNotFound, codes.NotFound, "UNSPECIFIED")
		}
	})

	t.Run("EmptyKey", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			var body io.Reader
			if m == http.MethodPut {
				body = strings.NewReader("v")
			}
			r := kvDo(t, hc, m, "http://"+nodes[0].HTTPAddr()+kvPathPrefix, body)
			r.wantError(t, http.StatusBadRequest, codes.InvalidArgument, "EMPTY_KEY")
		}
	})

	t.Run("TooLarge", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		kvPut(t, hc, nodes[0], "big", "old")
		for _, tc := range []struct {
			name string
			body io.Reader
		}{
			// One byte over: read, refused by the service's check.
			{"one byte over", bytes.NewReader(make([]byte, cfg.MaxValueBytes+1))},
			// Its length declared: refused before the body is sent.
			{"declared", bytes.NewReader(make([]byte, 8*cfg.MaxValueBytes))},
			// Chunked, and stalled after twice the limit: answered
			// only if the server stops reading at the limit.
			{"chunked", stalledBody{io.LimitReader(zeros{}, 2*int64(cfg.MaxValueBytes)), release}},
		} {
			r := kvDo(t, hc, http.MethodPut, kvURL(nodes[0], "big", ""), tc.body)
			if e := r.wantError(t, http.StatusRequestEntityTooLarge, codes.InvalidArgument, "VALUE_TOO_LARGE"); !e.NotApplied {
				t.Errorf("%s: %+v, want not_applied", tc.name, e)
			}
		}
		kvGet(t, hc, nodes[0], "big", "", "old")
		r := kvDo(t, hc, http.MethodPut, kvURL(nodes[0], strings.Repeat("k", cfg.MaxKeyBytes+1), ""), strings.NewReader("v"))
		r.wantError(t, http.StatusRequestEntityTooLarge, codes.InvalidArgument, "KEY_TOO_LARGE")
	})

	t.Run("Method", func(t *testing.T) {
		for _, m := range []string{http.MethodPost, http.MethodPatch, http.MethodHead, http.MethodOptions} {
			r := kvDo(t, hc, m, kvURL(nodes[0], "posted", ""), strings.NewReader("v"))
			if r.code != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, PUT, DELETE" {
				t.Fatalf("%s: %d, Allow %q; want 405 with Allow GET, PUT, DELETE", m, r.code, r.header.Get("Allow"))
			}
			if m != http.MethodHead {
				r.wantError(t, http.StatusMethodNotAllowed, codes.Unimplemented, "BAD_REQUEST")
			}
		}
		kvDo(t, hc, http.MethodGet, kvURL(nodes[0], "posted", ""), nil).wantError(t, http.StatusNotFound, codes.NotFound, "UNSPECIFIED")
	})

	t.Run("Query", func(t *testing.T) {
		for _, tc := range []struct{ method, query string }{
			{http.MethodGet, "?stale=maybe"},
			{http.MethodGet, "?timeout=soon"},
			{http.MethodGet, "?timeout=-1s"},
			{http.MethodGet, "?colour=red"},
			{http.MethodPut, "?stale=true"},
		} {
			r := kvDo(t, hc, tc.method, kvURL(nodes[0], "q", tc.query), strings.NewReader("v"))
			r.wantError(t, http.StatusBadRequest, codes.InvalidArgument, "BAD_REQUEST")
		}
		kvDo(t, hc, http.MethodGet, kvURL(nodes[0], "q", ""), nil).wantError(t, http.StatusNotFound, codes.NotFound, "UNSPECIFIED")
		// A stale read on the leader, which applied the put before it
		// answered.
		leader, _ := keyLeader(t, ctx, nodes, "q")
		kvPut(t, hc, nodes[0], "q", "v")
		kvGet(t, hc, leader, "q", "?timeout=5s&stale", "v")
	})

	t.Run("Deadline", func(t *testing.T) {
		// A linearizable read on the leader waits for a heartbeat round:
		// a nanosecond's deadline has passed by then.
		leader, _ := keyLeader(t, ctx, nodes, "late")
		r := kvDo(t, hc, http.MethodGet, kvURL(leader, "late", "?timeout=1ns"), nil)
		r.wantError(t, http.StatusGatewayTimeout, codes.DeadlineExceeded, "DEADLINE")
	})

	t.Run("Forwarded", func(t *testing.T) {
		const key = "forwarded"
		leader, others := keyLeader(t, ctx, nodes, key)
		// The gRPC service of a node that does not lead the shard refuses:
		// the HTTP API must forward.
		_, err := others[0].service.Put(ctx, &nodepb.PutRequest{Key: []byte(key), Value: []byte("x")})
		if e := adminErrorOf(err); e.GetReason() != nodepb.Reason_REASON_NOT_LEADER || e.GetLeaderId() != leader.NodeID() {
			t.Fatalf("gRPC Put on node %d (not the leader): %v, want NOT_LEADER naming node %d", others[0].NodeID(), err, leader.NodeID())
		}
		kvPut(t, hc, others[0], key, "via a follower")
		kvGet(t, hc, others[1], key, "", "via a follower")
		kvGet(t, hc, leader, key, "", "via a follower")
		r := kvDo(t, hc, http.MethodDelete, kvURL(others[1], key, ""), nil)
		if r.code != http.StatusOK || !strings.Contains(string(r.body), `"existed":true`) {
			t.Fatalf("DELETE on node %d: %d %q", others[1].NodeID(), r.code, r.body)
		}
		kvDo(t, hc, http.MethodGet, kvURL(others[0], key, ""), nil).wantError(t, http.StatusNotFound, codes.NotFound, "UNSPECIFIED")
	})
}

// stalledBody reads r, then blocks until release is closed.
type stalledBody struct {
	r       io.Reader
	release chan struct{}
}

func (b stalledBody) Read(p []byte) (int, error) {
	if n, err := b.r.Read(p); err != io.EOF {
		return n, err
	}
	<-b.release
	return 0, io.EOF
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHTTPKVStale checks that ?stale=true reads the local replica: with
// the two other nodes closed, a linearizable GET on the last one fails
// (no quorum) and a stale one answers the value it holds.
func TestHTTPKVStale(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes, hc := startHTTPKVNodes(t, ctx)
	const key = "stale"
	kvPut(t, hc, nodes[0], key, "v1")
	last := nodes[2]
	waitFor(t, ctx, "node 3's replica to apply the put", func() error {
		r := kvDo(t, hc, http.MethodGet, kvURL(last, key, "?stale=true"), nil)
		if r.code != http.StatusOK || string(r.body) != "v1" {
			return fmt.Errorf("stale GET: %d %q", r.code, r.body)
		}
		return nil
	})
	for i := range 2 {
		if err := nodes[i].Close(); err != nil {
			t.Fatal(err)
		}
		nodes[i] = nil
	}
	kvGet(t, hc, last, key, "?stale=true", "v1")
	r := kvDo(t, hc, http.MethodGet, kvURL(last, key, "?timeout=500ms"), nil)
	switch r.code {
	case http.StatusServiceUnavailable: // no leader (or the closed one named)
	case http.StatusGatewayTimeout: // still leader, no quorum to confirm it
	default:
		t.Fatalf("linearizable GET without a quorum: %d %q, want 503 or 504", r.code, r.body)
	}
	r.errorBody(t)
}

// TestHTTPKVStatus checks the mapping of the service's errors to HTTP
// statuses.
func TestHTTPKVStatus(t *testing.T) {
	for _, tc := range []struct {
		code   codes.Code
		reason nodepb.Reason
		want   int
	}{
		{codes.InvalidArgument, nodepb.Reason_REASON_EMPTY_KEY, http.StatusBadRequest},
		{codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, http.StatusBadRequest},
		{codes.InvalidArgument, nodepb.Reason_REASON_KEY_TOO_LARGE, http.StatusRequestEntityTooLarge},
		{codes.InvalidArgument, nodepb.Reason_REASON_VALUE_TOO_LARGE, http.StatusRequestEntityTooLarge},
		{codes.InvalidArgument, nodepb.Reason_REASON_TOO_LARGE, http.StatusRequestEntityTooLarge},
		{codes.NotFound, nodepb.Reason_REASON_SHARD_NOT_FOUND, http.StatusNotFound},
		{codes.FailedPrecondition, nodepb.Reason_REASON_KEY_NOT_IN_SHARD, http.StatusServiceUnavailable},
		{codes.FailedPrecondition, nodepb.Reason_REASON_STALE_GENERATION, http.StatusServiceUnavailable},
		{codes.AlreadyExists, nodepb.Reason_REASON_DUPLICATE_REQUEST, http.StatusConflict},
		{codes.Unavailable, nodepb.Reason_REASON_NOT_LEADER, http.StatusServiceUnavailable},
		{codes.Unavailable, nodepb.Reason_REASON_NO_RING, http.StatusServiceUnavailable},
		{codes.Unavailable, nodepb.Reason_REASON_SHARD_MERGING, http.StatusServiceUnavailable},
		{codes.Unavailable, nodepb.Reason_REASON_AMBIGUOUS, http.StatusServiceUnavailable},
		{codes.Unavailable, nodepb.Reason_REASON_UNSPECIFIED, http.StatusServiceUnavailable},
		{codes.DeadlineExceeded, nodepb.Reason_REASON_DEADLINE, http.StatusGatewayTimeout},
		{codes.Canceled, nodepb.Reason_REASON_DEADLINE, 499},
		{codes.Internal, nodepb.Reason_REASON_INTERNAL, http.StatusInternalServerError},
		{codes.Unknown, nodepb.Reason_REASON_UNSPECIFIED, http.StatusInternalServerError},
	} {
		if got := httpStatus(tc.code, tc.reason); got != tc.want {
			t.Errorf("httpStatus(%s, %s) = %d, want %d", tc.code, tc.reason, got, tc.want)
		}
	}
}
