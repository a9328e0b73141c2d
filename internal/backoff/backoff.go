// Package backoff is the retry policy of the module's background loops:
// capped exponential backoff with jitter, and Retry, which runs a function
// until it succeeds, returns a permanent error or its context ends.
//
// A Backoff is not safe for concurrent use: each loop owns its own. Retry
// blocks its caller only; it starts no goroutine.
package backoff

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Config shapes the waits between attempts. Zero fields take the value of
// DefaultConfig.
type Config struct {
	// Initial is the wait after the first failure; default 50ms.
	Initial time.Duration
	// Max caps every wait; default 1s.
	Max time.Duration
	// Multiplier grows the wait after each further failure; default 2.
	Multiplier float64
	// Jitter spreads each wait uniformly over ±Jitter of it, in [0, 1];
	// default 0.2. NoJitter turns it off (tests).
	Jitter   float64
	NoJitter bool
}

// DefaultConfig returns 50ms doubling up to 1s, ±20%.
func DefaultConfig() Config {
	return Config{Initial: 50 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.2}
}

// Validate checks c without changing it.
func (c Config) Validate() error {
	var errs []error
	if c.Initial < 0 || c.Max < 0 {
		errs = append(errs, fmt.Errorf("Initial %v and Max %v must not be negative", c.Initial, c.Max))
	}
	if c.Initial > 0 && c.Max > 0 && c.Initial > c.Max {
		errs = append(errs, fmt.Errorf("Initial %v > Max %v", c.Initial, c.Max))
	}
	if c.Multiplier != 0 && c.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("Multiplier %v < 1", c.Multiplier))
	}
	if c.Jitter < 0 || c.Jitter > 1 {
		errs = append(errs, fmt.Errorf("Jitter %v not in [0, 1]", c.Jitter))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("backoff: invalid config: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Initial == 0 {
		c.Initial = d.Initial
	}
	if c.Max == 0 {
		c.Max = max(d.Max, c.Initial)
	}
	if c.Multiplier == 0 {
		c.Multiplier = d.Multiplier
	}
	if c.Jitter == 0 {
		c.Jitter = d.Jitter
	}
	if c.NoJitter {
		c.Jitter = 0
	}
	return c
}

// Backoff yields the waits of one retry loop.
type Backoff struct {
	cfg  Config
	next time.Duration // the wait before jitter after the next failure
}

// New returns a Backoff; cfg is copied.
func New(cfg Config) (*Backoff, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Backoff{cfg: cfg.withDefaults()}
	b.Reset()
	return b, nil
}

// Reset starts over from Initial, after a success.
func (b *Backoff) Reset() { b.next = b.cfg.Initial }

// Next returns the wait after one more failure.
func (b *Backoff) Next() time.Duration {
	d := b.next
	b.next = min(time.Duration(float64(b.next)*b.cfg.Multiplier), b.cfg.Max)
	if b.cfg.Jitter > 0 {
		d = time.Duration(float64(d) * (1 - b.cfg.Jitter + 2*b.cfg.Jitter*rand.Float64()))
	}
	return d
}

// Wait waits out Next, or returns ctx's error (wrapped) if ctx ends first.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("backoff: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// permanentError marks an error that Retry must not retry.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent wraps err so that Retry returns it (unwrapped) at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// Retry runs fn until it returns nil, returns an error wrapped by Permanent
// (Retry returns the error inside), or ctx ends (Retry returns ctx's error
// and the last error of fn, both matchable with errors.Is), waiting as cfg
// says between attempts.
func Retry(ctx context.Context, cfg Config, fn func(ctx context.Context) error) error {
	b, err := New(cfg)
	if err != nil {
		return err
	}
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		var p permanentError
		if errors.As(err, &p) {
			return p.err
		}
		if werr := b.Wait(ctx); werr != nil {
			return fmt.Errorf("%w; last error: %w", werr, err)
		}
	}
}
