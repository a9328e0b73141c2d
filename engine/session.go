package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/flotilla-db/flotilla/storage"
)

// Client sessions: exactly-once writes (the raft dissertation, §6.3).
//
// A client that may retry a write (after a timeout, a broken connection, a
// leader change) tags it with its session ID and a sequence number of its
// own, and says up to which sequence number it has every response (its
// acknowledgement watermark). The engine keeps, per shard and session, the
// result of every request the client may still retry, written in the apply
// batch of the request itself: a retry that finds its result gets it back
// without the state machine seeing the command again, whichever replica
// leads by then, after restarts (the records are applied state) and after
// snapshots (they travel with the data). This works for any StateMachine:
// the engine unwraps the session envelope around StateMachine.Apply.
//
// At apply, a command of session S with sequence number q and
// acknowledgement a:
//
//   - S unknown: refused with ErrSessionNotFound, nothing applied, unless
//     the command registers S (Session.Register; the client's first write
//     to a shard, and its retry after ErrSessionNotFound), which creates S
//     with watermark a;
//   - q below S's watermark: refused with ErrDuplicateRequest (the client
//     has that response and never sends q again; this is a late copy);
//   - a result stored for q: that result, not applied again
//     (Stats.SessionReplays counts these);
//   - otherwise the state machine applies it; its result is stored if it
//     succeeded (a rejected command wrote nothing, so its retry is evaluated
//     afresh and nothing needs keeping);
//   - then S's watermark rises to a, the results below it are deleted, and
//     S's last use moves to the time in the command.
//
// Storage (package storage, session.go): a header per session (watermark,
// last use, and the list of the sequence numbers whose results are stored)
// and one record per stored result. The design first deleted the results
// below a new watermark with a DeleteRange; the header's list replaces it
// with point deletions of exactly the records that exist: a range deletion
// per write would fill the memtables with range tombstones (which every
// read of the memtable, and of the indexed apply batch, must fragment
// again after each new one), and finding the records without the list would
// take an iterator per write. The list is as long as the client's requests
// in flight to the shard.
//
// Expiry. A session nobody uses must not be kept forever, and whether it is
// kept must be the same on every replica: time enters only through the log.
// ProposeSession stamps each command with the proposing leader's clock
// (last use), and a leader proposes, at most every SessionTTL/4 per shard,
// an expiry command carrying now - SessionTTL: its apply deletes the
// sessions last used before that cutoff. Assumptions: a client never keeps
// retrying one request for longer than SessionTTL (a retry after its
// session expired re-registers and could apply twice), and the clocks of
// the shard's successive leaders agree to well within SessionTTL. A client
// idle for longer than SessionTTL finds its session gone
// (ErrSessionNotFound) and registers again: nothing of its was in flight.
//
// Sessions belong to a shard: a request retried on another shard (after a
// split or merge moved its key, when those exist) is not deduplicated; a
// split must copy the sessions to both halves.
//
// Command bytes 0xF0 to 0xFF are reserved for the engine's own commands:
// Propose refuses them, so that a client cannot forge an envelope.
//
//	session  0xF1 sessionID u64, seq u64, ack u64, leader time i64 (Unix ns),
//	              flags u8 (1: register), the state machine's command
//	expire   0xF3 cutoff i64 (Unix ns)
const (
	engineCommandMin  = 0xF0
	cmdSession        = 0xF1
	cmdExpireSessions = 0xF3

	sessionEnvelopeLen = 1 + 4*8 + 1
	sessionRegister    = 1
)

// Session tags a write for exactly-once application (ProposeSession).
type Session struct {
	// ID identifies the client session: random, non-zero, never shared by
	// two clients.
	ID uint64
	// Seq is the request's sequence number in the session. A retry of the
	// same request carries the same Seq.
	Seq uint64
	// Ack is the client's acknowledgement watermark: it has the responses of
	// all its requests below Ack, and never sends them again. Ack <= Seq.
	Ack uint64
	// Register creates the session on the shard if it does not exist (the
	// client's first write to the shard, or its retry after
	// ErrSessionNotFound).
	Register bool
}

// SessionError is returned for a session write that was refused: its Err is
// ErrSessionNotFound or ErrDuplicateRequest. Nothing was applied.
type SessionError struct {
	ShardID   uint64
	SessionID uint64
	Seq       uint64
	// Watermark is the session's watermark, for ErrDuplicateRequest.
	Watermark uint64
	Err       error
}

func (e *SessionError) Error() string {
	if e.Err == ErrDuplicateRequest {
		return fmt.Sprintf("%v: shard %d session %x seq %d is below the watermark %d", e.Err, e.ShardID, e.SessionID, e.Seq, e.Watermark)
	}
	return fmt.Sprintf("%v: shard %d session %x (seq %d)", e.Err, e.ShardID, e.SessionID, e.Seq)
}

func (e *SessionError) Unwrap() error { return e.Err }

