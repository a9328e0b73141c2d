package placer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/placement"
)

// Placer runs the placement driver in a node (see the package doc).
type Placer struct {
	d   *placement.Driver
	src *source
	cfg placement.DriverConfig
	log *slog.Logger

	// stateMu serializes reading the state: the driver's steps and the
	// dry runs of Plan share the source.
	stateMu sync.Mutex
	leading atomic.Bool // the driver steps here (set by IsLeader)
}

// New returns a Placer; Run starts it. cfg.IsLeader is required: whether
// this node leads the meta shard. admin is a client of this node's own
// Admin service.
func New(cfg placement.DriverConfig, c Cluster, admin nodepb.AdminClient, logger *slog.Logger) (*Placer, error) {
	if c.Store == nil || c.Members == nil || c.Leaders == nil || c.Meta == nil || admin == nil {
		return nil, fmt.Errorf("%w: placer: Cluster and admin must be complete", placement.ErrBadConfig)
	}
	if logger == nil {
		logger = slog.Default()
	}
	p := &Placer{src: newSource(c), log: logger}
	isLeader := cfg.IsLeader
	if isLeader == nil {
		return nil, fmt.Errorf("%w: placer: IsLeader is nil", placement.ErrBadConfig)
	}
	cfg.IsLeader = func() bool {
		l := isLeader()
		if l && !p.leading.Load() {
			p.stateMu.Lock()
			p.src.reset() // a dead node's clock starts afresh with this term
			p.stateMu.Unlock()
			p.log.Info("placement: this node leads the meta shard: driver active")
		}
		p.leading.Store(l)
		return l
	}
	src := lockedSource{p}
	d, err := placement.NewDriver(cfg, src, &actuator{admin: admin, src: p.src}, intentStore{c.Store}, logger)
	if err != nil {
		return nil, err
	}
	p.d, p.cfg = d, cfg
	return p, nil
}

// lockedSource serializes the driver's reads of the state with dry runs.
type lockedSource struct{ p *Placer }

func (l lockedSource) State(ctx context.Context) (placement.State, error) {
	l.p.stateMu.Lock()
	defer l.p.stateMu.Unlock()
	return l.p.src.State(ctx)
}

// Version serializes the driver's reads of the source's version with dry
// runs, as State.
func (l lockedSource) Version(ctx context.Context) (uint64, error) {
	l.p.stateMu.Lock()
	defer l.p.stateMu.Unlock()
	return l.p.src.Version(ctx)
}

// Run runs the driver until ctx ends.
func (p *Placer) Run(ctx context.Context) {
	if err := p.d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		p.log.Warn("placement: driver stopped", "err", err)
	}
}

// ErrNotLeader: this node does not lead the meta shard, so its driver does
// not run; ask the leader.
var ErrNotLeader = errors.New("placer: this node does not lead the meta shard")

// Plan returns what the planner would issue now, given the operations in
// flight (a dry run: nothing is started).
func (p *Placer) Plan(ctx context.Context) ([]placement.Op, error) {
	p.stateMu.Lock()
	st, err := p.src.State(ctx)
	p.stateMu.Unlock()
	if err != nil {
		return nil, err
	}
	var inflight []placement.Op
	for _, m := range p.d.Moves() {
		if m.Outcome == placement.Running {
			inflight = append(inflight, m.Op)
		}
	}
	return placement.Plan(st, p.cfg.Placement, inflight)
}

// CanDecommission checks that node id may start draining.
func (p *Placer) CanDecommission(ctx context.Context, id uint64) error {
	p.stateMu.Lock()
	st, err := p.src.State(ctx)
	p.stateMu.Unlock()
	if err != nil {
		return err
	}
	return placement.CanDecommission(st, id)
}

// Active reports whether the driver steps on this node (it leads the meta
// shard), as of the driver's last step.
func (p *Placer) Active() bool { return p.leading.Load() }

// Moves, Stats, Pause, Resume and Paused are the driver's.
func (p *Placer) Moves() []placement.Move { return p.d.Moves() }
func (p *Placer) Stats() placement.Stats  { return p.d.Stats() }
func (p *Placer) Pause()                  { p.d.Pause() }
func (p *Placer) Resume()                 { p.d.Resume() }
func (p *Placer) Paused() bool            { return p.d.Paused() }
