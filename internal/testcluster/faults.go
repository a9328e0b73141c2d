package testcluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/transport/memtransport"
)

// faults injects partitions, drops and duplicates into transports that have
// no fault injection of their own (the gRPC transport): the kernel here has
// no netem, so the faults live in the transport path. Delays and reordering
// are the in-process network's only.
type faults struct {
	mu       sync.Mutex
	cut      map[[2]uint64]bool // one-way cuts from -> to
	isolated map[uint64]bool
	f        memtransport.Faults
	rng      *rand.Rand
}

func newFaults(seed int64) *faults {
	return &faults{cut: map[[2]uint64]bool{}, isolated: map[uint64]bool{}, rng: rand.New(rand.NewPCG(uint64(seed), 99))}
}

func (f *faults) blocked(from, to uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.isolated[from] || f.isolated[to] || f.cut[[2]uint64{from, to}]
}

func (f *faults) partition(a, b []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			f.cut[[2]uint64{x, y}] = true
			f.cut[[2]uint64{y, x}] = true
		}
	}
}

func (f *faults) isolate(id uint64) {
	f.mu.Lock()
	f.isolated[id] = true
	f.mu.Unlock()
}

func (f *faults) heal() {
	f.mu.Lock()
	f.cut, f.isolated, f.f = map[[2]uint64]bool{}, map[uint64]bool{}, memtransport.Faults{}
	f.mu.Unlock()
}

func (f *faults) set(fs memtransport.Faults) {
	f.mu.Lock()
	f.f = fs
	f.mu.Unlock()
}

// filter returns the messages that survive drops, with duplicates.
func (f *faults) filter(msgs []engine.Message) []engine.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f.DropProb == 0 && f.f.DupProb == 0 {
		return msgs
	}
	out := make([]engine.Message, 0, len(msgs))
	for _, m := range msgs {
		if f.rng.Float64() < f.f.DropProb {
			continue
		}
		out = append(out, m)
		if f.rng.Float64() < f.f.DupProb {
			out = append(out, m)
		}
	}
	return out
}

var errCut = errors.New("testcluster: link cut")

// faultTransport wraps a node's transport with the cluster's faults.
type faultTransport struct {
	engine.Transport
	id uint64
	f  *faults
}

func (t *faultTransport) Start(h engine.Handler) error {
	return t.Transport.Start(&faultHandler{Handler: h, t: t})
}

func (t *faultTransport) Send(to uint64, msgs []engine.Message) error {
	if t.f.blocked(t.id, to) {
		return nil // lost on the way, as on a real network
	}
	if msgs = t.f.filter(msgs); len(msgs) == 0 {
		return nil
	}
	return t.Transport.Send(to, msgs)
}

// SendPriority is Send on the priority lane, when the transport has one.
func (t *faultTransport) SendPriority(to uint64, msgs []engine.Message) error {
	ps, ok := t.Transport.(engine.PrioritySender)
	if !ok {
		return t.Send(to, msgs)
	}
	if t.f.blocked(t.id, to) {
		return nil
	}
	if msgs = t.f.filter(msgs); len(msgs) == 0 {
		return nil
	}
	return ps.SendPriority(to, msgs)
}

func (t *faultTransport) SendSnapshot(ctx context.Context, h engine.SnapshotHeader, body engine.SnapshotBody) error {
	if t.f.blocked(t.id, h.To) {
		return errCut
	}
	return t.Transport.SendSnapshot(ctx, h, body)
}

type faultHandler struct {
	engine.Handler
	t *faultTransport
}

func (h *faultHandler) HandleBatch(b *engine.Batch) {
	if !h.t.f.blocked(b.From, h.t.id) {
		h.Handler.HandleBatch(b)
	}
}

func (h *faultHandler) HandleSnapshot(ctx context.Context, sh engine.SnapshotHeader, body engine.SnapshotBody) error {
	if h.t.f.blocked(sh.From, h.t.id) {
		return errCut
	}
	return h.Handler.HandleSnapshot(ctx, sh, body)
}
