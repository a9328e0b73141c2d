package memtransport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// Errors specific to this transport. The engine's errors (engine.ErrQueueFull,
// engine.ErrUnknownPeer, engine.ErrTransportClosed) are returned as they are.
var (
	// ErrLinkCut fails a snapshot stream whose link is cut (Cut, Partition,
	// Isolate) in either direction, at the start or between two chunks.
	ErrLinkCut = errors.New("memtransport: link cut")
	// ErrNotStarted is returned by Send and SendSnapshot before Start.
	ErrNotStarted = errors.New("memtransport: endpoint not started")
)

// link is one direction between two nodes.
type link struct{ from, to uint64 }

// Network connects the Endpoints of one in-process cluster and injects faults
// into the traffic between them. All its methods are safe for concurrent use,
// including while traffic flows.
type Network struct {
	cfg Config

	// snapNext is the end of the last snapshot chunk reserved under
	// Config.SnapshotRate: streams share one timeline.
	snapMu   sync.Mutex
	snapNext time.Time

	// quiet is true when no fault and no cut is set: senders then deliver
	// without taking mu.
	quiet atomic.Bool

	// mu guards the fields below. Lock order: Network.mu, then Endpoint.mu,
	// then peer.mu; no handler is called with any of them held.
	mu struct {
		sync.Mutex
		closed bool
		// endpoints holds the current incarnation of each node; a closed
		// endpoint is removed, and Endpoint creates a new one.
		endpoints map[uint64]*Endpoint
		faults    Faults
		rng       *rand.Rand
		cuts      map[link]struct{}   // one-way cuts (Cut, Partition)
		isolated  map[uint64]struct{} // nodes cut from every other node
		// reported records, per cut link, the sender endpoint that has been
		// told PeerUnreachable during the current cut episode. An entry is
		// removed when its link is no longer cut.
		reported map[link]*Endpoint
		// topo is closed and replaced on every change of cuts, so that
		// snapshot streams blocked on flow control notice a new cut.
		topo chan struct{}
	}
}

// NewNetwork returns an empty network. It copies cfg, fills zero fields with
// their defaults and panics if cfg.Validate fails (a bad test configuration is
// a programming error).
func NewNetwork(cfg Config) *Network {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	n := &Network{cfg: cfg.withDefaults()}
	seed := uint64(n.cfg.Seed)
	n.mu.endpoints = make(map[uint64]*Endpoint)
	n.mu.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n.mu.cuts = make(map[link]struct{})
	n.mu.isolated = make(map[uint64]struct{})
	n.mu.reported = make(map[link]*Endpoint)
	n.mu.topo = make(chan struct{})
	n.quiet.Store(true)
	return n
}

// Config returns the network's configuration, defaults filled in.
func (n *Network) Config() Config { return n.cfg }

// Endpoint returns the transport of node nodeID. While that node's endpoint is
// open, Endpoint returns the same one; once it is closed (Endpoint.Close or
// Stop), Endpoint creates a new one: the node restarted. After Close of the
// network, Endpoint returns a closed endpoint.
func (n *Network) Endpoint(nodeID uint64) *Endpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.mu.endpoints[nodeID]; ok && !e.isClosed() {
		return e
	}
	e := newEndpoint(n, nodeID)
	if n.mu.closed {
		e.closeUnstarted()
		return e
	}
	n.mu.endpoints[nodeID] = e
	return e
}

// Stop closes the current endpoint of node nodeID, if any: the node crashed.
// Messages in flight to it are dropped.
func (n *Network) Stop(nodeID uint64) {
	n.mu.Lock()
	e := n.mu.endpoints[nodeID]
	n.mu.Unlock()
	if e != nil {
		_ = e.Close()
	}
}

// Close closes every endpoint and waits for all goroutines the network started.
func (n *Network) Close() {
	n.mu.Lock()
	n.mu.closed = true
	eps := make([]*Endpoint, 0, len(n.mu.endpoints))
	for _, e := range n.mu.endpoints {
		eps = append(eps, e)
	}
	n.mu.Unlock()
	for _, e := range eps {
		_ = e.Close()
	}
}

