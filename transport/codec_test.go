package transport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

// encodeFrame encodes ms as a frame the way a sender does, with frameCodec.
func encodeFrame(t testing.TB, c, from, to uint64, ms []engine.Message) []byte {
	t.Helper()
	w := &frameWriter{clusterID: c, from: from, to: to, msgs: ms, sizes: make([]int, len(ms))}
	w.size = frameHeaderSize(c, from, to)
	for i := range ms {
		w.sizes[i] = ms[i].Msg.Size()
		w.size += frameEntrySize(ms[i].ShardID, w.sizes[i])
	}
	out, err := frameCodec{}.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Free()
	wire := out.Materialize()
	if len(wire) != w.size {
		t.Fatalf("encoded %d bytes, computed %d", len(wire), w.size)
	}
	return wire
}

// decodeBoth decodes data with r (through frameCodec, data split over two
// buffers, if split) and with the proto path (proto.Unmarshal, then
// decodeFrame), fails t unless they agree, and returns r's batch and
// refusal. ok is false if data is not a frame.
func decodeBoth(t *testing.T, r *frameReader, data []byte, split bool) (b *engine.Batch, refusal error, ok bool) {
	t.Helper()
	var fr transportpb.Frame
	protoErr := proto.Unmarshal(data, &fr)
	var err error
	if split {
		h := len(data) / 2
		err = frameCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data[:h]), mem.SliceBuffer(data[h:])}, r)
	} else {
		err = r.unmarshal(data)
	}
	if (err == nil) != (protoErr == nil) {
		t.Fatalf("frame codec: %v, proto.Unmarshal: %v", err, protoErr)
	}
	if err != nil {
		return nil, nil, false
	}
	if got, want := r.size, frameSize(&fr); got != want {
		t.Fatalf("frame codec sized the frame %d bytes, the proto path %d", got, want)
	}
	want, wantErr := r.id.decodeFrame(&fr)
	b, refusal = r.batch()
	if fmt.Sprint(refusal) != fmt.Sprint(wantErr) {
		t.Fatalf("frame codec refused with %v, the proto path with %v", refusal, wantErr)
	}
	if refusal == nil && !reflect.DeepEqual(b, want) {
		t.Fatalf("frame codec decoded\n%+v\nthe proto path\n%+v", b, want)
	}
	return b, refusal, true
}

// unknownFieldFrames returns valid frames from node 3 to node 1 with the
// messages msgs(3, 1, 0, 2) encoded in unusual ways proto3 accepts: unknown
// fields (of every wire type, and known numbers with another wire type),
// fields out of order or repeated (the last wins), non-minimal varints.
func unknownFieldFrames(t testing.TB) [][]byte {
	ms := msgs(3, 1, 0, 2)
	raw := make([][]byte, len(ms))
	for i := range ms {
		var err error
		if raw[i], err = ms[i].Msg.Marshal(); err != nil {
			t.Fatal(err)
		}
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}
	bytesField := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	header := func(b []byte) []byte {
		return varint(varint(varint(b, 1, testCluster), 2, 3), 3, 1)
	}
	shardMsg := func(i int) []byte { return bytesField(varint(nil, 1, ms[i].ShardID), 2, raw[i]) }
	unknowns := func(b []byte) []byte {
		b = varint(b, 9, 77)
		b = protowire.AppendFixed32(protowire.AppendTag(b, 10, protowire.Fixed32Type), 5)
		b = protowire.AppendFixed64(protowire.AppendTag(b, 11, protowire.Fixed64Type), 6)
		b = bytesField(b, 12, []byte("later field"))
		b = protowire.AppendTag(b, 13, protowire.StartGroupType)
		b = varint(b, 1, 1)
		b = protowire.AppendTag(b, 13, protowire.EndGroupType)
		return bytesField(b, 1, []byte("known number, bytes type"))
	}
	var out [][]byte
	// Unknown fields around and inside the messages.
	f := unknowns(header(nil))
	f = bytesField(f, 4, unknowns(shardMsg(0)))
	f = varint(f, 4, 5) // field 4 as a varint: unknown
	f = bytesField(f, 4, append(unknowns(nil), shardMsg(1)...))
	out = append(out, unknowns(f))
	// Messages first, the header after, twice: the last values win.
	f = bytesField(nil, 4, shardMsg(0))
	f = header(varint(varint(varint(f, 1, 8), 2, 8), 3, 8))
	f = bytesField(f, 4, shardMsg(1))
	out = append(out, f)
	// Raft message before the shard ID, twice (the last wins), shard ID twice.
	f = header(nil)
	f = bytesField(f, 4, varint(bytesField(bytesField(varint(nil, 1, 99), 2, raw[1]), 2, raw[0]), 1, ms[0].ShardID))
	f = bytesField(f, 4, shardMsg(1))
	out = append(out, f)
	// Non-minimal varints (as another encoder may write them).
	f = append(protowire.AppendTag(nil, 1, protowire.VarintType), 0x81, 0x80, 0x00) // testCluster
	f = varint(varint(f, 2, 3), 3, 1)
	f = bytesField(bytesField(f, 4, shardMsg(0)), 4, shardMsg(1))
	out = append(out, f)
	return out
}

