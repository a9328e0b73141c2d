package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

// Send queues msgs for node to and returns at once; to's sender goroutine
// writes them, with everything else queued for to, in as few frames as
// Config.MaxFrameBytes allows. Send takes ownership of msgs (it copies the
// slice, not the messages: their entries must not change afterwards). It
// fails, queuing none of msgs, with:
//   - engine.ErrTransportClosed after Close, ErrNotStarted before Start;
//   - engine.ErrUnknownPeer if to has no address (AddPeer, Config.Resolver);
//   - ErrPeerUnreachable while to's sender waits out a backoff;
//   - engine.ErrQueueFull if msgs do not fit in to's queue (Config.QueueLen,
//     Config.QueueBytes);
//   - a *SizeError if one message cannot fit in a frame alone.
func (t *Transport) Send(to uint64, msgs []engine.Message) error {
	return t.send(to, msgs, (*peer).enqueue)
}

// send queues msgs for to with enqueue.
func (t *Transport) send(to uint64, msgs []engine.Message, enqueue func(*peer, []engine.Message) error) error {
	p, err := t.peerFor(to)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	return enqueue(p, msgs)
}

// SendPriority is Send ahead of the queue (engine.PrioritySender): msgs go
// into to's next frame, before the raft traffic queued for to, and a
// sender in the middle of writing a backlog writes them before its next
// frame. The engine sends its per-tick message with it (coalesced
// heartbeats and their responses, which also tell the peer this node is
// alive): a backlog of raft traffic (a start that elects thousands of
// shards at once) never holds that message back for longer than one frame
// takes to write, so a live peer is not taken for a silent one. The
// messages ride in the same stream's frames (no frame, connection or
// goroutine more) and may overtake those sent earlier with Send. The
// priority queue holds at most maxPriorityQueue messages; errors are
// Send's.
func (t *Transport) SendPriority(to uint64, msgs []engine.Message) error {
	return t.send(to, msgs, (*peer).enqueuePriority)
}

// maxPriorityQueue bounds a peer's priority queue, in messages: the engine
// sends one a tick, so a full queue means the sender has been stuck for
// many ticks.
const maxPriorityQueue = 64

// peerFor returns the peer of node to, starting its sender on first use.
func (t *Transport) peerFor(to uint64) (*peer, error) {
	t.mu.RLock()
	err := t.usableLocked()
	p := t.mu.peers[to]
	t.mu.RUnlock()
	switch {
	case err != nil:
		return nil, err
	case p != nil:
		return p, nil
	case to == 0 || to == t.cfg.NodeID:
		return nil, fmt.Errorf("%w: node %d", engine.ErrUnknownPeer, to)
	}
	if _, err := t.resolve(to); err != nil {
		return nil, err
	}
	c := t.countersFor(to)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usableLocked(); err != nil {
		return nil, err
	}
	if p = t.mu.peers[to]; p == nil {
		p = &peer{t: t, nodeID: to, stats: c, notify: make(chan struct{}, 1)}
		p.ctx, p.cancel = context.WithCancel(t.closeCtx)
		t.mu.peers[to] = p
		t.senders.Add(1)
		go p.run()
	}
	return p, nil
}

// peer is the send side towards one node: its bounded queue and its sender
// goroutine's handles.
type peer struct {
	t      *Transport
	nodeID uint64
	stats  *counters
	ctx    context.Context // cancelled by RemovePeer and Close: stops the sender
	cancel context.CancelFunc
	notify chan struct{} // capacity 1: something was queued

	// retryAt is the time (UnixNano) until which Send refuses messages with
	// ErrPeerUnreachable after a failed connection; 0 once connected.
	retryAt atomic.Int64
	// redial asks the sender to reconnect before its next frame (the
	// address changed).
	redial atomic.Bool

	// hasPrio is set while the priority queue holds messages.
	hasPrio atomic.Bool

	mu struct {
		sync.Mutex
		msgs  []engine.Message // at most Config.QueueLen
		sizes []int            // encoded size of each of msgs
		bytes int64            // sum of sizes, at most Config.QueueBytes
		// prio and prioSizes: the priority queue (SendPriority), at most
		// maxPriorityQueue messages, sent before msgs.
		prio      []engine.Message
		prioSizes []int
	}
}

