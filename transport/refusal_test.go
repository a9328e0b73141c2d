package transport

import (
	"context"
	"errors"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

// TestBadFrameRefused sends crafted frames on a raw stream: a frame with a
// malformed message is refused and the stream keeps serving; a frame that
// misstates the sender's identity ends the stream with an error status.
func TestBadFrameRefused(t *testing.T) {
	good := func() *transportpb.Frame { return wireFrame(t, testCluster, 3, 1, msgs(3, 1, 100, 2)) }
	for _, tc := range []struct {
		name    string
		frame   func() *transportpb.Frame
		endCode codes.Code // codes.OK: the stream keeps serving
		logSub  string
	}{
		{"garbage raft message", func() *transportpb.Frame {
			f := good()
			f.Messages[1].RaftMessage = []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}
			return f
		}, codes.OK, "malformed"},
		{"shard 0", func() *transportpb.Frame {
			f := good()
			f.Messages[0].ShardId = 0
			return f
		}, codes.OK, "shard ID 0"},
		{"message to replica 0", func() *transportpb.Frame {
			return wireFrame(t, testCluster, 3, 1, msgs(3, 0, 0, 1))
		}, codes.OK, "malformed"},
		{"local message type", func() *transportpb.Frame {
			ms := msgs(3, 1, 0, 1)
			ms[0].Msg.Type = raftpb.MsgStorageAppend
			return wireFrame(t, testCluster, 3, 1, ms)
		}, codes.OK, "message type"},
		{"MsgSnap in a frame", func() *transportpb.Frame {
			ms := msgs(3, 1, 0, 1)
			ms[0].Msg.Type = raftpb.MsgSnap
			ms[0].Msg.Snapshot = &raftpb.Snapshot{}
			return wireFrame(t, testCluster, 3, 1, ms)
		}, codes.OK, "MsgSnap"},
		{"wrong cluster", func() *transportpb.Frame {
			return wireFrame(t, testCluster+1, 3, 1, msgs(3, 1, 0, 1))
		}, codes.FailedPrecondition, "cluster ID mismatch"},
		{"for another node", func() *transportpb.Frame {
			return wireFrame(t, testCluster, 3, 2, msgs(3, 2, 0, 1))
		}, codes.InvalidArgument, "another node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &logSink{}
			a, ha := start(t, testConfig(1, sink))
			stream, err := rawClient(t, a.Addr().String()).Stream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(tc.frame()); err != nil {
				t.Fatal(err)
			}
			if tc.endCode != codes.OK {
				_, err := stream.CloseAndRecv()
				if status.Code(err) != tc.endCode {
					t.Fatalf("stream ended with %v, want %v", err, tc.endCode)
				}
			} else {
				if err := stream.Send(good()); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, "the good frame", func() bool { return len(ha.messages(3)) == 2 })
				if got := indexes(ha.messages(3)); got[0] != 100 {
					t.Fatalf("delivered %v", got)
				}
				if _, err := stream.CloseAndRecv(); err != nil {
					t.Fatalf("stream ended with %v", err)
				}
			}
			if n := refused(a); n != 1 {
				t.Fatalf("%d refusals counted, want 1", n)
			}
			if !sink.contains("refused frame", tc.logSub) {
				t.Fatalf("no refusal logged with %q: %q", tc.logSub, sink.lines)
			}
			if len(ha.batches()) > 1 {
				t.Fatal("a bad frame was delivered")
			}
		})
	}
}

