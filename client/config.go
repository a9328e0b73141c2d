package client

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
)

// Config configures a Client. New copies it; a zero field takes its default
// from DefaultConfig.
type Config struct {
	// Endpoints are client addresses ("host:port") of some of the cluster's
	// nodes; New asks them for the routes, and they stay fallbacks when no
	// better node is known. At least one is required.
	Endpoints []string
	// DialOptions are the gRPC options of every connection. Nil means
	// plaintext connections; set grpc.WithTransportCredentials for TLS.
	DialOptions []grpc.DialOption
	// MaxKeyBytes and MaxValueBytes bound keys and values, checked before any
	// round trip; the server's limits apply too when they are lower.
	// Defaults 64 KiB and 1 MiB.
	MaxKeyBytes   int
	MaxValueBytes int
	// MaxMessageBytes bounds a message received from a node. Default 64 MiB.
	MaxMessageBytes int
	// BackoffMin and BackoffMax bound the wait before a retry that has no
	// leader hint to follow: it starts at BackoffMin and doubles with each
	// further retry up to BackoffMax, each wait drawn in [d/2, d].
	// Defaults 5ms and 1s.
	BackoffMin, BackoffMax time.Duration
	// MaxRedirects bounds the retries in a row that follow a leader hint at
	// once; after them, the client backs off (stale hints may bounce between
	// two nodes). Default 4.
	MaxRedirects int
	// RefreshInterval is the least time between two route refreshes caused
	// by errors. Default 20ms.
	RefreshInterval time.Duration
	// RoutesTimeout bounds one Routes call to one node. Default 2s.
	RoutesTimeout time.Duration
	// DisableSessions sends writes without the client's session: a retried
	// write may then apply twice, so a compare-and-swap is never retried
	// after an unknown outcome. By default every write carries the session
	// and applies exactly once.
	DisableSessions bool
}

// DefaultConfig returns the defaults, with no endpoint.
func DefaultConfig() Config {
	return Config{
		MaxKeyBytes:     64 << 10,
		MaxValueBytes:   1 << 20,
		MaxMessageBytes: 64 << 20,
		BackoffMin:      5 * time.Millisecond,
		BackoffMax:      time.Second,
		MaxRedirects:    4,
		RefreshInterval: 20 * time.Millisecond,
		RoutesTimeout:   2 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, f := range []struct{ p, d *int }{
		{&c.MaxKeyBytes, &d.MaxKeyBytes}, {&c.MaxValueBytes, &d.MaxValueBytes},
		{&c.MaxMessageBytes, &d.MaxMessageBytes}, {&c.MaxRedirects, &d.MaxRedirects},
	} {
		if *f.p == 0 {
			*f.p = *f.d
		}
	}
	for _, f := range []struct{ p, d *time.Duration }{
		{&c.BackoffMin, &d.BackoffMin}, {&c.BackoffMax, &d.BackoffMax},
		{&c.RefreshInterval, &d.RefreshInterval}, {&c.RoutesTimeout, &d.RoutesTimeout},
	} {
		if *f.p == 0 {
			*f.p = *f.d
		}
	}
	return c
}

// Validate checks c without changing it. Its errors match ErrBadConfig.
func (c Config) Validate() error {
	var errs []error
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("no endpoint"))
	}
	for i, ep := range c.Endpoints {
		if ep == "" {
			errs = append(errs, fmt.Errorf("endpoint %d is empty", i))
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxKeyBytes", c.MaxKeyBytes}, {"MaxValueBytes", c.MaxValueBytes},
		{"MaxMessageBytes", c.MaxMessageBytes}, {"MaxRedirects", c.MaxRedirects},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d < 0", f.name, f.v))
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"BackoffMin", c.BackoffMin}, {"BackoffMax", c.BackoffMax},
		{"RefreshInterval", c.RefreshInterval}, {"RoutesTimeout", c.RoutesTimeout},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v < 0", f.name, f.v))
		}
	}
	if d := c.withDefaults(); d.BackoffMin > d.BackoffMax {
		errs = append(errs, fmt.Errorf("BackoffMin %v > BackoffMax %v", d.BackoffMin, d.BackoffMax))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return nil
}