func (s Session) validate() error {
	switch {
	case s.ID == 0:
		return fmt.Errorf("%w: session ID 0", ErrBadRequest)
	case s.Ack > s.Seq:
		return fmt.Errorf("%w: session ack %d above seq %d", ErrBadRequest, s.Ack, s.Seq)
	}
	return nil
}

// isEngineCommand reports whether cmd is (or claims to be) one of the
// engine's own commands.
func isEngineCommand(cmd []byte) bool { return len(cmd) > 0 && cmd[0] >= engineCommandMin }

func appendSessionCommand(dst []byte, s Session, leaderTime int64, cmd []byte) []byte {
	dst = append(dst, cmdSession)
	dst = binary.BigEndian.AppendUint64(dst, s.ID)
	dst = binary.BigEndian.AppendUint64(dst, s.Seq)
	dst = binary.BigEndian.AppendUint64(dst, s.Ack)
	dst = binary.BigEndian.AppendUint64(dst, uint64(leaderTime))
	var flags byte
	if s.Register {
		flags |= sessionRegister
	}
	return append(append(dst, flags), cmd...)
}

func decodeSessionCommand(b []byte) (s Session, leaderTime int64, cmd []byte, err error) {
	if len(b) <= sessionEnvelopeLen || b[0] != cmdSession || b[sessionEnvelopeLen-1]&^sessionRegister != 0 {
		return s, 0, nil, fmt.Errorf("%w: malformed session command", ErrBadRequest)
	}
	s = Session{
		ID:       binary.BigEndian.Uint64(b[1:]),
		Seq:      binary.BigEndian.Uint64(b[9:]),
		Ack:      binary.BigEndian.Uint64(b[17:]),
		Register: b[sessionEnvelopeLen-1]&sessionRegister != 0,
	}
	cmd = b[sessionEnvelopeLen:]
	if err := s.validate(); err != nil {
		return s, 0, nil, err
	}
	if isEngineCommand(cmd) {
		return s, 0, nil, fmt.Errorf("%w: nested engine command", ErrBadRequest)
	}
	return s, int64(binary.BigEndian.Uint64(b[25:])), cmd, nil
}

func expireCommand(cutoff int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{cmdExpireSessions}, uint64(cutoff))
}

// ProposeSession proposes cmd, a command of the state machine, as request
// s.Seq of client session s.ID, and returns its result: the result of its
// first application if it was applied before (a retry). This node must
// lead the shard: the command carries its clock as the session's last use.
// Errors are Propose's, and a *SessionError (ErrSessionNotFound,
// ErrDuplicateRequest) for a refused request. Now and then it also proposes
// the expiry of the shard's idle sessions (see Config.SessionTTL).
func (e *Engine) ProposeSession(ctx context.Context, shardID uint64, s Session, cmd []byte) ([]byte, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	if len(cmd) == 0 || isEngineCommand(cmd) {
		return nil, fmt.Errorf("%w: session command is empty or reserved", ErrBadRequest)
	}
	now := time.Now()
	res, err := e.propose(ctx, shardID, appendSessionCommand(make([]byte, 0, sessionEnvelopeLen+len(cmd)), s, now.UnixNano(), cmd))
	if err == nil {
		e.maybeExpireSessions(shardID, now) // this node led the shard just now
	}
	return res, err
}

// maybeExpireSessions proposes the expiry of shardID's idle sessions if this
// node has not done so for SessionTTL/4. Fire and forget: if the proposal
// fails (this node no longer leads), a later leader's sweep does the work.
func (e *Engine) maybeExpireSessions(shardID uint64, now time.Time) {
	v, ok := e.sweeps.Load(shardID)
	if !ok {
		v, _ = e.sweeps.LoadOrStore(shardID, new(atomic.Int64))
	}
	last := v.(*atomic.Int64)
	prev := last.Load()
	if now.UnixNano()-prev < int64(e.cfg.SessionTTL/4) || !last.CompareAndSwap(prev, now.UnixNano()) {
		return
	}
	_, _ = e.enqueue(shardID, expireCommand(now.Add(-e.cfg.SessionTTL).UnixNano()))
}

// applyCommand applies one committed command of shardID: the engine's own
// commands here, every other command by sm.
func (w *worker) applyCommand(shardID uint64, ctx *ApplyContext, sm StateMachine, cmd []byte) ([]byte, error) {
	if !isEngineCommand(cmd) {
		return sm.Apply(ctx, cmd)
	}
	switch cmd[0] {
	case cmdSession:
		return w.applySession(shardID, ctx, sm, cmd)
	case cmdExpireSessions:
		return nil, w.expireSessions(shardID, ctx, cmd)
	}
	return nil, fmt.Errorf("%w: unknown engine command %#x", ErrBadRequest, cmd[0])
}

// sessionScratch holds buffers reused by the session commands of one
// worker (in its ApplyContext).
type sessionScratch struct {
	key, rkey, val []byte
	results        []uint64
}