// enqueuePriority adds msgs to the priority queue, all or none.
func (p *peer) enqueuePriority(msgs []engine.Message) error {
	if ra := p.retryAt.Load(); ra != 0 && time.Now().UnixNano() < ra {
		p.stats.dropped.Add(uint64(len(msgs)))
		return ErrPeerUnreachable
	}
	limit := maxMessageBytes(p.t.cfg.MaxFrameBytes)
	p.mu.Lock()
	if len(p.mu.prio)+len(msgs) > maxPriorityQueue {
		p.mu.Unlock()
		p.stats.dropped.Add(uint64(len(msgs)))
		return engine.ErrQueueFull
	}
	sizes, _, err := appendSizes(p.mu.prioSizes, msgs, limit)
	p.mu.prioSizes = sizes
	if err != nil {
		p.mu.Unlock()
		p.stats.dropped.Add(uint64(len(msgs)))
		return err
	}
	p.mu.prio = append(p.mu.prio, msgs...)
	p.hasPrio.Store(true)
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
	return nil
}

// appendSizes appends the encoded size of each of msgs to sizes and
// returns their sum; if one is larger than limit, it returns sizes as it
// was and a *SizeError.
func appendSizes(sizes []int, msgs []engine.Message, limit int) ([]int, int64, error) {
	n0 := len(sizes)
	var bytes int64
	for i := range msgs {
		size := msgs[i].Msg.Size()
		if size > limit {
			return sizes[:n0], 0, &SizeError{What: "raft message", Size: size, Limit: limit}
		}
		bytes += int64(size)
		sizes = append(sizes, size)
	}
	return sizes, bytes, nil
}

// takePriority takes the priority queue; nil if it is empty.
func (p *peer) takePriority() ([]engine.Message, []int) {
	if !p.hasPrio.Load() {
		return nil, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m, s := p.mu.prio, p.mu.prioSizes
	p.mu.prio, p.mu.prioSizes = nil, nil
	p.hasPrio.Store(false)
	return m, s
}

// enqueue adds msgs to the queue, all or none.
func (p *peer) enqueue(msgs []engine.Message) error {
	if ra := p.retryAt.Load(); ra != 0 && time.Now().UnixNano() < ra {
		p.stats.dropped.Add(uint64(len(msgs)))
		return ErrPeerUnreachable
	}
	cfg := &p.t.cfg
	limit := maxMessageBytes(cfg.MaxFrameBytes)
	p.mu.Lock()
	if len(p.mu.msgs)+len(msgs) > cfg.QueueLen {
		p.mu.Unlock()
		p.stats.dropped.Add(uint64(len(msgs)))
		return engine.ErrQueueFull
	}
	n0 := len(p.mu.sizes)
	sizes, bytes, err := appendSizes(p.mu.sizes, msgs, limit)
	p.mu.sizes = sizes
	if err != nil {
		p.mu.Unlock()
		p.stats.dropped.Add(uint64(len(msgs)))
		return err
	}
	if p.mu.bytes+bytes > cfg.QueueBytes {
		p.mu.sizes = p.mu.sizes[:n0]
		p.mu.Unlock()
		p.stats.dropped.Add(uint64(len(msgs)))
		return engine.ErrQueueFull
	}
	p.mu.msgs = append(p.mu.msgs, msgs...)
	p.mu.bytes += bytes
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default: // the sender is already notified
	}
	return nil
}

