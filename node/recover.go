package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/flotilla-db/flotilla/internal/backoff"
	"github.com/flotilla-db/flotilla/node/recovery"
)

// ForceNewCluster asks StartCluster to recover the node from the loss of a
// majority before it starts (`flotilla start --force-new-cluster`, package
// recovery): every replica here whose shard lost its quorum is rewritten
// into the only voter of its shard, the meta shard's included; the node
// then starts, marks the lost nodes removed once it leads the meta shard,
// and its placement driver re-replicates the shards onto nodes that join.
type ForceNewCluster struct {
	// Force recovers even if some shard's other voters still answer
	// (refused otherwise with a *recovery.QuorumAliveError).
	Force bool
	// Peers are the other survivors' recovery.Info (`flotilla
	// recover-info`), taken before any of them was started.
	Peers []recovery.Info
	// ProbeTimeout bounds each probe of another voter; 0: the default.
	ProbeTimeout time.Duration
	// OnReport, if set, gets the recovery's report before the node starts
	// (the daemon prints it); each shard's line is logged too.
	OnReport func(recovery.Report)
}

// forceNewCluster runs the recovery on the node's store; StartCluster calls
// it before anything opens the store.
func (cs *clusterState) forceNewCluster(ctx context.Context, fc *ForceNewCluster) (recovery.Report, error) {
	if cs.id.ClusterID == 0 {
		return recovery.Report{}, fmt.Errorf("%w: %s has never joined a cluster: nothing to recover", recovery.ErrNotMember, cs.cfg.DataDir)
	}
	rep, err := recovery.ForceNewCluster(ctx, recovery.Config{
		StoreDir: filepath.Join(cs.cfg.DataDir, "store"), NodeID: cs.id.NodeID, ClusterID: cs.id.ClusterID,
		Peers: fc.Peers, Force: fc.Force, ProbeTimeout: fc.ProbeTimeout,
	})
	if err != nil {
		return recovery.Report{}, err
	}
	for _, sr := range rep.Shards {
		cs.log.Warn("force-new-cluster: " + sr.String())
	}
	cs.log.Warn("force-new-cluster: nodes no longer part of the cluster, to be marked removed", "nodes", rep.Gone, "meta_kept", rep.MetaKept)
	if fc.OnReport != nil {
		fc.OnReport(rep)
	}
	return rep, nil
}

// removeGone marks the nodes a recovery left behind removed in the meta
// shard, which this node leads (it is the meta shard's only voter): the
// transport then refuses their frames, they cannot register again, and the
// placement driver counts their replicas gone at once.
func (cs *clusterState) removeGone(ctx context.Context, gone []uint64) error {
	err := backoff.Retry(ctx, backoff.DefaultConfig(), cs.attempt("mark the lost nodes removed", func(ctx context.Context) error {
		for _, id := range gone {
			err := cs.store.UpdateNode(ctx, id, func(r *NodeRecord, found bool) (bool, error) {
				if !found || r.Removed {
					return false, nil
				}
				r.Removed = true
				return true, nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}))
	if err != nil {
		return fmt.Errorf("node: force-new-cluster: mark nodes %v removed: %w", gone, err)
	}
	cs.log.Warn("force-new-cluster: nodes marked removed", "nodes", gone)
	cs.notifyChange()
	return nil
}

// forceJoinTimeout bounds the gossip join of a node started with
// ForceNewCluster: its seeds may be among the lost nodes.
const forceJoinTimeout = 5 * time.Second

// joinGossip joins the Join seeds. A node recovered with ForceNewCluster
// starts whether or not a seed answers (they may be among the lost nodes).
func (cs *clusterState) joinGossip(ctx context.Context) error {
	if cs.cfg.ForceNewCluster == nil {
		if err := cs.g.Join(ctx, cs.cfg.Join); err != nil {
			return fmt.Errorf("node: join %v: %w", cs.cfg.Join, err)
		}
		return nil
	}
	jctx, cancel := context.WithTimeout(ctx, forceJoinTimeout)
	defer cancel()
	if err := cs.g.Join(jctx, cs.cfg.Join); err != nil {
		cs.log.Warn("force-new-cluster: no gossip seed answered; starting alone", "seeds", cs.cfg.Join, "err", err)
	}
	return nil
}

// RecoverInfo returns what the data directory's store holds, for the
// other survivors of a loss of a majority (`flotilla recover-info`,
// ForceNewCluster.Peers). The node must not be running; nothing is
// written.
func RecoverInfo(dataDir string) (recovery.Info, error) {
	if _, err := os.Stat(filepath.Join(dataDir, IdentityFile)); err != nil {
		return recovery.Info{}, fmt.Errorf("%w: %v", recovery.ErrNotMember, err)
	}
	id, err := loadIdentity(dataDir, 0)
	if err != nil {
		return recovery.Info{}, err
	}
	return recovery.Collect(recovery.Config{StoreDir: filepath.Join(dataDir, "store"), NodeID: id.NodeID, ClusterID: id.ClusterID})
}
