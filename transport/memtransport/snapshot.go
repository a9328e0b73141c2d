package memtransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// SendSnapshot streams body to node h.To's Handler.HandleSnapshot and returns
// the handler's result. It stamps h.ClusterID and h.From. The stream holds at
// most Config.SnapshotBuffer chunks between the two sides (plus the one each
// side is working on): a slow receiver slows down the sender.
// Config.SnapshotRate paces all the streams of the network together.
//
// It fails with engine.ErrTransportClosed or ErrNotStarted as Send does, with
// engine.ErrUnknownPeer if h.To is not up (or goes down midway), with
// ErrLinkCut if the link is cut in either direction at the start or between
// two chunks, with ctx's error if ctx ends first, and with the body's error if
// Next fails; errors other than the first two are wrapped with the shard and
// the destination. In each failure the receiver's body returns an error too, and SendSnapshot
// returns only once the handler has returned.
func (e *Endpoint) SendSnapshot(ctx context.Context, h engine.SnapshotHeader, body engine.SnapshotBody) error {
	if err := e.usable(); err != nil {
		return err
	}
	h.ClusterID = e.net.cfg.ClusterID
	h.From = e.nodeID
	wrap := func(err error) error {
		return fmt.Errorf("memtransport: snapshot of shard %d to node %d: %w", h.ShardID, h.To, err)
	}
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if e.net.streamCut(e.nodeID, h.To) {
		return wrap(ErrLinkCut)
	}
	dest := e.net.lookup(h.To)
	if dest == nil {
		return wrap(engine.ErrUnknownPeer)
	}
	s := newStream(ctx, e, dest, e.net.cfg)
	defer s.cancel(nil)
	if !e.register(s) {
		return engine.ErrTransportClosed
	}
	defer e.unregister(s)
	handler, ok := dest.acquireStream(s)
	if !ok {
		return wrap(engine.ErrUnknownPeer)
	}
	defer dest.unregister(s)

	done := make(chan error, 1)
	go func() {
		defer dest.release()
		done <- handler.HandleSnapshot(s.ctx, h, &recvBody{s: s})
	}()
	err, herr, finished := s.pump(body, done)
	if !finished {
		herr = <-done
	}
	switch {
	case err != nil:
		return wrap(err)
	case herr != nil:
		return wrap(herr)
	}
	return nil
}

// register adds s to the streams Close aborts; false if e is closed.
func (e *Endpoint) register(s *stream) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed {
		return false
	}
	e.mu.streams[s] = struct{}{}
	return true
}

// acquireStream registers s and acquires the handler in one step, so that a
// concurrent Close either aborts s or is seen here.
func (e *Endpoint) acquireStream(s *stream) (engine.Handler, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed || e.mu.handler == nil {
		return nil, false
	}
	e.mu.streams[s] = struct{}{}
	e.inflight.Add(1)
	return e.mu.handler, true
}

func (e *Endpoint) unregister(s *stream) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.mu.streams, s)
}

// stream is one snapshot in flight. The sender's goroutine writes chunks, the
// handler's goroutine reads them; ctx ends the stream early with a cause.
type stream struct {
	net      *Network
	from, to *Endpoint

	parent context.Context // the sender's
	ctx    context.Context // the handler's, derived from parent; its cause is the failure
	cancel context.CancelCauseFunc
	chunks chan []byte // bounded: flow control
	free   chan []byte // buffers the receiver is done with, for reuse

	// end is why chunks was closed: io.EOF, or the failure. Written before
	// close(chunks), read after it.
	end error
}

func newStream(ctx context.Context, from, to *Endpoint, cfg Config) *stream {
	s := &stream{
		net: from.net, from: from, to: to,
		chunks: make(chan []byte, cfg.SnapshotBuffer),
		free:   make(chan []byte, cfg.SnapshotBuffer+2),
	}
	s.parent = ctx
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	return s
}