// swap takes everything queued, leaving msgs and sizes (emptied) as the new
// queue, so that the sender and the queue trade two buffers back and forth.
func (p *peer) swap(msgs []engine.Message, sizes []int) ([]engine.Message, []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	qm, qs := p.mu.msgs, p.mu.sizes
	p.mu.msgs, p.mu.sizes, p.mu.bytes = msgs[:0], sizes[:0], 0
	return qm, qs
}

// sender is the state of one peer's sender goroutine, owned by it.
type sender struct {
	p        *peer
	cc       *grpc.ClientConn // nil when not connected
	stream   grpc.ClientStreamingClient[transportpb.Frame, transportpb.StreamReply]
	cancel   context.CancelFunc // ends stream
	upSince  time.Time          // when stream was opened
	failures int                // consecutive failures, logged
	backoff  *backoff.Backoff   // the wait after each failure

	// Buffers reused from frame to frame.
	msgs  []engine.Message
	sizes []int
	frame frameWriter // encoded by frameCodec
}

// run is the sender goroutine: on every wake-up it takes everything queued
// and writes it as frames on the peer's stream, connecting first if needed.
func (p *peer) run() {
	defer p.t.senders.Done()
	b, err := backoff.New(backoff.Config{Initial: p.t.cfg.BackoffMin, Max: p.t.cfg.BackoffMax, Multiplier: 2, Jitter: 0.2})
	if err != nil {
		panic(err) // Config.Validate checked the bounds
	}
	s := &sender{p: p, backoff: b}
	defer s.disconnect()
	for {
		select {
		case <-p.ctx.Done():
			msgs, _ := p.swap(nil, nil)
			p.stats.dropped.Add(uint64(len(msgs)))
			return
		case <-p.notify:
			s.flush()
		}
	}
}

// flush sends everything queued, or drops it if the peer is in backoff.
func (s *sender) flush() {
	p := s.p
	msgs, sizes := p.swap(s.msgs, s.sizes)
	defer func() {
		clear(msgs) // release the entries
		s.msgs, s.sizes = msgs[:0], sizes[:0]
	}()
	if pm, ps := p.takePriority(); len(pm) > 0 {
		// Ahead of the queue, in the first frame.
		msgs = append(pm, msgs...)
		sizes = append(ps, sizes...)
	}
	if len(msgs) == 0 {
		return
	}
	if ra := p.retryAt.Load(); ra != 0 && time.Now().UnixNano() < ra {
		p.stats.dropped.Add(uint64(len(msgs))) // queued just before the failure
		return
	}
	if p.redial.Swap(false) {
		s.disconnect()
	}
	if s.stream == nil {
		if err := s.connect(); err != nil {
			s.fail(err, len(msgs))
			return
		}
	}
	if sent, err := s.send(msgs, sizes); err != nil {
		s.fail(err, len(msgs)-sent)
	}
}

// connect opens a stream to the peer.
func (s *sender) connect() error {
	p, t := s.p, s.p.t
	addr, err := t.resolve(p.nodeID)
	if err != nil {
		return err
	}
	cc, err := t.dial(p.ctx, addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(p.ctx)
	stream, err := transportpb.NewRaftClient(cc).Stream(ctx, grpc.ForceCodecV2(frameCodec{}))
	if err != nil {
		cancel()
		cc.Close()
		return fmt.Errorf("transport: open stream to %s: %w", addr, err)
	}
	s.cc, s.stream, s.cancel, s.upSince = cc, stream, cancel, time.Now()
	p.retryAt.Store(0)
	return nil
}

// dial returns a connection to addr once it is ready, or once the first
// attempt failed (a fail-fast RPC on it then reports why), within
// Config.DialTimeout.
func (t *Transport) dial(ctx context.Context, addr string) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, t.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	dctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	cc.Connect()
	for st := cc.GetState(); st != connectivity.Ready && st != connectivity.TransientFailure; st = cc.GetState() {
		if !cc.WaitForStateChange(dctx, st) {
			cc.Close()
			return nil, fmt.Errorf("transport: connect to %s: %w", addr, dctx.Err())
		}
	}
	return cc, nil
}