// forget removes e from the current endpoints if it is still there.
func (n *Network) forget(e *Endpoint) {
	n.mu.Lock()
	if n.mu.endpoints[e.nodeID] == e {
		delete(n.mu.endpoints, e.nodeID)
	}
	n.mu.Unlock()
}

// lookup returns the current endpoint of nodeID, or nil.
func (n *Network) lookup(nodeID uint64) *Endpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.endpoints[nodeID]
}

// SetFaults replaces the injected faults. It takes effect for the next batch
// each sender handles.
func (n *Network) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.faults = f
	n.updateQuietLocked()
	return nil
}

// Faults returns the injected faults.
func (n *Network) Faults() Faults {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.faults
}

// Partition cuts every link between a node of groupA and a node of groupB, in
// both directions. Links within a group are untouched; cuts add up.
func (n *Network) Partition(groupA, groupB []uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range groupA {
		for _, b := range groupB {
			if a != b {
				n.mu.cuts[link{a, b}] = struct{}{}
				n.mu.cuts[link{b, a}] = struct{}{}
			}
		}
	}
	n.topologyChangedLocked()
}

// Isolate cuts node nodeID off from every other node, present or future, in
// both directions, until Heal.
func (n *Network) Isolate(nodeID uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.isolated[nodeID] = struct{}{}
	n.topologyChangedLocked()
}

// Cut cuts the link from node from to node to, in that direction only.
func (n *Network) Cut(from, to uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.cuts[link{from, to}] = struct{}{}
	n.topologyChangedLocked()
}

// Uncut removes the cut from node from to node to set by Cut or Partition.
// An isolation of either node still applies.
func (n *Network) Uncut(from, to uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.mu.cuts, link{from, to})
	n.topologyChangedLocked()
}

// Heal removes every cut, isolation and fault.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.mu.cuts)
	clear(n.mu.isolated)
	n.mu.faults = Faults{}
	n.topologyChangedLocked()
}

// Reachable reports whether messages from node from currently reach node to
// (ignoring random faults and whether the nodes are up).
func (n *Network) Reachable(from, to uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.isCutLocked(from, to)
}

func (n *Network) isCutLocked(from, to uint64) bool {
	if from == to {
		return false
	}
	if _, ok := n.mu.cuts[link{from, to}]; ok {
		return true
	}
	_, fromIso := n.mu.isolated[from]
	_, toIso := n.mu.isolated[to]
	return fromIso || toIso
}

func (n *Network) topologyChangedLocked() {
	for l := range n.mu.reported {
		if !n.isCutLocked(l.from, l.to) {
			delete(n.mu.reported, l) // the episode is over
		}
	}
	close(n.mu.topo)
	n.mu.topo = make(chan struct{})
	n.updateQuietLocked()
}

func (n *Network) updateQuietLocked() {
	n.quiet.Store(!n.mu.faults.active() && len(n.mu.cuts) == 0 && len(n.mu.isolated) == 0)
}

// topology returns a channel closed at the next change of cuts.
func (n *Network) topology() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.topo
}

