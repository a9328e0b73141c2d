package transport

import (
	"fmt"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

// This file keeps the receive path the transport had before its codec
// (codec.go): gRPC's proto codec decoded a transportpb.Frame, then
// decodeFrame decoded each raft message again. The fuzz targets check that
// the codec agrees with it, and the codec benchmark measures both.

// frameSize is the encoded size of f's known fields.
func frameSize(f *transportpb.Frame) int {
	n := frameHeaderSize(f.GetClusterId(), f.GetFrom(), f.GetTo())
	for _, sm := range f.GetMessages() {
		n += frameEntrySize(sm.GetShardId(), len(sm.GetRaftMessage()))
	}
	return n
}

// decodeFrame validates f and returns its messages as one Batch, with the
// errors frameReader.batch returns.
func (id identity) decodeFrame(f *transportpb.Frame) (*engine.Batch, error) {
	if err := id.checkSender(f.GetClusterId(), f.GetFrom(), f.GetTo()); err != nil {
		return nil, err
	}
	b := &engine.Batch{
		ClusterID: f.ClusterId,
		From:      f.From,
		To:        f.To,
		Messages:  make([]engine.Message, len(f.Messages)),
	}
	for i, sm := range f.Messages {
		m := &b.Messages[i]
		m.ShardID = sm.GetShardId()
		if err := decodeMessage(m.ShardID, sm.GetRaftMessage(), f.From, f.To, &m.Msg); err != nil {
			return nil, fmt.Errorf("message %d of %d: %w", i, len(f.Messages), err)
		}
		if m.Msg.Type == raftpb.MsgSnap {
			return nil, fmt.Errorf("%w: shard %d: MsgSnap in a frame", ErrBadMessage, m.ShardID)
		}
	}
	return b, nil
}
