package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// unreachableError: no endpoint answered.
type unreachableError struct {
	endpoints []string
	reasons   []string // one per endpoint, in order
}

func (u *unreachableError) Error() string {
	if len(u.endpoints) == 1 {
		return fmt.Sprintf("cannot reach any node at %s: %s", u.endpoints[0], u.reasons[0])
	}
	parts := make([]string, len(u.reasons))
	for i, r := range u.reasons {
		parts[i] = u.endpoints[i] + ": " + r
	}
	return fmt.Sprintf("cannot reach any node at %s: %s", strings.Join(u.endpoints, ", "), strings.Join(parts, "; "))
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), nodepb.CallOptions())
}

// waitReady connects conn and waits until it is ready (true), or until the
// connection attempt failed or ctx ended (false).
func waitReady(ctx context.Context, conn *grpc.ClientConn) bool {
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		}
		if !conn.WaitForStateChange(ctx, s) {
			return false
		}
	}
}

// adminCall runs call on the endpoints in order until one answers. Each
// endpoint gets an equal share of the time left to connect; a connected
// endpoint's answer is final, unless the call is idempotent and the
// connection broke, in which case the next endpoint is tried.
//
// An answer of NOT_LEADER is not final: the shard's leadership moved under
// the request, or the nodes' views of the leader disagreed for longer than
// the request's hops. A replica change answers it before it proposes its
// next step, and every step is checked against the configuration afresh (a
// learner added already is not added again), so the call is made again
// after a backoff, while the time left allows one, and the last NOT_LEADER
// is returned when it does not.
func adminCall[T any](ctx context.Context, e *env, idempotent bool, call func(context.Context, nodepb.AdminClient) (T, error)) (T, error) {
	b, err := backoff.New(backoff.Config{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond})
	if err != nil {
		var zero T
		return zero, err
	}
	for {
		resp, err := firstAnswer(ctx, e, idempotent, func(ctx context.Context, conn *grpc.ClientConn) (T, error) {
			return call(ctx, nodepb.NewAdminClient(conn))
		})
		if !isNotLeader(err) {
			return resp, err
		}
		wait := b.Next()
		if time.Until(deadlineOf(ctx)) < 2*wait {
			return resp, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return resp, err
		case <-t.C:
		}
	}
}

// isNotLeader reports whether err is a node's answer of NOT_LEADER.
func isNotLeader(err error) bool {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return false
	}
	d := detailOf(st)
	return d != nil && d.GetReason() == nodepb.Reason_REASON_NOT_LEADER
}

// firstAnswer runs call on the endpoints in order until one answers; see
// adminCall.
func firstAnswer[T any](ctx context.Context, e *env, idempotent bool, call func(context.Context, *grpc.ClientConn) (T, error)) (T, error) {
	var zero T
	eps := e.endpointList()
	u := &unreachableError{endpoints: eps}
	for i, addr := range eps {
		resp, err, final := tryEndpoint(ctx, addr, len(eps)-i, call)
		if err == nil {
			return resp, nil
		}
		if final && !(idempotent && isConnError(err)) {
			return zero, err
		}
		u.reasons = append(u.reasons, connReason(err))
	}
	return zero, u
}

// tryEndpoint runs call on addr, with a share (1/left) of ctx's time left to
// connect. final reports that the endpoint was connected when called.
func tryEndpoint[T any](ctx context.Context, addr string, left int, call func(context.Context, *grpc.ClientConn) (T, error)) (resp T, err error, final bool) {
	conn, err := dial(addr)
	if err != nil {
		return resp, err, false
	}
	defer conn.Close()
	budget := time.Until(deadlineOf(ctx)) / time.Duration(left)
	cctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	if waitReady(cctx, conn) {
		resp, err = call(ctx, conn)
		return resp, err, true
	}
	// Not connected: the call fails at once with the connection's error, or
	// when the share of time runs out.
	resp, err = call(cctx, conn)
	if err != nil && cctx.Err() != nil {
		hint := ""
		if ctx.Err() != nil {
			hint = " (see --timeout)"
		}
		err = fmt.Errorf("no connection within %v%s", budget.Round(time.Millisecond), hint)
	}
	return resp, err, false
}

func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Minute)
}

// checkReachable asks the endpoints for the routes until one answers, so
// that the key-value commands fail fast, with the reason, when none does.
func checkReachable(ctx context.Context, e *env) error {
	_, err := firstAnswer(ctx, e, true, func(ctx context.Context, conn *grpc.ClientConn) (*nodepb.RoutesResponse, error) {
		return nodepb.NewKVClient(conn).Routes(ctx, &nodepb.RoutesRequest{})
	})
	return err
}

