package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/flotilla-db/flotilla/node"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
)

// RestoreConfig configures Restore.
type RestoreConfig struct {
	// Backup is the directory of the backup to restore. Required.
	Backup string
	// DataDir is the data directory to prepare: new or empty. Required.
	DataDir string
	// NodeID of the restored node; 0 draws one.
	NodeID uint64
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Validate checks c without changing it.
func (c RestoreConfig) Validate() error {
	if c.Backup == "" || c.DataDir == "" {
		return errors.New("backup: RestoreConfig.Backup and DataDir are required")
	}
	return nil
}

// Restored is the outcome of a restore.
type Restored struct {
	Manifest  *Manifest
	ClusterID uint64 // the new cluster's
	NodeID    uint64
}

// Restore prepares cfg.DataDir, new or empty (node.ErrDataDirNotEmpty
// otherwise, nothing written), from the backup in cfg.Backup, which is
// checked whole first (as Verify does: a bad file is refused, named, and
// nothing is written): `flotilla start --data-dir` on it then serves a new
// cluster, with a new cluster ID, whose only node is this one and that
// holds exactly the backup (see the package doc). The files are hashed
// again as they are restored; a restore that fails removes what it wrote.
func Restore(ctx context.Context, cfg RestoreConfig) (*Restored, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// The manifest gives the ring; the files are checked whole (Verify)
	// once the data directory is known to be empty, before anything is
	// written to it.
	m, err := ReadManifest(cfg.Backup)
	if err != nil {
		return nil, err
	}
	cr := nodemeta.ClusterRecord{InitialShards: len(m.Shards), Replication: m.Replication, RestoredFrom: m.ClusterID}
	for _, s := range m.Shards {
		cr.Ring = append(cr.Ring, nodemeta.InitialRange{ShardID: s.ShardID, Start: s.Start, Last: s.Last})
	}
	id, err := node.PrepareBootstrap(cfg.DataDir, cfg.NodeID, cr, func(storeDir string) error {
		if _, err := Verify(cfg.Backup); err != nil {
			return err
		}
		return fillStore(ctx, cfg, m, storeDir)
	})
	if err != nil {
		return nil, err
	}
	return &Restored{Manifest: m, ClusterID: id.ClusterID, NodeID: id.NodeID}, nil
}

// fillStore creates the store in storeDir and puts every shard's sessions
// and data in it, one ingested sstable per shard.
func fillStore(ctx context.Context, cfg RestoreConfig, m *Manifest, storeDir string) (err error) {
	scfg := storage.DefaultConfig(storeDir)
	scfg.Logger = cfg.Logger
	st, err := storage.Open(scfg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); err == nil {
			err = cerr
		}
	}()
	for _, s := range m.Shards {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("backup: restore: %w", err)
		}
		staged, err := st.StageSnapshot(s.descriptor())
		if err != nil {
			return err
		}
		if err := readShard(cfg.Backup, s, staged.Write); err != nil {
			staged.Abort()
			return err
		}
		if err := staged.Finish(); err != nil {
			return err
		}
		if err := st.IngestData(staged); err != nil {
			return err
		}
	}
	return nil
}
