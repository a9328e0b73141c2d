package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: clients, gRPC
// servers and clusters are all closed by the tests' cleanups.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