// disconnect closes the stream and its connection, if any.
func (s *sender) disconnect() {
	if s.cc == nil {
		return
	}
	s.cancel()
	s.cc.Close()
	s.cc, s.stream, s.cancel = nil, nil, nil
}

// send writes msgs as frames of at most Config.MaxFrameBytes, in order,
// each preceded by the priority messages queued meanwhile. It returns how
// many of msgs were written before a failure.
func (s *sender) send(msgs []engine.Message, sizes []int) (int, error) {
	for start := 0; start < len(msgs); {
		if start > 0 && s.p.hasPrio.Load() {
			// Priority messages queued while this backlog is written go
			// before its next frame.
			pm, ps := s.p.takePriority()
			if sent, err := s.writeFrames(pm, ps, len(pm)); err != nil {
				s.p.stats.dropped.Add(uint64(len(pm) - sent))
				return start, err
			}
		}
		end, err := s.writeFrames(msgs[start:], sizes[start:], 1)
		start += end
		if err != nil {
			return start, err
		}
	}
	return len(msgs), nil
}

// writeFrames writes msgs in frames of at most Config.MaxFrameBytes until
// at least min of them are written, and returns how many were.
func (s *sender) writeFrames(msgs []engine.Message, sizes []int, min int) (int, error) {
	p, cfg := s.p, &s.p.t.cfg
	header := frameHeaderSize(cfg.ClusterID, cfg.NodeID, p.nodeID)
	f := &s.frame
	f.clusterID, f.from, f.to = cfg.ClusterID, cfg.NodeID, p.nodeID
	defer func() { f.msgs, f.sizes = nil, nil }()
	start := 0
	for start < min && start < len(msgs) {
		size, end := header, start
		for ; end < len(msgs); end++ {
			n := frameEntrySize(msgs[end].ShardID, sizes[end])
			if end > start && size+n > cfg.MaxFrameBytes {
				break
			}
			size += n
		}
		// frameCodec encodes the frame before SendMsg returns.
		f.msgs, f.sizes, f.size = msgs[start:end], sizes[start:end], size
		if err := s.stream.SendMsg(f); err != nil {
			if errors.Is(err, io.EOF) { // the peer ended the stream: get its status
				if _, err = s.stream.CloseAndRecv(); err == nil {
					err = errors.New("transport: stream closed by the peer")
				}
			}
			return start, err
		}
		p.stats.framesSent.Add(1)
		p.stats.msgsSent.Add(uint64(end - start))
		p.stats.bytesSent.Add(uint64(size))
		start = end
	}
	return start, nil
}

// fail handles a failed connection or stream: it drops the lost messages and
// everything queued, starts a backoff, logs and reports the peer unreachable.
func (s *sender) fail(err error, lost int) {
	p, t := s.p, s.p.t
	healthy := s.stream != nil && time.Since(s.upSince) >= t.cfg.BackoffMax
	s.disconnect()
	queued, _ := p.swap(nil, nil)
	prio, _ := p.takePriority()
	p.stats.dropped.Add(uint64(lost + len(queued) + len(prio)))
	if p.ctx.Err() != nil {
		return // closing, not a failure of the peer
	}
	if healthy {
		s.failures = 0
		s.backoff.Reset()
	}
	s.failures++
	wait := s.backoff.Next()
	p.retryAt.Store(time.Now().Add(wait).UnixNano())
	if ok, suppressed := t.dialFails.allow(p.nodeID); ok {
		t.cfg.Logger.Warn("transport: peer unreachable", "node", t.cfg.NodeID, "peer", p.nodeID,
			"err", err, "failures", s.failures, "retry_in", wait, "suppressed", suppressed)
	}
	t.handler.PeerUnreachable(p.nodeID)
}
