package gossip

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/hashicorp/memberlist"
)

// Defaults applied by New.
const (
	DefaultBindAddr            = "0.0.0.0:7946"
	DefaultLeaderFlushInterval = 50 * time.Millisecond
	DefaultUpdateTimeout       = 2 * time.Second
	DefaultLeaveTimeout        = 5 * time.Second
	DefaultDeadRetention       = 24 * time.Hour

	// Failure detection: memberlist's LAN defaults for the probes (a
	// node is declared dead about 5 s after it stops answering). The
	// engine detects a silent peer itself within an election timeout, for
	// raft (engine/quiesce.go); gossip's verdict drives placement, whose
	// DownAfter is far longer. Probes every 200ms with a 100ms timeout, as
	// before, cost an idle node a tenth of its CPU, and on a saturated
	// machine (100,000 shards on 2 cores) failed by the hundred. Gossip
	// rounds stay frequent: they carry leader changes, and cost nothing
	// when there is nothing to send.
	DefaultProbeInterval    = time.Second
	DefaultProbeTimeout     = 500 * time.Millisecond
	DefaultSuspicionMult    = 4
	DefaultGossipInterval   = 50 * time.Millisecond
	DefaultPushPullInterval = 5 * time.Second
)

// joinBackoff spaces Join's attempts: each wait is drawn from [b/2, b], b
// doubling from 100ms to 3s (3b/4 ± 1/3 of it).
var joinBackoff = backoff.Config{Initial: 75 * time.Millisecond, Max: 2250 * time.Millisecond, Multiplier: 2, Jitter: 1.0 / 3}

// Config configures a Gossip.
type Config struct {
	// BindAddr is the "ip:port" to listen on for gossip, TCP and UDP on the
	// same port (default DefaultBindAddr). Port 0 picks a free port.
	BindAddr string
	// AdvertiseAddr is the "ip" or "ip:port" other nodes reach us at, when it
	// differs from BindAddr (NAT, unspecified bind address). Its port
	// defaults to the bound port.
	AdvertiseAddr string
	// SecretKey, if set, encrypts gossip with AES-GCM: 16, 24 or 32 bytes,
	// else New fails with ErrBadKey. Every node of a cluster needs the same
	// key.
	SecretKey []byte
	// Meta is what this node advertises. NodeID must be nonzero; it is also
	// the memberlist node name (decimal).
	Meta Meta
	// Logger receives this package's and memberlist's logs (default
	// slog.Default()).
	Logger *slog.Logger
	// OnLeaders, if set, is called from one goroutine, in order, with the
	// leader updates received from other nodes that are new to this node.
	OnLeaders func([]LeaderUpdate)
	// OnChange, if set, is called from one goroutine whenever a member joins,
	// leaves, changes state or updates its meta, and when a conflict is
	// detected. Bursts are coalesced into one call; read Members for the
	// state. It must not block for long.
	OnChange func()
	// LeaderFlushInterval: updates queued with BroadcastLeaders are packed
	// and queued for gossip at most this often (default
	// DefaultLeaderFlushInterval).
	LeaderFlushInterval time.Duration
	// UpdateTimeout bounds how long SetMeta waits for memberlist to broadcast
	// the new meta (default DefaultUpdateTimeout).
	UpdateTimeout time.Duration
	// DeadRetention is how long dead and left members stay listed by Members
	// (default DefaultDeadRetention).
	DeadRetention time.Duration
	// MemberlistConfig, if set, adjusts the memberlist configuration after
	// this package's defaults (memberlist.DefaultLANConfig with the Default*
	// failure detection settings above) are applied, e.g. to tune timing,
	// set a Label or a Transport. Name, BindAddr, BindPort, AdvertiseAddr,
	// AdvertisePort, Delegate, Events, Conflict, Ping, Logger and LogOutput
	// belong to this package and are overwritten, as is SecretKey when
	// Config.SecretKey is set.
	MemberlistConfig func(*memberlist.Config)

	// onStateChange, set by tests, sees every state transition of the member
	// table (called with the table's lock held).
	onStateChange func(nodeID uint64, from, to State)
}

