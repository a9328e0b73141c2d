package engine

import (
	"context"
	"errors"

	"go.etcd.io/raft/v3/raftpb"
)

// Message is one raft message of one shard. Msg.From and Msg.To are replica
// IDs, not node IDs: the engine routes a message to the node of its
// destination replica (the shard's descriptor knows it), and the receiving
// node drops a message for a replica ID its replica is not (a removed
// incarnation).
type Message struct {
	ShardID uint64
	Msg     raftpb.Message
	// fromNode is the sending node, set by the receiving engine from the
	// frame (HandleBatch).
	fromNode uint64
}

// Batch is what crosses the network between two nodes in one frame: every
// message one node has for another, of any number of shards.
type Batch struct {
	ClusterID uint64
	From, To  uint64 // node IDs
	Messages  []Message
}

// SnapshotHeader opens a snapshot stream. Msg is the raft MsgSnap whose
// Snapshot.Metadata describes the state the body brings the shard to.
type SnapshotHeader struct {
	ClusterID uint64
	From, To  uint64 // node IDs
	ShardID   uint64
	Msg       raftpb.Message
}

// SnapshotBody is a stream of opaque chunks: Next returns the next chunk, and
// io.EOF after the last one. A chunk is valid until the next call to Next.
// The engine produces and consumes the chunks; a transport only carries them,
// in order, with flow control (it never holds the whole body in memory).
type SnapshotBody interface {
	Next() ([]byte, error)
}

// Transport is what the engine needs of the network. Implementations:
// transport (gRPC between processes) and transport/memtransport (in one
// process, with fault injection, for tests and the demo).
type Transport interface {
	// Start registers the handler that receives what other nodes send to this
	// one. The engine calls it once, before any Send.
	Start(h Handler) error
	// Send queues msgs for node to and returns at once; the transport may
	// coalesce them with other queued messages into one Batch. It copies the
	// messages it keeps: the caller reuses msgs once Send returns (the
	// entries the messages point to are never modified). An error
	// (ErrQueueFull, ErrUnknownPeer, ...) means none of msgs will be sent;
	// raft retries what it needs.
	Send(to uint64, msgs []Message) error
	// SendSnapshot streams one snapshot to node h.To and returns when the
	// receiver has handled it (nil) or when it failed.
	SendSnapshot(ctx context.Context, h SnapshotHeader, body SnapshotBody) error
	// Close stops the transport; Send and SendSnapshot fail afterwards.
	Close() error
}

// PrioritySender is implemented by a transport that can send messages ahead
// of the raft traffic queued for a node (package transport: first in its
// next frame). The engine sends its per-tick message to each
// peer (coalesced heartbeats and their responses, which are also what tells
// a peer that this node is alive) with SendPriority when the transport has
// it: a backlog of raft traffic, as when a start elects thousands of shards
// at once, would otherwise hold that message back for longer than an
// election timeout and get a live node suspected down. The messages may
// overtake those sent earlier with Send; raft and the quiescence protocol
// allow any reordering. Errors are Send's.
type PrioritySender interface {
	SendPriority(to uint64, msgs []Message) error
}

// Handler receives what other nodes send. The engine implements it.
//
// A transport may call the methods concurrently (one goroutine per peer,
// one per snapshot stream).
type Handler interface {
	// HandleBatch takes one incoming frame. It must not block for long: it
	// only queues the messages for the shards' workers. It takes ownership of b.
	HandleBatch(b *Batch)
	// HandleSnapshot consumes one incoming snapshot stream until io.EOF and
	// returns nil once the snapshot is staged for its shard, or an error that
	// the transport reports to the sender.
	HandleSnapshot(ctx context.Context, h SnapshotHeader, body SnapshotBody) error
	// PeerUnreachable reports that messages queued for node could not be
	// delivered (connection lost, queue dropped).
	PeerUnreachable(node uint64)
}

// Errors a Transport returns.
var (
	ErrQueueFull       = errors.New("transport: send queue full")
	ErrUnknownPeer     = errors.New("transport: unknown peer")
	ErrTransportClosed = errors.New("transport: closed")
)
