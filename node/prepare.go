package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	nodemeta "github.com/flotilla-db/flotilla/node/meta"
)

// ErrDataDirNotEmpty: a data directory to prepare (PrepareBootstrap) holds
// files already; nothing was written to it.
var ErrDataDirNotEmpty = errors.New("node: data directory is not empty")

// StoreDir returns the directory of the store in the data directory
// dataDir.
func StoreDir(dataDir string) string { return filepath.Join(dataDir, "store") }

// PrepareBootstrap prepares the empty (or missing) data directory dir for
// a node that bootstraps a new cluster alone, with the bootstrap
// parameters cr: the node's identity holds cr as a bootstrap member's
// does, so that StartCluster on dir takes the path of every bootstrap
// (createInitialReplicas creates the meta shard and the layout's shards on
// this node, writeBootstrapRecords writes their records) without waiting
// for other members or needing --join. A restore (package node/backup)
// passes the backup's ring in cr.Ring and fills the store with the
// shards' data first: fill is called with the store's directory, before
// the identity is written, so that a directory whose fill failed or was
// cut short is not a data directory (StartCluster refuses it) and is
// removed here on failure.
//
// nodeID 0 draws one as a first start does; cr.ClusterID 0 draws a cluster
// ID; cr.Bootstrap is set to this node alone. A directory that is not
// empty is refused with ErrDataDirNotEmpty.
func PrepareBootstrap(dir string, nodeID uint64, cr ClusterRecord, fill func(storeDir string) error) (Identity, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case err == nil && len(entries) > 0:
		return Identity{}, fmt.Errorf("%w: %s holds %d entries (%s, ...); give an empty or new directory", ErrDataDirNotEmpty, dir, len(entries), entries[0].Name())
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return Identity{}, fmt.Errorf("node: data directory: %w", err)
	}
	created := errors.Is(err, os.ErrNotExist)
	id := Identity{NodeID: nodeID, Instance: randomID()}
	if id.NodeID == 0 {
		id.NodeID = newNodeID()
	}
	if cr.ClusterID == 0 {
		cr.ClusterID = randomID()
	}
	if cr.Created.IsZero() {
		cr.Created = time.Now().UTC()
	}
	cr.Bootstrap = []uint64{id.NodeID}
	if _, err := nodemeta.NewLayout(cr); err != nil {
		return Identity{}, err
	}
	id.ClusterID, id.Cluster = cr.ClusterID, &cr
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Identity{}, fmt.Errorf("node: data directory: %w", err)
	}
	undo := func(err error) (Identity, error) {
		if created {
			_ = os.RemoveAll(dir)
		} else {
			_ = os.RemoveAll(StoreDir(dir))
			_ = os.Remove(filepath.Join(dir, IdentityFile+".tmp"))
		}
		return Identity{}, err
	}
	if fill != nil {
		if err := fill(StoreDir(dir)); err != nil {
			return undo(err)
		}
	}
	if err := saveIdentity(dir, id); err != nil {
		return undo(err)
	}
	return id, nil
}

// peekIdentity reads dir's identity, if it has a readable one, without
// creating anything (loadIdentity reports what is wrong with it).
func peekIdentity(dir string) Identity {
	var id Identity
	if b, err := os.ReadFile(filepath.Join(dir, IdentityFile)); err == nil {
		_ = json.Unmarshal(b, &id)
	}
	return id
}

// isBootstrapOnly reports whether id is a data directory prepared for a
// node that bootstraps its cluster alone (PrepareBootstrap): it needs
// neither --join nor --bootstrap-expect to start.
func (id Identity) isBootstrapOnly() bool {
	return id.Cluster != nil && slices.Equal(id.Cluster.Bootstrap, []uint64{id.NodeID})
}
