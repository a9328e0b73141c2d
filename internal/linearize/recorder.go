package linearize

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
)

// infinity is the Return stamp of an operation whose outcome is unknown: it
// is concurrent with every operation called after it, so the checker may
// place its effect anywhere after its call, including after everything else
// (where it is invisible, as if it never took effect).
const infinity = math.MaxInt64

// Config configures a Recorder.
type Config struct {
	// VisualizationPath, if not empty, is the file to which Check writes
	// porcupine's HTML visualization of a history that is not linearizable.
	// Default: "" (none).
	VisualizationPath string
}

// DefaultConfig returns the default Config.
func DefaultConfig() Config { return Config{} }

// Recorder records a history of key-value operations made by concurrent
// clients. It is safe for concurrent use.
type Recorder struct {
	cfg   Config
	start time.Time
	// clock stamps calls and returns. It is a logical clock: every stamp is
	// unique, and a stamp taken after another (in real time) is larger.
	clock atomic.Int64

	mu struct {
		sync.Mutex
		// ops holds the finished operations that stay in the history.
		ops []porcupine.Operation
		// inflight holds the operations begun and not yet finished.
		inflight map[*Pending]struct{}
	}
}

// NewRecorder returns an empty Recorder. It copies cfg.
func NewRecorder(cfg Config) *Recorder {
	r := &Recorder{cfg: cfg, start: time.Now()}
	r.mu.inflight = make(map[*Pending]struct{})
	return r
}

// Pending is an operation that has begun and not yet finished. Exactly one of
// End, Unknown or Failed must be called on it, once, from any goroutine.
type Pending struct {
	r        *Recorder
	clientID int
	op       Op
	call     int64
	callAt   time.Duration
}

// Begin records that client clientID (zero-based: porcupine's visualization
// draws one row per client) is about to issue op. Call it before sending the
// request. It panics if op is not valid or clientID is negative.
func (r *Recorder) Begin(clientID int, op Op) *Pending {
	if !op.valid() || clientID < 0 {
		panic("linearize: Begin with an invalid op or client ID")
	}
	p := &Pending{r: r, clientID: clientID, op: op, callAt: time.Since(r.start)}
	p.call = r.clock.Add(1)
	r.mu.Lock()
	r.mu.inflight[p] = struct{}{}
	r.mu.Unlock()
	return p
}

// End records that the operation completed with output out. Call it after
// the response arrived.
func (p *Pending) End(out Result) {
	ret := p.r.clock.Add(1)
	t := timing{call: p.callAt, ret: time.Since(p.r.start)}
	p.finish(p.operation(output{res: out}, ret, t), true)
}

// Unknown records that the operation's outcome is unknown (a timeout, an
// ambiguous error, a crashed node): it may or may not have taken effect, now
// or later. It stays in the history returning at infinity with an output
// that matches anything; a Get is dropped, as a read without a result
// constrains nothing.
func (p *Pending) Unknown() {
	keep := p.op.Kind != OpGet
	t := timing{call: p.callAt, unknown: true}
	p.finish(p.operation(output{unknown: true}, infinity, t), keep)
}

// Failed records that the operation definitely did not take effect (an error
// that guarantees it was not applied). It is dropped from the history.
func (p *Pending) Failed() {
	p.finish(porcupine.Operation{}, false)
}

func (p *Pending) operation(out output, ret int64, t timing) porcupine.Operation {
	return porcupine.Operation{
		ClientId: p.clientID,
		Input:    p.op,
		Call:     p.call,
		Output:   out,
		Return:   ret,
		Metadata: t,
	}
}

func (p *Pending) finish(o porcupine.Operation, keep bool) {
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.mu.inflight[p]; !ok {
		panic("linearize: operation finished twice")
	}
	delete(r.mu.inflight, p)
	if keep {
		r.mu.ops = append(r.mu.ops, o)
	}
}

// history returns a copy of the history recorded so far. Operations still in
// flight are included as if Unknown had been called on them.
func (r *Recorder) history() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := make([]porcupine.Operation, len(r.mu.ops), len(r.mu.ops)+len(r.mu.inflight))
	copy(h, r.mu.ops)
	for p := range r.mu.inflight {
		if p.op.Kind != OpGet {
			t := timing{call: p.callAt, unknown: true}
			h = append(h, p.operation(output{unknown: true}, infinity, t))
		}
	}
	return h
}
