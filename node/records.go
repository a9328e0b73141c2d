package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/flotilla-db/flotilla/engine"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc/codes"
)

// The shard records in the meta shard follow the shards' own descriptors,
// which are the authority: every node runs a nodemeta.Reconciler for the
// shards it leads. It gets each descriptor a leading replica here applies
// (reportLoop, from the engine's descriptor events), the descriptor of
// each shard this node comes to lead (leaderLoop), and compares the records
// with the descriptors of the shards led here every interval (ledSource).
// It writes through recordWriter: PutShardRecords on this node's admin
// service, which writes with the store on the meta shard's leader and
// forwards to it from anywhere else. A record is only ever replaced by a
// newer one (by conf index, then generation), so reports may come late,
// twice, or from a leader that has just been deposed.

// startReconciler starts the reconciler of the shards this node leads.
func (cs *clusterState) startReconciler() error {
	cfg := nodemeta.DefaultReconcilerConfig()
	cfg.Logger = cs.log
	if cs.cfg.Reconciler != nil {
		cs.cfg.Reconciler(&cfg)
	}
	r, err := nodemeta.NewReconciler(cfg, cs.store, recordWriter{cs.n.admin}, ledSource{cs.n.Engine})
	if err != nil {
		return err
	}
	cs.rec = r
	return nil
}

// reportLoop hands the reconciler every descriptor that a replica leading
// its shard here applies (a follower's would be the same, written again).
// It owns w and closes it.
func (cs *clusterState) reportLoop(ctx context.Context, w *engine.DescriptorWatch) {
	defer cs.wg.Done()
	defer w.Close()
	for {
		evs, err := w.Next(ctx)
		if err != nil {
			return
		}
		for _, ev := range evs {
			if ev.Leader {
				cs.report(ev.Desc)
			}
		}
	}
}

// reportLed hands the reconciler the descriptors of shards this node has
// come to lead.
func (cs *clusterState) reportLed(ctx context.Context, shardIDs []uint64) {
	for _, id := range shardIDs {
		if storage.IsSystemShard(id) {
			continue
		}
		if st, err := cs.n.Engine.Status(ctx, id); err == nil && st.Leader == cs.id.NodeID {
			cs.report(st.Desc)
		}
	}
}

// report hands the reconciler a user shard's descriptor.
func (cs *clusterState) report(d storage.Descriptor) {
	if storage.IsSystemShard(d.ShardID) {
		return
	}
	if err := cs.rec.Report(nodemeta.RecordOf(d)); err != nil && !errors.Is(err, nodemeta.ErrClosed) {
		cs.log.Error("meta: a descriptor that makes no record", "shard", d.ShardID, "err", err)
	}
}

// ledSource is the reconciler's Source: the applied descriptors of the
// user shards this node leads.
type ledSource struct{ e *engine.Engine }

func (s ledSource) Led(ctx context.Context) ([]nodemeta.ShardRecord, error) {
	led, err := s.e.Leading(ctx)
	if err != nil {
		return nil, err
	}
	var out []nodemeta.ShardRecord
	for _, l := range led {
		if !storage.IsSystemShard(l.ShardID) {
			out = append(out, nodemeta.RecordOf(l.Desc))
		}
	}
	return out, nil
}

// recordWriter is the reconciler's Writer: PutShardRecords on this node's
// admin service, which writes the records if this node leads the meta
// shard and forwards them to its leader if not. A refusal of the records
// themselves comes back as nodemeta.ErrBadRecord, which the reconciler does
// not retry.
type recordWriter struct{ a *adminService }

func (w recordWriter) PutShards(ctx context.Context, recs []nodemeta.ShardRecord) error {
	_, err := w.a.PutShardRecords(ctx, &nodepb.PutShardRecordsRequest{Records: shardRecordsToProto(recs)})
	if e := adminErrorOf(err); e != nil && codes.Code(e.GetCode()) == codes.InvalidArgument && e.GetReason() == nodepb.Reason_REASON_BAD_REQUEST {
		return fmt.Errorf("%w: %s", nodemeta.ErrBadRecord, e.GetMessage())
	}
	return err
}

// PutShardRecords implements nodepb.AdminServer.
func (a *adminService) PutShardRecords(ctx context.Context, req *nodepb.PutShardRecordsRequest) (*nodepb.PutShardRecordsResponse, error) {
	store, err := a.store()
	if err != nil {
		return nil, err
	}
	recs := shardRecordsFromProto(req.GetRecords())
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, r.ShardID, "node: %v", err)
		}
	}
	resp, fw, err := forward(ctx, a, MetaShardID, req.GetHops(), func(c nodepb.AdminClient) (*nodepb.PutShardRecordsResponse, error) {
		return c.PutShardRecords(ctx, &nodepb.PutShardRecordsRequest{Records: req.GetRecords(), Hops: req.GetHops() + 1})
	})
	if fw || err != nil {
		return resp, err
	}
	if err := store.PutShards(ctx, recs); err != nil {
		if errors.Is(err, nodemeta.ErrBadRecord) {
			return nil, adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, 0, "node: %v", err)
		}
		return nil, a.engineAdminError(err, MetaShardID)
	}
	return &nodepb.PutShardRecordsResponse{}, nil
}

func shardRecordsToProto(recs []nodemeta.ShardRecord) []*nodepb.ShardRecord {
	out := make([]*nodepb.ShardRecord, len(recs))
	for i, r := range recs {
		p := &nodepb.ShardRecord{ShardId: r.ShardID, Start: r.Start, Last: r.Last, Generation: r.Generation,
			ConfIndex: r.ConfIndex, NextReplicaId: r.NextReplicaID, Replicas: make([]*nodepb.ReplicaRecord, len(r.Replicas)),
			MergeInto: r.MergeInto, MergeIntoGeneration: r.MergeIntoGeneration}
		for j, rp := range r.Replicas {
			p.Replicas[j] = &nodepb.ReplicaRecord{NodeId: rp.NodeID, ReplicaId: rp.ReplicaID, Role: string(rp.Role)}
		}
		out[i] = p
	}
	return out
}

func shardRecordsFromProto(ps []*nodepb.ShardRecord) []nodemeta.ShardRecord {
	out := make([]nodemeta.ShardRecord, len(ps))
	for i, p := range ps {
		r := nodemeta.ShardRecord{ShardID: p.GetShardId(), Start: p.GetStart(), Last: p.GetLast(), Generation: p.GetGeneration(),
			ConfIndex: p.GetConfIndex(), NextReplicaID: p.GetNextReplicaId(), Replicas: make([]nodemeta.Replica, len(p.GetReplicas())),
			MergeInto: p.GetMergeInto(), MergeIntoGeneration: p.GetMergeIntoGeneration()}
		for j, rp := range p.GetReplicas() {
			r.Replicas[j] = nodemeta.Replica{NodeID: rp.GetNodeId(), ReplicaID: rp.GetReplicaId(), Role: nodemeta.Role(rp.GetRole())}
		}
		out[i] = r
	}
	return out
}
