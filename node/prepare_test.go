package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/internal/waitfor"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/router"
)

// TestPrepareBootstrap: a data directory prepared for a one-node bootstrap
// with a ring starts without --join or --bootstrap-expect and serves a new
// cluster of exactly that ring, with the given replication factor in its
// cluster record; a directory that is not empty, a ring that does not tile
// and a fill that fails are refused and leave nothing behind; a fresh
// directory with neither flag is still refused, and not created.
func TestPrepareBootstrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := t.TempDir()
	ring := []nodemeta.InitialRange{
		{ShardID: 5, Start: 0, Last: 1 << 40},
		{ShardID: 9, Start: 1<<40 + 1, Last: 1 << 62},
		{ShardID: 70, Start: 1<<62 + 1, Last: math.MaxUint64},
	}
	cr := ClusterRecord{InitialShards: 3, Replication: 3, Ring: ring, RestoredFrom: 0xabc}

	busy := filepath.Join(base, "busy")
	if err := os.MkdirAll(busy, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(busy, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := PrepareBootstrap(busy, 0, cr, nil); !errors.Is(err, ErrDataDirNotEmpty) {
		t.Fatalf("non-empty: %v", err)
	}
	gap := cr
	gap.Ring = []nodemeta.InitialRange{ring[0], ring[2], {ShardID: 8, Start: 5, Last: 6}}
	if _, err := PrepareBootstrap(filepath.Join(base, "gap"), 0, gap, nil); !errors.Is(err, nodemeta.ErrBadRecord) {
		t.Fatalf("a ring with a gap: %v", err)
	}
	boom := errors.New("boom")
	if _, err := PrepareBootstrap(filepath.Join(base, "failed"), 0, cr, func(string) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed fill: %v", err)
	}
	fresh := filepath.Join(base, "fresh")
	if _, err := StartCluster(ctx, ClusterConfig{DataDir: fresh, GossipAddr: "127.0.0.1:0"}); err == nil {
		t.Fatal("a fresh node started with neither --join nor --bootstrap-expect")
	}
	for _, d := range []string{"gap", "failed", "fresh"} {
		if _, err := os.Stat(filepath.Join(base, d)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind: %v", d, err)
		}
	}

	dir := filepath.Join(base, "restored")
	id, err := PrepareBootstrap(dir, 0, cr, func(storeDir string) error {
		if storeDir != StoreDir(dir) {
			return fmt.Errorf("fill got %s", storeDir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := StartCluster(ctx, ClusterConfig{DataDir: dir, RaftAddr: "127.0.0.1:0", ClientAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", NoPlacement: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.ClusterID() != id.ClusterID || n.NodeID() != id.NodeID {
		t.Fatalf("node %d of cluster %x, prepared %d of %x", n.NodeID(), n.ClusterID(), id.NodeID, id.ClusterID)
	}
	want := []router.Range{{ShardID: 5, Start: 0, Last: 1 << 40}, {ShardID: 9, Start: 1<<40 + 1, Last: 1 << 62}, {ShardID: 70, Start: 1<<62 + 1, Last: math.MaxUint64}}
	waitfor.Until(t, ctx, "the router's ring is the prepared one", func() error {
		if r := n.Router.Ring(); r == nil || !slices.Equal(r.Ranges(), want) {
			return fmt.Errorf("ring %v", r)
		}
		return nil
	})
	waitfor.Until(t, ctx, "the cluster record", func() error {
		c, err := n.cl.store.Cluster(ctx, nodemeta.Local)
		if err != nil {
			return err
		}
		if c.Replication != 3 || c.RestoredFrom != 0xabc || len(c.Ring) != 0 || c.InitialShards != 3 {
			return fmt.Errorf("cluster record %+v", c)
		}
		return nil
	})
}