// TestOversizedFrameRefused sends frames over the receiver's limit: gRPC's
// own receive limit (when the frame limit is the larger of the two) or the
// transport's check (when the snapshot chunk limit is larger). Either ends
// the stream with ResourceExhausted, counts and logs a refusal, and the node
// keeps serving.
func TestOversizedFrameRefused(t *testing.T) {
	for _, tc := range []struct {
		name               string
		maxFrame, maxChunk int
		payload            int
	}{
		{"grpc limit", 64 << 10, 16 << 10, 100 << 10},
		{"transport limit", 16 << 10, 256 << 10, 100 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &logSink{}
			cfg := testConfig(1, sink)
			cfg.MaxFrameBytes, cfg.QueueBytes, cfg.MaxSnapshotChunkBytes = tc.maxFrame, int64(tc.maxFrame), tc.maxChunk
			a, ha := start(t, cfg)
			stream, err := rawClient(t, a.Addr().String()).Stream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ms := msgs(3, 1, 0, 1)
			ms[0].Msg.Entries[0].Data = make([]byte, tc.payload)
			stream.Send(wireFrame(t, testCluster, 3, 1, ms)) // may fail already
			if _, err := stream.CloseAndRecv(); status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("stream ended with %v, want ResourceExhausted", err)
			}
			// refuse counts, then logs.
			waitUntil(t, "refusal", func() bool { return refused(a) == 1 && sink.contains("refused frame") })
			if len(ha.batches()) != 0 {
				t.Fatalf("not refused: %q", sink.lines)
			}
			b, _ := start(t, testConfig(2, nil))
			link(a, b)
			if err := b.Send(1, msgs(2, 1, 0, 1)); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "a frame after the refusal", func() bool { return len(ha.messages(2)) == 1 })
		})
	}
}

// TestSnapshotHeaderRefused opens snapshot streams with bad headers.
func TestSnapshotHeaderRefused(t *testing.T) {
	snap := func() raftpb.Message {
		return raftpb.Message{Type: raftpb.MsgSnap, From: 3, To: 1, Term: 2,
			Snapshot: &raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 10, Term: 2}}}
	}
	encode := func(m raftpb.Message) []byte {
		raw, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	for _, tc := range []struct {
		name string
		req  *transportpb.SnapshotRequest
		code codes.Code
	}{
		{"no header", &transportpb.SnapshotRequest{Chunk: []byte("x")}, codes.InvalidArgument},
		{"wrong cluster", &transportpb.SnapshotRequest{Header: &transportpb.SnapshotHeader{
			ClusterId: 9, From: 3, To: 1, ShardId: 7, RaftMessage: encode(snap())}}, codes.FailedPrecondition},
		{"not a MsgSnap", &transportpb.SnapshotRequest{Header: &transportpb.SnapshotHeader{
			ClusterId: testCluster, From: 3, To: 1, ShardId: 7, RaftMessage: encode(msgs(3, 1, 0, 1)[0].Msg)}}, codes.InvalidArgument},
		{"garbage", &transportpb.SnapshotRequest{Header: &transportpb.SnapshotHeader{
			ClusterId: testCluster, From: 3, To: 1, ShardId: 7, RaftMessage: []byte{0x0a, 0xff}}}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, ha := start(t, testConfig(1, nil))
			stream, err := rawClient(t, a.Addr().String()).Snapshot(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(tc.req)
			if _, err := stream.CloseAndRecv(); status.Code(err) != tc.code {
				t.Fatalf("stream ended with %v, want %v", err, tc.code)
			}
			if refused(a) != 1 || len(ha.snapshots()) != 0 {
				t.Fatalf("not refused")
			}
		})
	}
}

// TestSnapshotFromOtherClusterRefused goes through SendSnapshot: the sender
// gets the receiver's refusal as a *RemoteError.
func TestSnapshotFromOtherClusterRefused(t *testing.T) {
	a, _ := start(t, testConfig(1, nil))
	cfg := testConfig(3, nil)
	cfg.ClusterID = testCluster + 1
	c, _ := start(t, cfg)
	link(a, c)
	err := c.SendSnapshot(context.Background(), snapHeader(3, 1), &genBody{chunks: 1, size: 10})
	var re *RemoteError
	if !errors.As(err, &re) || re.Node != 1 {
		t.Fatalf("SendSnapshot: %v", err)
	}
	t.Log(err)
}

// snapHeader is the header of a snapshot of shard 7 from node from to node to.
func snapHeader(from, to uint64) engine.SnapshotHeader {
	return engine.SnapshotHeader{To: to, ShardID: 7, Msg: raftpb.Message{
		Type: raftpb.MsgSnap, From: from, To: to, Term: 2,
		Snapshot: &raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 10, Term: 2}},
	}}
}
