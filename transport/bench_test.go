package transport

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-db/flotilla/engine"
)

// countHandler counts delivered messages; nothing else.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) HandleBatch(b *engine.Batch) { h.n.Add(int64(len(b.Messages))) }
func (h *countHandler) HandleSnapshot(context.Context, engine.SnapshotHeader, engine.SnapshotBody) error {
	return nil
}
func (h *countHandler) PeerUnreachable(uint64) {}

// BenchmarkSendReceive measures Send -> HandleBatch between two transports on
// loopback: messages of 64 bytes (encoded), sent 16 per Send, until every
// one has been handled, with the default queue and a deep one.
func BenchmarkSendReceive(b *testing.B) {
	for _, queueLen := range []int{DefaultQueueLen, 1 << 16} {
		b.Run(fmt.Sprintf("queue=%d", queueLen), func(b *testing.B) { benchSendReceive(b, queueLen) })
	}
}

func benchSendReceive(b *testing.B, queueLen int) {
	const per = 16
	cfgA, cfgB := testConfig(1, nil), testConfig(2, nil)
	cfgA.QueueLen = queueLen
	a, err := New(cfgA)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	bt, err := New(cfgB)
	if err != nil {
		b.Fatal(err)
	}
	defer bt.Close()
	ha, hb := &countHandler{}, &countHandler{}
	if err := a.Start(ha); err != nil {
		b.Fatal(err)
	}
	if err := bt.Start(hb); err != nil {
		b.Fatal(err)
	}
	link(a, bt)

	m := raftpb.Message{Type: raftpb.MsgApp, From: 1, To: 2, Term: 3, LogTerm: 3, Index: 1000, Commit: 999,
		Entries: []raftpb.Entry{{Term: 3, Index: 1001, Data: make([]byte, 31)}}}
	size := m.Size()
	if size != 64 {
		b.Fatalf("message of %d bytes", size)
	}
	batch := make([]engine.Message, per)
	for i := range batch {
		batch[i] = engine.Message{ShardID: uint64(i + 1), Msg: m}
	}
	// Warm up the connection.
	if err := a.Send(2, batch[:1]); err != nil {
		b.Fatal(err)
	}
	for hb.n.Load() != 1 {
		runtime.Gosched()
	}
	hb.n.Store(0)
	frames0 := a.Stats()[2].FramesSent

	b.ReportAllocs()
	b.ResetTimer()
	var sent int64
	for sent < int64(b.N) {
		n := min(per, int64(b.N)-sent)
		msgs := make([]engine.Message, n)
		copy(msgs, batch)
		for {
			err := a.Send(2, msgs)
			if err == nil {
				break
			}
			if !errors.Is(err, engine.ErrQueueFull) {
				b.Fatal(err)
			}
			runtime.Gosched()
		}
		sent += n
	}
	for hb.n.Load() != sent {
		runtime.Gosched()
	}
	b.StopTimer()
	frames := a.Stats()[2].FramesSent - frames0
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(sent)/secs, "msgs/s")
	b.ReportMetric(float64(frames)/secs, "frames/s")
	b.ReportMetric(float64(sent)/float64(max(frames, 1)), "msgs/frame")
	b.ReportMetric(float64(size), "B/msg")
}
