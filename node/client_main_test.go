package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: clusters, gRPC
// servers, connections and leader feeds are all stopped by the tests'
// cleanups.
func TestMain(m *testing.M) {
	// memberlist's Shutdown does not wait for a probe in flight, which
	// ends on its own within a probe interval (1 s).
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}
