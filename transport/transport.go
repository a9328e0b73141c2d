package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

// Transport is one node's gRPC engine.Transport. Its methods are safe for
// concurrent use.
type Transport struct {
	cfg      Config
	id       identity
	lis      net.Listener
	dialOpts []grpc.DialOption

	// handler is set once by Start, before the server and any sender
	// starts; the goroutines that read it start after.
	handler engine.Handler
	server  *grpc.Server  // set by Start
	served  chan struct{} // closed when Serve returns (after Start)

	closeCtx    context.Context // cancelled by Close: ends every stream and dial
	closeCancel context.CancelFunc
	senders     sync.WaitGroup // one sender goroutine per peer
	snapshots   sync.WaitGroup // SendSnapshot calls in progress

	pacer     pacer       // SnapshotRateBytesPerSec
	refusals  *logLimiter // refused frames and snapshots, per sender
	dialFails *logLimiter // failed connections, per peer

	mu struct {
		sync.RWMutex
		started, closed bool
		peers           map[uint64]*peer     // peers with a running sender
		addrs           map[uint64]string    // from AddPeer
		stats           map[uint64]*counters // per peer node, never removed
	}
}

var _ engine.Transport = (*Transport)(nil)

// New returns a Transport for cfg, listening (not yet serving: see Start) on
// cfg.ListenAddr or cfg.Listener. It copies cfg.
func New(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	lis := cfg.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("transport: listen: %w", err)
		}
	}
	t := &Transport{
		cfg:       cfg,
		id:        identity{clusterID: cfg.ClusterID, nodeID: cfg.NodeID, isRemoved: cfg.IsRemoved},
		lis:       lis,
		served:    make(chan struct{}),
		pacer:     pacer{rate: cfg.SnapshotRateBytesPerSec},
		refusals:  newLogLimiter(),
		dialFails: newLogLimiter(),
	}
	t.closeCtx, t.closeCancel = context.WithCancel(context.Background())
	t.mu.peers = make(map[uint64]*peer)
	t.mu.addrs = make(map[uint64]string)
	t.mu.stats = make(map[uint64]*counters)

	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	t.dialOpts = []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithNoProxy(),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: cfg.BackoffMin, Multiplier: 2, Jitter: 0.2, MaxDelay: cfg.BackoffMax,
			},
			MinConnectTimeout: cfg.DialTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: cfg.KeepaliveInterval, Timeout: cfg.KeepaliveTimeout, PermitWithoutStream: true,
		}),
	}
	return t, nil
}

// Addr returns the address the server listens on.
func (t *Transport) Addr() net.Addr { return t.lis.Addr() }

// NodeID returns this node's ID.
func (t *Transport) NodeID() uint64 { return t.cfg.NodeID }

// Start registers h and starts serving. It fails if the transport is closed
// or already started. h's methods are called from the transport's
// goroutines, concurrently: HandleBatch by one stream goroutine per sending
// node, HandleSnapshot by one goroutine per incoming snapshot,
// PeerUnreachable by the sender goroutines. They must not call Close.
func (t *Transport) Start(h engine.Handler) error {
	if h == nil {
		return errors.New("transport: nil handler")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.mu.closed:
		return engine.ErrTransportClosed
	case t.mu.started:
		return errors.New("transport: already started")
	}
	t.handler = h
	t.mu.started = true

	serverMax := max(t.cfg.MaxFrameBytes, t.cfg.MaxSnapshotChunkBytes+frameSlack)
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(serverMax),
		grpc.ForceServerCodecV2(frameCodec{}), // proto's for all but frames
		grpc.WaitForHandlers(true),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: t.cfg.KeepaliveInterval, Timeout: t.cfg.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: t.cfg.KeepaliveInterval / 2, PermitWithoutStream: true,
		}),
	}
	if t.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(t.cfg.TLS)))
	}
	t.server = grpc.NewServer(opts...)
	transportpb.RegisterRaftServer(t.server, &raftServer{t: t})
	go func() {
		defer close(t.served)
		if err := t.server.Serve(t.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.cfg.Logger.Error("transport: server stopped", "node", t.cfg.NodeID, "err", err)
		}
	}()
	return nil
}

// Close stops the transport: the server, every sender and stream, and the
// snapshots in flight in both directions. Queued messages are dropped. It
// returns once no goroutine of the transport is left and no call into the
// handler is in progress. Send and SendSnapshot fail with
// engine.ErrTransportClosed afterwards. Closing twice is a no-op.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		return nil
	}
	t.mu.closed = true
	started := t.mu.started
	t.mu.Unlock()

	t.closeCancel()
	if started {
		t.server.Stop() // closes the listener, waits for the handlers
		<-t.served
	} else {
		t.lis.Close()
	}
	t.senders.Wait()
	t.snapshots.Wait()
	return nil
}

