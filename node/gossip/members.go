package gossip

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberEntry is a remote member in the table.
type memberEntry struct {
	meta    Meta // only NodeID while metaErr is set
	metaErr error
	addr    string
	state   State
	leaving bool      // its last meta that decoded carried the leaving flag
	since   time.Time // last state change
}

func (e *memberEntry) member() Member {
	return Member{Meta: e.meta.Clone(), Addr: e.addr, State: e.state, MetaErr: e.metaErr}
}

// delegate implements memberlist's Delegate, EventDelegate,
// ConflictDelegate and PingDelegate for a Gossip, keeping those methods out
// of Gossip's exported API. memberlist calls several of them with its node
// lock held: none calls back into memberlist.
type delegate Gossip

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate     = (*delegate)(nil)
)

// NodeMeta returns the encoded local Meta (always within MaxMetaSize, which
// is the limit memberlist passes).
func (d *delegate) NodeMeta(limit int) []byte {
	g := (*Gossip)(d)
	g.mu.Lock()
	b := g.metaBytes
	g.mu.Unlock()
	if len(b) > limit {
		g.log.Error("gossip: meta exceeds memberlist's limit, advertising none", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

// NotifyMsg receives the user messages of gossip packets.
func (d *delegate) NotifyMsg(b []byte) {
	g := (*Gossip)(d)
	if len(b) == 0 {
		return
	}
	if b[0] != msgTypeLeaders {
		g.stats.leaderMessagesInvalid.Add(1)
		g.log.Debug("gossip: dropping message of unknown type", "type", b[0], "bytes", len(b))
		return
	}
	g.receiveLeaders(b)
}

// GetBroadcasts hands memberlist the queued leader messages that fit.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.bq.GetBroadcasts(overhead, limit)
}

// LocalState: the leader table, for push/pull (see leaderState).
func (d *delegate) LocalState(join bool) []byte { return (*Gossip)(d).leaderState() }

// MergeRemoteState takes another node's leader table.
func (d *delegate) MergeRemoteState(buf []byte, join bool) { (*Gossip)(d).mergeLeaderState(buf) }

// NotifyJoin: a node joined, or came back after being declared dead.
func (d *delegate) NotifyJoin(n *memberlist.Node) { (*Gossip)(d).nodeAlive(n, "join") }

// NotifyUpdate: a node changed its meta.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { (*Gossip)(d).nodeAlive(n, "update") }

// NotifyLeave: a node was declared dead, or left.
func (d *delegate) NotifyLeave(n *memberlist.Node) { (*Gossip)(d).nodeGone(n) }

// NotifyConflict: a node named existing.Name announced itself from another
// address than the one memberlist knows (two processes claiming one node
// ID, possibly this node's).
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	g := (*Gossip)(d)
	id, err := strconv.ParseUint(existing.Name, 10, 64)
	if err != nil || id == 0 {
		g.log.Warn("gossip: name conflict for a foreign node", "name", existing.Name,
			"addr", existing.Address(), "other", other.Address())
		return
	}
	g.log.Error("gossip: node ID claimed from two addresses", "node", id,
		"addr", existing.Address(), "other", other.Address(), "self", existing.Name == g.name)
	g.addConflict(id)
}

// AckPayload: no payload in probe acks.
func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete: one of our probes got a direct answer, which clears a
// suspicion of ours.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	g := (*Gossip)(d)
	id, ok := g.remoteID(other.Name)
	if !ok {
		return
	}
	g.mu.Lock()
	if e := g.members[id]; e != nil && e.state == Suspect {
		g.setStateLocked(id, e, Alive)
		g.mu.Unlock()
		g.log.Info("gossip: suspected node answered", "node", id)
		kick(g.changeKick)
		return
	}
	g.mu.Unlock()
}

// remoteID parses a memberlist node name; ok is false for this node and for
// names that are not node IDs.
func (g *Gossip) remoteID(name string) (uint64, bool) {
	if name == g.name {
		return 0, false
	}
	id, err := strconv.ParseUint(name, 10, 64)
	return id, err == nil && id != 0
}

