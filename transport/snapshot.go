package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

// SendSnapshot streams body to node h.To's Handler.HandleSnapshot and returns
// the handler's verdict. It stamps h.ClusterID and h.From. Each snapshot has
// its own connection, so that it does not hold up the raft stream, and gRPC
// flow control bounds what is in flight: a slow receiver slows the sender
// down. Config.SnapshotRateBytesPerSec paces all of this node's outgoing
// snapshots together.
//
// It fails with engine.ErrTransportClosed or ErrNotStarted as Send does, and
// otherwise with an error naming the shard and the destination that wraps:
// engine.ErrUnknownPeer if h.To has no address; ctx's error if ctx ends first;
// engine.ErrTransportClosed if the transport closes meanwhile; the body's
// error; a *SizeError if a chunk exceeds Config.MaxSnapshotChunkBytes (or the
// header Config.MaxFrameBytes); a *RemoteError if the receiver refused the
// stream or its handler failed; or the connection's error.
func (t *Transport) SendSnapshot(ctx context.Context, h engine.SnapshotHeader, body engine.SnapshotBody) error {
	t.mu.RLock()
	err := t.usableLocked()
	if err == nil {
		t.snapshots.Add(1)
	}
	t.mu.RUnlock()
	if err != nil {
		return err
	}
	defer t.snapshots.Done()
	h.ClusterID, h.From = t.cfg.ClusterID, t.cfg.NodeID
	n, err := t.sendSnapshot(ctx, &h, body)
	if err != nil {
		return fmt.Errorf("transport: snapshot of shard %d to node %d: %w", h.ShardID, h.To, err)
	}
	c := t.countersFor(h.To)
	c.snapsSent.Add(1)
	c.snapBytesSent.Add(uint64(n))
	return nil
}

// sendSnapshot does SendSnapshot's work and returns the bytes of body sent.
func (t *Transport) sendSnapshot(ctx context.Context, h *engine.SnapshotHeader, body engine.SnapshotBody) (int64, error) {
	hdr, err := encodeSnapshotHeader(h)
	if err != nil {
		return 0, err
	}
	if limit := maxMessageBytes(t.cfg.MaxFrameBytes); len(hdr.RaftMessage) > limit {
		return 0, &SizeError{What: "snapshot header", Size: len(hdr.RaftMessage), Limit: limit}
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	addr, err := t.resolve(h.To)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil) // on an early return, aborts the stream: the receiver's body fails
	stop := context.AfterFunc(t.closeCtx, func() { cancel(engine.ErrTransportClosed) })
	defer stop()
	// failed returns why the stream failed: ctx's cause if it ended.
	failed := func(err error) error {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return remoteStatus(h.To, err)
	}

	cc, err := t.dial(ctx, addr)
	if err != nil {
		return 0, failed(err)
	}
	defer cc.Close()
	stream, err := transportpb.NewRaftClient(cc).Snapshot(ctx)
	if err != nil {
		return 0, failed(err)
	}
	var sent int64
	err = stream.Send(&transportpb.SnapshotRequest{Header: hdr})
	req := new(transportpb.SnapshotRequest)
	for err == nil {
		var chunk []byte
		if chunk, err = body.Next(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return sent, fmt.Errorf("snapshot body: %w", err)
		}
		if len(chunk) > t.cfg.MaxSnapshotChunkBytes {
			return sent, &SizeError{What: "snapshot chunk", Size: len(chunk), Limit: t.cfg.MaxSnapshotChunkBytes}
		}
		if err := t.pacer.wait(ctx, len(chunk)); err != nil {
			return sent, failed(err)
		}
		req.Chunk = chunk
		if err = stream.Send(req); err == nil {
			sent += int64(len(chunk))
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return sent, failed(err)
	}
	// At the end of the body, or the receiver ended the stream (io.EOF from
	// Send): its reply or status says how it went.
	reply, err := stream.CloseAndRecv()
	if err != nil {
		return sent, failed(err)
	}
	if reply.GetError() != "" {
		return sent, &RemoteError{Node: h.To, Msg: reply.GetError()}
	}
	return sent, nil
}

// remoteStatus turns a refusal status from node into a *RemoteError.
func remoteStatus(node uint64, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.FailedPrecondition, codes.PermissionDenied, codes.InvalidArgument, codes.ResourceExhausted:
		return &RemoteError{Node: node, Msg: st.Message()}
	}
	return err
}

