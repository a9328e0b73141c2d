package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/router"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// opClass says how an operation may be retried.
type opClass uint8

const (
	classRead  opClass = iota // nothing to apply: always retried
	classWrite                // retried even after an unknown outcome
	classCAS                  // never retried after an unknown outcome
)

// verdict is what to do after a failed attempt.
type verdict uint8

const (
	verdictFail     verdict = iota // give up with the error
	verdictRedirect                // retry at once on the hinted leader
	verdictBackoff                 // retry after a backoff
	verdictCtx                     // the caller's context ended
	verdictRetry                   // retry at once on the same node
)

// outcome judges one failed attempt.
type outcome struct {
	verdict verdict
	refresh bool   // refresh the routes before retrying
	avoid   bool   // retry on another node than the one asked
	unknown bool   // a write may have applied
	leader  uint64 // the leader hinted, for verdictRedirect
	err     error  // the error, typed
}

// judge classifies the error of a call to node asked (0: unknown node).
func (c *Client) judge(ctx context.Context, err error, asked uint64) outcome {
	var o outcome
	st, ok := status.FromError(err)
	switch {
	case errors.Is(err, ErrClosed):
		o = outcome{verdict: verdictFail, err: err}
	case !ok:
		o = outcome{verdict: verdictBackoff, refresh: true, avoid: true, unknown: true, err: err}
	default:
		e := &Error{Code: st.Code(), Message: st.Message(), Detail: detailOf(st)}
		if e.Detail != nil {
			o = c.judgeDetail(ctx, e, asked)
			break
		}
		switch st.Code() {
		case codes.Unavailable: // the connection failed
			o = outcome{verdict: verdictBackoff, refresh: true, avoid: true, unknown: true, err: e}
		case codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
			o = outcome{verdict: verdictBackoff, unknown: true, err: e}
		case codes.Internal, codes.Unknown, codes.DataLoss: // the handler may have run
			o = outcome{verdict: verdictFail, unknown: true, err: e}
		default: // refused before the handler ran
			o = outcome{verdict: verdictFail, err: e}
		}
	}
	if o.verdict != verdictFail && ctxDone(ctx) != nil {
		o.verdict = verdictCtx
	}
	return o
}

// detailOf returns the nodepb.Error detail of st, nil if it has none.
func detailOf(st *status.Status) *nodepb.Error {
	for _, d := range st.Details() {
		if e, ok := d.(*nodepb.Error); ok {
			return e
		}
	}
	return nil
}

// judgeDetail classifies an error the node described, and applies its hints
// to the cache.
func (c *Client) judgeDetail(ctx context.Context, e *Error, asked uint64) outcome {
	d := e.Detail
	o := outcome{err: e, unknown: !d.GetNotApplied()}
	if ring := c.router.Ring(); ring != nil && d.GetGeneration() > ring.Generation() {
		o.refresh = true
	}
	switch d.GetReason() {
	case nodepb.Reason_REASON_NOT_LEADER:
		leader := d.GetLeaderId()
		if leader != 0 && d.GetLeaderAddr() != "" {
			c.setAddr(leader, d.GetLeaderAddr())
		}
		c.router.NotLeaderHint(d.GetShardId(), leader, d.GetTerm())
		if leader != 0 && leader != asked && c.addr(leader) != "" {
			o.verdict, o.leader = verdictRedirect, leader
		} else {
			o.verdict, o.refresh, o.avoid = verdictBackoff, true, true
		}
	case nodepb.Reason_REASON_KEY_NOT_IN_SHARD, nodepb.Reason_REASON_PROPOSAL_DROPPED:
		o.verdict, o.refresh = verdictBackoff, true
	case nodepb.Reason_REASON_SHARD_MERGING:
		// Frozen for a merge, for a moment: the key is the left shard's
		// once the merge is through (the refresh finds it), the shard's
		// again if it is abandoned.
		o.verdict, o.refresh = verdictBackoff, true
	case nodepb.Reason_REASON_NO_RING, nodepb.Reason_REASON_CLOSED, nodepb.Reason_REASON_AMBIGUOUS:
		o.verdict, o.refresh, o.avoid = verdictBackoff, true, true
	case nodepb.Reason_REASON_SESSION_NOT_FOUND:
		// The shard does not know the session (it expired): the next
		// attempt registers it.
		c.sess.setRegistered(d.GetShardId(), false)
		o.verdict = verdictRetry
	case nodepb.Reason_REASON_DEADLINE:
		o.verdict = verdictBackoff // the node's own time limit, or ours (judge checks ctx)
	default:
		o.verdict = verdictFail
	}
	return o
}

