package memtransport

import (
	"container/heap"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// Endpoint is one node's engine.Transport on a Network. Its methods are safe
// for concurrent use.
type Endpoint struct {
	net    *Network
	nodeID uint64

	stop     chan struct{}  // closed by Close: stops the senders
	senders  sync.WaitGroup // one sender goroutine per destination
	inflight sync.WaitGroup // calls into this endpoint's handler in progress

	mu struct {
		sync.Mutex
		handler engine.Handler // nil until Start
		closed  bool
		peers   map[uint64]*peer     // send queue per destination node
		streams map[*stream]struct{} // snapshot streams from or to this node
	}
}

var _ engine.Transport = (*Endpoint)(nil)

func newEndpoint(n *Network, nodeID uint64) *Endpoint {
	e := &Endpoint{net: n, nodeID: nodeID, stop: make(chan struct{})}
	e.mu.peers = make(map[uint64]*peer)
	e.mu.streams = make(map[*stream]struct{})
	return e
}

// closeUnstarted marks a new endpoint closed (the network is closed).
func (e *Endpoint) closeUnstarted() {
	e.mu.closed = true
	close(e.stop)
}

// NodeID returns the node this endpoint belongs to.
func (e *Endpoint) NodeID() uint64 { return e.nodeID }

// Start registers h. It fails if the endpoint is closed or already started.
// h's methods are called from the network's goroutines, concurrently, and
// must not call Close on this endpoint (Close waits for them).
func (e *Endpoint) Start(h engine.Handler) error {
	if h == nil {
		return errors.New("memtransport: nil handler")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.mu.closed:
		return engine.ErrTransportClosed
	case e.mu.handler != nil:
		return errors.New("memtransport: endpoint already started")
	}
	e.mu.handler = h
	return nil
}

// Send queues msgs for node to and returns at once. It fails, queuing none of
// msgs, with engine.ErrTransportClosed once this endpoint is closed,
// ErrNotStarted before Start, engine.ErrUnknownPeer if node to has no started,
// open endpoint, and engine.ErrQueueFull if msgs do not fit in to's queue.
// Messages over a cut link are dropped silently later, by the sender.
func (e *Endpoint) Send(to uint64, msgs []engine.Message) error {
	if err := e.usable(); err != nil {
		return err
	}
	if dest := e.net.lookup(to); dest == nil || !dest.live() {
		return engine.ErrUnknownPeer
	}
	if len(msgs) == 0 {
		return nil
	}
	p, err := e.peerFor(to)
	if err != nil {
		return err
	}
	var bytes uint64
	for i := range msgs {
		bytes += messageSize(&msgs[i])
	}
	p.mu.Lock()
	if len(p.mu.queue)+len(msgs) > e.net.cfg.QueueLen {
		p.mu.Unlock()
		p.stats.rejected.Add(uint64(len(msgs)))
		return engine.ErrQueueFull
	}
	p.mu.queue = append(p.mu.queue, msgs...)
	p.mu.bytes += bytes
	p.mu.Unlock()
	p.stats.sent.Add(uint64(len(msgs)))
	p.stats.sentBytes.Add(bytes)
	select {
	case p.notify <- struct{}{}:
	default: // the sender is already notified
	}
	return nil
}

// Close stops the endpoint: Send and SendSnapshot fail afterwards, queued and
// delayed messages from it are dropped, messages in flight to it are dropped,
// its snapshot streams fail. Close waits for its sender goroutines and for the
// calls into its handler in progress. Closing twice is a no-op.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.mu.closed {
		e.mu.Unlock()
		return nil
	}
	e.mu.closed = true
	streams := make([]*stream, 0, len(e.mu.streams))
	for s := range e.mu.streams {
		streams = append(streams, s)
	}
	e.mu.Unlock()

	e.net.forget(e)
	close(e.stop)
	for _, s := range streams {
		s.abort(e)
	}
	e.senders.Wait()
	e.inflight.Wait()
	return nil
}

// PeerStats counts what one endpoint sent to one destination node. Once
// nothing is queued or delayed, Sent + Duplicated == Delivered + Dropped.
type PeerStats struct {
	Sent, SentBytes           uint64 // messages accepted by Send, and their size
	Rejected                  uint64 // messages refused with engine.ErrQueueFull
	Batches                   uint64 // HandleBatch calls made at the destination
	Delivered, DeliveredBytes uint64 // messages handed to the destination (copies included)
	Dropped                   uint64 // lost: injected drop, cut link, closed destination or sender
	Duplicated                uint64 // copies injected
	Delayed                   uint64 // now: messages waiting out a delay or held back
}