// isConnError reports whether err is an error of the connection rather
// than an answer of a node.
func isConnError(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && detailOf(st) == nil
}

// connReason is the reason of a connection error, without gRPC's wrapping.
func connReason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := st.Message()
	if st.Code() == codes.DeadlineExceeded {
		return "no answer within the timeout"
	}
	const dialing = "Error while dialing: "
	if i := strings.Index(msg, dialing); i >= 0 {
		msg = strings.TrimSuffix(msg[i+len(dialing):], `"`)
	}
	return msg
}

func detailOf(st *status.Status) *nodepb.Error {
	for _, d := range st.Details() {
		if ne, ok := d.(*nodepb.Error); ok {
			return ne
		}
	}
	return nil
}

// unknownOutcome is the error of a change request whose node did not
// answer: the change may or may not have been made.
type unknownOutcome struct {
	err error
	see string // the command that shows whether it was made
}

func (u *unknownOutcome) Error() string { return u.err.Error() }

// changeError marks err as an unknown outcome of a replica change if no
// node answered it.
func changeError(err error) error { return changeErrorSee(err, "flotillactl shards") }

// changeErrorSee marks err as an unknown outcome if no node answered it;
// the command see shows whether the change was made.
func changeErrorSee(err error, see string) error {
	st, ok := status.FromError(err)
	if ok && detailOf(st) == nil && (st.Code() == codes.DeadlineExceeded || st.Code() == codes.Unavailable) {
		return &unknownOutcome{err: err, see: see}
	}
	return err
}

// describe turns err into a sentence for the operator.
func (e *env) describe(err error) string {
	var ce *client.Error
	var ae *client.AmbiguousError
	var uo *unknownOutcome
	switch {
	case errors.As(err, &uo):
		return e.describe(uo.err) + "; the change may or may not have been made (see " + uo.see + ")"
	case errors.As(err, &ae):
		return fmt.Sprintf("the %s may or may not have applied: %s", ae.Op, e.describe(ae.Err))
	case errors.As(err, &ce):
		if ce.Detail != nil {
			return describeDetail(ce.Detail, ce.Message)
		}
		return describeCode(ce.Code, ce.Message, e.timeout)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer within the timeout (%v; see --timeout): %v", e.timeout, err)
	}
	if st, ok := status.FromError(err); ok {
		if d := detailOf(st); d != nil {
			return describeDetail(d, st.Message())
		}
		return describeCode(st.Code(), st.Message(), e.timeout)
	}
	return err.Error()
}

// describeDetail renders a node's error: "shard 7: message (REASON)" and
// the leader hint of a NOT_LEADER.
func describeDetail(d *nodepb.Error, fallback string) string {
	var b strings.Builder
	if d.GetShardId() != 0 {
		fmt.Fprintf(&b, "shard %s: ", shardName(d.GetShardId()))
	}
	msg := d.GetMessage()
	if msg == "" {
		msg = fallback
	}
	b.WriteString(strings.TrimPrefix(msg, "node: "))
	if r := d.GetReason(); r != nodepb.Reason_REASON_UNSPECIFIED {
		fmt.Fprintf(&b, " (%s)", strings.TrimPrefix(r.String(), "REASON_"))
	}
	switch d.GetReason() {
	case nodepb.Reason_REASON_OUT_OF_RANGE, nodepb.Reason_REASON_STALE_GENERATION, nodepb.Reason_REASON_KEY_NOT_IN_SHARD,
		nodepb.Reason_REASON_NOT_ADJACENT:
		fmt.Fprintf(&b, "; the shard's range is [%016x, %016x] at generation %d", d.GetStart(), d.GetLast(), d.GetGeneration())
	}
	if d.GetReason() == nodepb.Reason_REASON_NOT_LEADER {
		switch {
		case d.GetLeaderId() == 0:
			b.WriteString("; the leader is unknown")
		case d.GetLeaderAddr() != "":
			fmt.Fprintf(&b, "; the leader is node %d at %s", d.GetLeaderId(), d.GetLeaderAddr())
		default:
			fmt.Fprintf(&b, "; the leader is node %d", d.GetLeaderId())
		}
	}
	return b.String()
}

// describeCode renders a gRPC error that carries no node error.
func describeCode(code codes.Code, msg string, timeout time.Duration) string {
	switch code {
	case codes.DeadlineExceeded:
		return fmt.Sprintf("no answer within the timeout (%v; see --timeout)", timeout)
	case codes.Canceled:
		return "canceled"
	case codes.Unavailable:
		return "the connection to the node failed: " + connReason(status.Error(code, msg))
	case codes.Unimplemented:
		return "the node does not support this request (is it an older version?): " + msg
	}
	return fmt.Sprintf("the node failed (%s): %s", code, msg)
}
