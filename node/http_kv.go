package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The key-value HTTP API: GET, PUT and DELETE /v1/kv/{key} on the node's
// HTTP endpoint (NewHTTPHandler), for trying Flotilla with curl.
//
// It is a thin front on the ClientService: each request becomes the
// nodepb request the gRPC service takes (GetRequest, PutRequest,
// DeleteRequest, without a session) and runs on this node's ClientService,
// in process, so that routing, the re-routing after a split or a merge,
// the size checks and the error statuses are the service's own. The gRPC
// service does not forward: a node that does not lead the key's shard
// answers NOT_LEADER with the leader it knows, for the client to follow.
// An HTTP client cannot follow it, so this handler does, as the Admin
// service forwards its requests: it sends the same request to the named
// leader's KV service, at most maxHops times, and only when the refusal
// says that nothing applied (a NOT_LEADER write never applied; a read
// changes nothing). Nothing else is retried: an error goes back as the
// service gave it, in JSON with an HTTP status (httpStatus).
//
//	GET    /v1/kv/{key}[?stale=true]   200 the value (application/octet-stream), 404 if absent
//	PUT    /v1/kv/{key}                200 {"shard_id":N}; the body is the value
//	DELETE /v1/kv/{key}                200 {"shard_id":N,"existed":B}; idempotent
//
// The key is the rest of the path, percent-decoded (%2F stands for a '/'
// that the path cleaning must not touch, e.g. in "a//b"). A GET is
// linearizable; ?stale=true reads this node's replica as it is (the
// service's stale read, GetRequest.stale), or the leader's when this node
// has none. ?timeout=DURATION (a Go duration: 500ms, 2s) is the request's
// deadline, as a gRPC caller's deadline; the service bounds it by
// ClientServiceConfig.MaxRequestTimeout, which is also the default.
// Unknown query parameters are refused.
//
// Errors are {"error": message, "code": gRPC code name, "reason": the
// nodepb.Reason without its REASON_ prefix, "not_applied": true when a
// write certainly did not apply}. The key and value limits are the
// service's (MaxKeyBytes, MaxValueBytes); the body is read through an
// http.MaxBytesReader just above MaxValueBytes, so that an oversized body
// is refused (413 VALUE_TOO_LARGE) without being read, and one of a
// declared length over the limit before any of it is read.

// kvPathPrefix is the path of the key-value HTTP API; the key follows it.
const kvPathPrefix = "/v1/kv/"

// kvAllow lists the methods the key-value HTTP API serves (the Allow
// header of a 405).
const kvAllow = "GET, PUT, DELETE"

// httpKV serves the key-value HTTP API from a node's ClientService. It
// holds no state of its own; it is safe for concurrent use.
type httpKV struct {
	svc  *ClientService
	self uint64
	// dial returns a KV client of a node's client address (the node's
	// cached connections, closed by Node.Close).
	dial func(addr string) (nodepb.KVClient, error)
}

func newHTTPKV(n *Node) *httpKV {
	return &httpKV{svc: n.service, self: n.cfg.NodeID, dial: n.admin.d.kv}
}

// kvOptions are a request's query parameters.
type kvOptions struct {
	stale   bool
	timeout time.Duration
}

func (h *httpKV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodPut, http.MethodDelete:
	default:
		w.Header().Set("Allow", kvAllow)
		writeJSON(w, http.StatusMethodNotAllowed, kvErrorBody{
			Error:  fmt.Sprintf("node: method %s not allowed on %s (%s)", r.Method, kvPathPrefix, kvAllow),
			Code:   codes.Unimplemented.String(),
			Reason: reasonName(nodepb.Reason_REASON_BAD_REQUEST),
		})
		return
	}
	key, opts, e := h.parse(r)
	if e != nil {
		h.fail(w, StatusError(e))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opts.timeout)
	defer cancel()
	switch r.Method {
	case http.MethodGet:
		h.get(ctx, w, key, opts.stale)
	case http.MethodPut:
		h.put(ctx, w, r, key)
	case http.MethodDelete:
		h.delete(ctx, w, key)
	}
}

