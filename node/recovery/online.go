package recovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
)

// Online recovery (`flotillactl recover plan|apply`, the CockroachDB
// way): in a running cluster where only some shards lost the majority of
// their voters, the shards without a live quorum are listed (Plan) and,
// on Apply, each is recovered on its most up-to-date live replica, which
// its node rewrites, while it runs, into the only voter of its shard
// (engine.Engine.ForceSoleVoter: the offline rewrite, on the shard's
// worker). That node then writes the shard's new record to the meta
// shard, so that routing sees the shard's new configuration, the placement
// driver re-replicates it to the replication factor, and the other live
// replicas of the shard (the minority survivors not kept) are destroyed by
// their nodes' stale-replica loops: the record no longer lists them. What
// is kept and what may be lost is as offline (see the package doc): writes
// acknowledged after the kept replica's last index may be lost.
//
// Liveness is the node's view: gossip, as the placement driver sees it. A
// shard is without a live quorum when its live voters are no majority of
// its voters (of both halves of a joint configuration). Nodes down at the
// time of an Apply must not come back with their data directories: their
// replicas of a recovered shard could elect among themselves until their
// stale-replica loop destroys them.

// Errors of the online recovery.
var (
	// ErrUnknownShard: a shard ID that the meta shard has no record of.
	ErrUnknownShard = errors.New("recovery: unknown shard")
	// ErrHasQuorum is matched by a *HasQuorumError.
	ErrHasQuorum = errors.New("recovery: the shard has a live quorum")
	// ErrNoSurvivor: no live replica of the shard answered with its data.
	ErrNoSurvivor = errors.New("recovery: no live replica of the shard holds its data")
)

// HasQuorumError refuses to recover a shard whose live voters (Live) are a
// quorum of its voters (Voters): it is not lost, or no longer (its voters
// came back).
type HasQuorumError struct {
	ShardID uint64
	Voters  []uint64
	Live    []uint64
}

func (e *HasQuorumError) Error() string {
	return fmt.Sprintf("recovery: shard %d has a live quorum (voters %v, live %v): it is not recovered", e.ShardID, e.Voters, e.Live)
}

// Is makes errors.Is(err, ErrHasQuorum) true.
func (e *HasQuorumError) Is(target error) bool { return target == ErrHasQuorum }

// Replica is a live replica of a shard without a quorum, as its node
// reports it.
type Replica struct {
	NodeID      uint64 `json:"node_id"`
	ReplicaID   uint64 `json:"replica_id"`
	Initialized bool   `json:"initialized"`
	LastTerm    uint64 `json:"last_term"`
	LastIndex   uint64 `json:"last_index"`
	Applied     uint64 `json:"applied"`
	// Err: the node did not answer (its replica cannot be kept).
	Err string `json:"err,omitempty"`
	// Desc is the replica's descriptor (it may be newer than the record).
	Desc storage.Descriptor `json:"desc"`
}

// LostShard is a shard without a live quorum and what Apply would do.
type LostShard struct {
	ShardID    uint64   `json:"shard_id"`
	Meta       bool     `json:"meta"`
	Start      uint64   `json:"start"`
	Last       uint64   `json:"last"`
	Generation uint64   `json:"generation"`
	Voters     []uint64 `json:"voters"`
	Down       []uint64 `json:"down"`
	// Replicas are the live replicas (voters and learners).
	Replicas []Replica `json:"replicas"`
	// Keep is the node whose replica Apply keeps (0: none can be:
	// ErrNoSurvivor), KeepReplicaID its replica.
	Keep          uint64 `json:"keep"`
	KeepReplicaID uint64 `json:"keep_replica_id"`
	// KeepLastIndex: writes acknowledged after it may be lost.
	KeepLastIndex uint64 `json:"keep_last_index"`
	KeepLastTerm  uint64 `json:"keep_last_term"`
	// MinReplicaID: the kept replica's new ID is at least this, above
	// every ID the shard's record and live replicas know of.
	MinReplicaID uint64 `json:"min_replica_id"`
}

