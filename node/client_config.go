package node

import (
	"errors"
	"fmt"
	"time"
)

// ClientServiceConfig configures a ClientService. NewClientService copies
// it; a zero field takes its default from DefaultClientServiceConfig.
type ClientServiceConfig struct {
	// MaxKeyBytes bounds a key, in bytes; a longer one is refused with
	// InvalidArgument (KEY_TOO_LARGE). It should not exceed the router's
	// MaxKeySize. Default 64 KiB.
	MaxKeyBytes int
	// MaxValueBytes bounds a value (and a compare-and-swap's expected value),
	// in bytes; a longer one is refused with InvalidArgument
	// (VALUE_TOO_LARGE). A command whose encoding exceeds the engine's
	// MaxProposalBytes is refused too (TOO_LARGE). Default 1 MiB.
	MaxValueBytes int
	// MaxBatchOps bounds the operations of one Batch. Default 1,000.
	MaxBatchOps int
	// BatchConcurrency bounds the engine calls one Batch has in flight.
	// Default 64.
	BatchConcurrency int
	// DefaultScanLimit is the number of pairs a Scan without a limit
	// returns; MaxScanLimit caps a Scan's limit. Defaults 1,000 and 10,000.
	DefaultScanLimit int
	MaxScanLimit     int
	// MaxScanBytes bounds the keys and values of one Scan reply, in bytes: the
	// reply stops after the pair that crosses it (and always holds at least
	// one pair), with a cursor to resume from. Default 4 MiB.
	MaxScanBytes int
	// MaxRequestTimeout bounds the time one request may take, whatever the
	// caller's deadline, so that no handler waits forever. Default 30s.
	MaxRequestTimeout time.Duration
}

// DefaultClientServiceConfig returns the defaults.
func DefaultClientServiceConfig() ClientServiceConfig {
	return ClientServiceConfig{
		MaxKeyBytes:       64 << 10,
		MaxValueBytes:     1 << 20,
		MaxBatchOps:       1000,
		BatchConcurrency:  64,
		DefaultScanLimit:  1000,
		MaxScanLimit:      10000,
		MaxScanBytes:      4 << 20,
		MaxRequestTimeout: 30 * time.Second,
	}
}

// withDefaults returns c with its zero fields set to the defaults.
func (c ClientServiceConfig) withDefaults() ClientServiceConfig {
	d := DefaultClientServiceConfig()
	for _, f := range []struct{ p, d *int }{
		{&c.MaxKeyBytes, &d.MaxKeyBytes}, {&c.MaxValueBytes, &d.MaxValueBytes},
		{&c.MaxBatchOps, &d.MaxBatchOps}, {&c.BatchConcurrency, &d.BatchConcurrency},
		{&c.DefaultScanLimit, &d.DefaultScanLimit}, {&c.MaxScanLimit, &d.MaxScanLimit},
		{&c.MaxScanBytes, &d.MaxScanBytes},
	} {
		if *f.p == 0 {
			*f.p = *f.d
		}
	}
	if c.MaxRequestTimeout == 0 {
		c.MaxRequestTimeout = d.MaxRequestTimeout
	}
	return c
}

// Validate checks c without changing it: no field may be negative, and the
// default scan limit may not exceed the maximum.
func (c ClientServiceConfig) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxKeyBytes", c.MaxKeyBytes}, {"MaxValueBytes", c.MaxValueBytes},
		{"MaxBatchOps", c.MaxBatchOps}, {"BatchConcurrency", c.BatchConcurrency},
		{"DefaultScanLimit", c.DefaultScanLimit}, {"MaxScanLimit", c.MaxScanLimit},
		{"MaxScanBytes", c.MaxScanBytes},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d < 0", f.name, f.v))
		}
	}
	if c.MaxRequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("MaxRequestTimeout %v < 0", c.MaxRequestTimeout))
	}
	if d := c.withDefaults(); d.DefaultScanLimit > d.MaxScanLimit {
		errs = append(errs, fmt.Errorf("DefaultScanLimit %d > MaxScanLimit %d", d.DefaultScanLimit, d.MaxScanLimit))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: invalid client service config: %w", err)
	}
	return nil
}