// Stats returns the counters of each destination this endpoint has sent to.
// Sizes are the raft encoding of a message plus 8 bytes.
func (e *Endpoint) Stats() map[uint64]PeerStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[uint64]PeerStats, len(e.mu.peers))
	for to, p := range e.mu.peers {
		out[to] = p.stats.snapshot()
	}
	return out
}

// usable returns the error Send and SendSnapshot give on this endpoint, if any.
func (e *Endpoint) usable() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.mu.closed:
		return engine.ErrTransportClosed
	case e.mu.handler == nil:
		return ErrNotStarted
	}
	return nil
}

func (e *Endpoint) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mu.closed
}

// live reports whether e is started and open.
func (e *Endpoint) live() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.mu.closed && e.mu.handler != nil
}

// acquire returns e's handler and counts a call into it, or nil if e is
// closed or not started. Each non-nil acquire is paired with release.
func (e *Endpoint) acquire() engine.Handler {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed || e.mu.handler == nil {
		return nil
	}
	e.inflight.Add(1)
	return e.mu.handler
}

func (e *Endpoint) release() { e.inflight.Done() }

// unreachable tells e's handler that messages for node to were lost.
func (e *Endpoint) unreachable(to uint64) {
	if h := e.acquire(); h != nil {
		h.PeerUnreachable(to)
		e.release()
	}
}

// peerFor returns the queue for node to, starting its sender on first use.
func (e *Endpoint) peerFor(to uint64) (*peer, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed {
		return nil, engine.ErrTransportClosed
	}
	p, ok := e.mu.peers[to]
	if !ok {
		p = &peer{to: to, notify: make(chan struct{}, 1)}
		e.mu.peers[to] = p
		e.senders.Add(1)
		go e.runSender(p)
	}
	return p, nil
}

// peer is the send queue from one endpoint to one destination node.
type peer struct {
	to     uint64
	notify chan struct{} // capacity 1: something was queued
	stats  peerCounters

	mu struct {
		sync.Mutex
		queue []engine.Message // at most Config.QueueLen
		bytes uint64           // size of queue
	}

	// downReported is owned by the sender goroutine: PeerUnreachable was
	// called because the destination is down, and no delivery succeeded since.
	downReported bool
}

type peerCounters struct {
	sent, sentBytes, rejected, batches       atomic.Uint64
	delivered, deliveredBytes, dropped, dups atomic.Uint64
	delayed                                  atomic.Uint64 // a gauge
}

func (c *peerCounters) snapshot() PeerStats {
	return PeerStats{
		Sent: c.sent.Load(), SentBytes: c.sentBytes.Load(), Rejected: c.rejected.Load(),
		Batches: c.batches.Load(), Delivered: c.delivered.Load(),
		DeliveredBytes: c.deliveredBytes.Load(), Dropped: c.dropped.Load(),
		Duplicated: c.dups.Load(), Delayed: c.delayed.Load(),
	}
}

// drain takes everything queued.
func (p *peer) drain() ([]engine.Message, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msgs, bytes := p.mu.queue, p.mu.bytes
	p.mu.queue, p.mu.bytes = nil, 0
	return msgs, bytes
}

// flight is a batch scheduled for later delivery.
type flight struct {
	at    time.Time
	seq   uint64 // orders flights with the same at
	dest  *Endpoint
	msgs  []engine.Message
	bytes uint64
}

// flights is a min-heap of flights by (at, seq).
type flights []*flight

func (h flights) Len() int { return len(h) }
func (h flights) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h flights) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *flights) Push(x any)   { *h = append(*h, x.(*flight)) }
func (h *flights) Pop() any {
	old := *h
	f := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return f
}

// sender is the state of one sender goroutine.
type sender struct {
	e       *Endpoint
	p       *peer
	pending flights   // delayed batches
	seq     uint64    // next flight sequence number
	last    time.Time // latest delivery time scheduled, for FIFO order
	held    *flight   // batch held back for reordering
	heldTil time.Time // when held is delivered if no other batch comes
}

// runSender is the goroutine that drains p's queue into one batch per wake-up,
// applies the faults and delivers, at once or when a delay expires.
func (e *Endpoint) runSender(p *peer) {
	defer e.senders.Done()
	s := &sender{e: e, p: p}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var timerC <-chan time.Time
		if next, ok := s.nextWake(); ok {
			timer.Reset(time.Until(next))
			timerC = timer.C
		}
		select {
		case <-e.stop:
			s.dropAll()
			return
		case <-p.notify:
			if msgs, bytes := p.drain(); len(msgs) > 0 {
				s.dispatch(msgs, bytes)
			}
		case <-timerC:
			s.deliverDue(time.Now())
		}
	}
}

