// Package transport is the gRPC engine.Transport between Flotilla nodes.
// It owns the network side of raft: one stream per ordered
// node pair carrying batched frames, a bounded send queue and a sender
// goroutine per peer, snapshot streaming in chunks, the checks that refuse
// traffic from another cluster or a removed node, size limits, and optional
// mutual TLS. The in-process twin, for tests and the demo, is
// transport/memtransport.
//
// # Use
//
//	cfg := transport.DefaultConfig()
//	cfg.NodeID, cfg.ClusterID, cfg.ListenAddr = 1, 42, ":7001"
//	cfg.TLS, err = transport.LoadMutualTLS("node.crt", "node.key", "ca.crt") // optional
//	t, err := transport.New(cfg) // listens
//	t.AddPeer(2, "10.0.0.2:7001") // or cfg.Resolver; gossip feeds AddPeer
//	err = t.Start(engine)         // serves; Send may be called from now on
//	defer t.Close()
//
// # Wire format
//
// The service and messages are in transportpb/transport.proto (generated
// code checked in; genproto.sh regenerates it). Raft traffic goes over the
// client-streaming RPC Raft.Stream, opened by the sending node:
//
//	Frame        { cluster_id, from, to, repeated ShardMessage messages }
//	ShardMessage { shard_id, raft_message }  // raftpb.Message, gogo-encoded
//
// A frame holds every message the sender had queued for the destination when
// it woke up, of any number of shards, in Send order, at most
// Config.MaxFrameBytes encoded (a larger backlog is split over several
// frames). Raft messages travel as opaque bytes encoded by raftpb's own
// Marshal, so this package's protos do not import raft's. The server writes
// nothing back: it refuses a sender by ending the stream with an error
// status.
//
// Frames do not go through transportpb.Frame: the stream's gRPC codec
// (codec.go, named "proto" and used by this package's server for every RPC,
// by its client for Raft.Stream only; other messages go to gRPC's proto
// codec) reads and writes them straight from and to engine.Messages, in the
// bytes proto would write and read, so that nodes with and without it
// interoperate (codec_test.go runs one against the other). The sender
// encodes each frame in one pass into one buffer (from gRPC's buffer pool
// above gRPC's pooling threshold of 1 KiB; gRPC returns it once written):
// header, then per message the ShardMessage's tag and length, the shard ID,
// and the raft message marshalled in place, its size known from Send. The
// receiver decodes each frame in one pass over the bytes gRPC read (one
// buffer used in place, or several copied into one pooled buffer), raft
// messages unmarshalled straight into the Batch's messages (a scan of the
// top-level tags counts them first, so that their slice is allocated at its
// size); fields out of order, repeated or unknown are read as proto3 reads
// them. gRPC frees those bytes once the codec returns, which is safe because
// raftpb's generated Unmarshal copies every byte field (entry data, context,
// snapshot data) out of its input: nothing delivered aliases a network
// buffer. A stream's Batches and their message slices are carved from slabs
// allocated for many frames; the handler owns what it gets, which the
// receiver never writes again.
//
// SendPriority (engine.PrioritySender) queues messages ahead of the rest:
// they go first in the next frame, and a sender writing a backlog of
// several frames writes them before its next one. The engine sends its
// per-tick message with it (coalesced heartbeats and their responses,
// which also tell the peer this node is alive), so that a backlog of raft
// traffic never holds it back for longer than one frame takes to write.
// They ride in the same stream (no frame, connection or goroutine more; a
// separate connection for them was tried and doubled the frames at a fast
// tick), and may overtake messages sent earlier.
//
// A snapshot is one client-streaming RPC, Raft.Snapshot, on its own
// connection so that it never holds up raft traffic: the first request is a
// SnapshotHeader {cluster_id, from, to, shard_id, raft_message (the
// MsgSnap)}, every later one a chunk of the body (chunk boundaries are kept,
// each chunk at most Config.MaxSnapshotChunkBytes), and the reply carries the
// receiver's verdict, empty or the handler's error text.
//
// # Validation
//
// The receiver decodes every frame and refuses it, with a log line
// (rate-limited per sender) and a count in PeerStats.Refused, unless:
// cluster_id is this node's cluster, to is this node, from is another node
// and not removed (Config.IsRemoved), and every message has a non-zero
// shard_id and decodes as a raft message of a known, non-local type other
// than MsgSnap, from frame.from to frame.to. A refused identity (another
// cluster, another destination, a removed sender) or an oversized frame ends
// the stream with an error status; a malformed message drops its frame only
// and the stream goes on. Valid frames reach Handler.HandleBatch as one
// engine.Batch each. Snapshot headers are checked the same way (and must
// carry a MsgSnap with a snapshot); a refused header, an oversized chunk or
// a second header fails the stream and the sender gets a *RemoteError.
// Nothing read from the network can make the receiver panic: the decoders
// are fuzzed (fuzz_test.go), the frame codec against proto's decoding
// followed by the checks above, on what it accepts, refuses and delivers.
//
// # Concurrency
//
// Every exported method is safe for concurrent use. The goroutines are:
//   - per peer, one sender, started by the first Send to it and stopped by
//     RemovePeer or Close. It owns the peer's connection and stream; gRPC's
//     codec encodes its frames in the sender's goroutine, during SendMsg.
//   - the gRPC server's: per incoming raft stream, one goroutine that
//     decodes frames (gRPC's codec runs in it, into the stream's
//     frameReader, which it owns) and calls HandleBatch (so HandleBatch runs
//     concurrently for different senders, in order for one sender); per
//     incoming snapshot, one that calls HandleSnapshot.
//   - gRPC's own connection goroutines.
//
// Send never blocks: it appends to the peer's queue under the queue's mutex
// and pokes the sender. The Transport's RWMutex guards the peer, address and
// counter maps and the started/closed state; a peer's mutex guards its queue
// only; the handler is called with no lock held. Counters are atomics.
// Close cancels every stream and connection attempt, stops the server
// (waiting for its handlers) and waits for the senders and for the
// SendSnapshot calls in progress: afterwards no goroutine of the package is
// left (the tests check with goleak).
//
// # Failure handling
//
// Send fails at once, queuing none of its messages, when the peer's queue is
// full (Config.QueueLen messages or Config.QueueBytes bytes:
// engine.ErrQueueFull), when a message could not fit in a frame on its own
// (*SizeError), when the peer has no address (engine.ErrUnknownPeer), and
// while the peer is in backoff (ErrPeerUnreachable): the engine then reports
// the affected shards unreachable itself, and raft retries.
//
// When a connection attempt or the stream fails, the sender drops the frame
// in hand and everything queued, calls Handler.PeerUnreachable(peer) once,
// logs (rate-limited), and enters a backoff: Config.BackoffMin doubling per
// consecutive failure up to Config.BackoffMax, with ±20% jitter; a stream
// that lived longer than BackoffMax before failing resets the count. During
// the backoff Send refuses the peer's messages; the first Send after it
// triggers a new connection attempt (bounded by Config.DialTimeout), so an
// idle peer costs nothing. AddPeer with a new address cuts the backoff short
// and makes the sender reconnect. Dead connections are found by gRPC
// keepalives (Config.KeepaliveInterval/Timeout) or by the next write. A frame
// written just before a peer dies may be lost without a report, as on any
// network; raft retries.
//
// SendSnapshot checks its ctx between chunks and while gRPC flow control
// holds it back, so a slow receiver slows the sender down and at most a few
// flow-control windows of the body are in memory (measured: 100 MiB streamed
// with a peak heap of under 20 MiB). Config.SnapshotRateBytesPerSec paces
// every outgoing snapshot of the node on one timeline.
package transport