// retrier holds the state of one operation's retries.
type retrier struct {
	c         *Client
	name      string
	class     opClass
	avoid     uint64 // node to avoid on the next attempt
	hint      uint64 // node to try next (a leader hint), 0 if none
	redirects int    // redirects in a row
	backoffs  int
	unknown   error // an earlier attempt's unknown outcome (writes)
	last      error
}

// decide records the outcome of a failed attempt on node asked and returns
// the error to give up with, or nil to retry; wait says whether to back off
// before the retry (else it goes at once to the hinted leader).
func (r *retrier) decide(ctx context.Context, o outcome, asked uint64) (wait bool, err error) {
	r.last, r.hint = o.err, 0
	if o.unknown && r.class != classRead {
		r.unknown = o.err
	}
	switch {
	case o.verdict == verdictCtx:
		return false, r.ctxErr(ctx)
	case o.unknown && r.class == classCAS:
		return false, &AmbiguousError{Op: r.name, Err: o.err}
	case o.verdict == verdictFail:
		if r.unknown != nil {
			// An earlier attempt may have applied: say so rather than a
			// plain failure.
			return false, &AmbiguousError{Op: r.name, Err: o.err}
		}
		return false, o.err
	case o.verdict == verdictRedirect && r.redirects < r.c.cfg.MaxRedirects:
		r.redirects++
		r.avoid, r.hint = 0, o.leader
		r.c.stats.redirects.Add(1)
		return false, nil
	case o.verdict == verdictRetry && r.redirects < r.c.cfg.MaxRedirects:
		r.redirects++
		r.avoid, r.hint = 0, asked
		return false, nil
	}
	r.avoid = 0
	if o.avoid {
		r.avoid = asked
	}
	r.redirects = 0
	return true, nil
}

// wait backs off before retry number r.backoffs; if ctx ends first it
// returns the operation's final error.
func (r *retrier) wait(ctx context.Context) error {
	r.c.stats.backoffs.Add(1)
	if err := r.c.backoff(ctx, r.backoffs); err != nil {
		return r.ctxErr(ctx)
	}
	r.backoffs++
	return nil
}

// ctxErr is the error of an operation whose context ended.
func (r *retrier) ctxErr(ctx context.Context) error {
	cause := ctxDone(ctx)
	if cause == nil { // cannot happen: called once ctx ended
		cause = context.Canceled
	}
	err := fmt.Errorf("client: %s: %w", r.name, cause)
	if r.last != nil {
		err = fmt.Errorf("client: %s: %w (last error: %v)", r.name, cause, r.last)
	}
	if r.unknown != nil {
		return &AmbiguousError{Op: r.name, Err: err}
	}
	return err
}

// do runs attempt on the node serving rt's shard until it succeeds, fails
// for good or ctx ends. route is called before each attempt, so that it
// sees the routes as the previous attempt left them.
func (c *Client) do(ctx context.Context, name string, class opClass, route func() router.Route,
	attempt func(ctx context.Context, kv nodepb.KVClient) error) error {
	r := &retrier{c: c, name: name, class: class}
	for {
		if ctxDone(ctx) != nil {
			return r.ctxErr(ctx)
		}
		nodeID, addr := c.target(route(), r.avoid, r.hint)
		kv, err := c.kv(addr)
		if err == nil {
			err = attempt(ctx, kv)
		}
		if err == nil {
			return nil
		}
		o := c.judge(ctx, err, nodeID)
		wait, err := r.decide(ctx, o, nodeID)
		if err != nil {
			return err
		}
		if wait {
			if o.refresh {
				c.maybeRefresh(ctx)
			}
			if err := r.wait(ctx); err != nil {
				return err
			}
		}
	}
}

// ctxDone returns ctx's error, or context.DeadlineExceeded once its deadline
// has passed even if its timer has not fired yet (gRPC reports a call past
// its deadline by the clock, which may be a moment before ctx.Err() is set).
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
