package node

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/flotilla-db/flotilla/node/merger"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/placer"
	"github.com/flotilla-db/flotilla/placement"
	"github.com/flotilla-db/flotilla/storage"
)

// The placement driver's assembly (package node/placer owns it) and the
// loop that destroys replicas their shards removed while they could not
// hear of it, and settles merges left unfinished.

// placementLoop starts the placement driver once the local copy of the
// meta shard holds the cluster record (its replication factor), and runs
// it until ctx ends. The driver steps only while this node leads the meta
// shard.
func (cs *clusterState) placementLoop(ctx context.Context) {
	defer cs.wg.Done()
	var cr ClusterRecord
	err := backoff.Retry(ctx, backoff.DefaultConfig(), cs.attempt("read the cluster record", func(ctx context.Context) error {
		var err error
		cr, err = cs.store.Cluster(ctx, nodemeta.Local)
		return err
	}))
	if err != nil {
		return // closing
	}
	// Not on a partial picture: while the bootstrap records are being
	// written, the driver would plan over part of the initial shards (its
	// leader balance also waits for their leaders: balanceLeaders).
	select {
	case <-cs.recordsDone:
	case <-ctx.Done():
		return
	}
	dc := placement.DefaultDriverConfig()
	dc.Placement.ReplicationFactor = cr.Replication
	dc.Placement.MetaVoters = MaxMetaVoters
	if cs.cfg.Placement != nil {
		cs.cfg.Placement(&dc)
	}
	e, self := cs.n.Engine, cs.id.NodeID
	dc.IsLeader = func() bool {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := e.Status(sctx, MetaShardID)
		return err == nil && st.State == "StateLeader" && st.Leader == self
	}
	admin, err := cs.n.admin.d.admin(cs.clientAddr)
	if err != nil {
		cs.log.Error("placement: no client of the node's own Admin service: driver not started", "err", err)
		return
	}
	p, err := placer.New(dc, placer.Cluster{
		Store:   cs.store,
		Members: cs.g.Members,
		Leaders: func() map[uint64]uint64 {
			routes := cs.n.Router.Routes()
			m := make(map[uint64]uint64, len(routes))
			for _, r := range routes {
				m[r.ShardID] = r.Leader
			}
			return m
		},
		LeadersVersion: cs.n.Router.Version,
		Meta: func(ctx context.Context) (storage.Descriptor, uint64, error) {
			st, err := e.Status(ctx, MetaShardID)
			return st.Desc, st.Leader, err
		},
		Loads:      cs.shardLoads,
		LoadsEvery: cs.cfg.ShardLoad.Interval, // 0: the default
	}, admin, cs.log)
	if err != nil {
		cs.log.Error("placement: driver not started", "err", err)
		return
	}
	cs.placer.Store(p)
	p.Run(ctx)
}

// staleReplicaInterval is how often staleReplicaLoop looks, at most;
// staleReplicaFullPass how long it goes at most without a pass over every
// replica here while nothing it reads has moved (staleView).
const (
	staleReplicaInterval = 5 * time.Second
	staleReplicaFullPass = time.Minute
)