// Plan lists the shards without a live quorum, the meta shard first, then
// by shard ID.
type Plan struct {
	AnsweredBy uint64      `json:"answered_by"`
	Shards     []LostShard `json:"shards"`
}

// Cluster is what the online recovery reads and does, as the node that
// plans sees it.
type Cluster interface {
	// Shards returns the descriptors of every shard: the meta shard's
	// records of the user shards and this node's view of the meta shard.
	Shards(ctx context.Context) ([]storage.Descriptor, error)
	// Live reports whether gossip counts node live (suspected counts).
	Live(nodeID uint64) bool
	// Replicas asks node for its replicas of shardIDs (a shard it holds
	// no replica of is left out).
	Replicas(ctx context.Context, nodeID uint64, shardIDs []uint64) ([]Replica, error)
	// Recover has node rewrite its replica of s.ShardID (s.KeepReplicaID)
	// into the only voter of its shard and write the shard's record; it
	// returns the new descriptor.
	Recover(ctx context.Context, nodeID uint64, s LostShard) (storage.Descriptor, error)
}

// PlanOnline returns the shards among shardIDs (all if none) without a
// live quorum. A shard ID of no shard fails with ErrUnknownShard; a shard
// named that has a live quorum with a *HasQuorumError.
func PlanOnline(ctx context.Context, c Cluster, shardIDs []uint64) (Plan, error) {
	descs, err := c.Shards(ctx)
	if err != nil {
		return Plan{}, err
	}
	byID := make(map[uint64]storage.Descriptor, len(descs))
	for _, d := range descs {
		byID[d.ShardID] = d
	}
	named := len(shardIDs) > 0
	if !named {
		for _, d := range descs {
			shardIDs = append(shardIDs, d.ShardID)
		}
	}
	shardIDs = slices.Compact(slices.Sorted(slices.Values(shardIDs)))
	// The shards without a quorum by their records, and the live nodes to
	// ask about them.
	var lost []storage.Descriptor
	ask := map[uint64][]uint64{} // node -> shards
	for _, id := range shardIDs {
		d, ok := byID[id]
		if !ok {
			return Plan{}, fmt.Errorf("%w: %d (see flotillactl shards)", ErrUnknownShard, id)
		}
		if d.HasQuorum(c.Live) {
			if named {
				return Plan{}, quorumError(d, c.Live)
			}
			continue
		}
		lost = append(lost, d)
		for _, r := range d.Replicas {
			if c.Live(r.NodeID) {
				ask[r.NodeID] = append(ask[r.NodeID], id)
			}
		}
	}
	answers := map[uint64][]Replica{} // shard -> replicas
	for node, ids := range ask {
		reps, err := c.Replicas(ctx, node, ids)
		if err != nil {
			if ctx.Err() != nil {
				return Plan{}, fmt.Errorf("recovery: asking node %d about its replicas: %w", node, err)
			}
			for _, id := range ids {
				answers[id] = append(answers[id], Replica{NodeID: node, Err: err.Error()})
			}
			continue
		}
		for _, r := range reps {
			answers[r.Desc.ShardID] = append(answers[r.Desc.ShardID], r)
		}
	}
	var plan Plan
	for _, d := range lost {
		reps := answers[d.ShardID]
		// A live replica may know a newer configuration than the record
		// (the reconciler lags): the newest is the shard's.
		for _, r := range reps {
			if r.Err == "" && r.Initialized && newer(r.Desc, d) {
				d = r.Desc
			}
		}
		if d.HasQuorum(c.Live) {
			if named {
				return Plan{}, quorumError(d, c.Live)
			}
			continue
		}
		plan.Shards = append(plan.Shards, lostShard(d, reps, c.Live))
	}
	slices.SortFunc(plan.Shards, func(a, b LostShard) int {
		if a.Meta != b.Meta {
			if a.Meta {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.ShardID, b.ShardID)
	})
	return plan, nil
}

func newer(a, b storage.Descriptor) bool {
	return a.ConfIndex > b.ConfIndex || (a.ConfIndex == b.ConfIndex && a.Generation > b.Generation)
}

func quorumError(d storage.Descriptor, live func(uint64) bool) error {
	voters, up := voterNodes(d, live)
	return &HasQuorumError{ShardID: d.ShardID, Voters: voters, Live: up}
}

// voterNodes returns d's voters (both halves if joint) and the live ones.
func voterNodes(d storage.Descriptor, live func(uint64) bool) (voters, up []uint64) {
	in, out := d.Voters()
	voters = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(in), out...))))
	for _, n := range voters {
		if live(n) {
			up = append(up, n)
		}
	}
	return voters, up
}

