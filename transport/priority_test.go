package transport

import (
	"testing"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
)

// recordingStream is a sender's stream that records the shards of each
// frame written, and calls onFrame after each.
type recordingStream struct {
	grpc.ClientStreamingClient[transportpb.Frame, transportpb.StreamReply]
	frames  [][]uint64
	onFrame func(n int)
}

func (r *recordingStream) SendMsg(m any) error {
	f := m.(*frameWriter)
	var shards []uint64
	for _, msg := range f.msgs {
		shards = append(shards, msg.ShardID)
	}
	r.frames = append(r.frames, shards)
	if r.onFrame != nil {
		r.onFrame(len(r.frames))
	}
	return nil
}

func heartbeatOf(shard uint64) []engine.Message {
	return []engine.Message{{ShardID: shard, Msg: raftpb.Message{Type: raftpb.MsgHeartbeat, From: 1, To: 2, Term: 1}}}
}

// SendPriority's messages go ahead of the queue: first in the next frame,
// and, when they come while a backlog of several frames is written, before
// the backlog's next frame.
func TestPriorityMessagesGoAheadOfTheQueue(t *testing.T) {
	cfg := testConfig(1, nil)
	cfg.MaxFrameBytes = minFrameBytes // a few of msgs' messages a frame
	tr, _ := start(t, cfg)
	// A peer with no sender goroutine: the test drives a sender of its own
	// over a recording stream.
	p := &peer{t: tr, nodeID: 2, stats: new(counters), notify: make(chan struct{}, 1)}
	rs := &recordingStream{}
	s := &sender{p: p, stream: rs}

	bulk := msgs(1, 2, 1, 400) // shard 7, several frames
	if err := p.enqueue(bulk); err != nil {
		t.Fatal(err)
	}
	if err := p.enqueuePriority(heartbeatOf(8)); err != nil {
		t.Fatal(err)
	}
	rs.onFrame = func(n int) {
		if n == 2 { // a tick's message comes while the backlog is written
			if err := p.enqueuePriority(heartbeatOf(9)); err != nil {
				t.Error(err)
			}
		}
	}
	s.flush()
	if len(rs.frames) < 4 {
		t.Fatalf("%d frames, want the backlog in several", len(rs.frames))
	}
	if f := rs.frames[0]; f[0] != 8 || f[1] != 7 {
		t.Errorf("first frame %v, want the priority message (shard 8) first, then the queue's", f)
	}
	if f := rs.frames[2]; len(f) != 1 || f[0] != 9 {
		t.Errorf("third frame %v, want the priority message queued meanwhile (shard 9) alone", f)
	}
	n := 0
	for _, f := range rs.frames {
		for _, sh := range f {
			if sh == 7 {
				n++
			}
		}
	}
	if n != len(bulk) {
		t.Errorf("%d of the %d queued messages written", n, len(bulk))
	}
}
