package router

import (
	"flag"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var seedFlag = flag.Uint64("seed", 0, "seed for the random tests (0: derived from the clock)")

// TestMain checks that no test leaves a goroutine behind; the package starts
// none, so any leak is a test's own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newRand returns a seeded generator and logs the seed, so that a failure
// can be replayed with -seed.
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
