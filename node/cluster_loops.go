package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/node/gossip"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/router"
)

// The background loops of a gossip-discovered node, from StartCluster to
// Close: metaLoop follows the meta shard for the router and the engine,
// leaderLoop spreads leader changes, loadLoop advertises load (reportLoop,
// in records.go, feeds the reconciler).

// metaLoop keeps the router's ring and replicas and the node records in
// step with the local copy of the meta shard, and tells the engine of nodes
// that gossip declares dead.
func (cs *clusterState) metaLoop(ctx context.Context) {
	defer cs.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-cs.changed:
		}
		cs.syncMeta()
		cs.syncLiveness()
	}
}

// syncMeta brings the node records and the router's ring and replicas up
// to date with the local copy of the meta shard, through the watcher: one
// local read each when nothing changed. Calls are serialized; any
// goroutine may make one.
func (cs *clusterState) syncMeta() {
	cs.syncMu.Lock()
	defer cs.syncMu.Unlock()
	ctx := context.Background() // local reads: they do not wait
	if recs, changed, err := cs.watcher.PollNodes(ctx); err != nil {
		cs.log.Debug("meta: node records", "err", err)
	} else if changed {
		m := make(map[uint64]NodeRecord, len(recs))
		for _, r := range recs {
			m[r.NodeID] = r
		}
		cs.mu.Lock()
		cs.mu.records = m
		cs.mu.Unlock()
	}
	u, changed, err := cs.watcher.Poll(ctx)
	if err != nil {
		cs.log.Debug("meta: shard records", "err", err)
		return
	}
	if changed {
		cs.setRoutes(u)
	}
}

// nodeRecord returns node id's record from the local copy of the meta
// shard. A node that registered a moment ago may not be in this replica's
// copy yet (it applies the meta shard's log a little behind its leader):
// a record not found is looked for again, for up to two seconds, before
// the node is taken for unknown.
func (cs *clusterState) nodeRecord(ctx context.Context, id uint64) (NodeRecord, bool) {
	deadline := time.Now().Add(2 * time.Second)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		cs.syncMeta()
		cs.mu.Lock()
		r, ok := cs.mu.records[id]
		cs.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return r, ok
		}
		select {
		case <-ctx.Done():
			return r, ok
		case <-t.C:
		}
	}
}

// setRoutes hands the router what changed in the shard records: the ring
// first, when there is a new one, then the replicas of each record. A
// record of a shard the router's ring does not have yet (no ring yet, or
// the records do not tile the hash space at this version, halfway through
// bootstrap or a change) is left for the next ring, with which the
// watcher hands it out again.
func (cs *clusterState) setRoutes(u nodemeta.RingUpdate) {
	r := cs.n.Router
	if u.Ring != nil {
		if err := r.SetRing(u.Ring); err != nil {
			cs.log.Error("meta: set the ring", "generation", u.Generation, "err", err)
		}
	}
	lagging := u.RingErr != nil || r.Ring() == nil || r.Ring().Generation() != u.Generation
	if u.RingErr != nil {
		cs.log.Debug("meta: no ring at this version yet", "version", u.Version, "generation", u.Generation, "err", u.RingErr)
	}
	for _, rec := range u.Shards {
		err := r.SetReplicas(rec.ShardID, rec.NodeIDs())
		if err != nil && !(lagging && (errors.Is(err, router.ErrUnknownShard) || errors.Is(err, router.ErrNoRing))) {
			cs.log.Error("meta: set a shard's replicas", "shard", rec.ShardID, "err", err)
		}
	}
	// Leader updates that arrived before the ring named their shards.
	for _, l := range cs.g.Leaders() {
		r.UpdateLeader(l.ShardID, l.Leader, l.Term)
	}
}

// syncLiveness tells the engine once of each node gossip declares dead, so
// that the quiesced shards it led wake and elect.
func (cs *clusterState) syncLiveness() {
	for _, m := range cs.g.Members() {
		id := m.Meta.NodeID
		if id == cs.id.NodeID {
			continue
		}
		dead := m.State == gossip.Dead || m.State == gossip.Left
		cs.mu.Lock()
		was := cs.mu.dead[id]
		cs.mu.dead[id] = dead
		cs.mu.Unlock()
		if dead && !was {
			cs.log.Info("peer is down (gossip)", "peer", id)
			cs.n.Engine.PeerDown(id)
		}
	}
}

// leaderLoop spreads this node's leader changes by gossip, batched, and
// hands the reconciler the descriptor of each shard this node comes to
// lead, so that a record its previous leader left behind is repaired at
// once rather than at the next pass.
func (cs *clusterState) leaderLoop(ctx context.Context) {
	defer cs.wg.Done()
	w := cs.n.Engine.WatchLeaders()
	defer w.Close()
	var batch []gossip.LeaderUpdate
	// The leaders elected before the watch began.
	if sts, err := cs.n.Engine.Statuses(ctx); err == nil {
		for _, st := range sts {
			if st.Leader == cs.id.NodeID {
				batch = append(batch, gossip.LeaderUpdate{ShardID: st.ShardID, Leader: st.Leader, Term: st.Term})
				cs.report(st.Desc)
			}
		}
		cs.g.BroadcastLeaders(batch)
	}
	var gained []uint64
	for {
		evs, err := w.Next(ctx)
		if err != nil {
			return
		}
		batch, gained = batch[:0], gained[:0]
		for _, ev := range evs {
			if ev.Leader != 0 {
				batch = append(batch, gossip.LeaderUpdate{ShardID: ev.ShardID, Leader: ev.Leader, Term: ev.Term})
			}
			if ev.Leader == cs.id.NodeID {
				gained = append(gained, ev.ShardID)
			}
		}
		if len(batch) > 0 {
			cs.g.BroadcastLeaders(batch)
		}
		cs.reportLed(ctx, gained)
	}
}

// loadLoop advertises this node's load by gossip: its replica and leader
// counts, the disk its store uses and could use, and the rate it writes
// (see loadSampler). It samples every loadInterval and re-advertises when
// the load moved (loadMoved), or changed at all and loadRefresh passed.
func (cs *clusterState) loadLoop(ctx context.Context) {
	defer cs.wg.Done()
	t := time.NewTicker(loadInterval)
	defer t.Stop()
	ls := newLoadSampler(cs.n.Engine.Store(), time.Now())
	var advertised time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		st := cs.n.Engine.Stats()
		m := cs.g.Meta()
		next := m
		next.Replicas, next.Leaders = uint32(st.Shards), uint32(st.ShardsLeading)
		next.DiskUsed, next.DiskCapacity, next.WriteRate = ls.sample(now)
		if next.Equal(m) || (!loadMoved(m, next) && now.Sub(advertised) < loadRefresh) {
			continue
		}
		advertised = now
		if err := cs.g.SetMeta(next); err != nil {
			cs.log.Debug("advertise load", "err", err)
		}
	}
}

// leaderSink hands gossiped leader updates to the router once it exists.
type leaderSink struct {
	mu sync.Mutex
	r  *router.Router
}

func (l *leaderSink) set(r *router.Router) {
	l.mu.Lock()
	l.r = r
	l.mu.Unlock()
}

func (l *leaderSink) deliver(us []gossip.LeaderUpdate) {
	l.mu.Lock()
	r := l.r
	l.mu.Unlock()
	if r == nil {
		return
	}
	for _, u := range us {
		r.UpdateLeader(u.ShardID, u.Leader, u.Term)
	}
}