// nextWake returns when the next delayed or held batch is due.
func (s *sender) nextWake() (time.Time, bool) {
	var next time.Time
	ok := false
	if len(s.pending) > 0 {
		next, ok = s.pending[0].at, true
	}
	if s.held != nil && (!ok || s.heldTil.Before(next)) {
		next, ok = s.heldTil, true
	}
	return next, ok
}

// dispatch applies the faults to one drained batch and delivers or schedules it.
func (s *sender) dispatch(msgs []engine.Message, bytes uint64) {
	e, p := s.e, s.p
	v := e.net.plan(e, p.to, msgs, bytes)
	p.stats.dropped.Add(v.dropped)
	p.stats.dups.Add(v.duplicated)
	if v.report {
		e.unreachable(p.to)
	}
	if len(v.msgs) == 0 {
		return
	}
	dest := e.net.lookup(p.to) // the incarnation the batch is addressed to
	if dest == nil {
		s.lost(len(v.msgs))
		return
	}
	if v.delay == 0 && !v.reorder && len(s.pending) == 0 && s.held == nil {
		s.deliver(dest, v.msgs, v.bytes)
		return
	}
	now := time.Now()
	f := &flight{at: now.Add(v.delay), dest: dest, msgs: v.msgs, bytes: v.bytes}
	if f.at.Before(s.last) {
		f.at = s.last // batches of a link overtake each other only by reordering
	}
	switch {
	case s.held != nil:
		// f is the next batch: the held one follows it.
		s.push(f)
		h := s.held
		s.held = nil
		h.at = f.at
		p.stats.delayed.Add(-uint64(len(h.msgs)))
		s.push(h)
	case v.reorder:
		s.held = f
		s.heldTil = f.at.Add(v.window)
		p.stats.delayed.Add(uint64(len(f.msgs)))
		return
	default:
		s.push(f)
	}
	s.last = f.at
	if !f.at.After(now) {
		s.deliverDue(now)
	}
}

func (s *sender) push(f *flight) {
	f.seq = s.seq
	s.seq++
	heap.Push(&s.pending, f)
	s.p.stats.delayed.Add(uint64(len(f.msgs)))
}

// deliverDue delivers the batches due at now, in order.
func (s *sender) deliverDue(now time.Time) {
	if s.held != nil && !s.heldTil.After(now) {
		h := s.held
		s.held = nil
		h.at = now
		s.p.stats.delayed.Add(-uint64(len(h.msgs)))
		s.push(h)
	}
	for len(s.pending) > 0 && !s.pending[0].at.After(now) {
		f := heap.Pop(&s.pending).(*flight)
		s.p.stats.delayed.Add(-uint64(len(f.msgs)))
		s.deliver(f.dest, f.msgs, f.bytes)
	}
}

// deliver hands one batch to dest's handler, unless the link is cut or dest is
// closed, in which case the batch is lost and the sender's handler told so.
func (s *sender) deliver(dest *Endpoint, msgs []engine.Message, bytes uint64) {
	e, p := s.e, s.p
	if cut, report := e.net.checkCut(e, p.to); cut {
		p.stats.dropped.Add(uint64(len(msgs)))
		if report {
			e.unreachable(p.to)
		}
		return
	}
	h := dest.acquire()
	if h == nil {
		s.lost(len(msgs))
		return
	}
	p.downReported = false
	h.HandleBatch(&engine.Batch{
		ClusterID: e.net.cfg.ClusterID,
		From:      e.nodeID,
		To:        p.to,
		Messages:  msgs,
	})
	dest.release()
	p.stats.batches.Add(1)
	p.stats.delivered.Add(uint64(len(msgs)))
	p.stats.deliveredBytes.Add(bytes)
}

// lost counts n messages lost to a down destination and tells the sender's
// handler once per down period.
func (s *sender) lost(n int) {
	s.p.stats.dropped.Add(uint64(n))
	if !s.p.downReported {
		s.p.downReported = true
		s.e.unreachable(s.p.to)
	}
}

// dropAll counts what is still queued, delayed or held as dropped (Close).
func (s *sender) dropAll() {
	n := 0
	for _, f := range s.pending {
		n += len(f.msgs)
	}
	if s.held != nil {
		n += len(s.held.msgs)
	}
	s.p.stats.delayed.Store(0)
	msgs, _ := s.p.drain()
	n += len(msgs)
	s.p.stats.dropped.Add(uint64(n))
}
