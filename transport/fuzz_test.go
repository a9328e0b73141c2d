package transport

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

var fuzzIdentity = identity{clusterID: testCluster, nodeID: 1, isRemoved: func(id uint64) bool { return id == 9 }}

// FuzzDecodeFrame feeds arbitrary bytes to the receiver's frame decoder
// (frameCodec into a frameReader): it never panics, agrees with the proto
// path (gRPC's proto codec, then decodeFrame) on what is a frame, what is
// refused and why, and what is delivered; it refuses with one of the
// documented errors, and what it accepts honours every invariant the
// handler relies on. A second decode by the same reader leaves the batch of
// the first alone.
func FuzzDecodeFrame(f *testing.F) {
	add := func(fr *transportpb.Frame) {
		data, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	add(wireFrame(f, testCluster, 3, 1, msgs(3, 1, 0, 3)))
	add(wireFrame(f, testCluster+1, 3, 1, msgs(3, 1, 0, 1)))
	add(wireFrame(f, testCluster, 9, 1, msgs(9, 1, 0, 1)))
	bad := wireFrame(f, testCluster, 3, 1, msgs(3, 1, 0, 2))
	bad.Messages[1].RaftMessage = []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}
	add(bad)
	add(&transportpb.Frame{ClusterId: testCluster, From: 3, To: 1})
	for _, data := range unknownFieldFrames(f) {
		f.Add(data)
	}
	// Tags protobuf refuses or reads specially.
	tag := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	f.Add(protowire.AppendVarint(tag(nil, protowire.MaxValidNumber, protowire.VarintType), 1))
	f.Add(protowire.AppendVarint(tag(nil, protowire.MaxValidNumber+1, protowire.VarintType), 1))
	f.Add(tag(nil, 5, protowire.EndGroupType))
	f.Add(tag(tag(nil, 5, protowire.StartGroupType), 5, protowire.EndGroupType))
	f.Add(tag(tag(nil, 5, protowire.StartGroupType), 6, protowire.EndGroupType))
	f.Add(protowire.AppendBytes(tag(nil, 4, protowire.BytesType), tag(nil, protowire.MaxValidNumber+1, protowire.Fixed32Type)))
	f.Add(protowire.AppendBytes(tag(nil, 4, protowire.BytesType), tag(tag(nil, 3, protowire.StartGroupType), 3, protowire.EndGroupType)))
	f.Add([]byte{0x22, 0x03, 0x08, 0x07, 0x12})
	f.Add([]byte("garbage"))

	f.Fuzz(func(t *testing.T, data []byte) {
		r := &frameReader{id: fuzzIdentity}
		b, err, ok := decodeBoth(t, r, data, false)
		if !ok {
			return
		}
		if err != nil {
			if !errors.Is(err, ErrClusterMismatch) && !errors.Is(err, ErrWrongNode) &&
				!errors.Is(err, ErrRemovedNode) && !errors.Is(err, ErrBadMessage) {
				t.Fatalf("undocumented refusal: %v", err)
			}
			return
		}
		checkBatch(t, b, len(b.Messages))
		var fr transportpb.Frame
		if err := proto.Unmarshal(data, &fr); err != nil {
			t.Fatal(err)
		}
		// frameSize agrees with protobuf when nothing unknown was decoded.
		if len(fr.ProtoReflect().GetUnknown()) == 0 && !hasUnknown(&fr) {
			if got, want := frameSize(&fr), proto.Size(&fr); got != want {
				t.Fatalf("frameSize %d, proto.Size %d", got, want)
			}
		}
		kept := *b
		kept.Messages = slices.Clone(b.Messages)
		if _, _, ok := decodeBoth(t, r, data, true); !ok {
			t.Fatal("the second decode failed")
		}
		if !reflect.DeepEqual(*b, kept) {
			t.Fatal("the second decode changed the first batch")
		}
	})
}

func hasUnknown(fr *transportpb.Frame) bool {
	for _, sm := range fr.Messages {
		if len(sm.ProtoReflect().GetUnknown()) != 0 {
			return true
		}
	}
	return false
}

