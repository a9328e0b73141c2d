package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node/nodepb"
	"github.com/flotilla-db/flotilla/storage"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// With --endpoints, write and read run against a real cluster (flotilla
// start, flotilla demo) through the Go client instead of the in-process
// cluster. The cluster is what it is: its shards (the --shards sweep does
// not apply), its nodes, its engine configuration (the one variant is
// "cluster"; the engine variants need the in-process cluster).

// clusterVariant is the one variant of a run against a real cluster.
var clusterVariant = variant{Name: "cluster", Desc: "the cluster's own configuration"}

// remoteClients is the default number of clients against a real cluster.
const remoteClients = 64

// remoteCluster is a real cluster as a run sees it.
type remoteCluster struct {
	client    *client.Client
	endpoints []string
	shards    []uint64 // of the client's ring, in hash order
	gen       uint64   // the ring's generation
	// nodes and replicas (per shard, the most any data shard has), from the
	// Admin service of the first endpoint that answers; 0 if none did.
	nodes, replicas int
}

// dialRemote connects to the cluster at endpoints: the client (its routes
// fetched), then the Admin service for the number of nodes and replicas.
func dialRemote(ctx context.Context, endpoints []string, timeout time.Duration) (*remoteCluster, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := client.New(cctx, client.Config{Endpoints: endpoints})
	if err != nil {
		return nil, fmt.Errorf("--endpoints %s: %w", strings.Join(endpoints, ","), err)
	}
	rc := &remoteCluster{client: c, endpoints: endpoints, shards: c.Shards(), gen: c.Generation()}
	if len(rc.shards) == 0 {
		c.Close()
		return nil, fmt.Errorf("--endpoints %s: the cluster's ring has no shard", strings.Join(endpoints, ","))
	}
	for _, ep := range endpoints {
		if rc.readShape(cctx, ep) == nil {
			break
		}
	}
	return rc, nil
}

// readShape asks the Admin service at addr how many nodes the cluster has
// and how many replicas its data shards have.
func (rc *remoteCluster) readShape(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), nodepb.CallOptions())
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	admin := nodepb.NewAdminClient(conn)
	st, err := admin.Status(ctx, &nodepb.StatusRequest{})
	if err != nil {
		return err
	}
	nodes := 0
	for _, n := range st.GetNodes() {
		if n.GetState() != "removed" {
			nodes++
		}
	}
	sh, err := admin.Shards(ctx, &nodepb.ShardsRequest{})
	if err != nil {
		return err
	}
	replicas := 0
	for _, s := range sh.GetShards() {
		if !s.GetSystem() && s.GetShardId() < storage.SystemShardBase {
			replicas = max(replicas, len(s.GetReplicas()))
		}
	}
	rc.nodes, rc.replicas = nodes, replicas
	return nil
}

func (rc *remoteCluster) close() { _ = rc.client.Close() }

// remoteNotes are the table's notes of a run against a real cluster,
// among them which flags given do not apply.
func remoteNotes(o *options, rc *remoteCluster) []string {
	notes := []string{fmt.Sprintf("--endpoints: the cluster's %d shards (ring generation %d); client i writes one key"+
		" of shard i mod %d (chosen with client.ShardOf); every operation is bounded by --op-timeout",
		len(rc.shards), rc.gen, len(rc.shards))}
	if o.set["shards"] {
		notes = append(notes, fmt.Sprintf("--shards does not apply with --endpoints: the cluster has %d shards", len(rc.shards)))
	}
	var ignored []string
	for _, f := range []string{"nodes", "replicas", "transport", "tick", "workers", "dir", "keep"} {
		if o.set[f] {
			ignored = append(ignored, "--"+f)
		}
	}
	if len(ignored) > 0 {
		notes = append(notes, strings.Join(ignored, ", ")+" do(es) not apply with --endpoints: the cluster runs with its own configuration")
	}
	notes = append(notes, "with --endpoints the nodes run elsewhere: cpu, allocations and fsyncs per operation are not"+
		" measured (the JSON has this process's, the clients': client_cpu_us_per_op, client_allocs_per_op)")
	return notes
}

