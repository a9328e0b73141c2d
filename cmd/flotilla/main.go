// Command flotilla runs Flotilla nodes.
//
//	flotilla demo     a local 3-node cluster on loopback in one process
//	flotilla start    one node of a cluster; nodes find each other by gossip
//	flotilla restore  a data directory for a new cluster made from a backup
//
// Flags are read here and nowhere else; see `flotilla demo -h` and
// `flotilla start -h`.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node"
	"github.com/flotilla-db/flotilla/node/backup"
	"github.com/flotilla-db/flotilla/placement"
	"github.com/flotilla-db/flotilla/transport"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "demo":
		err = demo(os.Args[2:])
	case "start":
		err = start(os.Args[2:])
	case "recover-info":
		err = recoverInfo(os.Args[2:])
	case "restore":
		err = restore(os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "flotilla: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "flotilla: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: flotilla COMMAND [flags]

commands:
  demo    run a local 3-node cluster on loopback until Ctrl-C
  start   run one node of a cluster (--bootstrap-expect N to form one, --join to join,
          --force-new-cluster to recover a survivor of the loss of a majority)
  recover-info  print, as JSON, what a stopped node's data directory holds, for
          the other survivors' --recover-peers
  restore prepare a data directory from a backup (flotillactl backup), for start
`)
}

func logger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func demo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "data directory (default: a temporary one, removed at exit)")
	shards := fs.Int("initial-shards", 64, "shards the hash space is split into")
	clientBase := fs.Int("client-port", 7001, "client port of the first node (the others take the next ones)")
	raftBase := fs.Int("raft-port", 7101, "raft port of the first node (the others take the next ones)")
	gossipBase := fs.Int("gossip-port", 7201, "gossip port of the first node (the others take the next ones)")
	httpBase := fs.Int("http-port", 7301, "HTTP port of the first node: metrics, probes, pprof, the key-value HTTP API (the others take the next ones; 0: off)")
	level := fs.String("log-level", "error", "log level: debug, info, warn, error")
	fs.Parse(args)
	log := logger(*level)
	dir := *dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "flotilla-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("Starting a 3-node Flotilla cluster with %d shards (data in %s)...\n", *shards, dir)
	const size = 3
	nodes := make([]*node.Node, size)
	errs := make([]error, size)
	defer func() {
		for _, n := range nodes {
			if n != nil {
				if err := n.Close(); err != nil {
					log.Warn("close", "err", err)
				}
			}
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	seed := fmt.Sprintf("127.0.0.1:%d", *gossipBase)
	var wg sync.WaitGroup
	for i := range size {
		cfg := node.ClusterConfig{
			DataDir:         filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			RaftAddr:        fmt.Sprintf("127.0.0.1:%d", *raftBase+i),
			ClientAddr:      fmt.Sprintf("127.0.0.1:%d", *clientBase+i),
			GossipAddr:      fmt.Sprintf("127.0.0.1:%d", *gossipBase+i),
			BootstrapExpect: size, InitialShards: *shards, Replication: 3, Logger: log,
		}
		if *httpBase != 0 {
			cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", *httpBase+i)
		}
		if i > 0 {
			cfg.Join = []string{seed}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = node.StartCluster(sctx, cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			if strings.Contains(err.Error(), "address already in use") {
				return fmt.Errorf("node %d: %w (is another demo running? try --client-port, --raft-port, --gossip-port and --http-port)", i+1, err)
			}
			return fmt.Errorf("node %d: %w", i+1, err)
		}
	}
	for _, n := range nodes {
		if err := n.WaitReady(sctx); err != nil {
			return err
		}
	}
	var endpoints []string
	for _, n := range nodes {
		endpoints = append(endpoints, n.ClientAddr())
	}
	fmt.Printf("Ready. Cluster %016x.\n", nodes[0].ClusterID())
	for i, n := range nodes {
		fmt.Printf("  node %d (ID %d): client %s, raft %s, gossip %s, http %s\n", i+1, n.NodeID(), n.ClientAddr(), n.RaftAddr(), n.GossipAddr(), orOff(n.HTTPAddr()))
	}
	ep := strings.Join(endpoints, ",")
	fmt.Printf("Try:\n  go run ./cmd/flotillactl --endpoints %s put hello world\n  go run ./cmd/flotillactl --endpoints %s get hello\n  go run ./cmd/flotillactl --endpoints %s status\n  go run ./cmd/flotillactl --endpoints %s shards\n", ep, ep, ep, ep)
	if addr := nodes[0].HTTPAddr(); addr != "" {
		fmt.Printf("  curl -X PUT --data-binary world http://%s/v1/kv/hello\n  curl http://%s/v1/kv/hello\n", addr, addr)
	}
	fmt.Println("Press Ctrl-C to stop.")
	<-ctx.Done()
	fmt.Println("\nStopping...")
	return nil
}

func orOff(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func start(args []string) error {
	fs := flag.NewFlagSet("start", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "data directory (required); holds the node's identity and store")
	nodeID := fs.Uint64("node-id", 0, "this node's ID (default: drawn once and kept in the data directory; IDs are never reused)")
	raftAddr := fs.String("raft-addr", "127.0.0.1:7101", "raft listen address (also advertised to other nodes)")
	clientAddr := fs.String("client-addr", "127.0.0.1:7001", "client listen address (also advertised)")
	gossipAddr := fs.String("gossip-addr", "127.0.0.1:7201", "gossip listen address, TCP and UDP")
	httpAddr := fs.String("http-addr", "", "metrics (/metrics), health (/healthz, /readyz), pprof and key-value HTTP API (/v1/kv/) listen address (empty: off)")
	advertise := fs.String("advertise-host", "", "host other nodes and clients reach this node at (default: the listen host, or the gossip IP when listening on 0.0.0.0)")
	join := fs.String("join", "", "gossip addresses of nodes to join, comma-separated")
	expect := fs.Int("bootstrap-expect", 0, "bootstrap a new cluster once this many fresh nodes see each other (0: only join)")
	shards := fs.Int("initial-shards", 64, "shards the hash space is split into at bootstrap")
	replication := fs.Int("replication", 3, "replicas per shard at bootstrap")
	tlsCert := fs.String("tls-cert", "", "node certificate (PEM) for mutual TLS on the raft transport")
	tlsKey := fs.String("tls-key", "", "node private key (PEM)")
	tlsCA := fs.String("tls-ca", "", "CA certificate (PEM) that signs every node's certificate")
	gossipKey := fs.String("gossip-key", "", "gossip encryption key: base64 of 16, 24 or 32 bytes (default: FLOTILLA_GOSSIP_KEY; empty: plaintext)")
	joinTimeout := fs.Duration("join-timeout", 2*time.Minute, "how long to wait for the cluster to form or answer")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	drainTimeout := fs.Duration("drain-timeout", 10*time.Second, "on SIGTERM, time allowed to hand leaderships to other nodes")
	sessionTTL := fs.Duration("session-ttl", time.Hour, "client sessions unused for this long are expired (by a replicated command); a client must never retry one request for longer")
	readMode := fs.String("read-mode", "readindex", "how a leader serves linearizable reads: readindex (a quorum round per read) or lease (no round while it holds a lease; needs --check-quorum, bounded clock drift, and every node in lease mode)")
	maxDrift := fs.Duration("max-clock-drift", 0, "lease mode: how far two nodes' clocks may drift apart over an election timeout; a lease lasts the election timeout less this (0: a tenth of the election timeout)")
	checkQuorum := fs.Bool("check-quorum", true, "a leader that has not heard from a quorum for an election timeout steps down (raft's CheckQuorum); lease mode needs it")
	pdef := placement.DefaultDriverConfig()
	noPlacement := fs.Bool("no-placement", false, "run no placement driver on this node: replicas move only by hand (add-replica, remove-replica)")
	downAfter := fs.Duration("down-after", pdef.Placement.DownAfter, "how long a node must be dead before the placement driver replaces its replicas")
	movesPerMinute := fs.Int("placement-moves-per-minute", pdef.MovesPerMinute, "replica moves (each costs a snapshot) the placement driver starts per minute, at most")
	snapshotsPerNode := fs.Int("placement-snapshots-per-node", pdef.Placement.MaxSnapshotsPerNode, "replicas a node receives at once (snapshots in flight), at most")
	maxOps := fs.Int("placement-max-ops", pdef.MaxConcurrentOps, "placement operations in flight, at most")
	splitSize := byteSize(pdef.Placement.SplitSize)
	fs.Var(&splitSize, "split-size", "the placement driver splits a shard holding more data than this (bytes, or with a unit: 512MiB, 1GiB)")
	splitWrites := fs.Float64("split-writes", pdef.Placement.SplitWriteRate, "the placement driver splits a shard taking more writes a second than this, averaged over 30s")
	mergeCooldown := fs.Duration("merge-cooldown", pdef.Placement.MergeCooldown, "a shard whose range changed (split or merged) more recently than this is not merged")
	snapshotRate := byteSize(defaultSnapshotRate)
	fs.Var(&snapshotRate, "snapshot-rate", "bytes a second this node's outgoing snapshots may take together (replicas moved, repaired or caught up); 0: no limit")
	noSplits := fs.Bool("no-splits", false, "the placement driver splits no shard (flotillactl split still does)")
	noMerges := fs.Bool("no-merges", false, "the placement driver merges no shards (flotillactl merge still does)")
	forceNew := fs.Bool("force-new-cluster", false, "recover from the loss of a majority: before starting, make every replica on this node whose shard lost its quorum the only voter of its shard (the meta shard too), mark the other nodes removed; writes acknowledged after a kept replica's last index may be lost")
	force := fs.Bool("force", false, "with --force-new-cluster: recover even if some shard's other voters still answer")
	recoverPeers := fs.String("recover-peers", "", "with --force-new-cluster: the other survivors' `flotilla recover-info` files, comma-separated; the most up-to-date replica of each shard wins")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("start: unexpected arguments %q", fs.Args())
	}
	if *dataDir == "" {
		return errors.New("start: --data-dir is required")
	}
	if *movesPerMinute < 1 || *snapshotsPerNode < 1 || *maxOps < 1 || *downAfter <= 0 {
		return errors.New("start: --placement-moves-per-minute, --placement-snapshots-per-node and --placement-max-ops must be at least 1, --down-after positive")
	}
	if splitSize < 1<<20 || *splitWrites <= 0 || *mergeCooldown <= 0 {
		return errors.New("start: --split-size must be at least 1MiB, --split-writes and --merge-cooldown positive")
	}
	pcfg := pdef
	pcfg.Placement.DownAfter, pcfg.MovesPerMinute, pcfg.Placement.MaxSnapshotsPerNode, pcfg.MaxSnapshotsPerNode, pcfg.MaxConcurrentOps =
		*downAfter, *movesPerMinute, *snapshotsPerNode, *snapshotsPerNode, *maxOps
	pcfg.Placement.SplitSize, pcfg.Placement.SplitWriteRate, pcfg.Placement.MergeCooldown = uint64(splitSize), *splitWrites, *mergeCooldown
	pcfg.Placement.NoSplits, pcfg.Placement.NoMerges = *noSplits, *noMerges
	pcfg.IsLeader = func() bool { return false } // checked here; the node sets its own
	if err := pcfg.Validate(); err != nil {
		return fmt.Errorf("start: placement flags: %w", err)
	}
	cfg := node.ClusterConfig{
		DataDir: *dataDir, NodeID: *nodeID,
		RaftAddr: *raftAddr, ClientAddr: *clientAddr, GossipAddr: *gossipAddr, HTTPAddr: *httpAddr,
		AdvertiseHost: *advertise, Join: splitList(*join), BootstrapExpect: *expect, InitialShards: *shards, Replication: *replication,
	}
	if *sessionTTL <= 0 {
		return errors.New("start: --session-ttl must be positive")
	}
	ttl := *sessionTTL
	mode, err := engine.ParseReadMode(*readMode)
	if err != nil {
		return fmt.Errorf("start: --read-mode: %w", err)
	}
	drift, noCheckQuorum := *maxDrift, !*checkQuorum
	cfg.Engine = func(c *engine.Config) {
		c.SessionTTL = ttl
		c.ReadMode, c.MaxClockDrift, c.DisableCheckQuorum = mode, drift, noCheckQuorum
	}
	// Refused here, before the node joins anything: the engine's checks.
	ecfg := engine.DefaultConfig(1, 1, *dataDir)
	cfg.Engine(&ecfg)
	if err := ecfg.Validate(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	cfg.NoPlacement = *noPlacement
	cfg.SnapshotRate = int64(snapshotRate)
	cfg.Placement = func(c *placement.DriverConfig) {
		c.Placement.DownAfter, c.MovesPerMinute, c.MaxConcurrentOps = pcfg.Placement.DownAfter, pcfg.MovesPerMinute, pcfg.MaxConcurrentOps
		c.Placement.MaxSnapshotsPerNode, c.MaxSnapshotsPerNode = pcfg.Placement.MaxSnapshotsPerNode, pcfg.MaxSnapshotsPerNode
		c.Placement.SplitSize, c.Placement.SplitWriteRate, c.Placement.MergeCooldown = pcfg.Placement.SplitSize, pcfg.Placement.SplitWriteRate, pcfg.Placement.MergeCooldown
		c.Placement.NoSplits, c.Placement.NoMerges = pcfg.Placement.NoSplits, pcfg.Placement.NoMerges
	}
	if *tlsCert != "" || *tlsKey != "" || *tlsCA != "" {
		if *tlsCert == "" || *tlsKey == "" || *tlsCA == "" {
			return errors.New("start: --tls-cert, --tls-key and --tls-ca go together")
		}
		tc, err := transport.LoadMutualTLS(*tlsCert, *tlsKey, *tlsCA)
		if err != nil {
			return fmt.Errorf("start: %w", err)
		}
		cfg.TLS = tc
	}
	key := *gossipKey
	if key == "" {
		key = os.Getenv("FLOTILLA_GOSSIP_KEY")
	}
	if key != "" {
		b, err := base64.StdEncoding.DecodeString(key)
		if err != nil || (len(b) != 16 && len(b) != 24 && len(b) != 32) {
			return errors.New("start: --gossip-key must be base64 of 16, 24 or 32 bytes")
		}
		cfg.GossipKey = b
	}
	if !*forceNew && (*force || *recoverPeers != "") {
		return errors.New("start: --force and --recover-peers go with --force-new-cluster")
	}
	if *forceNew {
		fc, err := forceNewCluster(*force, splitList(*recoverPeers))
		if err != nil {
			return fmt.Errorf("start: %w", err)
		}
		cfg.ForceNewCluster = fc
	}
	log := logger(*level)
	cfg.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, *joinTimeout)
	n, err := node.StartCluster(sctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	<-ctx.Done()
	// SIGTERM or Ctrl-C: hand leaderships away first, so that the stop costs
	// the cluster no election timeout, then stop.
	log.Info("draining leaderships")
	dctx, cancel := context.WithTimeout(context.Background(), *drainTimeout)
	if err := n.Drain(dctx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	cancel()
	log.Info("stopping")
	return n.Close()
}

func restore(args []string) error {
	fs := flag.NewFlagSet("restore", flag.ExitOnError)
	from := fs.String("backup", "", "directory of the backup to restore (flotillactl backup DIR) (required)")
	dataDir := fs.String("data-dir", "", "data directory to prepare, new or empty (required); then: flotilla start --data-dir DIR")
	nodeID := fs.Uint64("node-id", 0, "the restored node's ID (default: drawn)")
	level := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("restore: unexpected arguments %q", fs.Args())
	}
	if *from == "" || *dataDir == "" {
		return errors.New("restore: --backup and --data-dir are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	r, err := backup.Restore(ctx, backup.RestoreConfig{Backup: *from, DataDir: *dataDir, NodeID: *nodeID, Logger: logger(*level)})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	keys, bytes, _ := r.Manifest.Totals()
	fmt.Printf("Restored %d shards (%d keys and sessions, %d bytes) of cluster %016x into %s in %v:\n",
		len(r.Manifest.Shards), keys, bytes, r.Manifest.ClusterID, *dataDir, time.Since(t0).Round(time.Millisecond))
	fmt.Printf("  new cluster %016x, node %d, replication %d once nodes join.\n", r.ClusterID, r.NodeID, r.Manifest.Replication)
	fmt.Printf("Start it with: flotilla start --data-dir %s (other nodes join it with --join)\n", *dataDir)
	return nil
}