// nodeAlive records a join or meta update. A node whose meta does not
// decode is recorded all the same, flagged with the error (see
// Member.MetaErr).
func (g *Gossip) nodeAlive(n *memberlist.Node, event string) {
	if n.Name == g.name {
		kick(g.changeKick) // our own meta changed
		return
	}
	id, ok := g.remoteID(n.Name)
	if !ok {
		g.log.Warn("gossip: ignoring a node whose name is not a node ID", "name", n.Name, "addr", n.Address())
		return
	}
	meta, flags, err := g.decodeMemberMeta(id, n.Meta)
	addr := n.Address()
	conflict := false
	g.mu.Lock()
	e := g.members[id]
	if e == nil {
		e = &memberEntry{state: Alive, since: time.Now()}
		g.members[id] = e
	} else {
		// A live node ID re-appearing under another instance is a second
		// process claiming the ID (a restart keeps the data directory, hence
		// the instance). A flagged meta has no instance.
		conflict = !e.state.Gone() && e.meta.Instance != 0 && meta.Instance != 0 &&
			e.meta.Instance != meta.Instance
		g.setStateLocked(id, e, Alive)
	}
	prevErr := e.metaErr
	e.meta, e.metaErr, e.addr = meta, err, addr
	if err == nil {
		e.leaving = flags&metaFlagLeaving != 0
	}
	g.mu.Unlock()
	switch {
	case err != nil && (prevErr == nil || prevErr.Error() != err.Error()):
		// Logged when the member turns bad, not at each of its updates.
		g.log.Warn("gossip: member's meta does not decode: listed, flagged unusable", "node", id, "addr", addr,
			"event", event, "bytes", len(n.Meta), "err", err)
	case err != nil:
		g.log.Debug("gossip: member's meta still does not decode", "node", id, "addr", addr, "event", event, "err", err)
	case prevErr != nil:
		g.log.Info("gossip: member's meta decodes again", "node", id, "addr", addr, "cluster", meta.ClusterID)
	default:
		g.log.Debug("gossip: member "+event, "node", id, "addr", addr, "cluster", meta.ClusterID)
	}
	if conflict {
		g.log.Error("gossip: node ID claimed by another instance", "node", id, "addr", addr,
			"instance", meta.Instance)
		g.addConflict(id)
	}
	kick(g.changeKick)
}

// decodeMemberMeta decodes the meta of node id. On failure, counted, it
// returns a Meta holding only id and an error wrapping ErrMalformedMeta.
func (g *Gossip) decodeMemberMeta(id uint64, b []byte) (Meta, uint64, error) {
	meta, flags, err := decodeMeta(b)
	if err == nil && meta.NodeID != id {
		err = fmt.Errorf("%w: %w (%d)", ErrMalformedMeta, errNameMismatch, meta.NodeID)
	}
	if err != nil {
		g.stats.metaInvalid.Add(1)
		return Meta{NodeID: id}, 0, err
	}
	return meta, flags, nil
}

// errNameMismatch: a node's meta names another node ID than its memberlist
// name.
const errNameMismatch decodeError = "meta node ID differs from the node name"

// nodeGone records a node declared dead or left.
func (g *Gossip) nodeGone(n *memberlist.Node) {
	if n.Name == g.name {
		kick(g.changeKick)
		return
	}
	id, ok := g.remoteID(n.Name)
	if !ok {
		return
	}
	meta, flags, err := g.decodeMemberMeta(id, n.Meta)
	g.mu.Lock()
	e := g.members[id]
	if e == nil { // gone before we saw it alive
		e = &memberEntry{meta: meta, metaErr: err, addr: n.Address(), state: Alive, since: time.Now()}
		g.members[id] = e
	} else if err != nil || e.metaErr != nil {
		e.meta, e.metaErr = meta, err
	}
	if err == nil && flags&metaFlagLeaving != 0 {
		e.leaving = true
	}
	state := Dead
	if e.leaving {
		state = Left
	}
	g.setStateLocked(id, e, state)
	addr := e.addr
	g.mu.Unlock()
	if state == Left {
		g.log.Info("gossip: member left", "node", id, "addr", addr)
	} else {
		g.log.Warn("gossip: member failed", "node", id, "addr", addr)
	}
	kick(g.changeKick)
}