// Gossip is a node's membership in the gossip cluster. Create it with New.
type Gossip struct {
	cfg          Config
	log          *slog.Logger
	name         string // memberlist node name: decimal NodeID
	localAddr    string
	advertiseIP  net.IP
	bindIP       net.IP
	port         int
	maxLeaderMsg int

	ml  *memberlist.Memberlist
	mlp atomic.Pointer[memberlist.Memberlist] // for callbacks that may run before New returns
	bq  *memberlist.TransmitLimitedQueue

	// life guards the calls into memberlist against Close (memberlist
	// panics on Leave after Shutdown).
	life     sync.RWMutex
	closed   bool
	closeErr error
	once     sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup

	metaMu sync.Mutex // serializes meta changes (SetMeta, Leave) end to end

	mu        sync.Mutex // guards the fields below
	meta      Meta
	metaBytes []byte
	leaving   bool
	members   map[uint64]*memberEntry
	conflicts map[uint64]struct{}

	lmu      sync.Mutex // guards the leader gossip state below
	pending  map[uint64]LeaderUpdate
	seen     map[uint64]LeaderUpdate
	inbox    map[uint64]LeaderUpdate
	pushPull pushPullCache // leaders.go
	inFlight atomic.Int64  // bytes of leader messages in the broadcast queue

	flushKick   chan struct{}
	deliverKick chan struct{}
	changeKick  chan struct{}

	stats struct {
		leaderUpdatesSent, leaderMessagesSent         atomic.Uint64
		leaderMessagesReceived, leaderMessagesInvalid atomic.Uint64
		leaderUpdatesReceived, leaderUpdatesDuplicate atomic.Uint64
		metaInvalid                                   atomic.Uint64
	}
}

// New validates cfg, starts memberlist (listening on BindAddr) and the
// package's goroutines. It does not join a cluster: see Join.
func New(cfg Config) (*Gossip, error) {
	if cfg.Meta.NodeID == 0 {
		return nil, fmt.Errorf("%w: Meta.NodeID must be nonzero", ErrInvalidNodeID)
	}
	switch len(cfg.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("%w: got %d bytes", ErrBadKey, len(cfg.SecretKey))
	}
	metaBytes, err := encodeMeta(cfg.Meta, 0)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = DefaultBindAddr
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
		n   string
	}{
		{&cfg.LeaderFlushInterval, DefaultLeaderFlushInterval, "LeaderFlushInterval"},
		{&cfg.UpdateTimeout, DefaultUpdateTimeout, "UpdateTimeout"},
		{&cfg.DeadRetention, DefaultDeadRetention, "DeadRetention"},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("%w: negative %s", ErrInvalidConfig, d.n)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	bindIP, bindPort, err := parseAddr(cfg.BindAddr, true)
	if err != nil {
		return nil, fmt.Errorf("%w: BindAddr: %w", ErrInvalidConfig, err)
	}
	var advIP net.IP
	advPort := bindPort
	if cfg.AdvertiseAddr != "" {
		var p int
		advIP, p, err = parseAddr(cfg.AdvertiseAddr, false)
		if err != nil {
			return nil, fmt.Errorf("%w: AdvertiseAddr: %w", ErrInvalidConfig, err)
		}
		if p != 0 {
			advPort = p
		}
	}

	g := &Gossip{
		cfg:         cfg,
		log:         cfg.Logger,
		name:        strconv.FormatUint(cfg.Meta.NodeID, 10),
		bindIP:      bindIP,
		stop:        make(chan struct{}),
		meta:        cfg.Meta.Clone(),
		metaBytes:   metaBytes,
		members:     make(map[uint64]*memberEntry),
		conflicts:   make(map[uint64]struct{}),
		pending:     make(map[uint64]LeaderUpdate),
		seen:        make(map[uint64]LeaderUpdate),
		inbox:       make(map[uint64]LeaderUpdate),
		flushKick:   make(chan struct{}, 1),
		deliverKick: make(chan struct{}, 1),
		changeKick:  make(chan struct{}, 1),
	}

	mc := memberlist.DefaultLANConfig()
	mc.ProbeInterval = DefaultProbeInterval
	mc.ProbeTimeout = DefaultProbeTimeout
	mc.SuspicionMult = DefaultSuspicionMult
	mc.GossipInterval = DefaultGossipInterval
	mc.PushPullInterval = DefaultPushPullInterval
	// No LZW: the messages are small and the network a LAN; memberlist
	// compresses every message and push/pull otherwise, with a 64 KiB
	// table each time.
	mc.EnableCompression = false
	if cfg.MemberlistConfig != nil {
		cfg.MemberlistConfig(mc)
	}
	mc.Name = g.name
	mc.BindAddr = bindIP.String()
	mc.BindPort = bindPort
	mc.AdvertiseAddr, mc.AdvertisePort = "", 0
	if advIP != nil {
		mc.AdvertiseAddr = advIP.String()
		mc.AdvertisePort = advPort
	}
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = slices.Clone(cfg.SecretKey)
	}
	mc.Delegate = (*delegate)(g)
	mc.Events = (*delegate)(g)
	mc.Conflict = (*delegate)(g)
	mc.Ping = (*delegate)(g)
	mc.LogOutput = nil
	mc.Logger = log.New(&logBridge{g: g}, "", 0)

	g.maxLeaderMsg = min(maxLeaderMsgSize, mc.UDPBufferSize-leaderPacketReserve-len(mc.Label))
	if g.maxLeaderMsg < minLeaderMsgSize {
		return nil, fmt.Errorf("%w: memberlist UDPBufferSize %d leaves no room for leader messages",
			ErrInvalidConfig, mc.UDPBufferSize)
	}
	if mc.RetransmitMult < 1 {
		return nil, fmt.Errorf("%w: memberlist RetransmitMult %d", ErrInvalidConfig, mc.RetransmitMult)
	}
	g.bq = &memberlist.TransmitLimitedQueue{
		NumNodes: func() int {
			if ml := g.mlp.Load(); ml != nil {
				return ml.NumMembers()
			}
			return 1
		},
		RetransmitMult: mc.RetransmitMult,
	}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	g.ml = ml
	g.mlp.Store(ml)
	self := ml.LocalNode()
	g.localAddr = self.Address()
	g.advertiseIP = self.Addr
	g.port = int(self.Port)

	g.wg.Add(3)
	go g.flushLoop()
	go g.changeLoop()
	if cfg.OnLeaders != nil {
		go g.deliverLoop()
	} else {
		g.wg.Done()
	}
	g.log.Info("gossip: started", "node", cfg.Meta.NodeID, "addr", g.localAddr,
		"encrypted", len(mc.SecretKey) > 0 || mc.Keyring != nil)
	return g, nil
}