// mustWrite panics on a failed write to the apply batch: that is an
// in-memory append, and a failure would leave a command half applied.
func mustWrite(err error) {
	if err != nil {
		panic(fmt.Sprintf("engine: write to the apply batch: %v", err))
	}
}

// applySession applies a session command (see the top of this file).
func (w *worker) applySession(shardID uint64, ctx *ApplyContext, sm StateMachine, cmd []byte) ([]byte, error) {
	s, leaderTime, inner, err := decodeSessionCommand(cmd)
	if err != nil {
		return nil, err
	}
	sc := &ctx.sess
	sc.key = storage.AppendSessionHeaderKey(sc.key[:0], shardID, s.ID)
	h, found, err := readSessionHeader(ctx.b, sc.key, sc.results)
	if err != nil {
		return nil, err
	}
	if !found {
		if !s.Register {
			return nil, &SessionError{ShardID: shardID, SessionID: s.ID, Seq: s.Seq, Err: ErrSessionNotFound}
		}
		h = storage.SessionHeader{Watermark: s.Ack, LastUsed: leaderTime, Results: sc.results[:0]}
	}
	if s.Seq < h.Watermark {
		return nil, &SessionError{ShardID: shardID, SessionID: s.ID, Seq: s.Seq, Watermark: h.Watermark, Err: ErrDuplicateRequest}
	}
	var res []byte
	sc.rkey = storage.AppendSessionResultKey(sc.rkey[:0], shardID, s.ID, s.Seq)
	if i, stored := slices.BinarySearch(h.Results, s.Seq); stored {
		var ok bool
		if res, ok, err = getCopy(ctx.b, sc.rkey); err == nil && !ok {
			err = fmt.Errorf("engine: %w: %s listed but absent", storage.ErrCorrupt, storage.DescribeKey(sc.rkey))
		}
		if err != nil {
			return nil, err
		}
		w.e.stats.sessionReplays.Add(1)
	} else if res, err = sm.Apply(ctx, inner); err == nil {
		mustWrite(ctx.b.Set(sc.rkey, res, nil))
		h.Results = slices.Insert(h.Results, i, s.Seq)
	}
	if s.Ack > h.Watermark {
		// The client has the responses below Ack: drop their results.
		h.Watermark = s.Ack
		n := 0
		for ; n < len(h.Results) && h.Results[n] < s.Ack; n++ {
			sc.rkey = storage.AppendSessionResultKey(sc.rkey[:0], shardID, s.ID, h.Results[n])
			mustWrite(ctx.b.Delete(sc.rkey, nil))
		}
		h.Results = slices.Delete(h.Results, 0, n)
	}
	h.LastUsed = max(h.LastUsed, leaderTime)
	sc.results = h.Results
	sc.val = h.Append(sc.val[:0])
	mustWrite(ctx.b.Set(sc.key, sc.val, nil))
	return res, err
}

// readSessionHeader reads and decodes the session header at key; its
// Results reuse into.
func readSessionHeader(r pebble.Reader, key []byte, into []uint64) (h storage.SessionHeader, found bool, err error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("engine: read %s: %w", storage.DescribeKey(key), err)
	}
	defer closer.Close()
	if h, err = storage.UnmarshalSessionHeader(v, into); err != nil {
		return h, false, fmt.Errorf("engine: %s: %w", storage.DescribeKey(key), err)
	}
	return h, true, nil
}

// expireSessions applies an expiry command: it deletes the sessions of
// shardID last used before the command's cutoff, header and results (and
// any record that is not part of a well-formed session).
func (w *worker) expireSessions(shardID uint64, ctx *ApplyContext, cmd []byte) error {
	if len(cmd) != 9 {
		return fmt.Errorf("%w: malformed session expiry", ErrBadRequest)
	}
	cutoff := int64(binary.BigEndian.Uint64(cmd[1:]))
	start, end := storage.SessionSpan(shardID)
	it, err := ctx.b.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return err
	}
	var (
		keys    []byte // the keys to delete, back to back
		lens    []int
		cur     storage.SessionKey
		seen    bool // cur is set
		expired bool // cur is to be deleted
		n       uint64
		sc      = &ctx.sess
	)
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		sk, ok := storage.DecodeSessionKey(k)
		if ok && (!seen || sk.SessionID != cur.SessionID) {
			// A session's first record is its header; results without one
			// are left-overs.
			cur, seen, expired = sk, true, true
			if !sk.Result {
				h, err := storage.UnmarshalSessionHeader(it.Value(), sc.results)
				expired = err != nil || h.LastUsed < cutoff
				if expired {
					n++
				}
			}
		}
		if !ok || expired {
			keys, lens = append(keys, k...), append(lens, len(k))
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, l := range lens {
		mustWrite(ctx.b.Delete(keys[:l], nil))
		keys = keys[l:]
	}
	w.e.stats.sessionsExpired.Add(n)
	return nil
}
