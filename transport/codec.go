package transport

import (
	"errors"
	"fmt"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flotilla-db/flotilla/engine"
)

// This file holds the gRPC codec of the raft stream: it writes a Frame
// straight from the sender's engine.Messages and reads one straight into
// engine.Messages, in the bytes transportpb.Frame's proto codec would write
// and read (doc.go, "Wire format").

// Field numbers of transportpb.Frame and transportpb.ShardMessage.
const (
	frameClusterID   protowire.Number = 1
	frameFrom        protowire.Number = 2
	frameTo          protowire.Number = 3
	frameMessages    protowire.Number = 4
	shardMsgShardID  protowire.Number = 1
	shardMsgRaftData protowire.Number = 2
)

// frameCodec is the gRPC codec of this package's server and of the raft
// stream's client side. It encodes a *frameWriter and decodes into a
// *frameReader itself, and hands every other message (snapshot requests,
// replies) to gRPC's proto codec. Its name is "proto": the bytes it writes
// are a transportpb.Frame's, so a peer decodes them with the proto codec,
// and a frame written by a peer's proto codec decodes here. It holds no
// state and is safe for concurrent use.
type frameCodec struct{}

var _ encoding.CodecV2 = frameCodec{}

// protoCodec is gRPC's proto codec, registered by grpc's own imports.
var protoCodec = encoding.GetCodecV2(grpcproto.Name)

func (frameCodec) Name() string { return grpcproto.Name }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*frameWriter); ok {
		return w.marshal()
	}
	return protoCodec.Marshal(v)
}

// Unmarshal decodes data into v. gRPC frees data once it returns: a
// frameReader keeps nothing of it (raftpb's Unmarshal copies every byte
// field out of its input).
func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*frameReader)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	// One buffer (a small frame) is used in place; several are copied into
	// one from gRPC's pool, returned by Free.
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return r.unmarshal(buf.ReadOnlyData())
}

// frameWriter is one outgoing frame: the header of the stream's frames and
// the messages of this one with their encoded sizes, size bytes in all
// (frameHeaderSize plus a frameEntrySize per message).
type frameWriter struct {
	clusterID, from, to uint64
	msgs                []engine.Message
	sizes               []int // msgs[i].Msg.Size()
	size                int
}

