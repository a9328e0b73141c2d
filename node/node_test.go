package node

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// reservedAddr is freeAddr with the port held, for a node that startNode
// starts there.
func reservedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	reserved.Store(addr, l)
	t.Cleanup(func() {
		if l, ok := reserved.LoadAndDelete(addr); ok {
			l.(net.Listener).Close()
		}
	})
	return addr
}

// reserved holds the listeners reservedAddr opened, by address, until a node
// started by startNode takes them: a port chosen and closed again could be
// taken meanwhile by another test process (the packages' tests run at once),
// even as the local port of an outgoing connection.
var reserved sync.Map

// startNode is Start with the listeners reservedAddr reserved for cfg's
// addresses, if any (a node restarted on its address listens anew).
func startNode(ctx context.Context, cfg Config) (*Node, error) {
	if l, ok := reserved.LoadAndDelete(cfg.RaftAddr); ok && cfg.RaftListener == nil {
		cfg.RaftListener = l.(net.Listener)
	}
	if l, ok := reserved.LoadAndDelete(cfg.ClientAddr); ok && cfg.ClientListener == nil {
		cfg.ClientListener = l.(net.Listener)
	}
	return Start(ctx, cfg)
}

// loopbackPeers returns n static peers, node IDs 1..n, on free loopback
// ports.
func loopbackPeers(t *testing.T, n int) []Peer {
	t.Helper()
	var peers []Peer
	for i := 1; i <= n; i++ {
		peers = append(peers, Peer{NodeID: uint64(i), RaftAddr: reservedAddr(t), ClientAddr: reservedAddr(t)})
	}
	return peers
}

// threeStatic returns a minute's context, a data directory and three
// static peers on loopback for a test.
func threeStatic(t *testing.T) (context.Context, string, []Peer) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx, t.TempDir(), loopbackPeers(t, 3)
}

// startStatic starts a node for each of peers (4 shards of 3 replicas,
// adjust applied to each config, if set) and waits until all are ready.
// The test's cleanup closes the nodes still in the slice it returns.
func startStatic(t *testing.T, ctx context.Context, peers []Peer, adjust func(*Config)) []*Node {
	t.Helper()
	dir := t.TempDir()
	nodes := make([]*Node, len(peers))
	t.Cleanup(func() { closeNodes(nodes) })
	for i, p := range peers {
		cfg := Config{NodeID: p.NodeID, ClusterID: 9, DataDir: filepath.Join(dir, fmt.Sprint(p.NodeID)),
			RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr, Peers: peers, InitialShards: 4, Replication: 3}
		if adjust != nil {
			adjust(&cfg)
		}
		n, err := startNode(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
	}
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// closeNodes closes the nodes still running (not nil), for a defer.
func closeNodes(nodes []*Node) {
	for _, n := range nodes {
		if n != nil {
			n.Close()
		}
	}
}

// TestNodesEndToEnd starts three assembled nodes on loopback, writes and
// reads through the Go client, restarts a node from its data directory and
// reads back.
func TestNodesEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	peers := loopbackPeers(t, 3)
	cfgOf := func(p Peer) Config {
		return Config{NodeID: p.NodeID, ClusterID: 9, DataDir: filepath.Join(dir, fmt.Sprint(p.NodeID)),
			RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr, Peers: peers, InitialShards: 8}
	}
	nodes := make([]*Node, 3)
	for i, p := range peers {
		n, err := startNode(ctx, cfgOf(p))
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
	}
	defer closeNodes(nodes)
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(ctx, client.Config{Endpoints: []string{peers[0].ClientAddr, peers[1].ClientAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 200; i++ {
		if err := c.Put(ctx, []byte(fmt.Sprint("k", i)), []byte(fmt.Sprint("v", i))); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	// Restart node 2 from its data directory.
	if err := nodes[1].Close(); err != nil {
		t.Fatal(err)
	}
	nodes[1] = nil
	n2, err := startNode(ctx, cfgOf(peers[1]))
	if err != nil {
		t.Fatal(err)
	}
	nodes[1] = n2
	if err := n2.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		v, found, err := c.Get(ctx, []byte(fmt.Sprint("k", i)))
		if err != nil || !found || string(v) != fmt.Sprint("v", i) {
			t.Fatalf("get %d: %q %v %v", i, v, found, err)
		}
	}
	// Draining node 1 leaves it leading nothing.
	if err := nodes[0].Drain(ctx); err != nil {
		t.Fatal(err)
	}
	sts, err := nodes[0].Engine.Statuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Leader == 1 {
			t.Fatalf("shard %d still led by the drained node", st.ShardID)
		}
	}
	// Bad configs are refused.
	if _, err := Start(ctx, Config{NodeID: 4, ClusterID: 9, DataDir: dir, Peers: peers}); err == nil {
		t.Fatal("a node missing from its peers was accepted")
	}
}
