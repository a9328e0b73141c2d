package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"
)

// Config configures a Transport. A zero field means its default (see
// DefaultConfig), except NodeID and ClusterID, which are required, and
// ListenAddr/Listener, one of which is. New copies the Config.
type Config struct {
	// NodeID is this node. Frames and snapshots addressed to another node are
	// refused. Required.
	NodeID uint64
	// ClusterID is stamped on everything this node sends; anything received
	// with another cluster ID is refused. Required.
	ClusterID uint64

	// ListenAddr is the address the gRPC server listens on ("host:port";
	// port 0 picks a free one, see Transport.Addr). Ignored if Listener is set.
	ListenAddr string
	// Listener, if set, is the listener the gRPC server serves on. The
	// Transport owns it once New succeeds, and closes it in Close.
	Listener net.Listener

	// Resolver returns the address of a node that has not been added with
	// AddPeer. It is called by Send the first time a node is addressed and
	// by the node's sender before each connection attempt, so it must be
	// fast and must not block (a map lookup, not a network round trip). It
	// returns an error for a node it does not know. Optional: without it,
	// only nodes added with AddPeer are reachable.
	Resolver func(nodeID uint64) (addr string, err error)

	// QueueLen bounds, in messages, the send queue of each peer. A Send that
	// does not fit fails with engine.ErrQueueFull. Default: 4096.
	QueueLen int
	// QueueBytes bounds, in bytes of encoded raft messages, the send queue of
	// each peer, the same way. Default: 64 MiB.
	QueueBytes int64
	// MaxFrameBytes bounds the encoded size of one frame, in bytes, in both
	// directions: a sender splits what it has queued into frames of at most
	// this size, Send refuses a message that cannot fit in a frame alone
	// (*SizeError), and the receiver refuses a larger frame. Default: 16 MiB.
	MaxFrameBytes int
	// MaxSnapshotChunkBytes bounds one chunk of a snapshot body, in bytes, in
	// both directions: SendSnapshot fails with *SizeError on a larger chunk
	// and the receiver refuses one. Default: 4 MiB.
	MaxSnapshotChunkBytes int
	// SnapshotRateBytesPerSec limits the outgoing snapshot streams of this
	// node together, in bytes of chunks per second. Default: 0, unlimited.
	SnapshotRateBytesPerSec int64

	// DialTimeout bounds one connection attempt to a peer (TCP and TLS
	// handshakes). Default: 5s.
	DialTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between two connection
	// attempts to a peer: the wait starts at BackoffMin after the first
	// failure and doubles with every further failure up to BackoffMax, each
	// wait drawn with ±20% jitter. Defaults: 100ms and 5s.
	BackoffMin, BackoffMax time.Duration
	// KeepaliveInterval is how long a connection may be idle before the
	// client pings the peer; KeepaliveTimeout how long it waits for the
	// answer before it declares the connection dead. Defaults: 10s and 5s.
	KeepaliveInterval, KeepaliveTimeout time.Duration

	// TLS, if set, secures every connection in both directions with this
	// configuration: as a server with its Certificates and ClientAuth, as a
	// client with its Certificates and RootCAs. LoadMutualTLS builds one for
	// mutual TLS. Default: nil, plaintext.
	TLS *tls.Config

	// IsRemoved reports whether a node has been removed from the cluster:
	// its frames and snapshots are refused. It is called for every frame
	// received, concurrently, so it must be fast and safe for concurrent use.
	// Optional.
	IsRemoved func(nodeID uint64) bool

	// Logger receives refusals and connection failures (rate-limited).
	// Default: slog.Default().
	Logger *slog.Logger
}

// Default values of Config fields.
const (
	DefaultQueueLen              = 4096
	DefaultQueueBytes            = 64 << 20
	DefaultMaxFrameBytes         = 16 << 20
	DefaultMaxSnapshotChunkBytes = 4 << 20
	DefaultDialTimeout           = 5 * time.Second
	DefaultBackoffMin            = 100 * time.Millisecond
	DefaultBackoffMax            = 5 * time.Second
	DefaultKeepaliveInterval     = 10 * time.Second
	DefaultKeepaliveTimeout      = 5 * time.Second

	// minFrameBytes is the smallest MaxFrameBytes and MaxSnapshotChunkBytes
	// accepted.
	minFrameBytes = 1 << 10
)

