package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/node/backup"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// backupTimeout is the time a backup is allowed unless --timeout is given.
const backupTimeout = time.Hour

// backupView is the JSON document of backup and backup --verify.
type backupView struct {
	Dir       string           `json:"dir"`
	Verified  bool             `json:"verified,omitempty"`
	Seconds   float64          `json:"seconds"`
	Keys      uint64           `json:"keys"`
	Bytes     uint64           `json:"bytes"`      // of keys and values
	FileBytes int64            `json:"file_bytes"` // of the shard files
	Manifest  *backup.Manifest `json:"manifest"`
}

// backupCommands is "backup DIR" and "backup --verify DIR".
func backupCommands(e *env) []*cobra.Command {
	c := &cobra.Command{
		Use:   "backup DIR [--verify]",
		Short: "back up every shard into a new directory, or check a backup",
		Long: `Back up every user shard of the cluster into DIR, which must be new or
empty: per shard, one replica (the leader first, another on failure) is read
after a read barrier at one applied index, so that every write acknowledged
before the backup began is in it; one file per shard, then a MANIFEST (the
cluster ID, replication factor, each shard's range, applied index, size and
SHA-256). A backup that fails removes what it wrote; one whose shards were
split or merged meanwhile fails too: retry it. Allowed --timeout (default
1h here).

With --verify, read the backup in DIR whole instead and check each file
against the manifest (size, SHA-256, pairs in order and in the shard's
range) and that the shards tile the hash space; each bad file is named.

Restore with: flotilla restore --backup DIR --data-dir NEW.`,
		Args: argNames("DIR"),
	}
	verify := c.Flags().Bool("verify", false, "check the backup in DIR instead of taking one")
	parallel := c.Flags().Int("parallel", 4, "shards read at once")
	c.RunE = func(c *cobra.Command, args []string) error {
		if *verify {
			return e.verifyBackup(args[0])
		}
		if *parallel < 1 {
			return usageErrorf(c, "%s: --parallel must be at least 1", cmdPath(c))
		}
		timeout := e.timeout
		if f := c.Flag("timeout"); f == nil || !f.Changed {
			timeout = backupTimeout
		}
		return e.takeBackup(args[0], *parallel, timeout)
	}
	return []*cobra.Command{c}
}

func (e *env) takeBackup(dir string, parallel int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl := &ctlCluster{e: e}
	defer cl.close()
	cfg := backup.DefaultConfig(dir)
	cfg.Parallel = parallel
	cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := time.Now()
	m, err := backup.Take(ctx, cfg, cl)
	if err != nil {
		return err
	}
	return e.emitBackup(dir, m, false, time.Since(start))
}

func (e *env) verifyBackup(dir string) error {
	start := time.Now()
	m, err := backup.Verify(dir)
	if err != nil {
		return err
	}
	return e.emitBackup(dir, m, true, time.Since(start))
}

func (e *env) emitBackup(dir string, m *backup.Manifest, verified bool, took time.Duration) error {
	keys, bytes, fileBytes := m.Totals()
	v := backupView{Dir: dir, Verified: verified, Seconds: took.Seconds(), Keys: keys, Bytes: bytes, FileBytes: fileBytes, Manifest: m}
	return e.emit(v, func(w io.Writer) {
		what := "backed up"
		if verified {
			what = "verified"
		}
		fmt.Fprintf(w, "%s %s: cluster %016x, %d shards, %d keys and sessions, %d bytes (%d in files), replication %d, in %v\n",
			what, dir, m.ClusterID, len(m.Shards), keys, bytes, fileBytes, m.Replication, took.Round(time.Millisecond))
		fmt.Fprintf(w, "began %s, ended %s\n", m.Started.Format(time.RFC3339Nano), m.Finished.Format(time.RFC3339Nano))
		tw := tableWriter(w)
		fmt.Fprintln(tw, "SHARD\tSTART\tLAST\tAPPLIED\tFROM NODE\tKEYS\tBYTES\tFILE")
		for _, s := range m.Shards {
			fmt.Fprintf(tw, "%d\t%016x\t%016x\t%d\t%d\t%d\t%d\t%s\n", s.ShardID, s.Start, s.Last, s.AppliedIndex, s.Node, s.Keys, s.Bytes, s.File)
		}
		tw.Flush()
	})
}

// ctlCluster is backup.Cluster over flotillactl's endpoints; the
// connections to the nodes that serve shards are kept for the run.
type ctlCluster struct {
	e     *env
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (c *ctlCluster) Status(ctx context.Context) (*nodepb.StatusResponse, error) {
	return adminCall(ctx, c.e, true, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.StatusResponse, error) {
		return a.Status(ctx, &nodepb.StatusRequest{})
	})
}

func (c *ctlCluster) Shards(ctx context.Context) (*nodepb.ShardsResponse, error) {
	return adminCall(ctx, c.e, true, func(ctx context.Context, a nodepb.AdminClient) (*nodepb.ShardsResponse, error) {
		return a.Shards(ctx, &nodepb.ShardsRequest{})
	})
}

func (c *ctlCluster) Node(addr string) (nodepb.AdminClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[addr]; ok {
		return nodepb.NewAdminClient(conn), nil
	}
	conn, err := dial(addr)
	if err != nil {
		return nil, err
	}
	if c.conns == nil {
		c.conns = map[string]*grpc.ClientConn{}
	}
	c.conns[addr] = conn
	return nodepb.NewAdminClient(conn), nil
}

func (c *ctlCluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
}
