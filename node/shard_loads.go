package node

import (
	"context"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/gossip"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/node/placer"
	"github.com/flotilla-db/flotilla/node/shardload"
	"github.com/flotilla-db/flotilla/storage"
)

// The loads of the shards a node leads (package node/shardload), measured
// by shardLoadLoop, served by the Admin ShardLoads request, and gathered
// from every live node by the placement driver's source on the meta
// shard's leader (shardLoads), for the split and merge duties.

// loadEngine is what the tracker reads of the engine.
type loadEngine struct{ e *engine.Engine }

func (l loadEngine) Leading(ctx context.Context) ([]engine.LedShard, error) {
	return l.e.Leading(ctx)
}

func (l loadEngine) SizeOf(d storage.Descriptor) (uint64, error) { return l.e.Store().DataSize(d) }

// shardLoadLoop samples the load of the shards this node leads.
func (cs *clusterState) shardLoadLoop(ctx context.Context, t *shardload.Tracker, every time.Duration) {
	defer cs.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := t.Sample(ctx); err != nil && ctx.Err() == nil {
			cs.log.Debug("shard loads", "err", err)
		}
	}
}

// ShardLoads implements nodepb.AdminServer.
func (a *adminService) ShardLoads(context.Context, *nodepb.ShardLoadsRequest) (*nodepb.ShardLoadsResponse, error) {
	out := &nodepb.ShardLoadsResponse{}
	if a.n.cl == nil || a.n.cl.loads.Load() == nil {
		return out, nil // static membership, or not measuring yet
	}
	for _, l := range a.n.cl.loads.Load().Loads() {
		out.Loads = append(out.Loads, &nodepb.ShardLoad{ShardId: l.ShardID, Generation: l.Generation, WritesPerSecond: l.WritesPerSecond, Size: l.Size})
	}
	return out, nil
}

// shardLoadTimeout bounds one node's answer to ShardLoads.
const shardLoadTimeout = 2 * time.Second

// shardLoads asks every live node for the loads of the shards it leads;
// a shard two nodes report (its leadership moved) keeps the higher
// generation, then the higher rate. A node that does not answer is left
// out.
func (cs *clusterState) shardLoads(ctx context.Context) (map[uint64]placer.Load, error) {
	var (
		mu  sync.Mutex
		out = map[uint64]placer.Load{}
		wg  sync.WaitGroup
	)
	for _, m := range cs.g.Members() {
		if m.State != gossip.Alive || m.MetaErr != nil || m.Meta.ClientAddr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := cs.n.admin.d.admin(m.Meta.ClientAddr)
			if err != nil {
				return
			}
			lctx, cancel := context.WithTimeout(ctx, shardLoadTimeout)
			defer cancel()
			resp, err := c.ShardLoads(lctx, &nodepb.ShardLoadsRequest{})
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, l := range resp.GetLoads() {
				cur, ok := out[l.GetShardId()]
				if !ok || l.GetGeneration() > cur.Generation || (l.GetGeneration() == cur.Generation && l.GetWritesPerSecond() > cur.WritesPerSecond) {
					out[l.GetShardId()] = placer.Load{Generation: l.GetGeneration(), WritesPerSecond: l.GetWritesPerSecond(), Size: l.GetSize()}
				}
			}
		}()
	}
	wg.Wait()
	return out, nil
}