// lostShard describes d, without a live quorum, with the answers of its
// live replicas' nodes, and picks the replica to keep: the most up to
// date by raft's rule (last term, then last index), a tie to the lower
// node ID; only a replica of d's configuration that holds data and answered.
func lostShard(d storage.Descriptor, reps []Replica, live func(uint64) bool) LostShard {
	s := LostShard{ShardID: d.ShardID, Meta: d.ShardID == nodemeta.ShardID, Start: d.Start, Last: d.Last,
		Generation: d.Generation, MinReplicaID: d.NextReplicaID}
	s.Voters, _ = voterNodes(d, live)
	for _, n := range s.Voters {
		if !live(n) {
			s.Down = append(s.Down, n)
		}
	}
	slices.SortFunc(reps, func(a, b Replica) int { return cmp.Compare(a.NodeID, b.NodeID) })
	s.Replicas = reps
	var best *Replica
	for i := range reps {
		r := &reps[i]
		s.MinReplicaID = max(s.MinReplicaID, r.Desc.NextReplicaID, r.ReplicaID+1)
		if r.Err != "" || !r.Initialized {
			continue
		}
		if rep, ok := d.ReplicaOfNode(r.NodeID); !ok || rep.ReplicaID != r.ReplicaID {
			continue // not a member of the shard's configuration
		}
		if best == nil || r.LastTerm > best.LastTerm || (r.LastTerm == best.LastTerm && r.LastIndex > best.LastIndex) {
			best = r
		}
	}
	if best != nil {
		s.Keep, s.KeepReplicaID, s.KeepLastIndex, s.KeepLastTerm = best.NodeID, best.ReplicaID, best.LastIndex, best.LastTerm
	}
	return s
}

// Warning is what a recovery may lose, for the operator.
func (s LostShard) Warning() string {
	if s.Keep == 0 {
		return "no live replica holds its data: it cannot be recovered"
	}
	return fmt.Sprintf("writes acknowledged after index %d may be lost", s.KeepLastIndex)
}

// Applied is what ApplyOnline did to one shard.
type Applied struct {
	LostShard
	// Desc is the shard's new descriptor (Err empty).
	Desc storage.Descriptor `json:"desc"`
	Err  string             `json:"err,omitempty"`
}

// Result is what ApplyOnline did.
type Result struct {
	AnsweredBy uint64    `json:"answered_by"`
	Shards     []Applied `json:"shards"`
}

// ApplyOnline plans (PlanOnline: a shard named that has a live quorum, or
// is unknown, fails the whole apply before anything is touched), then
// recovers each shard of the plan on the node of its kept replica, the
// meta shard first: a shard that no live replica can serve gets
// ErrNoSurvivor, a node's refusal (its replica found a live quorum or
// leader meanwhile) is that shard's error; the others go on.
func ApplyOnline(ctx context.Context, c Cluster, shardIDs []uint64) (Result, error) {
	plan, err := PlanOnline(ctx, c, shardIDs)
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, s := range plan.Shards {
		a := Applied{LostShard: s}
		if s.Keep == 0 {
			a.Err = fmt.Errorf("%w: shard %d", ErrNoSurvivor, s.ShardID).Error()
		} else if a.Desc, err = c.Recover(ctx, s.Keep, s); err != nil {
			a.Err = err.Error()
		}
		res.Shards = append(res.Shards, a)
	}
	return res, nil
}