// parse returns the request's key (unchecked: the service checks it) and
// options.
func (h *httpKV) parse(r *http.Request) ([]byte, kvOptions, *nodepb.Error) {
	opts := kvOptions{timeout: h.svc.cfg.MaxRequestTimeout}
	key, err := url.PathUnescape(strings.TrimPrefix(r.URL.EscapedPath(), kvPathPrefix))
	if err != nil {
		return nil, opts, h.svc.badRequest("node: key: %v", err)
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, opts, h.svc.badRequest("node: query: %v", err)
	}
	for name, vs := range q {
		v := vs[len(vs)-1]
		switch name {
		case "stale":
			if r.Method != http.MethodGet {
				return nil, opts, h.svc.badRequest("node: stale applies to GET only")
			}
			if opts.stale = true; v != "" { // a bare ?stale is true
				if opts.stale, err = strconv.ParseBool(v); err != nil {
					return nil, opts, h.svc.badRequest("node: stale=%q: want true or false", v)
				}
			}
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, opts, h.svc.badRequest("node: timeout=%q: want a positive duration such as 500ms or 2s", v)
			}
			opts.timeout = min(d, h.svc.cfg.MaxRequestTimeout)
		default:
			return nil, opts, h.svc.badRequest("node: unknown query parameter %q (stale, timeout)", name)
		}
	}
	return []byte(key), opts, nil
}

func (h *httpKV) get(ctx context.Context, w http.ResponseWriter, key []byte, stale bool) {
	resp, err := onLeader(ctx, h, false, &nodepb.GetRequest{Key: key, Stale: stale}, h.svc.Get, nodepb.KVClient.Get)
	if err != nil {
		h.fail(w, err)
		return
	}
	setShard(w, resp.GetShardId())
	if !resp.GetFound() {
		writeJSON(w, http.StatusNotFound, kvErrorBody{
			Error: "node: key not found", Code: codes.NotFound.String(), Reason: reasonName(nodepb.Reason_REASON_UNSPECIFIED),
		})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.GetValue())))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp.GetValue())
}

func (h *httpKV) put(ctx context.Context, w http.ResponseWriter, r *http.Request, key []byte) {
	// The service checks the key before the value: so does this, before
	// reading the body.
	if e := h.svc.checkKey(key); e != nil {
		h.fail(w, StatusError(e))
		return
	}
	value, e := h.readValue(ctx, w, r)
	if e != nil {
		h.fail(w, StatusError(e))
		return
	}
	resp, err := onLeader(ctx, h, true, &nodepb.PutRequest{Key: key, Value: value}, h.svc.Put, nodepb.KVClient.Put)
	h.written(w, err, resp.GetShardId(), struct {
		ShardID uint64 `json:"shard_id"`
	}{resp.GetShardId()})
}

// readValue reads a PUT's body, at most MaxValueBytes+1 bytes: a body one
// byte over the limit reaches the service's check, a longer one is cut
// off unread (and the server closes the connection after the answer). The
// read is bounded by the request's deadline.
func (h *httpKV) readValue(ctx context.Context, w http.ResponseWriter, r *http.Request) ([]byte, *nodepb.Error) {
	limit := h.svc.cfg.MaxValueBytes
	if r.ContentLength > int64(limit) {
		return nil, h.svc.tooLarge(nodepb.Reason_REASON_VALUE_TOO_LARGE, "value", int(min(r.ContentLength, math.MaxInt)), limit)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = http.NewResponseController(w).SetReadDeadline(d) // ErrNotSupported: unbounded
	}
	value, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)+1))
	if err == nil {
		return value, nil
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		e := h.svc.newError(codes.InvalidArgument, nodepb.Reason_REASON_VALUE_TOO_LARGE, 0,
			"node: value of more than %d bytes exceeds the limit of %d", mbe.Limit, limit)
		e.Limit, e.NotApplied = uint64(limit), true
		return nil, e
	case ctx.Err() != nil:
		return nil, h.svc.ctxError(ctx, 0)
	case errors.Is(err, os.ErrDeadlineExceeded): // the read deadline, a moment before ctx's
		e := h.svc.newError(codes.DeadlineExceeded, nodepb.Reason_REASON_DEADLINE, 0, "node: reading the value: %v", err)
		e.NotApplied = true
		return nil, e
	}
	return nil, h.svc.badRequest("node: reading the value: %v", err)
}

func (h *httpKV) delete(ctx context.Context, w http.ResponseWriter, key []byte) {
	resp, err := onLeader(ctx, h, true, &nodepb.DeleteRequest{Key: key}, h.svc.Delete, nodepb.KVClient.Delete)
	h.written(w, err, resp.GetShardId(), struct {
		ShardID uint64 `json:"shard_id"`
		Existed bool   `json:"existed"`
	}{resp.GetShardId(), resp.GetExisted()})
}