// remoteWriter is a client of the load that owns one key of the cluster.
type remoteWriter struct {
	c       *client.Client
	key     []byte
	value   []byte // the payload, stamped before each write (stampValue)
	timeout time.Duration
}

func (w *remoteWriter) write(ctx context.Context, client int, seq uint64) error {
	stampValue(w.value, client, seq)
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	return w.c.Put(ctx, w.key, w.value)
}

func (w *remoteWriter) read(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	_, found, err := w.c.Get(ctx, w.key)
	if err == nil && !found {
		err = errReadNotFound // every key is written before it is read
	}
	return err
}

// maxKeyTries bounds the candidate keys tried for one shard.
const maxKeyTries = 1 << 20

// remoteKey returns client's key of the shard want: the first candidate
// "<n>-bench-<client>" that the client's ring maps to it.
func remoteKey(c *client.Client, want uint64, client int) ([]byte, error) {
	for n := range maxKeyTries {
		k := fmt.Appendf(nil, "%d-bench-%d", n, client)
		s, err := c.ShardOf(k)
		if err != nil {
			return nil, err
		}
		if s == want {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no key of shard %d among %d candidates (does the partition rule hash only a prefix?)", want, maxKeyTries)
}

// remoteWriters returns the clients of a point: client i owns a key of
// shard i mod shards.
func remoteWriters(o *options, rc *remoteCluster, clients, payload int) ([]*remoteWriter, error) {
	ws := make([]*remoteWriter, clients)
	for i := range ws {
		key, err := remoteKey(rc.client, rc.shards[i%len(rc.shards)], i)
		if err != nil {
			return nil, err
		}
		ws[i] = &remoteWriter{c: rc.client, key: key, value: make([]byte, max(payload, 1)), timeout: o.opTimeout}
		for j := range ws[i].value {
			ws[i].value[j] = 'a' + byte(j%26)
		}
	}
	return ws, nil
}

// runRemote runs a write or read point against the cluster of o.remote.
func runRemote(ctx context.Context, o *options, p point) (Row, error) {
	ws, err := remoteWriters(o, o.remote, p.Clients, p.Payload)
	if err != nil {
		return Row{}, err
	}
	spec := loadSpec{clients: len(ws), rate: p.Rate, grace: o.opTimeout, done: o.hooks.done}
	switch p.Mix {
	case "": // write
		spec.op = func(ctx context.Context, client int, seq uint64) (opKind, error) {
			return opWrite, ws[client].write(ctx, client, seq)
		}
	case "read", "9:1":
		var g errgroup.Group // every key holds a value before the reads start
		g.SetLimit(64)
		for i, w := range ws {
			g.Go(func() error { return w.write(ctx, i, 1<<31-1) })
		}
		if err := g.Wait(); err != nil {
			return Row{}, fmt.Errorf("preload: %w", err)
		}
		writeEvery := uint64(0)
		if p.Mix == "9:1" {
			writeEvery = 10
		}
		spec.op = func(ctx context.Context, client int, seq uint64) (opKind, error) {
			if writeEvery > 0 && (seq+uint64(client))%writeEvery == 0 {
				return opWrite, ws[client].write(ctx, client, seq)
			}
			return opRead, ws[client].read(ctx)
		}
	default:
		return Row{}, errors.New("unknown mix " + p.Mix)
	}
	r := measureLoad(ctx, o, nil, spec)
	// The process's costs are the clients' only: not comparable with the
	// in-process cluster's, so under names of their own.
	for _, k := range []string{"cpu_us_per_op", "allocs_per_op"} {
		r.Metrics["client_"+k] = r.Metrics[k]
		delete(r.Metrics, k)
	}
	return r, nil
}

// remoteShape describes the cluster of st for the table's header.
func remoteShape(st Settings) string {
	if st.Nodes == 0 {
		return "nodes and replicas unknown (Admin service unreachable)"
	}
	return fmt.Sprintf("%d nodes, %d replicas per shard", st.Nodes, st.Replicas)
}

// checkEndpoints validates the addresses of --endpoints.
func checkEndpoints(eps []string) error {
	if slices.Contains(eps, "") {
		return errors.New("--endpoints: an empty address")
	}
	return nil
}
