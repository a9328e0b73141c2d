package gossip

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/memberlist"
)

// LeaderUpdate says that, as of Term, Leader leads shard ShardID (Leader 0:
// no known leader). Shard IDs are nonzero.
type LeaderUpdate struct {
	ShardID, Leader, Term uint64
}

// newer reports whether u supersedes old on the wire: a higher term, or the
// same term and a higher leader (see the package doc).
func (u LeaderUpdate) newer(old LeaderUpdate) bool {
	return u.Term > old.Term || (u.Term == old.Term && u.Leader > old.Leader)
}

// Stats are counters of the gossip: of the leader gossip, and of the
// members' metadata that did not decode.
type Stats struct {
	// LeaderUpdatesSent counts updates packed into messages (own and
	// re-gossiped ones).
	LeaderUpdatesSent uint64
	// LeaderMessagesSent counts messages handed to the broadcast queue (each
	// is then transmitted several times).
	LeaderMessagesSent uint64
	// LeaderMessagesReceived counts well-formed messages received.
	LeaderMessagesReceived uint64
	// LeaderMessagesInvalid counts received messages that failed to decode.
	LeaderMessagesInvalid uint64
	// LeaderUpdatesReceived counts received updates that were new to this
	// node (delivered to OnLeaders and re-gossiped).
	LeaderUpdatesReceived uint64
	// LeaderUpdatesDuplicate counts received updates that were not new.
	LeaderUpdatesDuplicate uint64
	// MetaInvalid counts the members' metadata that did not decode, or
	// named another node than the member's name: each join, update and
	// leave event that carried it counts once.
	MetaInvalid uint64
}

// Leader message wire format, version 1:
//
//	type     byte (msgTypeLeaders)
//	version  byte (1)
//	count    uvarint (>= 1)
//	count x  ShardID, Leader, Term uvarint (ShardID != 0)
//
// Trailing bytes are an error.
const (
	msgTypeLeaders     byte = 'L'
	leadersVersion     byte = 1
	leadersHeaderSize       = 2
	minLeaderEntrySize      = 3
	maxLeaderEntrySize      = 3 * binary.MaxVarintLen64

	// maxLeaderMsgSize bounds a leader message, leaving room in a default
	// 1400-byte memberlist packet for the carrier message and the packet,
	// compound, label, CRC and encryption overheads.
	maxLeaderMsgSize = 1200
	// leaderPacketReserve is what a packet needs besides a leader message;
	// with a smaller memberlist UDPBufferSize, messages shrink accordingly.
	leaderPacketReserve = 200
	// minLeaderMsgSize is the smallest usable message limit (several full-size
	// entries).
	minLeaderMsgSize = 64
)

// uvarintLen is the encoded size of v.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func leaderEntrySize(u LeaderUpdate) int {
	return uvarintLen(u.ShardID) + uvarintLen(u.Leader) + uvarintLen(u.Term)
}

// packLeaders encodes the longest prefix of us that fits in maxSize bytes as
// one message and returns the message and the number of updates it holds (0
// and nil if not even one fits).
func packLeaders(us []LeaderUpdate, maxSize int) ([]byte, int) {
	body, n := 0, 0
	for n < len(us) {
		e := leaderEntrySize(us[n])
		if leadersHeaderSize+uvarintLen(uint64(n+1))+body+e > maxSize {
			break
		}
		body += e
		n++
	}
	if n == 0 {
		return nil, 0
	}
	msg := make([]byte, 0, leadersHeaderSize+uvarintLen(uint64(n))+body)
	msg = append(msg, msgTypeLeaders, leadersVersion)
	msg = binary.AppendUvarint(msg, uint64(n))
	for _, u := range us[:n] {
		msg = binary.AppendUvarint(msg, u.ShardID)
		msg = binary.AppendUvarint(msg, u.Leader)
		msg = binary.AppendUvarint(msg, u.Term)
	}
	return msg, n
}

// decodeLeaders appends the updates of a leader message to dst. Every
// failure wraps ErrMalformedMessage.
func decodeLeaders(dst []LeaderUpdate, b []byte) ([]LeaderUpdate, error) {
	if len(b) < leadersHeaderSize {
		return dst, fmt.Errorf("%w: %w", ErrMalformedMessage, errTruncated)
	}
	if b[0] != msgTypeLeaders {
		return dst, fmt.Errorf("%w: unknown type %#x", ErrMalformedMessage, b[0])
	}
	if b[1] != leadersVersion {
		return dst, fmt.Errorf("%w: unknown version %d", ErrMalformedMessage, b[1])
	}
	r := reader{b: b[leadersHeaderSize:]}
	n := r.count(minLeaderEntrySize)
	if r.err == nil && n == 0 {
		r.fail(errEmptyBatch)
	}
	start := len(dst)
	for i := 0; i < n && r.err == nil; i++ {
		u := LeaderUpdate{ShardID: r.uvarint(), Leader: r.uvarint(), Term: r.uvarint()}
		if r.err == nil && u.ShardID == 0 {
			r.fail(errZeroShard)
		}
		dst = append(dst, u)
	}
	if err := r.finish(); err != nil {
		return dst[:start], fmt.Errorf("%w: %w", ErrMalformedMessage, err)
	}
	return dst, nil
}

