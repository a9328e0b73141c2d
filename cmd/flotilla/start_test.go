package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-db/flotilla/engine"
)

// TestStartRefusesBadReadMode: lease mode without CheckQuorum, an unknown
// read mode and a drift that leaves no lease are refused before the node
// creates anything.
func TestStartRefusesBadReadMode(t *testing.T) {
	for _, tc := range []struct {
		args []string
		is   error
	}{
		{[]string{"--read-mode", "lease", "--check-quorum=false"}, engine.ErrLeaseNeedsCheckQuorum},
		{[]string{"--read-mode", "fast"}, engine.ErrBadRequest},
		{[]string{"--read-mode", "lease", "--max-clock-drift", "5s"}, nil},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		err := start(append([]string{"--data-dir", dir}, tc.args...))
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Fatalf("start %v: %v, want %v", tc.args, err, tc.is)
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Fatalf("start %v created %s: %v", tc.args, dir, serr)
		}
	}
}
