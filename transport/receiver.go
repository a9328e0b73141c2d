package transport

import (
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-db/flotilla/transport/transportpb"
)

// raftServer is the gRPC service: one Stream call per sending node, one
// Snapshot call per incoming snapshot, each in its own gRPC goroutine.
type raftServer struct {
	transportpb.UnimplementedRaftServer
	t *Transport
}

// Stream receives the frames of one sending node and hands each valid one to
// the handler. A frame with a malformed message is dropped and the stream
// goes on; a refused identity or an oversized frame ends the stream with an
// error status, which the sender sees when it next writes.
func (s *raftServer) Stream(stream transportpb.Raft_StreamServer) error {
	t := s.t
	var (
		from  uint64    // sender of the last valid frame
		stats *counters // its counters
	)
	checkSize := t.cfg.MaxFrameBytes < t.cfg.MaxSnapshotChunkBytes+frameSlack // gRPC's limit is looser
	f := &frameReader{id: t.id}                                               // frameCodec decodes into it
	for {
		if err := stream.RecvMsg(f); err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return stream.SendAndClose(&transportpb.StreamReply{})
			case status.Code(err) == codes.ResourceExhausted:
				t.refuse(from, "frame", err) // over gRPC's receive limit
			}
			return err
		}
		if checkSize && f.size > t.cfg.MaxFrameBytes {
			err := &SizeError{What: "frame", Size: f.size, Limit: t.cfg.MaxFrameBytes}
			t.refuse(f.from, "frame", err)
			return status.Error(codes.ResourceExhausted, err.Error())
		}
		b, err := f.batch()
		if err != nil {
			t.refuse(f.from, "frame", err)
			if errors.Is(err, ErrBadMessage) {
				continue
			}
			return status.Error(refusalCode(err), err.Error())
		}
		if b.From != from || stats == nil {
			from, stats = b.From, t.countersFor(b.From)
		}
		stats.framesRecv.Add(1)
		stats.msgsRecv.Add(uint64(len(b.Messages)))
		stats.bytesRecv.Add(uint64(f.size))
		t.handler.HandleBatch(b)
	}
}

// refusalCode is the gRPC status code that ends a stream refused for err.
func refusalCode(err error) codes.Code {
	switch {
	case errors.Is(err, ErrClusterMismatch):
		return codes.FailedPrecondition
	case errors.Is(err, ErrRemovedNode):
		return codes.PermissionDenied
	case errors.Is(err, ErrTooLarge):
		return codes.ResourceExhausted
	}
	return codes.InvalidArgument
}

// maxStatsNodes is the number of nodes with counters past which refusals
// from new nodes are counted under node 0.
const maxStatsNodes = 4096

// refuse counts and logs (rate-limited) a refused frame or snapshot from node
// from (0 if unknown).
// Refusals from nodes without counters yet are counted under node 0 once
// maxStatsNodes nodes have counters, so that forged sender IDs cannot grow
// the counters map without bound.
func (t *Transport) refuse(from uint64, what string, err error) {
	t.mu.RLock()
	c, crowded := t.mu.stats[from], len(t.mu.stats) >= maxStatsNodes
	t.mu.RUnlock()
	if c == nil {
		if crowded {
			from = 0
		}
		c = t.countersFor(from)
	}
	c.refused.Add(1)
	if ok, suppressed := t.refusals.allow(from); ok {
		t.cfg.Logger.Warn("transport: refused "+what, "node", t.cfg.NodeID, "from", from,
			"err", err, "suppressed", suppressed)
	}
}

// logLimiter lets one log line per key through per interval and counts the
// lines it suppressed.
type logLimiter struct {
	every time.Duration
	mu    struct {
		sync.Mutex
		keys map[uint64]*limiterKey
	}
}

type limiterKey struct {
	last       time.Time
	suppressed int
}

// maxLimiterKeys bounds a logLimiter's memory: past it, the keys are
// forgotten (and their next line goes through).
const maxLimiterKeys = 4096

func newLogLimiter() *logLimiter {
	l := &logLimiter{every: time.Second}
	l.mu.keys = make(map[uint64]*limiterKey)
	return l
}

// allow reports whether a line for key may be logged now, and how many were
// suppressed since the last one.
func (l *logLimiter) allow(key uint64) (bool, int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.mu.keys[key]
	if k == nil {
		if len(l.mu.keys) >= maxLimiterKeys {
			clear(l.mu.keys)
		}
		l.mu.keys[key] = &limiterKey{last: now}
		return true, 0
	}
	if now.Sub(k.last) < l.every {
		k.suppressed++
		return false, 0
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	return true, n
}