// parseAddr parses "ip:port", or "ip" when the port is optional (port 0).
// An empty host is the unspecified address.
func parseAddr(addr string, needPort bool) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		if needPort {
			return nil, 0, err
		}
		host, portStr = addr, "0"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("bad port %q", portStr)
	}
	if host == "" {
		return net.IPv4zero, int(port), nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("host %q is not an IP address", host)
	}
	return ip, int(port), nil
}

// LocalAddr returns the gossip address other nodes reach this node at
// (host:port, with the port actually bound).
func (g *Gossip) LocalAddr() string { return g.localAddr }

// Join contacts the seeds (gossip "host:port" addresses) and joins their
// cluster, retrying with capped exponential backoff until at least one seed
// answers or ctx ends. Seeds that are this node's own address are skipped;
// with no other seed, Join returns nil at once (this node starts a cluster).
// On failure the error wraps ErrJoinFailed, ctx's error and the last join
// error. A join attempt in flight when ctx ends is abandoned, not
// interrupted: it may still complete (memberlist bounds it by its
// TCPTimeout).
func (g *Gossip) Join(ctx context.Context, seeds []string) error {
	if g.isClosed() {
		return ErrClosed
	}
	var targets []string
	for _, s := range seeds {
		if s == "" || slices.Contains(targets, s) || g.isSelf(ctx, s) {
			continue
		}
		targets = append(targets, s)
	}
	if len(targets) == 0 {
		return nil
	}
	b, err := backoff.New(joinBackoff)
	if err != nil {
		panic(err) // a constant config
	}
	var lastErr error
	for attempt := 1; ; attempt++ {
		n, err := g.joinOnce(ctx, targets)
		if err == nil && n > 0 {
			g.log.Info("gossip: joined", "contacted", n, "seeds", targets, "attempts", attempt)
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %d attempts to reach %v: %w (last error: %v)",
				ErrJoinFailed, attempt, targets, ctx.Err(), lastErr)
		}
		wait := b.Next()
		g.log.Debug("gossip: join failed, retrying", "seeds", targets, "attempt", attempt, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %d attempts to reach %v: %w (last error: %v)",
				ErrJoinFailed, attempt, targets, ctx.Err(), lastErr)
		case <-g.stop:
			t.Stop()
			return ErrClosed
		case <-t.C:
		}
	}
}

