package engine_test

import (
	"errors"
	"testing"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
)

// TestHealthy: a running engine's workers all answer; a closed engine's do
// not.
func TestHealthy(t *testing.T) {
	c, ctx, _, _ := twoShards(t, testcluster.Config{})
	e := c.Engine(1)
	if err := e.Healthy(ctx); err != nil {
		t.Fatalf("a running engine: %v", err)
	}
	c.Crash(1)
	if err := e.Healthy(ctx); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("a closed engine: %v, want ErrClosed", err)
	}
}