// leaderBroadcast is one leader message in the broadcast queue. Every batch
// is distinct: it never invalidates another.
type leaderBroadcast struct {
	g   *Gossip
	msg []byte
}

func (b *leaderBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *leaderBroadcast) Message() []byte                       { return b.msg }
func (b *leaderBroadcast) UniqueBroadcast()                      {}

// Finished runs with the queue's lock held: it only updates an atomic and
// wakes the flusher.
func (b *leaderBroadcast) Finished() {
	b.g.inFlight.Add(-int64(len(b.msg)))
	kick(b.g.flushKick)
}

// BroadcastLeaders queues leader updates for gossip and returns at once. Per
// shard, an update with a newer term replaces a queued one, an equal term
// replaces it too (last wins), an older term is dropped, as are updates
// older than what this node already saw for the shard and updates for shard
// 0. Updates received from other nodes are not echoed back to OnLeaders.
func (g *Gossip) BroadcastLeaders(us []LeaderUpdate) {
	if len(us) == 0 {
		return
	}
	queued := false
	g.lmu.Lock()
	for _, u := range us {
		if u.ShardID == 0 {
			continue
		}
		if p, ok := g.pending[u.ShardID]; ok && u.Term < p.Term {
			continue
		}
		s, seen := g.seen[u.ShardID]
		if seen && u.Term < s.Term {
			continue
		}
		g.pending[u.ShardID] = u
		if !seen || u.newer(s) {
			g.seen[u.ShardID] = u
			g.seenChangedLocked()
		}
		queued = true
	}
	g.lmu.Unlock()
	if queued {
		kick(g.flushKick)
	}
}

// flushLoop packs pending updates into broadcasts, at most once per
// LeaderFlushInterval, whenever it is kicked (new updates, a message left
// the broadcast queue).
func (g *Gossip) flushLoop() {
	defer g.wg.Done()
	var last time.Time
	for {
		select {
		case <-g.stop:
			return
		case <-g.flushKick:
		}
		if wait := g.cfg.LeaderFlushInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-g.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		g.flushLeaders()
	}
}

// flushLeaders moves pending updates into the broadcast queue, as long as
// the messages in flight fit in one packet (see the package doc). What does
// not fit stays pending; the flusher is kicked again when a message leaves
// the queue.
func (g *Gossip) flushLeaders() {
	for {
		budget := g.maxLeaderMsg - int(g.inFlight.Load())
		if budget < minLeaderMsgSize {
			return
		}
		g.lmu.Lock()
		if len(g.pending) == 0 {
			g.lmu.Unlock()
			return
		}
		us := slices.SortedFunc(maps.Values(g.pending), func(a, b LeaderUpdate) int {
			return cmp.Compare(a.ShardID, b.ShardID)
		})
		msg, n := packLeaders(us, budget)
		for _, u := range us[:n] {
			delete(g.pending, u.ShardID)
		}
		g.lmu.Unlock()
		if n == 0 {
			return
		}
		g.inFlight.Add(int64(len(msg)))
		g.bq.QueueBroadcast(&leaderBroadcast{g: g, msg: msg})
		g.stats.leaderUpdatesSent.Add(uint64(n))
		g.stats.leaderMessagesSent.Add(1)
		g.log.Debug("gossip: queued leader updates", "updates", n, "bytes", len(msg))
	}
}

// receiveLeaders handles a leader message from another node: updates new to
// this node are queued for OnLeaders and for re-gossip; the others are
// dropped, which is what stops an update from circulating forever.
func (g *Gossip) receiveLeaders(b []byte) {
	us, err := decodeLeaders(nil, b)
	if err != nil {
		g.stats.leaderMessagesInvalid.Add(1)
		g.log.Debug("gossip: dropping malformed message", "bytes", len(b), "err", err)
		return
	}
	g.stats.leaderMessagesReceived.Add(1)
	g.accept(us, true)
}

// accept takes updates from another node: the ones new to this node go to
// OnLeaders and, with regossip, to the pending set for re-gossip.
func (g *Gossip) accept(us []LeaderUpdate, regossip bool) {
	var fresh, dup uint64
	g.lmu.Lock()
	for _, u := range us {
		if s, ok := g.seen[u.ShardID]; ok && !u.newer(s) {
			dup++
			continue
		}
		fresh++
		g.seen[u.ShardID] = u
		g.seenChangedLocked()
		if p, ok := g.pending[u.ShardID]; regossip && (!ok || u.Term >= p.Term) {
			g.pending[u.ShardID] = u
		}
		if g.cfg.OnLeaders != nil {
			g.inbox[u.ShardID] = u
		}
	}
	g.lmu.Unlock()
	g.stats.leaderUpdatesReceived.Add(fresh)
	g.stats.leaderUpdatesDuplicate.Add(dup)
	if fresh > 0 {
		if regossip {
			kick(g.flushKick)
		}
		kick(g.deliverKick)
	}
}

