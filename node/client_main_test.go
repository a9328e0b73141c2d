package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: clusters, gRPC
// servers, connections and leader feeds are all stopped by the tests'
// cleanups.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