// streamCut reports whether a snapshot stream between a and b is cut: a stream
// needs both directions.
func (n *Network) streamCut(a, b uint64) bool {
	if n.quiet.Load() {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.isCutLocked(a, b) || n.isCutLocked(b, a)
}

// checkCut reports whether the link from src to node to is cut and, if so,
// whether src must now be told PeerUnreachable (once per cut episode).
func (n *Network) checkCut(src *Endpoint, to uint64) (cut, report bool) {
	if n.quiet.Load() {
		return false, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.checkCutLocked(src, to)
}

func (n *Network) checkCutLocked(src *Endpoint, to uint64) (cut, report bool) {
	l := link{src.nodeID, to}
	if !n.isCutLocked(l.from, l.to) {
		return false, false
	}
	if n.mu.reported[l] == src {
		return true, false
	}
	n.mu.reported[l] = src
	return true, true
}

// reserveSnapshot reserves bytes of snapshot bandwidth and returns when they
// have been sent at Config.SnapshotRate (which must be > 0).
func (n *Network) reserveSnapshot(bytes int) time.Time {
	d := time.Duration(float64(bytes) / float64(n.cfg.SnapshotRate) * float64(time.Second))
	n.snapMu.Lock()
	defer n.snapMu.Unlock()
	if now := time.Now(); n.snapNext.Before(now) {
		n.snapNext = now // idle time gives no credit
	}
	n.snapNext = n.snapNext.Add(d)
	return n.snapNext
}

// verdict is what the faults do to one drained batch.
type verdict struct {
	msgs       []engine.Message // what to deliver, duplicates included
	bytes      uint64           // size of msgs
	dropped    uint64           // messages lost (faults or cut)
	duplicated uint64           // copies added
	report     bool             // tell the sender PeerUnreachable (new cut episode)
	delay      time.Duration    // before delivery
	reorder    bool             // hold the batch back behind the next one
	window     time.Duration    // how long a held batch waits
}

// Per-message decisions of plan.
const (
	fateDrop = iota
	fateKeep
	fateDup
)

// plan applies the link state and faults to msgs (of total size bytes) sent
// by src to node to. Random draws are taken under mu from the seeded source.
func (n *Network) plan(src *Endpoint, to uint64, msgs []engine.Message, bytes uint64) verdict {
	v := verdict{msgs: msgs, bytes: bytes}
	if n.quiet.Load() {
		return v
	}
	var fates []uint8
	n.mu.Lock()
	if cut, report := n.checkCutLocked(src, to); cut {
		n.mu.Unlock()
		return verdict{dropped: uint64(len(msgs)), report: report}
	}
	f := n.mu.faults
	rng := n.mu.rng
	if f.DropProb > 0 || f.DupProb > 0 {
		fates = make([]uint8, len(msgs))
		for i := range fates {
			switch {
			case f.DropProb > 0 && rng.Float64() < f.DropProb:
				fates[i] = fateDrop
			case f.DupProb > 0 && rng.Float64() < f.DupProb:
				fates[i] = fateDup
			default:
				fates[i] = fateKeep
			}
		}
	}
	if f.DelayMax > 0 {
		v.delay = f.DelayMin + time.Duration(rng.Int64N(int64(f.DelayMax-f.DelayMin)+1))
	}
	if f.ReorderProb > 0 && rng.Float64() < f.ReorderProb {
		v.reorder = true
		v.window = f.ReorderWindow
		if v.window == 0 {
			v.window = DefaultReorderWindow
		}
	}
	n.mu.Unlock()

	if fates == nil {
		return v
	}
	// Marshalling copies happens outside mu.
	out := make([]engine.Message, 0, len(msgs))
	v.bytes = 0
	for i, m := range msgs {
		size := messageSize(&m)
		switch fates[i] {
		case fateDrop:
			v.dropped++
		case fateKeep:
			out = append(out, m)
			v.bytes += size
		case fateDup:
			out = append(out, m, cloneMessage(&m))
			v.bytes += 2 * size
			v.duplicated++
		}
	}
	v.msgs = out
	return v
}

// messageSize is the accounted size of m: its raft encoding plus the shard ID.
func messageSize(m *engine.Message) uint64 {
	return uint64(m.Msg.Size()) + 8
}

// cloneMessage returns a deep copy of m, so that the handler may own both the
// original and its duplicate.
func cloneMessage(m *engine.Message) engine.Message {
	data, err := m.Msg.Marshal()
	if err != nil {
		panic(fmt.Sprintf("memtransport: marshal raft message: %v", err))
	}
	c := engine.Message{ShardID: m.ShardID}
	if err := c.Msg.Unmarshal(data); err != nil {
		panic(fmt.Sprintf("memtransport: unmarshal raft message: %v", err))
	}
	return c
}

// Nodes returns the IDs of the nodes with an open endpoint, sorted.
func (n *Network) Nodes() []uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := make([]uint64, 0, len(n.mu.endpoints))
	for id := range n.mu.endpoints {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