// TestFrameCodecMatchesProto checks the codec against proto: frames encoded
// by it are the bytes proto's deterministic Marshal writes for the same
// transportpb.Frame, and frames proto encodes (or another proto3 encoder
// could) decode to what the proto path decodes.
func TestFrameCodecMatchesProto(t *testing.T) {
	heartbeat := msgs(3, 1, 0, 1)
	heartbeat[0].ShardID, heartbeat[0].Msg = 0, raftpb.Message{Type: raftpb.MsgHeartbeat, From: 3, To: 1, Context: []byte("beats")}
	big := msgs(3, 1, 0, 3)
	big[1].Msg.Entries[0].Data = make([]byte, 5000) // over gRPC's pooling threshold
	mixed := msgs(3, 1, 10, 3)
	mixed[1].ShardID = 1 << 60
	mixed = append(mixed, heartbeat...)
	for _, tc := range []struct {
		name         string
		c, from, to  uint64
		ms           []engine.Message
		wantAccepted bool
	}{
		{"one message", testCluster, 3, 1, msgs(3, 1, 0, 1), true},
		{"many shards", testCluster, 3, 1, mixed, true},
		{"heartbeats", testCluster, 3, 1, heartbeat, true},
		{"pooled buffer", testCluster, 3, 1, big, true},
		{"no message", testCluster, 3, 1, nil, true},
		{"zero header", 0, 0, 0, msgs(0, 0, 0, 1), false},
		{"another cluster", testCluster + 1, 3, 1, msgs(3, 1, 0, 2), false},
		{"removed node", testCluster, 9, 1, msgs(9, 1, 0, 2), false},
		{"bad message", testCluster, 3, 1, msgs(3, 0, 0, 2), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire := encodeFrame(t, tc.c, tc.from, tc.to, tc.ms)
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(wireFrame(t, tc.c, tc.from, tc.to, tc.ms))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(wire, want) {
				t.Fatalf("encoded\n%x\nproto encodes\n%x", wire, want)
			}
			r := &frameReader{id: fuzzIdentity}
			for _, split := range []bool{false, true} {
				b, err, ok := decodeBoth(t, r, wire, split)
				if !ok || (err == nil) != tc.wantAccepted {
					t.Fatalf("decoded: %v, refused: %v", ok, err)
				}
				if err == nil && !reflect.DeepEqual(b.Messages, append([]engine.Message{}, tc.ms...)) {
					t.Fatalf("decoded %+v, sent %+v", b.Messages, tc.ms)
				}
			}
		})
	}
	for i, data := range unknownFieldFrames(t) {
		t.Run(fmt.Sprintf("unusual encoding %d", i), func(t *testing.T) {
			b, err, ok := decodeBoth(t, &frameReader{id: fuzzIdentity}, data, i%2 == 0)
			if !ok || err != nil {
				t.Fatalf("decoded: %v, refused: %v", ok, err)
			}
			if want := msgs(3, 1, 0, 2); !reflect.DeepEqual(b.Messages, want) {
				t.Fatalf("decoded %+v, want %+v", b.Messages, want)
			}
		})
	}
}