// staleReplicaLoop destroys this node's replicas of user shards that their
// shards removed: a replica removed while it could not hear of it (its
// leader stops sending to it once the removal applies) stays otherwise,
// and a drained node would never be empty. The shard's record in the
// meta shard decides (engine.DestroyStaleReplica): a replica ID below the
// record's next replica ID that the record does not list is gone for good.
// A shard merged away has no record but a tombstone: its replicas here
// that never froze for the merge go too (destroyMergedAway).
//
// It also runs the merger's Recovery, which settles the shards led here
// that have stayed frozen for a merge for longer than the merger's
// FrozenTimeout (a merge whose node failed between the freeze and the
// merge): it looks four times per FrozenTimeout (a pass walks every
// shard led here).
//
// A pass reads the router's route of every replica here, and the meta
// shard's records of those it does not list: on a node of 100,000
// replicas that was a tenth of its idle CPU. So a pass is skipped while
// what it reads has not moved since a pass that left nothing to retry:
// the router's version (every change of a shard's replicas or range that
// the meta shard's records publish), the meta shard's ring header (moved by
// every record written, merge tombstones included), and the number of
// replicas here; and a full pass still runs every staleReplicaFullPass.
func (cs *clusterState) staleReplicaLoop(ctx context.Context) {
	defer cs.wg.Done()
	m, err := cs.n.admin.merger()
	if err != nil {
		cs.log.Error("merge recovery not started", "err", err)
	}
	var rec *merger.Recovery
	interval := staleReplicaInterval
	if m != nil {
		rec = m.Recovery()
		interval = min(interval, m.FrozenTimeout()/2)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var (
		last                   staleView
		lastPass, lastRecovery time.Time
		clean                  bool
		recoveryEvery          time.Duration
	)
	if m != nil {
		recoveryEvery = m.FrozenTimeout() / 4
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		view := cs.staleView(ctx)
		if cs.cfg.EveryPass || !view.ok || view != last || !clean || time.Since(lastPass) >= staleReplicaFullPass {
			clean = cs.destroyStaleReplicas(ctx)
			last, lastPass = view, time.Now()
		}
		if rec != nil && (cs.cfg.EveryPass || time.Since(lastRecovery) >= recoveryEvery) {
			lastRecovery = time.Now()
			settled, err := rec.Pass(ctx, time.Now())
			for _, s := range settled {
				cs.log.Info("merge recovery: settled a merge left unfinished", "shard", s.Frozen.ShardID, "into", s.Frozen.MergeInto, "merged", s.Merged, "left_gone", s.LeftGone)
			}
			if err != nil && ctx.Err() == nil {
				cs.log.Warn("merge recovery", "err", err)
			}
		}
	}
}

// staleView is what a pass of destroyStaleReplicas reads, in versions.
type staleView struct {
	router, ring uint64
	replicas     int
	ok           bool // the ring header was read
}

func (cs *clusterState) staleView(ctx context.Context) staleView {
	v := staleView{router: cs.n.Router.Version(), replicas: cs.n.Engine.Stats().Shards}
	if h, err := cs.store.Header(ctx, nodemeta.Local); err == nil {
		v.ring, v.ok = h.Version, true
	}
	return v
}

// destroyStaleReplicas makes one pass over the replicas here, and reports
// whether it left nothing to try again (no error, no replica of a shard
// merged away that is still needed for now).
func (cs *clusterState) destroyStaleReplicas(ctx context.Context) (clean bool) {
	e, self := cs.n.Engine, cs.id.NodeID
	ids, err := e.Shards(ctx)
	if err != nil {
		return false
	}
	clean = true
	for _, id := range ids {
		if id == MetaShardID {
			continue
		}
		if rt, err := cs.n.Router.Route(id); err == nil && slices.Contains(rt.Replicas, self) {
			continue // a voter by the router's replicas: the common case, no read
		}
		rec, err := cs.store.Shard(ctx, id, nodemeta.Local)
		if err != nil {
			// No record: a shard being created (not ours to judge), or one
			// merged away (its tombstone says).
			if !cs.destroyMergedAway(ctx, id) {
				clean = false
			}
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := e.Status(sctx, id)
		cancel()
		if err != nil {
			clean = false
			continue
		}
		if st.ReplicaID == 0 {
			clean = false // not yet known: look again
			continue
		}
		if st.ReplicaID >= rec.NextReplicaID {
			continue
		}
		listed := false
		for _, r := range rec.Replicas {
			listed = listed || r.ReplicaID == st.ReplicaID
		}
		if listed {
			continue
		}
		err = e.DestroyStaleReplica(ctx, id, st.ReplicaID, rec.NextReplicaID)
		if err != nil {
			clean = false
			if !errors.Is(err, engine.ErrClosed) && ctx.Err() == nil {
				cs.log.Warn("destroying a removed replica", "shard", id, "replica", st.ReplicaID, "err", err)
			}
		}
	}
	return clean
}

// destroyMergedAway destroys this node's replica of shard id if the meta
// shard's tombstone says the shard was merged away and nothing here needs
// the replica (engine.DestroyMergedAway: one removed before the freeze
// while it could not hear of it, or one frozen whose left shard's replica
// here is past the merge); its old range claim would keep the snapshots of
// the shards that hold that range now out of this node. It reports false
// when a later pass must look again (an error, or the replica still
// needed for now). A shard with neither record nor tombstone is being
// created: its record comes, and moves the ring header.
func (cs *clusterState) destroyMergedAway(ctx context.Context, id uint64) bool {
	if _, err := cs.store.Merged(ctx, id, nodemeta.Local); err != nil {
		return errors.Is(err, nodemeta.ErrNotFound)
	}
	e := cs.n.Engine
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	st, err := e.Status(sctx, id)
	cancel()
	if err != nil {
		return false
	}
	if st.ReplicaID == 0 {
		return false // not yet known: look again
	}
	// The left shard's record, for a frozen replica whose left shard has
	// no replica here (engine.DestroyMergedAway): none if unknown.
	var left storage.Descriptor
	if st.Desc.Frozen() {
		if rec, err := cs.store.Shard(ctx, st.Desc.MergeInto, nodemeta.Local); err == nil {
			left = rec.Descriptor()
		}
	}
	err = e.DestroyMergedAway(ctx, id, st.ReplicaID, left)
	if errors.Is(err, engine.ErrBadRequest) {
		// Frozen, and the left shard's replica here not past the merge
		// yet: the merge takes it as that replica applies it.
		cs.log.Debug("a replica of a shard merged away is still needed here", "shard", id, "err", err)
		return false
	}
	if err != nil && !errors.Is(err, engine.ErrClosed) && ctx.Err() == nil {
		cs.log.Warn("destroying a replica of a shard merged away", "shard", id, "replica", st.ReplicaID, "err", err)
	}
	return err == nil
}