// suspect records that our probe of the named node failed.
func (g *Gossip) suspect(name string) {
	id, ok := g.remoteID(name)
	if !ok {
		return
	}
	g.mu.Lock()
	e := g.members[id]
	changed := e != nil && e.state == Alive
	if changed {
		g.setStateLocked(id, e, Suspect)
	}
	g.mu.Unlock()
	if changed {
		kick(g.changeKick)
	}
}

func (g *Gossip) setStateLocked(id uint64, e *memberEntry, s State) {
	if e.state == s {
		return
	}
	if g.cfg.onStateChange != nil {
		g.cfg.onStateChange(id, e.state, s)
	}
	e.state, e.since = s, time.Now()
}

func (g *Gossip) addConflict(id uint64) {
	g.mu.Lock()
	_, had := g.conflicts[id]
	g.conflicts[id] = struct{}{}
	g.mu.Unlock()
	if !had {
		kick(g.changeKick)
	}
}

// Members returns every known member, this node included, sorted by node
// ID. Dead and left members stay listed for Config.DeadRetention.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reapLocked()
	ms := make([]Member, 0, len(g.members)+1)
	ms = append(ms, g.selfLocked())
	for _, e := range g.members {
		ms = append(ms, e.member())
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.Meta.NodeID, b.Meta.NodeID) })
	return ms
}

// Member returns the member with the given node ID, this node included.
func (g *Gossip) Member(nodeID uint64) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if nodeID == g.cfg.Meta.NodeID {
		return g.selfLocked(), true
	}
	g.reapLocked()
	e := g.members[nodeID]
	if e == nil {
		return Member{}, false
	}
	return e.member(), true
}

func (g *Gossip) selfLocked() Member {
	s := Alive
	if g.leaving {
		s = Left
	}
	return Member{Meta: g.meta.Clone(), Addr: g.localAddr, State: s}
}

// reapLocked forgets members gone for longer than DeadRetention.
func (g *Gossip) reapLocked() {
	for id, e := range g.members {
		if e.state.Gone() && time.Since(e.since) > g.cfg.DeadRetention {
			delete(g.members, id)
		}
	}
}

// Conflicts returns, sorted, the node IDs found claimed by two processes:
// memberlist saw the ID announced from two addresses (the ID may be this
// node's), or a live node's Meta.Instance changed. They stay listed: a
// conflict needs an operator.
func (g *Gossip) Conflicts() []uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	ids := make([]uint64, 0, len(g.conflicts))
	for id := range g.conflicts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// memberlist log lines look like "[INFO] memberlist: message".
var memberlistLevels = map[string]slog.Level{
	"[DEBUG]": slog.LevelDebug,
	"[INFO]":  slog.LevelInfo,
	"[WARN]":  slog.LevelWarn,
	"[ERR]":   slog.LevelError,
	"[ERROR]": slog.LevelError,
}

// parseMemberlistLog splits a memberlist log line into a level and a
// message (unknown levels log at Info).
func parseMemberlistLog(line string) (slog.Level, string) {
	line = strings.TrimRight(line, "\r\n")
	level := slog.LevelInfo
	if tag, rest, ok := strings.Cut(line, " "); ok {
		if l, known := memberlistLevels[tag]; known {
			level, line = l, rest
		}
	}
	return level, line
}

// suspectedName recognizes the line memberlist logs when one of its probes
// fails: "memberlist: Suspect <name> has failed, no acks received". It is
// the only report of a local suspicion memberlist makes; the integration
// tests fail if a memberlist upgrade rewords it.
func suspectedName(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "memberlist: Suspect ")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, " has failed, no acks received")
	return name, ok && name != ""
}