// TestFrameReaderSlabs decodes frames of many sizes with one reader, as a
// stream does: no batch handed over changes afterwards.
func TestFrameReaderSlabs(t *testing.T) {
	r := &frameReader{id: fuzzIdentity}
	type kept struct {
		b         *engine.Batch
		msgs      []engine.Message // as handed over
		b0, msgs0 any              // copies
	}
	var all []kept
	first := uint64(0)
	for i, n := range []int{1, 3, 200, 1, 300, 0, 256, 2, 255, 1, 1, 600, 5} {
		ms := msgs(3, 1, first, n)
		first += uint64(n)
		if i%5 == 4 { // a refused frame in between
			ms[n/2].Msg.To = 0
		}
		b, err, ok := decodeBoth(t, r, encodeFrame(t, testCluster, 3, 1, ms), false)
		if !ok {
			t.Fatal("not a frame")
		}
		if err != nil {
			continue
		}
		if cap(b.Messages) != n {
			t.Fatalf("a batch of %d messages has room for %d", n, cap(b.Messages))
		}
		all = append(all, kept{b, b.Messages, *b, slices.Clone(b.Messages)})
		b.Messages = append(b.Messages, engine.Message{ShardID: 1}) // as a handler may
	}
	for i, k := range all {
		k.b.Messages = k.msgs
		if !reflect.DeepEqual(*k.b, k.b0) || !reflect.DeepEqual(k.msgs, k.msgs0) {
			t.Fatalf("batch %d changed", i)
		}
	}
}

// protoRaftServer is a Raft service as a node before the frame codec served
// it: gRPC's proto codec decodes its frames. It records them.
type protoRaftServer struct {
	transportpb.UnimplementedRaftServer
	mu     sync.Mutex
	frames []*transportpb.Frame
}

func (s *protoRaftServer) Stream(stream transportpb.Raft_StreamServer) error {
	for {
		f, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&transportpb.StreamReply{})
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.frames = append(s.frames, f)
		s.mu.Unlock()
	}
}

func (s *protoRaftServer) received() []*transportpb.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*transportpb.Frame(nil), s.frames...)
}

// TestStreamInterop runs the frame codec against gRPC's proto codec over
// the network, both ways: a node with the codec sends to a server decoding
// transportpb.Frames with proto, and a proto client sends to a node with
// the codec, unknown fields included.
func TestStreamInterop(t *testing.T) {
	t.Run("codec to proto", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv, rec := grpc.NewServer(), &protoRaftServer{}
		transportpb.RegisterRaftServer(srv, rec)
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(lis)
		}()
		t.Cleanup(func() {
			srv.Stop()
			<-served
		})
		a, _ := start(t, testConfig(3, nil))
		a.AddPeer(1, lis.Addr().String())
		sent := msgs(3, 1, 0, 40)
		sent[5].ShardID = 0
		sent[5].Msg = raftpb.Message{Type: raftpb.MsgHeartbeat, From: 3, To: 1, Context: []byte("beats")}
		for i := 0; i < len(sent); i += 8 {
			if err := a.Send(1, sent[i:i+8]); err != nil {
				t.Fatal(err)
			}
		}
		var got []engine.Message
		waitUntil(t, "every message", func() bool {
			got = got[:0]
			for _, f := range rec.received() {
				if f.ClusterId != testCluster || f.From != 3 || f.To != 1 {
					t.Fatalf("frame header %d/%d/%d", f.ClusterId, f.From, f.To)
				}
				for _, sm := range f.Messages {
					m := engine.Message{ShardID: sm.ShardId}
					if err := m.Msg.Unmarshal(sm.RaftMessage); err != nil {
						t.Fatal(err)
					}
					got = append(got, m)
				}
			}
			return len(got) == len(sent)
		})
		if !reflect.DeepEqual(got, sent) {
			t.Fatalf("received %+v, sent %+v", got, sent)
		}
	})
	t.Run("proto to codec", func(t *testing.T) {
		a, ha := start(t, testConfig(1, nil))
		stream, err := rawClient(t, a.Addr().String()).Stream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		frames := unknownFieldFrames(t)
		for _, data := range frames {
			var f transportpb.Frame // keeps the unknown fields, which Send writes
			if err := proto.Unmarshal(data, &f); err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&f); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Send(wireFrame(t, testCluster, 3, 1, msgs(3, 1, 0, 3))); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
		batches := ha.batches()
		if len(batches) != len(frames)+1 || refused(a) != 0 {
			t.Fatalf("%d batches delivered, %d refused", len(batches), refused(a))
		}
		for i, b := range batches {
			want := msgs(3, 1, 0, 2)
			if i == len(frames) {
				want = msgs(3, 1, 0, 3)
			}
			if b.ClusterID != testCluster || b.From != 3 || b.To != 1 || !reflect.DeepEqual(b.Messages, want) {
				t.Fatalf("batch %d: %+v", i, b)
			}
		}
	})
}
