package node

import (
	"errors"
	"fmt"
	"io"

	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Backup implements nodepb.AdminServer: it streams this node's replica of
// a user shard as engine.BackupShard reads it (a read barrier, then one
// Pebble snapshot at one applied index, read here, on the handler's
// goroutine, never on the shard's worker): a header that describes the
// shard as the backup holds it, the data chunks, a trailer with their
// counts. The client (package node/backup) picks the replica and retries
// another one on failure.
func (a *adminService) Backup(req *nodepb.BackupRequest, stream grpc.ServerStreamingServer[nodepb.BackupChunk]) error {
	ctx := stream.Context()
	shard := req.GetShardId()
	if shard == 0 || storage.IsSystemShard(shard) {
		return adminError(codes.InvalidArgument, nodepb.Reason_REASON_BAD_REQUEST, shard, "node: backup takes a user shard, not shard %d", shard)
	}
	b, err := a.n.Engine.BackupShard(ctx, shard, 0)
	if err != nil {
		return a.engineAdminError(err, shard)
	}
	defer b.Close()
	h := &nodepb.BackupHeader{
		ClusterId: a.n.cfg.ClusterID, NodeId: a.n.cfg.NodeID, ShardId: shard,
		Start: b.Desc.Start, Last: b.Desc.Last, Generation: b.Desc.Generation,
		AppliedIndex: b.AppliedIndex, AppliedTerm: b.AppliedTerm, StoreFormat: storage.FormatVersion,
	}
	if a.n.cl != nil {
		if cr, err := a.n.cl.store.Cluster(ctx, nodemeta.Local); err == nil && cr.Replication > 0 {
			h.Replication = uint32(cr.Replication)
		}
	}
	if err := stream.Send(&nodepb.BackupChunk{Part: &nodepb.BackupChunk_Header{Header: h}}); err != nil {
		return err
	}
	for {
		chunk, err := b.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return a.engineAdminError(fmt.Errorf("node: backup of shard %d: %w", shard, err), shard)
		}
		if err := stream.Send(&nodepb.BackupChunk{Part: &nodepb.BackupChunk_Data{Data: chunk}}); err != nil {
			return err
		}
	}
	return stream.Send(&nodepb.BackupChunk{Part: &nodepb.BackupChunk_Trailer{Trailer: &nodepb.BackupTrailer{Keys: b.Keys(), Bytes: b.Bytes()}}})
}
