// Package heartbeat coalesces raft heartbeats across shards.
//
// etcd raft emits one MsgHeartbeat per follower per shard each heartbeat
// interval, and one MsgHeartbeatResp back: O(shards) messages per interval
// between every pair of nodes. The engine strips those messages from each
// Ready (IsCoalescable) and adds them, as compact Beats, to a Coalescer that
// buffers them per destination node; once per tick the engine flushes the
// Coalescer, sending every destination ONE raft message (shard 0, type
// MsgHeartbeat) whose Context carries all its Beats. The receiver expands
// them (DecodeBatch, Beat.Message) into per-shard messages in one pass. The
// message is sent every tick even when it carries no Beat: it is also the
// node-to-node liveness signal that wakes quiesced shards whose leader died.
//
// Quiescence rides on the same Beats: a leader whose shard is idle (every
// follower caught up, nothing pending) sends a last Beat with Quiesce set and
// stops ticking the shard; a follower that is caught up stops too. Any
// proposal, read or other message wakes the shard (engine/quiesce.go).
//
// Heartbeats that carry a context (ReadIndex confirmations) are never
// coalesced: they go out at once as ordinary messages.
//
// Concurrency: a Coalescer is safe for concurrent use (workers add, the tick
// loop flushes); the rest is pure functions.
package heartbeat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
)

// Beat is one shard's heartbeat (or response) between two replicas, on the
// nodes of the batch that carries it. From and To are replica IDs (raft's
// IDs), which are not node IDs.
type Beat struct {
	ShardID uint64
	From    uint64 // sending replica
	To      uint64 // receiving replica
	Term    uint64
	Commit  uint64 // heartbeats only
	Resp    bool   // a MsgHeartbeatResp
	Quiesce bool   // the leader asks the follower to stop ticking
}

// IsCoalescable reports whether m can travel as a Beat.
func IsCoalescable(m *raftpb.Message) bool {
	return (m.Type == raftpb.MsgHeartbeat || m.Type == raftpb.MsgHeartbeatResp) && len(m.Context) == 0
}

// FromMessage makes the Beat of a coalescable message.
func FromMessage(shardID uint64, m *raftpb.Message) Beat {
	return Beat{ShardID: shardID, From: m.From, To: m.To, Term: m.Term, Commit: m.Commit, Resp: m.Type == raftpb.MsgHeartbeatResp}
}

// Message expands b into the raft message it stands for.
func (b Beat) Message() raftpb.Message {
	t := raftpb.MsgHeartbeat
	if b.Resp {
		t = raftpb.MsgHeartbeatResp
	}
	return raftpb.Message{Type: t, From: b.From, To: b.To, Term: b.Term, Commit: b.Commit}
}

// Wire format of a batch: a version byte (2), then per Beat: uvarint shard
// ID, uvarint from and to replica IDs, uvarint term, uvarint commit, one
// flag byte (1 = response, 2 = quiesce). Version 1 had no replica IDs.
const (
	version  = 2
	flagResp = 1
	flagQuie = 2
)

// ErrMalformed is returned for a batch that does not decode.
var ErrMalformed = errors.New("heartbeat: malformed batch")

// AppendBatch encodes beats after dst.
func AppendBatch(dst []byte, beats []Beat) []byte {
	dst = append(dst, version)
	for _, b := range beats {
		dst = binary.AppendUvarint(dst, b.ShardID)
		dst = binary.AppendUvarint(dst, b.From)
		dst = binary.AppendUvarint(dst, b.To)
		dst = binary.AppendUvarint(dst, b.Term)
		dst = binary.AppendUvarint(dst, b.Commit)
		var f byte
		if b.Resp {
			f |= flagResp
		}
		if b.Quiesce {
			f |= flagQuie
		}
		dst = append(dst, f)
	}
	return dst
}

// DecodeBatch decodes what AppendBatch encoded, appending to out.
func DecodeBatch(out []Beat, src []byte) ([]Beat, error) {
	if len(src) == 0 || src[0] != version {
		return out, fmt.Errorf("%w: version", ErrMalformed)
	}
	src = src[1:]
	for len(src) > 0 {
		var b Beat
		var vals [5]uint64
		for i := range vals {
			v, n := binary.Uvarint(src)
			if n <= 0 {
				return out, fmt.Errorf("%w: truncated beat", ErrMalformed)
			}
			vals[i], src = v, src[n:]
		}
		if len(src) == 0 {
			return out, fmt.Errorf("%w: missing flags", ErrMalformed)
		}
		f := src[0]
		src = src[1:]
		if f&^(flagResp|flagQuie) != 0 || vals[0] == 0 || vals[1] == 0 || vals[2] == 0 {
			return out, fmt.Errorf("%w: flags %#x shard %d replicas %d -> %d", ErrMalformed, f, vals[0], vals[1], vals[2])
		}
		b.ShardID, b.From, b.To, b.Term, b.Commit = vals[0], vals[1], vals[2], vals[3], vals[4]
		b.Resp, b.Quiesce = f&flagResp != 0, f&flagQuie != 0
		out = append(out, b)
	}
	return out, nil
}

// Coalescer buffers Beats per destination node until the next flush.
type Coalescer struct {
	mu struct {
		sync.Mutex
		pending map[uint64][]Beat // by destination node
		added   uint64
	}
}

// NewCoalescer returns an empty Coalescer.
func NewCoalescer() *Coalescer {
	c := &Coalescer{}
	c.mu.pending = make(map[uint64][]Beat)
	return c
}

// Add buffers beats for node to.
func (c *Coalescer) Add(to uint64, beats ...Beat) {
	c.mu.Lock()
	c.mu.pending[to] = append(c.mu.pending[to], beats...)
	c.mu.added += uint64(len(beats))
	c.mu.Unlock()
}

// Flush hands fn the buffered Beats of every node in peers (an empty slice
// for a peer with none: the liveness signal) and of any other node that has
// some, and empties the buffers. fn must not call back into c; the slice is
// valid during the call only.
func (c *Coalescer) Flush(peers []uint64, fn func(to uint64, beats []Beat)) {
	c.mu.Lock()
	taken := c.mu.pending
	c.mu.pending = make(map[uint64][]Beat, len(taken))
	c.mu.Unlock()
	for _, p := range peers {
		fn(p, taken[p])
		delete(taken, p)
	}
	for to, beats := range taken {
		fn(to, beats)
	}
}

// Added returns how many Beats were ever added: heartbeats that travelled
// coalesced instead of as messages of their own.
func (c *Coalescer) Added() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.added
}
