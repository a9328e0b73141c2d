package transport

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/transportpb"
)

// This file holds the pure code between engine types and the wire: frame size
// arithmetic, the checks of what the receiver decodes (codec.go decodes
// frames), and the snapshot header's encoding.

// frameHeaderSize is the encoded size of a Frame's scalar fields.
func frameHeaderSize(clusterID, from, to uint64) int {
	return uint64FieldSize(clusterID) + uint64FieldSize(from) + uint64FieldSize(to)
}

// frameEntrySize is what one ShardMessage with n bytes of raft message adds
// to the encoded size of a Frame, those n bytes included.
func frameEntrySize(shardID uint64, n int) int {
	return 1 + protowire.SizeBytes(shardMessageSize(shardID, n))
}

// shardMessageSize is the encoded size of a ShardMessage with n bytes of
// raft message.
func shardMessageSize(shardID uint64, n int) int {
	sm := uint64FieldSize(shardID)
	if n > 0 {
		sm += 1 + protowire.SizeBytes(n)
	}
	return sm
}

// uint64FieldSize is the encoded size of a proto3 uint64 field numbered
// below 16 (omitted when zero).
func uint64FieldSize(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

// frameSlack bounds what a frame adds to its raft messages: at most 33
// bytes of header (three tagged varints) and, per message, 33 bytes of tags,
// lengths and shard ID.
const frameSlack = 2 * 3 * (1 + 10)

// maxMessageBytes is the largest raft message (encoded) that fits in a frame
// of maxFrame bytes on its own.
func maxMessageBytes(maxFrame int) int { return maxFrame - frameSlack }

// identity is what a receiver checks the sender's claims against.
type identity struct {
	clusterID, nodeID uint64
	isRemoved         func(nodeID uint64) bool // nil: no node is removed
}

// checkSender validates the identity fields of a frame or snapshot header.
// Its errors wrap ErrClusterMismatch, ErrWrongNode or ErrRemovedNode, which
// refuse the whole stream.
func (id identity) checkSender(clusterID, from, to uint64) error {
	switch {
	case clusterID != id.clusterID:
		return fmt.Errorf("%w: cluster %d from node %d, this is cluster %d", ErrClusterMismatch, clusterID, from, id.clusterID)
	case to != id.nodeID:
		return fmt.Errorf("%w: for node %d from node %d, this is node %d", ErrWrongNode, to, from, id.nodeID)
	case from == 0 || from == id.nodeID:
		return fmt.Errorf("%w: from node %d", ErrWrongNode, from)
	case id.isRemoved != nil && id.isRemoved(from):
		return fmt.Errorf("%w: node %d", ErrRemovedNode, from)
	}
	return nil
}

// decodeMessage decodes and validates one raft message of shard shardID sent
// by node from to node to (see checkMessage). Its errors wrap ErrBadMessage.
func decodeMessage(shardID uint64, raw []byte, from, to uint64, m *raftpb.Message) error {
	if err := m.Unmarshal(raw); err != nil {
		return unmarshalError(shardID, err)
	}
	return checkMessage(shardID, from, to, m)
}

// unmarshalError is the error of a raft message of shard shardID that did
// not unmarshal.
func unmarshalError(shardID uint64, err error) error {
	return fmt.Errorf("%w: shard %d: %v", ErrBadMessage, shardID, err)
}

// checkMessage validates the decoded raft message m of shard shardID sent by
// node from to node to. Its errors wrap ErrBadMessage. Shard 0 carries
// node-level messages: only the coalesced heartbeats (a MsgHeartbeat whose
// Context the engine decodes with package heartbeat).
func checkMessage(shardID, from, to uint64, m *raftpb.Message) error {
	if shardID == 0 && m.Type != raftpb.MsgHeartbeat {
		return fmt.Errorf("%w: shard ID 0 with %v", ErrBadMessage, m.Type)
	}
	if _, ok := raftpb.MessageType_name[int32(m.Type)]; !ok || raft.IsLocalMsg(m.Type) {
		return fmt.Errorf("%w: shard %d: message type %d", ErrBadMessage, shardID, m.Type)
	}
	// Shards' messages carry replica IDs (not node IDs: the engine checks
	// them); node-level messages carry the nodes of the frame.
	if shardID == 0 && (m.To != to || m.From != from) || m.To == 0 || m.From == 0 {
		return fmt.Errorf("%w: shard %d: %v from %d to %d in a frame from node %d to node %d",
			ErrBadMessage, shardID, m.Type, m.From, m.To, from, to)
	}
	return nil
}

// encodeSnapshotHeader returns the wire form of h.
func encodeSnapshotHeader(h *engine.SnapshotHeader) (*transportpb.SnapshotHeader, error) {
	raw, err := h.Msg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("transport: encode MsgSnap: %w", err)
	}
	return &transportpb.SnapshotHeader{
		ClusterId: h.ClusterID, From: h.From, To: h.To, ShardId: h.ShardID, RaftMessage: raw,
	}, nil
}

// decodeSnapshotHeader validates the wire header p (nil if the first request
// of the stream had none) and returns it as an engine.SnapshotHeader. Errors
// wrap the same sentinels as decodeFrame's; any of them refuses the stream.
func (id identity) decodeSnapshotHeader(p *transportpb.SnapshotHeader) (engine.SnapshotHeader, error) {
	var h engine.SnapshotHeader
	if p == nil {
		return h, fmt.Errorf("%w: snapshot stream without a header", ErrBadMessage)
	}
	if err := id.checkSender(p.GetClusterId(), p.GetFrom(), p.GetTo()); err != nil {
		return h, err
	}
	h.ClusterID, h.From, h.To, h.ShardID = p.ClusterId, p.From, p.To, p.ShardId
	if err := decodeMessage(h.ShardID, p.RaftMessage, h.From, h.To, &h.Msg); err != nil {
		return h, err
	}
	if h.Msg.Type != raftpb.MsgSnap || h.Msg.Snapshot == nil {
		return h, fmt.Errorf("%w: shard %d: snapshot header carries %v, not a MsgSnap with a snapshot",
			ErrBadMessage, h.ShardID, h.Msg.Type)
	}
	return h, nil
}
