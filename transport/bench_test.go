package transport

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/mem"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
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

// BenchmarkFrameCodec measures encoding a frame (the sender's side, up to
// the bytes gRPC writes) and decoding one (from the bytes gRPC read to the
// Batch for the handler), with the frame codec (codec=direct) and the way
// the transport did before it (codec=proto: gRPC's proto codec on a
// transportpb.Frame whose raft messages were encoded separately, and
// decodeFrame decoding them again). Frames carry 1, 16 or 128 MsgApps of one
// 30-byte entry each. One op is one message: ns/op, B/op and allocs/op are
// per message.
func BenchmarkFrameCodec(b *testing.B) {
	for _, dir := range []string{"send", "recv"} {
		for _, n := range []int{1, 16, 128} {
			for _, codec := range []string{"proto", "direct"} {
				b.Run(fmt.Sprintf("dir=%s/msgs=%d/codec=%s", dir, n, codec), func(b *testing.B) {
					benchFrameCodec(b, dir, codec, n)
				})
			}
		}
	}
}

func benchFrameCodec(b *testing.B, dir, codec string, n int) {
	ms := make([]engine.Message, n)
	for i := range ms {
		ms[i] = engine.Message{ShardID: uint64(i + 1), Msg: raftpb.Message{
			Type: raftpb.MsgApp, From: 3, To: 1, Term: 3, LogTerm: 3, Index: 1000, Commit: 999,
			Entries: []raftpb.Entry{{Term: 3, Index: 1001, Data: make([]byte, 30)}}}}
	}
	wire := encodeFrame(b, testCluster, 3, 1, ms)
	data := mem.BufferSlice{mem.SliceBuffer(wire)} // as gRPC read it
	var frame func()
	switch dir + "/" + codec {
	case "send/proto":
		s := &protoSender{}
		frame = func() {
			out, err := s.marshal(testCluster, 3, 1, ms)
			if err != nil {
				b.Fatal(err)
			}
			out.Free() // as gRPC does once written
		}
	case "send/direct":
		w := &frameWriter{clusterID: testCluster, from: 3, to: 1, msgs: ms, sizes: make([]int, n)}
		frame = func() {
			// What the sender computes: the sizes at Send, the frame's in send.
			w.size = frameHeaderSize(testCluster, 3, 1)
			for i := range ms {
				w.sizes[i] = ms[i].Msg.Size()
				w.size += frameEntrySize(ms[i].ShardID, w.sizes[i])
			}
			out, err := frameCodec{}.Marshal(w)
			if err != nil {
				b.Fatal(err)
			}
			out.Free()
		}
	case "recv/proto":
		f := new(transportpb.Frame) // one per stream
		frame = func() {
			if err := protoCodec.Unmarshal(data, f); err != nil {
				b.Fatal(err)
			}
			batch, err := fuzzIdentity.decodeFrame(f)
			if err != nil || len(batch.Messages) != n || frameSize(f) != len(wire) {
				b.Fatal(err)
			}
		}
	case "recv/direct":
		r := &frameReader{id: fuzzIdentity} // one per stream
		frame = func() {
			if err := (frameCodec{}).Unmarshal(data, r); err != nil {
				b.Fatal(err)
			}
			batch, err := r.batch()
			if err != nil || len(batch.Messages) != n || r.size != len(wire) {
				b.Fatal(err)
			}
		}
	}
	frame() // warm up the buffers kept between frames
	b.ReportAllocs()
	b.SetBytes(int64(len(wire) / n))
	b.ResetTimer()
	for i := 0; i < b.N; i += n {
		frame()
	}
}

// protoSender is the sender's encoding before the frame codec: each raft
// message encoded into the sender's buffer, referenced by a reused
// transportpb.Frame, which gRPC's proto codec then encodes.
type protoSender struct {
	frame   transportpb.Frame
	entries []*transportpb.ShardMessage
	buf     []byte
	sizes   []int
}

func (s *protoSender) marshal(clusterID, from, to uint64, msgs []engine.Message) (mem.BufferSlice, error) {
	sizes := s.sizes[:0] // computed by Send, in the queue
	payload := 0
	for i := range msgs {
		sizes = append(sizes, msgs[i].Msg.Size())
		payload += sizes[i]
	}
	s.sizes = sizes
	s.frame.ClusterId, s.frame.From, s.frame.To = clusterID, from, to
	if cap(s.buf) < payload {
		s.buf = make([]byte, payload)
	}
	buf := s.buf[:payload]
	for len(s.entries) < len(msgs) {
		s.entries = append(s.entries, new(transportpb.ShardMessage))
	}
	off := 0
	for i := range msgs {
		n := sizes[i]
		if _, err := msgs[i].Msg.MarshalToSizedBuffer(buf[off : off+n]); err != nil {
			return nil, err
		}
		e := s.entries[i]
		e.ShardId, e.RaftMessage = msgs[i].ShardID, buf[off:off+n:off+n]
		off += n
	}
	s.frame.Messages = s.entries[:len(msgs)]
	defer func() {
		for _, e := range s.frame.Messages {
			e.RaftMessage = nil
		}
		s.frame.Messages = nil
	}()
	return protoCodec.Marshal(&s.frame)
}
