package memtransport

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/flotilla-db/flotilla/engine"
)

// countHandler counts delivered messages; nothing else.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) HandleBatch(b *engine.Batch) { h.n.Add(int64(len(b.Messages))) }
func (h *countHandler) HandleSnapshot(context.Context, engine.SnapshotHeader, engine.SnapshotBody) error {
	return nil
}
func (h *countHandler) PeerUnreachable(uint64) {}

// BenchmarkSend measures Sends of 16 messages between 4 nodes, every node
// sending to every other, until all are delivered.
func BenchmarkSend(b *testing.B) {
	const nodes, per = 4, 16
	net := NewNetwork(Config{QueueLen: 1 << 16})
	defer net.Close()
	eps := make([]*Endpoint, nodes)
	hs := make([]*countHandler, nodes)
	for i := range eps {
		eps[i], hs[i] = net.Endpoint(uint64(i+1)), &countHandler{}
		if err := eps[i].Start(hs[i]); err != nil {
			b.Fatal(err)
		}
	}
	batch := msgs(1, 2, 0, per)
	var next atomic.Uint64
	var sent atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1)
		from := eps[i%nodes]
		for pb.Next() {
			i++
			to := uint64(i%nodes) + 1
			if to == from.nodeID {
				continue
			}
			m := append([]engine.Message(nil), batch...)
			if err := from.Send(to, m); err == nil {
				sent.Add(per)
			} else if !errors.Is(err, engine.ErrQueueFull) {
				b.Error(err)
			}
		}
	})
	for {
		var got int64
		for _, h := range hs {
			got += h.n.Load()
		}
		if got == sent.Load() {
			break
		}
		runtime.Gosched()
	}
	b.ReportMetric(float64(sent.Load())/b.Elapsed().Seconds(), "msgs/s")
}
