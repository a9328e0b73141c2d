package engine

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestRaftLoggerBridge: raft's log lines reach slog (Info demoted to Debug,
// so that elections of thousands of shards do not flood an Info log), each
// naming its shard, and Panic still panics.
func TestRaftLoggerBridge(t *testing.T) {
	var buf bytes.Buffer
	r := raftLogger{l: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), shard: 7}
	r.Infof("became leader at term %d", 5)
	r.Warningf("dropping %s", "x")
	r.Errorf("bad %d", 1)
	out := buf.String()
	if strings.Contains(out, "became leader") || !strings.Contains(out, "level=WARN msg=\"dropping x\" shard=7 from=raft") || !strings.Contains(out, "level=ERROR msg=\"bad 1\"") {
		t.Fatalf("log:\n%s", out)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Panicf returned")
		}
		if !strings.Contains(buf.String(), "broken") {
			t.Fatalf("the panic was not logged:\n%s", buf.String())
		}
	}()
	r.Panicf("broken %d", 2)
}