// written answers a write: its error, or 200 with body in JSON. (A nil
// response's getters read as zero.)
func (h *httpKV) written(w http.ResponseWriter, err error, shardID uint64, body any) {
	if err != nil {
		h.fail(w, err)
		return
	}
	setShard(w, shardID)
	writeJSON(w, http.StatusOK, body)
}

// onLeader runs req on this node's ClientService (local) and, while the
// answer is a NOT_LEADER that names another node's address and says that
// nothing applied (any read: it changes nothing), sends it to that node's
// KV service (remote), at most maxHops times. It returns the last answer.
func onLeader[Req, Resp any](ctx context.Context, h *httpKV, write bool, req Req,
	local func(context.Context, Req) (Resp, error),
	remote func(nodepb.KVClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
) (Resp, error) {
	resp, err := local(ctx, req)
	for range maxHops {
		addr := h.redirect(err, write)
		if addr == "" {
			break
		}
		c, derr := h.dial(addr)
		if derr != nil {
			return resp, status.Errorf(codes.Unavailable, "node %d: forwarding to %s: %v", h.self, addr, derr)
		}
		if resp, err = remote(c, ctx, req); err != nil && adminErrorOf(err) == nil {
			// An error of the connection, not of the service: say where.
			st := status.Convert(err)
			err = status.Errorf(st.Code(), "node %d: forwarding to %s: %s", h.self, addr, st.Message())
		}
	}
	return resp, err
}

// redirect returns the client address of the leader a NOT_LEADER error
// names, if it is another node's and following it is safe; else "".
func (h *httpKV) redirect(err error, write bool) string {
	e := adminErrorOf(err)
	if e.GetReason() != nodepb.Reason_REASON_NOT_LEADER || e.GetLeaderId() == h.self || (write && !e.GetNotApplied()) {
		return ""
	}
	return e.GetLeaderAddr()
}

// kvErrorBody is the JSON body of an error.
type kvErrorBody struct {
	Error      string `json:"error"`
	Code       string `json:"code"`
	Reason     string `json:"reason"`
	NotApplied bool   `json:"not_applied,omitempty"`
}

// fail answers err, a gRPC status error of the service (or of the
// connection to another node), with its HTTP status and JSON body.
func (h *httpKV) fail(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	e := adminErrorOf(err) // nil for an error of the connection
	if e.GetShardId() != 0 {
		setShard(w, e.GetShardId())
	}
	code := httpStatus(st.Code(), e.GetReason())
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code, kvErrorBody{
		Error: st.Message(), Code: st.Code().String(), Reason: reasonName(e.GetReason()), NotApplied: e.GetNotApplied(),
	})
}

// httpStatus maps a gRPC code and the service's reason to an HTTP status.
func httpStatus(code codes.Code, reason nodepb.Reason) int {
	switch reason {
	case nodepb.Reason_REASON_KEY_TOO_LARGE, nodepb.Reason_REASON_VALUE_TOO_LARGE, nodepb.Reason_REASON_TOO_LARGE:
		return http.StatusRequestEntityTooLarge
	case nodepb.Reason_REASON_KEY_NOT_IN_SHARD, nodepb.Reason_REASON_STALE_GENERATION:
		// Routed by a ring a split or a merge has just changed: nothing
		// was applied, and the same request soon finds the new shard.
		return http.StatusServiceUnavailable
	}
	if st, ok := httpStatusOf[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// httpStatusOf maps gRPC codes to HTTP statuses; others are 500.
var httpStatusOf = map[codes.Code]int{
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.FailedPrecondition: http.StatusConflict,
	codes.Aborted:            http.StatusConflict,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.Unauthenticated:    http.StatusUnauthorized,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.Canceled:           499, // the client went away (nginx's "client closed request")
}

// reasonName is r's name without its REASON_ prefix, as flotillactl
// prints it.
func reasonName(r nodepb.Reason) string { return strings.TrimPrefix(r.String(), "REASON_") }

func setShard(w http.ResponseWriter, shardID uint64) {
	w.Header().Set("X-Flotilla-Shard-Id", strconv.FormatUint(shardID, 10))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // read by people: "a > b", not "a \u003e b"
	_ = enc.Encode(v)
}