// marshal encodes w in one buffer, from gRPC's pool if it is large enough
// to be worth pooling (gRPC returns it there once written).
func (w *frameWriter) marshal() (mem.BufferSlice, error) {
	if mem.IsBelowBufferPoolingThreshold(w.size) {
		buf := make([]byte, 0, w.size)
		buf, err := w.appendTo(buf)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(w.size)
	if _, err := w.appendTo((*buf)[:0]); err != nil {
		pool.Put(buf)
		return nil, err
	}
	*buf = (*buf)[:w.size]
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// appendTo encodes w into buf, which has room for w.size bytes, as proto's
// deterministic Marshal encodes the equivalent transportpb.Frame: fields in
// order, zero scalars and empty bytes omitted.
func (w *frameWriter) appendTo(buf []byte) ([]byte, error) {
	buf = appendUint64Field(buf, frameClusterID, w.clusterID)
	buf = appendUint64Field(buf, frameFrom, w.from)
	buf = appendUint64Field(buf, frameTo, w.to)
	for i := range w.msgs {
		m, n := &w.msgs[i], w.sizes[i]
		buf = protowire.AppendTag(buf, frameMessages, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(shardMessageSize(m.ShardID, n)))
		buf = appendUint64Field(buf, shardMsgShardID, m.ShardID)
		if n == 0 {
			continue
		}
		buf = protowire.AppendTag(buf, shardMsgRaftData, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(n))
		if len(buf)+n > cap(buf) {
			return nil, fmt.Errorf("transport: encode frame: %d bytes past its computed size %d", len(buf)+n-w.size, w.size)
		}
		if _, err := m.Msg.MarshalToSizedBuffer(buf[len(buf) : len(buf)+n]); err != nil {
			return nil, fmt.Errorf("transport: encode raft message of shard %d: %w", m.ShardID, err)
		}
		buf = buf[:len(buf)+n]
	}
	if len(buf) != w.size {
		return nil, fmt.Errorf("transport: encoded a frame of %d bytes, computed %d", len(buf), w.size)
	}
	return buf, nil
}

// appendUint64Field appends a proto3 uint64 field, omitted when zero.
func appendUint64Field(buf []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return buf
	}
	buf = protowire.AppendTag(buf, num, protowire.VarintType)
	return protowire.AppendVarint(buf, v)
}

// frameReader is the decoding state of one incoming raft stream, owned by
// its goroutine: the codec fills it with a frame (unmarshal), and batch
// validates the frame and hands it over.
//
// Batches and their messages are carved out of slabs: a handed-over batch
// and its messages are the handler's (engine.Handler.HandleBatch takes
// ownership) and are never written again here, but one allocation serves
// many small frames.
type frameReader struct {
	id identity

	// The last frame decoded.
	clusterID, from, to uint64
	size                int              // frameSize of the equivalent transportpb.Frame
	msgs                []engine.Message // decoded until bad
	bad                 int              // index of the first message that did not unmarshal, or -1
	badErr              error            // its error
	inSlab              bool             // msgs is the free head of slab

	slab    []engine.Message // its free part is slab[len(slab):cap(slab)]
	batches []engine.Batch   // free batches
}

// Slab sizes: a frame of more than slabMessages messages gets its own
// allocation, of its size.
const (
	slabMessages = 256
	slabBatches  = 64
)

// unmarshal decodes data, a transportpb.Frame, in one pass: the header
// fields, and every ShardMessage's raft message straight into an
// engine.Message (after a scan of the top-level tags that counts the
// messages, so that their slice is allocated once, at its size). It fails,
// as proto.Unmarshal of a transportpb.Frame does, when data is not a
// well-formed Frame; fields it does not know, and known ones of another wire
// type, are skipped as proto3 skips unknown fields. A raft message that does
// not decode does not fail it: batch reports it. Nothing of data is kept.
func (r *frameReader) unmarshal(data []byte) error {
	r.clusterID, r.from, r.to, r.size = 0, 0, 0, 0
	r.msgs, r.bad, r.badErr = nil, -1, nil
	n := countMessages(data)
	ms, err := r.parseFrame(data, r.freeMessages(n))
	if err != nil {
		clear(ms) // release the entries decoded
		return err
	}
	r.msgs, r.inSlab = ms, r.inSlab && len(ms) <= n
	return nil
}

// countMessages counts the ShardMessages of the encoded Frame data, up to
// the first malformed field, reading only the top-level tags and lengths.
func countMessages(data []byte) int {
	n := 0
	for len(data) > 0 {
		num, typ, l := consumeTag(data)
		if l < 0 {
			break
		}
		data = data[l:]
		if num == frameMessages && typ == protowire.BytesType {
			n++
		}
		if l = protowire.ConsumeFieldValue(num, typ, data); l < 0 {
			break
		}
		data = data[l:]
	}
	return n
}

// parseFrame is unmarshal's loop: it appends data's messages to ms, sets
// the header fields and size, and returns the messages.
func (r *frameReader) parseFrame(data []byte, ms []engine.Message) ([]engine.Message, error) {
	entries := 0
	for len(data) > 0 {
		num, typ, n := consumeTag(data)
		if n < 0 {
			return ms, frameParseError(n)
		}
		data = data[n:]
		switch {
		case num <= frameTo && typ == protowire.VarintType:
			var v uint64
			if v, n = protowire.ConsumeVarint(data); n < 0 {
				return ms, frameParseError(n)
			}
			switch num {
			case frameClusterID:
				r.clusterID = v
			case frameFrom:
				r.from = v
			case frameTo:
				r.to = v
			}
		case num == frameMessages && typ == protowire.BytesType:
			var sm []byte
			if sm, n = protowire.ConsumeBytes(data); n < 0 {
				return ms, frameParseError(n)
			}
			shardID, raw, err := parseShardMessage(sm)
			if err != nil {
				return ms, err
			}
			entries += frameEntrySize(shardID, len(raw))
			ms = append(ms, engine.Message{ShardID: shardID})
			if r.bad < 0 {
				if err := ms[len(ms)-1].Msg.Unmarshal(raw); err != nil {
					r.bad, r.badErr = len(ms)-1, err
				}
			}
		default:
			if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
				return ms, frameParseError(n)
			}
		}
		data = data[n:]
	}
	r.size = frameHeaderSize(r.clusterID, r.from, r.to) + entries
	return ms, nil
}

