// Command flotilla runs Flotilla nodes.
//
//	flotilla demo   a local 3-node cluster on loopback in one process
//	flotilla start  one node of a cluster whose members are listed by --peers
//
// Flags are read here and nowhere else; see `flotilla demo -h` and
// `flotilla start -h`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-db/flotilla/node"
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
  start   run one node of a cluster listed by --peers
`)
}

// tuneRuntime gives the Go scheduler more Ps than cores: the engine's
// goroutines spend much of their time in fsync, and with only as many Ps as
// cores the other goroutines wait for those Ps to be handed back (measured:
// replicated writes/s at 1,000 shards on 2 cores rise ~2x from GOMAXPROCS 2
// to 4). An explicit GOMAXPROCS in the environment wins.
func tuneRuntime() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(4 * runtime.NumCPU())
	}
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
	clientBase := fs.Int("client-port", 7001, "client port of node 1 (nodes 2 and 3 take the next ones)")
	raftBase := fs.Int("raft-port", 7101, "raft port of node 1 (nodes 2 and 3 take the next ones)")
	level := fs.String("log-level", "error", "log level: debug, info, warn, error")
	fs.Parse(args)
	tuneRuntime()
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
	var peers []node.Peer
	for i := 0; i < 3; i++ {
		peers = append(peers, node.Peer{
			NodeID:     uint64(i + 1),
			RaftAddr:   fmt.Sprintf("127.0.0.1:%d", *raftBase+i),
			ClientAddr: fmt.Sprintf("127.0.0.1:%d", *clientBase+i),
		})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("Starting a 3-node Flotilla cluster with %d shards (data in %s)...\n", *shards, dir)
	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			if err := n.Close(); err != nil {
				log.Warn("close", "err", err)
			}
		}
	}()
	for _, p := range peers {
		n, err := node.Start(ctx, node.Config{
			NodeID: p.NodeID, ClusterID: 1, DataDir: filepath.Join(dir, fmt.Sprintf("node%d", p.NodeID)),
			RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr, Peers: peers,
			InitialShards: *shards, Replication: 3, Logger: log,
		})
		if err != nil {
			if strings.Contains(err.Error(), "address already in use") {
				return fmt.Errorf("node %d: %w (is another demo running? try --client-port and --raft-port)", p.NodeID, err)
			}
			return fmt.Errorf("node %d: %w", p.NodeID, err)
		}
		nodes = append(nodes, n)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.WaitReady(wctx); err != nil {
			return err
		}
	}
	var endpoints []string
	for _, n := range nodes {
		endpoints = append(endpoints, n.ClientAddr())
	}
	fmt.Printf("Ready. Client endpoints: %s\n", strings.Join(endpoints, ","))
	fmt.Printf("Try:\n  go run ./cmd/flotillactl --endpoints %s put hello world\n  go run ./cmd/flotillactl --endpoints %s get hello\n  go run ./cmd/flotillactl --endpoints %s shards\n", endpoints[0], endpoints[0], endpoints[0])
	fmt.Println("Press Ctrl-C to stop.")
	<-ctx.Done()
	fmt.Println("\nStopping...")
	return nil
}

// parsePeers parses "1=raftaddr/clientaddr,2=...".
func parsePeers(s string) ([]node.Peer, error) {
	var out []node.Peer
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, addrs, ok := strings.Cut(f, "=")
		raft, client, ok2 := strings.Cut(addrs, "/")
		n, err := strconv.ParseUint(id, 10, 64)
		if !ok || !ok2 || err != nil || n == 0 || raft == "" || client == "" {
			return nil, fmt.Errorf("bad peer %q: want ID=RAFTADDR/CLIENTADDR", f)
		}
		out = append(out, node.Peer{NodeID: n, RaftAddr: raft, ClientAddr: client})
	}
	if len(out) == 0 {
		return nil, errors.New("--peers is required")
	}
	return out, nil
}

func start(args []string) error {
	fs := flag.NewFlagSet("start", flag.ExitOnError)
	nodeID := fs.Uint64("node-id", 0, "this node's ID (required; never reused)")
	clusterID := fs.Uint64("cluster-id", 1, "the cluster's ID")
	dataDir := fs.String("data-dir", "", "data directory (required)")
	raftAddr := fs.String("raft-addr", "127.0.0.1:7101", "raft listen address")
	clientAddr := fs.String("client-addr", "127.0.0.1:7001", "client listen address")
	peersFlag := fs.String("peers", "", "every node of the cluster: ID=RAFTADDR/CLIENTADDR,...")
	shards := fs.Int("initial-shards", 64, "shards the hash space is split into at bootstrap")
	replication := fs.Int("replication", 3, "replicas per shard")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	httpAddr := fs.String("http-addr", "", "metrics (/metrics), health (/healthz, /readyz) and pprof listen address (empty: off)")
	drainTimeout := fs.Duration("drain-timeout", 10*time.Second, "on SIGTERM, time allowed to hand leaderships to other nodes")
	fs.Parse(args)
	if *nodeID == 0 || *dataDir == "" {
		return errors.New("--node-id and --data-dir are required")
	}
	peers, err := parsePeers(*peersFlag)
	if err != nil {
		return err
	}
	tuneRuntime()
	log := logger(*level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(ctx, node.Config{
		NodeID: *nodeID, ClusterID: *clusterID, DataDir: *dataDir,
		RaftAddr: *raftAddr, ClientAddr: *clientAddr, Peers: peers,
		InitialShards: *shards, Replication: *replication, Logger: log, HTTPAddr: *httpAddr,
	})
	if err != nil {
		return err
	}
	log.Info("node started", "node", *nodeID, "raft", n.RaftAddr(), "client", n.ClientAddr(), "http", n.HTTPAddr())
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