// DefaultConfig returns a Config with every tunable at its default. NodeID,
// ClusterID and ListenAddr (or Listener) remain to be set.
func DefaultConfig() Config {
	return Config{
		QueueLen:              DefaultQueueLen,
		QueueBytes:            DefaultQueueBytes,
		MaxFrameBytes:         DefaultMaxFrameBytes,
		MaxSnapshotChunkBytes: DefaultMaxSnapshotChunkBytes,
		DialTimeout:           DefaultDialTimeout,
		BackoffMin:            DefaultBackoffMin,
		BackoffMax:            DefaultBackoffMax,
		KeepaliveInterval:     DefaultKeepaliveInterval,
		KeepaliveTimeout:      DefaultKeepaliveTimeout,
	}
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setInt(&c.QueueLen, d.QueueLen)
	if c.QueueBytes == 0 {
		c.QueueBytes = d.QueueBytes
	}
	setInt(&c.MaxFrameBytes, d.MaxFrameBytes)
	setInt(&c.MaxSnapshotChunkBytes, d.MaxSnapshotChunkBytes)
	setDur(&c.DialTimeout, d.DialTimeout)
	setDur(&c.BackoffMin, d.BackoffMin)
	setDur(&c.BackoffMax, d.BackoffMax)
	setDur(&c.KeepaliveInterval, d.KeepaliveInterval)
	setDur(&c.KeepaliveTimeout, d.KeepaliveTimeout)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports whether c is usable, zero fields standing for their
// defaults. It does not modify c.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("transport: "+format, args...))
	}
	if c.NodeID == 0 {
		add("NodeID is required")
	}
	if c.ClusterID == 0 {
		add("ClusterID is required")
	}
	if c.ListenAddr == "" && c.Listener == nil {
		add("ListenAddr or Listener is required")
	}
	if c.QueueLen < 0 {
		add("QueueLen %d is negative", c.QueueLen)
	}
	if c.QueueBytes < 0 {
		add("QueueBytes %d is negative", c.QueueBytes)
	}
	if c.MaxFrameBytes < minFrameBytes {
		add("MaxFrameBytes %d is below %d", c.MaxFrameBytes, minFrameBytes)
	}
	if c.MaxSnapshotChunkBytes < minFrameBytes {
		add("MaxSnapshotChunkBytes %d is below %d", c.MaxSnapshotChunkBytes, minFrameBytes)
	}
	if c.QueueBytes > 0 && c.QueueBytes < int64(c.MaxFrameBytes) {
		add("QueueBytes %d is below MaxFrameBytes %d", c.QueueBytes, c.MaxFrameBytes)
	}
	if c.SnapshotRateBytesPerSec < 0 {
		add("SnapshotRateBytesPerSec %d is negative", c.SnapshotRateBytesPerSec)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DialTimeout", c.DialTimeout}, {"BackoffMin", c.BackoffMin}, {"BackoffMax", c.BackoffMax},
		{"KeepaliveInterval", c.KeepaliveInterval}, {"KeepaliveTimeout", c.KeepaliveTimeout},
	} {
		if d.v < 0 {
			add("%s %v is negative", d.name, d.v)
		}
	}
	if c.BackoffMax < c.BackoffMin {
		add("BackoffMax %v is below BackoffMin %v", c.BackoffMax, c.BackoffMin)
	}
	return errors.Join(errs...)
}

// LoadMutualTLS builds a Config.TLS for mutual TLS from PEM files: this
// node's certificate and key, and the CA that signs every node's certificate.
// Each side presents its certificate and verifies the other's against the CA.
// A node's certificate must name the address its peers dial (an IP SAN for an
// IP address, a DNS SAN for a host name) and allow both server and client
// authentication.
func LoadMutualTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("transport: load certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("transport: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("transport: no certificate in CA file %s", caFile)
	}
	return MutualTLS(cert, pool), nil
}

// MutualTLS is LoadMutualTLS from a certificate and a CA pool in memory.
func MutualTLS(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}
