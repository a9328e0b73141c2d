package engine

import (
	"context"
	"fmt"
	"log/slog"
)

// raftLogger bridges etcd raft's logger to slog. raft logs every election
// step and conf change at Info: with thousands of shards that is a flood,
// so its Info goes to slog's Debug; its warnings and errors keep their
// level. Formatting is skipped when the level is off. Fatal and Panic log
// at Error and panic (raft expects them not to return). Each replica's
// logger names its shard: raft's own lines name only the replica ID.
type raftLogger struct {
	l     *slog.Logger
	shard uint64
}

func (r raftLogger) log(level slog.Level, msg func() string) {
	if r.l.Enabled(context.Background(), level) {
		r.l.Log(context.Background(), level, msg(), "shard", r.shard, "from", "raft")
	}
}

func (r raftLogger) Debug(v ...interface{}) {
	r.log(slog.LevelDebug, func() string { return fmt.Sprint(v...) })
}
func (r raftLogger) Debugf(f string, v ...interface{}) {
	r.log(slog.LevelDebug, func() string { return fmt.Sprintf(f, v...) })
}
func (r raftLogger) Info(v ...interface{}) {
	r.log(slog.LevelDebug, func() string { return fmt.Sprint(v...) })
}
func (r raftLogger) Infof(f string, v ...interface{}) {
	r.log(slog.LevelDebug, func() string { return fmt.Sprintf(f, v...) })
}
func (r raftLogger) Warning(v ...interface{}) {
	r.log(slog.LevelWarn, func() string { return fmt.Sprint(v...) })
}
func (r raftLogger) Warningf(f string, v ...interface{}) {
	r.log(slog.LevelWarn, func() string { return fmt.Sprintf(f, v...) })
}
func (r raftLogger) Error(v ...interface{}) {
	r.log(slog.LevelError, func() string { return fmt.Sprint(v...) })
}
func (r raftLogger) Errorf(f string, v ...interface{}) {
	r.log(slog.LevelError, func() string { return fmt.Sprintf(f, v...) })
}
func (r raftLogger) Fatal(v ...interface{}) { r.fail(fmt.Sprint(v...)) }
func (r raftLogger) Fatalf(f string, v ...interface{}) {
	r.fail(fmt.Sprintf(f, v...))
}
func (r raftLogger) Panic(v ...interface{}) { r.fail(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...interface{}) {
	r.fail(fmt.Sprintf(f, v...))
}

func (r raftLogger) fail(msg string) {
	r.l.Error(msg, "shard", r.shard, "from", "raft")
	panic("raft: " + msg)
}