// joinOnce runs one memberlist join, abandoning it if ctx ends first.
func (g *Gossip) joinOnce(ctx context.Context, targets []string) (int, error) {
	type result struct {
		n   int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		if g.isClosed() {
			ch <- result{err: ErrClosed}
			return
		}
		n, err := g.ml.Join(targets)
		ch <- result{n, err}
	}()
	select {
	case r := <-ch:
		return r.n, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// isSelf reports whether seed is this node's own gossip address.
func (g *Gossip) isSelf(ctx context.Context, seed string) bool {
	host, portStr, err := net.SplitHostPort(seed)
	port := g.port
	if err != nil {
		host = seed // memberlist uses our port for a seed without one
	} else if p, err := strconv.Atoi(portStr); err == nil {
		port = p
	}
	if port != g.port {
		return false
	}
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		addrs, err := net.DefaultResolver.LookupIPAddr(lctx, host)
		cancel()
		if err != nil {
			return false // let memberlist report it
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	for _, ip := range ips {
		if ip.Equal(g.advertiseIP) || ip.Equal(g.bindIP) {
			return true
		}
		if g.bindIP.IsUnspecified() && (ip.IsLoopback() || isLocalIP(ip)) {
			return true
		}
	}
	return false
}

// isLocalIP reports whether ip is assigned to a local interface.
func isLocalIP(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// Meta returns what this node currently advertises.
func (g *Gossip) Meta() Meta {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.meta.Clone()
}

// SetMeta changes what this node advertises and waits, up to
// Config.UpdateTimeout, for memberlist to broadcast it. m.NodeID must be the
// node's ID (ErrInvalidNodeID) and m must encode within MaxMetaSize
// (ErrMetaTooLarge); on those errors nothing changes. ErrTimeout means the
// new meta is in effect but was not confirmed broadcast in time; it keeps
// spreading.
func (g *Gossip) SetMeta(m Meta) error {
	if m.NodeID != g.cfg.Meta.NodeID {
		return fmt.Errorf("%w: cannot change node ID %d to %d", ErrInvalidNodeID, g.cfg.Meta.NodeID, m.NodeID)
	}
	g.life.RLock()
	defer g.life.RUnlock()
	if g.closed {
		return ErrClosed
	}
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	g.mu.Lock()
	b, err := encodeMeta(m, g.flagsLocked())
	if err != nil {
		g.mu.Unlock()
		return err
	}
	g.meta, g.metaBytes = m.Clone(), b
	g.mu.Unlock()
	if err := g.ml.UpdateNode(g.cfg.UpdateTimeout); err != nil {
		return fmt.Errorf("%w: meta update: %v", ErrTimeout, err)
	}
	return nil
}

func (g *Gossip) flagsLocked() uint64 {
	if g.leaving {
		return metaFlagLeaving
	}
	return 0
}

// Leave announces that this node leaves the cluster, so that the others list
// it as Left rather than Dead, and waits up to timeout (<= 0:
// DefaultLeaveTimeout) for the announcement to go out. The node keeps
// gossiping until Close. ErrTimeout means the announcement was not
// confirmed in time; the others may then see the node as Dead.
func (g *Gossip) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultLeaveTimeout
	}
	g.life.RLock()
	defer g.life.RUnlock()
	if g.closed {
		return ErrClosed
	}
	deadline := time.Now().Add(timeout)
	g.metaMu.Lock()
	defer g.metaMu.Unlock()

	// Re-advertise the meta flagged as leaving before memberlist's leave
	// message, so that the others can tell a leave from a failure.
	g.mu.Lock()
	first := !g.leaving
	g.leaving = true
	b, err := encodeMeta(g.meta, g.flagsLocked())
	if err == nil {
		g.metaBytes = b
	}
	g.mu.Unlock()
	if err != nil {
		// Cannot happen: the flag fits in the byte the flags always take.
		return err
	}
	if first {
		if err := g.ml.UpdateNode(timeout / 2); err != nil {
			g.log.Warn("gossip: leave intent not confirmed broadcast", "err", err)
		}
	}
	if err := g.ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("%w: leave: %v", ErrTimeout, err)
	}
	g.log.Info("gossip: left the cluster", "node", g.cfg.Meta.NodeID)
	kick(g.changeKick)
	return nil
}

// Close stops gossiping at once, without announcing a leave (call Leave
// first for a graceful departure): the others detect the failure. Close is
// idempotent; queued leader updates are dropped.
func (g *Gossip) Close() error {
	g.once.Do(func() {
		g.life.Lock()
		g.closed = true
		g.life.Unlock()
		close(g.stop)
		if err := g.ml.Shutdown(); err != nil {
			g.closeErr = fmt.Errorf("gossip: shutdown: %w", err)
		}
		g.wg.Wait()
		g.log.Info("gossip: closed", "node", g.cfg.Meta.NodeID)
	})
	return g.closeErr
}

func (g *Gossip) isClosed() bool {
	g.life.RLock()
	defer g.life.RUnlock()
	return g.closed
}

// changeLoop calls OnChange, coalescing bursts of changes.
func (g *Gossip) changeLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case <-g.changeKick:
		}
		if g.cfg.OnChange != nil {
			g.cfg.OnChange()
		}
	}
}

// logBridge is memberlist's log output: it forwards memberlist's
// "[LEVEL] memberlist: message" lines to slog and picks up the suspicions
// that memberlist reports nowhere else.
type logBridge struct{ g *Gossip }

var _ io.Writer = (*logBridge)(nil)

func (w *logBridge) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLog(string(p))
	if name, ok := suspectedName(msg); ok {
		w.g.suspect(name)
	}
	if w.g.log.Enabled(context.Background(), level) {
		w.g.log.Log(context.Background(), level, msg, "component", "memberlist", "node", w.g.cfg.Meta.NodeID)
	}
	return len(p), nil
}