// checkBatch checks what a frame decoder accepted.
func checkBatch(t *testing.T, b *engine.Batch, n int) {
	t.Helper()
	if b.ClusterID != testCluster || b.To != 1 || b.From == 0 || b.From == 1 || b.From == 9 || len(b.Messages) != n {
		t.Fatalf("accepted batch %d/%d/%d with %d of %d messages", b.ClusterID, b.From, b.To, len(b.Messages), n)
	}
	for _, m := range b.Messages {
		// Shards' messages carry replica IDs, node-level ones (shard 0,
		// heartbeats) the frame's node IDs.
		if m.ShardID == 0 && (m.Msg.Type != raftpb.MsgHeartbeat || m.Msg.To != b.To || m.Msg.From != b.From) ||
			m.Msg.To == 0 || m.Msg.From == 0 || m.Msg.Type == raftpb.MsgSnap {
			t.Fatalf("accepted message %+v", m)
		}
		if _, ok := raftpb.MessageType_name[int32(m.Msg.Type)]; !ok {
			t.Fatalf("accepted message type %d", m.Msg.Type)
		}
	}
}

// FuzzDecodeSnapshotHeader feeds arbitrary bytes to the receiver's snapshot
// header decoder.
func FuzzDecodeSnapshotHeader(f *testing.F) {
	add := func(h engine.SnapshotHeader) {
		p, err := encodeSnapshotHeader(&h)
		if err != nil {
			f.Fatal(err)
		}
		data, err := proto.Marshal(&transportpb.SnapshotRequest{Header: p})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	h := snapHeader(3, 1)
	h.ClusterID, h.From = testCluster, 3
	add(h)
	h.ClusterID = 5
	add(h)
	h.ClusterID, h.Msg.Type = testCluster, raftpb.MsgApp
	add(h)
	f.Add([]byte{0x0a, 0x02, 0x08, 0x01})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		var req transportpb.SnapshotRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		h, err := fuzzIdentity.decodeSnapshotHeader(req.GetHeader())
		if err != nil {
			return
		}
		if h.ClusterID != testCluster || h.To != 1 || h.ShardID == 0 || h.From == 0 || h.From == 9 ||
			h.Msg.Type != raftpb.MsgSnap || h.Msg.Snapshot == nil || h.Msg.To != 1 || h.Msg.From != h.From {
			t.Fatalf("accepted header %+v", h)
		}
	})
}

// FuzzFrameRoundTrip encodes messages the way a sender does and decodes them
// the way a receiver does: the bytes are those proto's deterministic Marshal
// writes for the same transportpb.Frame, what comes out is what went in, and
// the sender's size arithmetic is exact.
func FuzzFrameRoundTrip(f *testing.F) {
	f.Add(uint64(7), uint64(5), []byte("data"), 3)
	f.Add(uint64(1<<63), uint64(0), []byte{}, 1)
	f.Add(uint64(300), uint64(1<<40), make([]byte, 200), 20)
	f.Add(uint64(0), uint64(1), make([]byte, 2000), 2)
	f.Fuzz(func(t *testing.T, shardID, term uint64, data []byte, n int) {
		if n <= 0 || n > 64 {
			return
		}
		ms := msgs(3, 1, term, n)
		for i := range ms {
			ms[i].ShardID = shardID + uint64(i) // 0 (node-level) is encoded too, and refused
			ms[i].Msg.Term = term
			ms[i].Msg.Entries[0].Data = data
		}
		wire := encodeFrame(t, testCluster, 3, 1, ms)
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(wireFrame(t, testCluster, 3, 1, ms))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(wire, want) {
			t.Fatalf("encoded\n%x\nproto encodes\n%x", wire, want)
		}
		b, err, ok := decodeBoth(t, &frameReader{id: fuzzIdentity}, wire, true)
		if !ok {
			t.Fatal("not a frame")
		}
		if err != nil {
			if shardID+uint64(n-1) >= shardID && shardID != 0 { // no shard 0
				t.Fatal(err)
			}
			return
		}
		checkBatch(t, b, n)
		for i := range ms {
			got, want := b.Messages[i], ms[i]
			if got.ShardID != want.ShardID || got.Msg.Term != want.Msg.Term || got.Msg.Index != want.Msg.Index ||
				string(got.Msg.Entries[0].Data) != string(want.Msg.Entries[0].Data) {
				t.Fatalf("message %d: got %+v, want %+v", i, got, want)
			}
		}
	})
}