// Leaders returns the newest leader this node knows of each shard, from its
// own updates and other nodes'.
func (g *Gossip) Leaders() []LeaderUpdate {
	g.lmu.Lock()
	defer g.lmu.Unlock()
	return slices.SortedFunc(maps.Values(g.seen), func(a, b LeaderUpdate) int {
		return cmp.Compare(a.ShardID, b.ShardID)
	})
}

// pushPullCache spares the push/pull exchange of an idle cluster the work
// that changes nothing: every few seconds each node sends every leader it
// knows (10,000 shards: 10,000 updates) and takes another's. version
// counts the changes of seen; state is leaderState's encoding of seen at
// stateVersion. merged holds the hashes (xxhash) of the last states taken
// and of the last one encoded, with their update counts: seen only ever
// moves to newer updates, so a state taken (or encoded) once holds nothing
// new for this node when the same bytes come again, and is not decoded
// again. Guarded by Gossip.lmu.
type pushPullCache struct {
	version      uint64
	stateVersion uint64
	state        []byte
	merged       [4]mergedState
	next         int // the slot of merged to fill next
}

type mergedState struct {
	hash    uint64
	updates int
}

// seenChangedLocked notes a change of seen; lmu must be held.
func (g *Gossip) seenChangedLocked() { g.pushPull.version++ }

// noteMergedLocked remembers a state whose updates seen now holds (or
// newer ones); lmu must be held.
func (g *Gossip) noteMergedLocked(b []byte, updates int) {
	c := &g.pushPull
	c.merged[c.next] = mergedState{hash: xxhash.Sum64(b), updates: updates}
	c.next = (c.next + 1) % len(c.merged)
}

// leaderState encodes every leader this node knows, for memberlist's
// push/pull exchange: a node that joins, or was away while leaders changed,
// learns them all at its next exchange (at once on join). The encoding is
// kept until seen changes.
func (g *Gossip) leaderState() []byte {
	g.lmu.Lock()
	defer g.lmu.Unlock()
	c := &g.pushPull
	if c.state != nil && c.stateVersion == c.version {
		return c.state
	}
	if len(g.seen) == 0 {
		return nil
	}
	us := slices.SortedFunc(maps.Values(g.seen), func(a, b LeaderUpdate) int {
		return cmp.Compare(a.ShardID, b.ShardID)
	})
	msg, _ := packLeaders(us, 1<<30)
	c.state, c.stateVersion = msg, c.version
	g.noteMergedLocked(msg, len(us))
	return msg
}

// mergeLeaderState takes another node's leaderState. A state that this
// node took or sent before, byte for byte, is counted as duplicates
// without being decoded (see pushPullCache).
func (g *Gossip) mergeLeaderState(b []byte) {
	if len(b) == 0 {
		return
	}
	h := xxhash.Sum64(b)
	g.lmu.Lock()
	for _, m := range g.pushPull.merged {
		if m.hash == h && m.updates > 0 {
			g.lmu.Unlock()
			g.stats.leaderUpdatesDuplicate.Add(uint64(m.updates))
			return
		}
	}
	g.lmu.Unlock()
	us, err := decodeLeaders(nil, b)
	if err != nil {
		g.stats.leaderMessagesInvalid.Add(1)
		g.log.Debug("gossip: dropping malformed push/pull state", "bytes", len(b), "err", err)
		return
	}
	g.accept(us, false)
	g.lmu.Lock()
	g.noteMergedLocked(b, len(us))
	g.lmu.Unlock()
}

// deliverLoop calls OnLeaders with the updates received since its last
// call, one call at a time, shards in ascending order.
func (g *Gossip) deliverLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case <-g.deliverKick:
		}
		g.lmu.Lock()
		if len(g.inbox) == 0 {
			g.lmu.Unlock()
			continue
		}
		batch := slices.SortedFunc(maps.Values(g.inbox), func(a, b LeaderUpdate) int {
			return cmp.Compare(a.ShardID, b.ShardID)
		})
		clear(g.inbox)
		g.lmu.Unlock()
		g.cfg.OnLeaders(batch)
	}
}

// Stats returns the gossip counters.
func (g *Gossip) Stats() Stats {
	return Stats{
		LeaderUpdatesSent:      g.stats.leaderUpdatesSent.Load(),
		LeaderMessagesSent:     g.stats.leaderMessagesSent.Load(),
		LeaderMessagesReceived: g.stats.leaderMessagesReceived.Load(),
		LeaderMessagesInvalid:  g.stats.leaderMessagesInvalid.Load(),
		LeaderUpdatesReceived:  g.stats.leaderUpdatesReceived.Load(),
		LeaderUpdatesDuplicate: g.stats.leaderUpdatesDuplicate.Load(),
		MetaInvalid:            g.stats.metaInvalid.Load(),
	}
}

// kick does a non-blocking send on a 1-buffered wake-up channel.
func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
