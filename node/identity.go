package node

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// IdentityFile is the name of the file in a data directory that holds the
// node's identity from its first start on, before the store exists.
const IdentityFile = "flotilla-node.json"

// Identity is who a data directory belongs to. NodeID is chosen once (given
// by --node-id or drawn at random) and kept; Instance is drawn at random when
// the directory is first used and tells two processes that claim one node ID
// apart; ClusterID is 0 until the node bootstrapped or joined a cluster.
type Identity struct {
	NodeID    uint64 `json:"node_id"`
	Instance  uint64 `json:"instance"`
	ClusterID uint64 `json:"cluster_id,omitempty"`
	// Bootstrapped: this node created its replicas of the initial layout
	// (a bootstrap member), so a restart does not create them again.
	Bootstrapped bool `json:"bootstrapped,omitempty"`
	// RecordsWritten: the cluster record and the initial shards' records
	// are in the meta shard (this node's copy).
	RecordsWritten bool `json:"records_written,omitempty"`
	// Cluster: the bootstrap parameters, kept by every bootstrap member so
	// that one that stops half-way through bootstrap resumes it.
	Cluster *ClusterRecord `json:"cluster,omitempty"`
}

// Errors of the data directory.
var (
	// ErrWrongCluster: the data directory belongs to another cluster than the
	// one the node was asked to join.
	ErrWrongCluster = errors.New("node: data directory belongs to another cluster")
	// ErrWrongNodeID: --node-id disagrees with the data directory's node ID.
	ErrWrongNodeID = errors.New("node: data directory belongs to another node ID")
	// ErrDuplicateNodeID: another running node (another data directory)
	// holds this node ID.
	ErrDuplicateNodeID = errors.New("node: node ID is held by another node")
	// ErrNodeRemoved: the node ID was removed from the cluster; IDs are never
	// reused.
	ErrNodeRemoved = errors.New("node: node ID was removed from the cluster")
)

// randomID returns a random nonzero 63-bit ID.
func randomID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		if v := binary.BigEndian.Uint64(b[:]) >> 1; v != 0 {
			return v
		}
	}
}

// loadIdentity reads dir's identity, creating it (and dir) on first use
// with nodeID, or a random ID if nodeID is 0.
func loadIdentity(dir string, nodeID uint64) (Identity, error) {
	path := filepath.Join(dir, IdentityFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var id Identity
		if err := json.Unmarshal(b, &id); err != nil || id.NodeID == 0 || id.Instance == 0 {
			return Identity{}, fmt.Errorf("node: %s is damaged (%v): restore it or start with an empty data directory", path, err)
		}
		if nodeID != 0 && nodeID != id.NodeID {
			return Identity{}, fmt.Errorf("%w: %s holds node %d, --node-id asks for %d", ErrWrongNodeID, dir, id.NodeID, nodeID)
		}
		return id, nil
	case errors.Is(err, os.ErrNotExist):
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			return Identity{}, fmt.Errorf("node: %s is not empty but has no %s: not a Flotilla data directory of this version", dir, IdentityFile)
		}
	default:
		return Identity{}, fmt.Errorf("node: read identity: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Identity{}, fmt.Errorf("node: data directory: %w", err)
	}
	id := Identity{NodeID: nodeID, Instance: randomID()}
	if id.NodeID == 0 {
		id.NodeID = newNodeID()
	}
	return id, saveIdentity(dir, id)
}

// newNodeID draws a node ID. Drawn from 31 bits, so that operators can type
// them: two nodes of a 100-node cluster draw the same ID with odds of 2 in
// a million, and the meta shard refuses the second (ErrDuplicateNodeID), as
// it refuses a removed node's ID.
func newNodeID() uint64 { return randomID()>>32 | 1<<20 }

// saveIdentity writes id durably: a temporary file, fsync, rename, fsync of
// the directory.
func saveIdentity(dir string, id Identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, IdentityFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("node: write identity: %w", err)
	}
	if _, err = f.Write(append(b, '\n')); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, IdentityFile))
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(dir); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("node: write identity: %w", err)
	}
	return nil
}