// Snapshot receives one snapshot stream: it validates the header, hands the
// handler a body that reads the chunks from the stream, and replies with the
// handler's verdict.
func (s *raftServer) Snapshot(stream transportpb.Raft_SnapshotServer) error {
	t := s.t
	first, err := stream.Recv()
	if err != nil {
		if status.Code(err) == codes.ResourceExhausted {
			t.refuse(0, "snapshot", err)
		}
		return err
	}
	h, err := t.id.decodeSnapshotHeader(first.GetHeader())
	if err == nil && len(first.GetChunk()) > 0 {
		err = fmt.Errorf("%w: snapshot header with a chunk", ErrBadMessage)
	}
	if err != nil {
		t.refuse(first.GetHeader().GetFrom(), "snapshot", err)
		return status.Error(refusalCode(err), err.Error())
	}
	body := &recvBody{t: t, stream: stream, from: h.From}
	if err := t.handler.HandleSnapshot(stream.Context(), h, body); err != nil {
		return stream.SendAndClose(&transportpb.SnapshotReply{Error: err.Error()})
	}
	c := t.countersFor(h.From)
	c.snapsRecv.Add(1)
	c.snapBytesRecv.Add(body.bytes)
	return stream.SendAndClose(&transportpb.SnapshotReply{})
}

// recvBody is the engine.SnapshotBody of an incoming stream, read by the
// handler's goroutine only.
type recvBody struct {
	t      *Transport
	stream transportpb.Raft_SnapshotServer
	from   uint64
	req    transportpb.SnapshotRequest
	bytes  uint64
	err    error // sticky: io.EOF or the failure
}

// Next returns the next chunk, io.EOF after the last one, or the error that
// ended the stream (the sender's cancellation, a refused chunk, ...).
func (b *recvBody) Next() ([]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	if err := b.stream.RecvMsg(&b.req); err != nil {
		if errors.Is(err, io.EOF) {
			b.err = io.EOF
			return nil, b.err
		}
		if status.Code(err) == codes.ResourceExhausted {
			b.t.refuse(b.from, "snapshot chunk", err)
		}
		b.err = fmt.Errorf("transport: snapshot stream from node %d: %w", b.from, err)
		return nil, b.err
	}
	switch limit := b.t.cfg.MaxSnapshotChunkBytes; {
	case b.req.GetHeader() != nil:
		b.err = fmt.Errorf("%w: second snapshot header", ErrBadMessage)
	case len(b.req.GetChunk()) > limit:
		b.err = &SizeError{What: "snapshot chunk", Size: len(b.req.GetChunk()), Limit: limit}
	}
	if b.err != nil {
		b.t.refuse(b.from, "snapshot chunk", b.err)
		return nil, b.err
	}
	b.bytes += uint64(len(b.req.GetChunk()))
	return b.req.GetChunk(), nil
}

// pacer spaces the chunks of all outgoing snapshots on one timeline at a rate
// in bytes per second (0: no limit).
type pacer struct {
	rate int64
	mu   struct {
		sync.Mutex
		next time.Time // when the next chunk may go
	}
}

// wait returns when a chunk of n bytes may be sent, or ctx's error.
func (p *pacer) wait(ctx context.Context, n int) error {
	if p.rate <= 0 {
		return nil
	}
	now := time.Now()
	p.mu.Lock()
	at := p.mu.next
	if at.Before(now) {
		at = now
	}
	p.mu.next = at.Add(time.Duration(float64(n) / float64(p.rate) * float64(time.Second)))
	p.mu.Unlock()
	d := at.Sub(now)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