// parseShardMessage returns the fields of an encoded ShardMessage (the last
// of each, as proto3 does); raw aliases sm.
func parseShardMessage(sm []byte) (shardID uint64, raw []byte, err error) {
	for len(sm) > 0 {
		num, typ, n := consumeTag(sm)
		if n < 0 {
			return 0, nil, frameParseError(n)
		}
		sm = sm[n:]
		switch {
		case num == shardMsgShardID && typ == protowire.VarintType:
			shardID, n = protowire.ConsumeVarint(sm)
		case num == shardMsgRaftData && typ == protowire.BytesType:
			raw, n = protowire.ConsumeBytes(sm)
		default:
			n = protowire.ConsumeFieldValue(num, typ, sm)
		}
		if n < 0 {
			return 0, nil, frameParseError(n)
		}
		sm = sm[n:]
	}
	return shardID, raw, nil
}

// consumeTag is protowire.ConsumeTag, refusing the field numbers protobuf
// refuses in a message (ConsumeTag lets numbers up to MaxInt32 through).
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

// errMalformedFrame is what the codec returns for bytes that are not a
// Frame; gRPC ends the stream with an Internal status, as its proto codec
// does.
var errMalformedFrame = errors.New("transport: malformed frame")

func frameParseError(n int) error {
	return fmt.Errorf("%w: %v", errMalformedFrame, protowire.ParseError(n))
}

// freeMessages returns an empty slice with room for n messages to decode
// the next frame into: the free head of the slab if they fit in a slab.
func (r *frameReader) freeMessages(n int) []engine.Message {
	if n > slabMessages {
		r.inSlab = false
		return make([]engine.Message, 0, n)
	}
	if r.slab == nil || cap(r.slab)-len(r.slab) < n {
		r.slab = make([]engine.Message, 0, slabMessages)
	}
	r.inSlab = true
	return r.slab[len(r.slab) : len(r.slab) : len(r.slab)+n]
}

// batch validates the frame last unmarshalled and returns it as one Batch.
// An error wrapping ErrBadMessage refuses this frame only; any other refuses
// the sender (see checkSender). Frames carry no MsgSnap: snapshots have
// their own stream. It checks what the proto path's decodeFrame checked, in
// the same order, and returns the same errors.
func (r *frameReader) batch() (*engine.Batch, error) {
	ms := r.msgs
	r.msgs = nil
	if err := r.checkFrame(ms); err != nil {
		clear(ms) // release the entries
		return nil, err
	}
	if r.inSlab {
		r.slab = r.slab[:len(r.slab)+len(ms)]
	}
	if len(r.batches) == 0 {
		r.batches = make([]engine.Batch, slabBatches)
	}
	b := &r.batches[0]
	r.batches = r.batches[1:]
	*b = engine.Batch{ClusterID: r.clusterID, From: r.from, To: r.to, Messages: ms[:len(ms):len(ms)]}
	return b, nil
}

func (r *frameReader) checkFrame(ms []engine.Message) error {
	if err := r.id.checkSender(r.clusterID, r.from, r.to); err != nil {
		return err
	}
	for i := range ms {
		m := &ms[i]
		var err error
		if i == r.bad {
			err = unmarshalError(m.ShardID, r.badErr)
		} else {
			err = checkMessage(m.ShardID, r.from, r.to, &m.Msg)
		}
		if err != nil {
			return fmt.Errorf("message %d of %d: %w", i, len(ms), err)
		}
		if m.Msg.Type == raftpb.MsgSnap {
			return fmt.Errorf("%w: shard %d: MsgSnap in a frame", ErrBadMessage, m.ShardID)
		}
	}
	return nil
}