// AddPeer sets the address of node nodeID, overriding Config.Resolver. If
// the node's address changes while a stream to it is open, its sender
// reconnects before its next frame, and a pending backoff is cut short.
func (t *Transport) AddPeer(nodeID uint64, addr string) {
	t.mu.Lock()
	old, known := t.mu.addrs[nodeID]
	t.mu.addrs[nodeID] = addr
	p := t.mu.peers[nodeID]
	t.mu.Unlock()
	if p != nil && (!known || old != addr) {
		p.redial.Store(true)
		p.retryAt.Store(0)
	}
}

// RemovePeer forgets node nodeID's address and stops its sender, dropping
// what is queued for it. A later Send to it fails with engine.ErrUnknownPeer
// unless Config.Resolver knows it.
func (t *Transport) RemovePeer(nodeID uint64) {
	t.mu.Lock()
	delete(t.mu.addrs, nodeID)
	p := t.mu.peers[nodeID]
	delete(t.mu.peers, nodeID)
	t.mu.Unlock()
	if p != nil {
		p.cancel()
	}
}

// resolve returns node nodeID's address, from AddPeer or Config.Resolver.
func (t *Transport) resolve(nodeID uint64) (string, error) {
	t.mu.RLock()
	addr, ok := t.mu.addrs[nodeID]
	t.mu.RUnlock()
	if ok {
		return addr, nil
	}
	if t.cfg.Resolver != nil {
		addr, err := t.cfg.Resolver(nodeID)
		if err == nil && addr != "" {
			return addr, nil
		}
		if err != nil {
			return "", fmt.Errorf("%w: node %d: %v", engine.ErrUnknownPeer, nodeID, err)
		}
	}
	return "", fmt.Errorf("%w: node %d", engine.ErrUnknownPeer, nodeID)
}

// usable returns the error Send and SendSnapshot give, if any.
func (t *Transport) usableLocked() error {
	switch {
	case t.mu.closed:
		return engine.ErrTransportClosed
	case !t.mu.started:
		return ErrNotStarted
	}
	return nil
}

// countersFor returns the counters of node nodeID, creating them.
func (t *Transport) countersFor(nodeID uint64) *counters {
	t.mu.RLock()
	c := t.mu.stats[nodeID]
	t.mu.RUnlock()
	if c != nil {
		return c
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c = t.mu.stats[nodeID]; c == nil {
		c = new(counters)
		t.mu.stats[nodeID] = c
	}
	return c
}

// PeerStats counts the traffic between this node and one other node. Sizes
// are encoded sizes: frames as sent on the wire, snapshot bodies as chunk
// bytes.
type PeerStats struct {
	MessagesSent, BytesSent, FramesSent             uint64 // raft traffic written to the peer's stream
	MessagesReceived, BytesReceived, FramesReceived uint64 // valid frames received from the peer
	// Dropped counts messages to the peer that were not sent: refused by
	// Send (queue full, peer in backoff) or lost from the queue when the
	// stream failed or the peer was removed.
	Dropped uint64
	// Refused counts frames and snapshot streams from the peer that this
	// node refused (identity, malformed message, size).
	Refused                                  uint64
	SnapshotsSent, SnapshotBytesSent         uint64 // completed outgoing snapshots
	SnapshotsReceived, SnapshotBytesReceived uint64 // incoming snapshots the handler accepted
}

// Stats returns the counters of every node this one has exchanged traffic
// with (or refused traffic from).
func (t *Transport) Stats() map[uint64]PeerStats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make(map[uint64]PeerStats, len(t.mu.stats))
	for node, c := range t.mu.stats {
		out[node] = c.snapshot()
	}
	return out
}

type counters struct {
	msgsSent, bytesSent, framesSent atomic.Uint64
	msgsRecv, bytesRecv, framesRecv atomic.Uint64
	dropped, refused                atomic.Uint64
	snapsSent, snapBytesSent        atomic.Uint64
	snapsRecv, snapBytesRecv        atomic.Uint64
}

func (c *counters) snapshot() PeerStats {
	return PeerStats{
		MessagesSent: c.msgsSent.Load(), BytesSent: c.bytesSent.Load(), FramesSent: c.framesSent.Load(),
		MessagesReceived: c.msgsRecv.Load(), BytesReceived: c.bytesRecv.Load(), FramesReceived: c.framesRecv.Load(),
		Dropped: c.dropped.Load(), Refused: c.refused.Load(),
		SnapshotsSent: c.snapsSent.Load(), SnapshotBytesSent: c.snapBytesSent.Load(),
		SnapshotsReceived: c.snapsRecv.Load(), SnapshotBytesReceived: c.snapBytesRecv.Load(),
	}
}
