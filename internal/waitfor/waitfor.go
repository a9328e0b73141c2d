// Package waitfor lets a test wait for a condition by polling it: tests
// wait on conditions, never sleep. It holds no state; Until blocks the
// calling test goroutine only.
package waitfor

import (
	"context"
	"testing"
	"time"
)

// Interval is how often Until polls.
const Interval = 20 * time.Millisecond

// Until calls fn every Interval until it returns nil. When ctx ends first,
// it fails t with what it waited for and fn's last error.
func Until(t testing.TB, ctx context.Context, what string, fn func() error) {
	t.Helper()
	tk := time.NewTicker(Interval)
	defer tk.Stop()
	for {
		err := fn()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, err)
		case <-tk.C:
		}
	}
}