// cause returns why s.ctx ended (nil if it has not): the sender's ctx error,
// or the cause given to cancel.
func (s *stream) cause() error {
	if err := s.parent.Err(); err != nil {
		return err
	}
	return context.Cause(s.ctx)
}

// abort ends s because endpoint by is closing.
func (s *stream) abort(by *Endpoint) {
	if by == s.from {
		s.cancel(engine.ErrTransportClosed)
		return
	}
	s.cancel(fmt.Errorf("node %d closed: %w", by.nodeID, engine.ErrUnknownPeer))
}

// pump copies body into the stream until io.EOF or a failure. It returns the
// failure (nil after io.EOF), and the handler's result if the handler
// returned (finished) before the stream ended.
func (s *stream) pump(body engine.SnapshotBody, done <-chan error) (err, herr error, finished bool) {
	topo := s.net.topology()
	for {
		if err := s.check(); err != nil {
			return s.fail(err), nil, false
		}
		chunk, err := body.Next()
		if err == io.EOF {
			s.end = io.EOF
			close(s.chunks)
			return nil, nil, false
		}
		if err != nil {
			return s.fail(fmt.Errorf("snapshot body: %w", err)), nil, false
		}
		buf := s.buffer(len(chunk))
		buf = append(buf, chunk...)
		for queued := false; !queued; {
			select {
			case s.chunks <- buf:
				queued = true
			case <-s.ctx.Done():
				return s.fail(s.cause()), nil, false
			case herr := <-done:
				// The handler gave up before the end; nothing reads any more.
				s.fail(errors.New("memtransport: receiver returned before the end of the snapshot"))
				return nil, herr, true
			case <-topo:
				topo = s.net.topology()
				if err := s.check(); err != nil {
					return s.fail(err), nil, false
				}
			}
		}
		if err := s.pace(len(chunk)); err != nil {
			return s.fail(err), nil, false
		}
	}
}

// check returns why the stream must stop now, if it must.
func (s *stream) check() error {
	if err := s.cause(); err != nil {
		return err
	}
	if s.net.streamCut(s.from.nodeID, s.to.nodeID) {
		return ErrLinkCut
	}
	return nil
}

// fail ends the stream with err, which the receiver's Next returns, and
// returns err.
func (s *stream) fail(err error) error {
	s.cancel(err)
	s.end = err
	close(s.chunks)
	return err
}

// buffer returns an empty buffer for a chunk of size n, reusing one the
// receiver is done with when it can.
func (s *stream) buffer(n int) []byte {
	select {
	case b := <-s.free:
		if cap(b) >= n {
			return b[:0]
		}
	default:
	}
	return make([]byte, 0, n)
}

// pace waits until a chunk of n bytes has been sent at the network's
// snapshot rate, if there is one.
func (s *stream) pace(n int) error {
	if s.net.cfg.SnapshotRate == 0 {
		return nil
	}
	d := time.Until(s.net.reserveSnapshot(n))
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.ctx.Done():
		return s.cause()
	}
}

// recvBody is the receiver's side of a stream. It is used by the handler's
// goroutine only.
type recvBody struct {
	s    *stream
	prev []byte // the chunk last returned, recycled at the next call
	err  error  // sticky: io.EOF or the failure
}

// Next returns the next chunk, valid until the next call, io.EOF after the
// last one, or the error that ended the stream.
func (b *recvBody) Next() ([]byte, error) {
	s := b.s
	if b.prev != nil {
		select {
		case s.free <- b.prev:
		default:
		}
		b.prev = nil
	}
	if b.err != nil {
		return nil, b.err
	}
	if err := s.cause(); err != nil {
		b.err = err
		return nil, err
	}
	select {
	case c, ok := <-s.chunks:
		if !ok {
			b.err = s.end
			return nil, b.err
		}
		b.prev = c
		return c, nil
	case <-s.ctx.Done():
		b.err = s.cause()
		return nil, b.err
	}
}
