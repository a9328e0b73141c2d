package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/node/placer"
	"github.com/flotilla-db/flotilla/transport"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// probeTimeout bounds the engine call behind /healthz and /readyz.
const probeTimeout = time.Second

// NewHTTPHandler returns the node's operational HTTP handler:
//
//   - /metrics: Prometheus text format from a registry of its own (never
//     the global one) holding the engine collector and the standard Go and
//     process collectors. The engine's counters are read at scrape time.
//   - /healthz: 200 "ok" while the engine answers (a closed engine gives
//     503).
//   - /readyz: 200 when every shard this node hosts has a leader (what
//     WaitReady waits for), else 503 saying what it waits for: the meta
//     shard, or leaders for how many shards (some named). Once ready, a
//     node stays so through a shard's moment without a leader (a transfer,
//     an election): a shard counts after two election timeouts without
//     one (Ready).
//   - /debug/pprof/: net/http/pprof, on this handler's own mux.
//   - /v1/kv/{key}: the key-value HTTP API (GET, PUT, DELETE), served by
//     the node's client service, forwarded to the key's leader
//     (http_kv.go). Its paths bypass the mux, whose cleaning would
//     redirect a key with "//", "." or ".." segments to another key.
//
// The handler is safe for concurrent use.
func NewHTTPHandler(n *Node) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newEngineCollector(n.Engine, n.transport),
		placer.NewCollector(func() *placer.Placer {
			if n.cl == nil {
				return nil
			}
			return n.cl.placer.Load()
		}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		if err := n.Engine.Healthy(ctx); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		if err := n.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ready: %d shards\n", n.Engine.Stats().Shards)
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	kv := newHTTPKV(n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.EscapedPath(), kvPathPrefix) {
			kv.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// StartHTTP serves NewHTTPHandler(n) on addr ("127.0.0.1:0" picks a free
// port) and returns the address it listens on and a stop function. stop
// shuts the server down gracefully (5s, then it closes the connections
// left), waits for the serving goroutine and may be called more than once.
// Call stop before Close: once the engine is closed the probes answer 503.
func (n *Node) StartHTTP(addr string) (stop func() error, actualAddr string, err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("node: http address: %w", err)
	}
	logger := n.cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	srv := &http.Server{
		Handler:           NewHTTPHandler(n),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	var (
		once    sync.Once
		stopErr error
	)
	stop = func() error {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				stopErr = fmt.Errorf("node: http shutdown: %w", errors.Join(err, srv.Close()))
			}
			if err := <-served; !errors.Is(err, http.ErrServerClosed) {
				stopErr = errors.Join(stopErr, fmt.Errorf("node: http serve: %w", err))
			}
		})
		return stopErr
	}
	return stop, lis.Addr().String(), nil
}

// engineCollector exports an engine's counters to Prometheus, read at
// scrape time. Collect may run concurrently: it only calls the engine's
// concurrency-safe Stats and PeerStats.
type engineCollector struct {
	e *engine.Engine

	applied, syncs, commits, passes, readies, commitSeconds *prometheus.Desc
	beatsCoalesced, snapsSent, snapsRecv, proposals         *prometheus.Desc
	peerMessages, peerBytes                                 *prometheus.Desc
	shards, shardsLeading, shardsQuiesced, shardsLeaderless *prometheus.Desc
	syncLatency, applyLatency                               *prometheus.Desc
	framesSent, transportMsgs, framesRecv, dropped, refused *prometheus.Desc
	snapBytes                                               *prometheus.Desc

	// t is the node's raft transport, for frame counters (nil: none).
	t *transport.Transport
}

func newEngineCollector(e *engine.Engine, t *transport.Transport) *engineCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("flotilla_"+name, help, labels, nil)
	}
	return &engineCollector{
		e:              e,
		t:              t,
		applied:        d("applied_commands_total", "Commands applied by the state machine."),
		syncs:          d("fsyncs_total", "Synced batch commits (fsyncs)."),
		commits:        d("batch_commits_total", "Batch commits."),
		passes:         d("ready_passes_total", "Worker passes over shard Readies."),
		readies:        d("readies_total", "Shard Readies handled (readies/passes: shards batched per pass)."),
		commitSeconds:  d("commit_seconds_total", "Time spent committing batches, fsyncs included."),
		beatsCoalesced: d("heartbeats_coalesced_total", "Heartbeats that travelled inside coalesced messages."),
		proposals:      d("proposals_total", "Proposals (commands, reads and membership changes) taken by the engine's workers."),
		snapsSent:      d("snapshots_sent_total", "Raft snapshots sent."),
		snapsRecv:      d("snapshots_received_total", "Raft snapshots received."),
		peerMessages:   d("messages_sent_total", "Messages handed to the transport, by peer node ID.", "peer"),
		peerBytes:      d("message_bytes_sent_total", "Encoded size of the messages handed to the transport, by peer node ID.", "peer"),
		shards:         d("shards", "Shards with a replica on this node."),
		shardsLeading:  d("shards_leading", "Replicas on this node leading now."),
		shardsQuiesced: d("shards_quiesced", "Replicas on this node quiesced now."),
		shardsLeaderless: d("shards_leaderless", "Replicas on this node that know no leader of their shard now"+
			" (0 once a starting node's shards are all led: what /readyz waits for)."),
		syncLatency:   d("sync_seconds", "Synced batch commits: the fsync and the commit around it."),
		applyLatency:  d("apply_seconds", "State machine time for one shard's committed entries of one worker pass."),
		framesSent:    d("transport_frames_sent_total", "Frames written to a peer's stream (messages/frames: batching).", "peer"),
		transportMsgs: d("transport_messages_sent_total", "Raft messages written to a peer's stream.", "peer"),
		framesRecv:    d("transport_frames_received_total", "Valid frames received from a peer.", "peer"),
		dropped:       d("transport_dropped_total", "Messages to a peer not sent (queue full, backoff, stream lost).", "peer"),
		refused:       d("transport_refused_total", "Frames and snapshot streams from a peer refused.", "peer"),
		snapBytes:     d("snapshot_bytes_sent_total", "Bytes of the raft snapshots sent to a peer and completed (replicas moved, repaired or caught up).", "peer"),
	}
}

// Describe implements prometheus.Collector.
func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.applied, c.syncs, c.commits, c.passes, c.readies, c.commitSeconds,
		c.beatsCoalesced, c.snapsSent, c.snapsRecv, c.proposals, c.peerMessages, c.peerBytes,
		c.shards, c.shardsLeading, c.shardsQuiesced, c.shardsLeaderless, c.syncLatency, c.applyLatency,
		c.framesSent, c.transportMsgs, c.framesRecv, c.dropped, c.refused, c.snapBytes,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.Stats()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.applied, float64(s.Applied))
	counter(c.syncs, float64(s.Syncs))
	counter(c.commits, float64(s.Commits))
	counter(c.passes, float64(s.Passes))
	counter(c.readies, float64(s.Readies))
	counter(c.commitSeconds, float64(s.CommitNanos)/1e9)
	counter(c.beatsCoalesced, float64(s.HeartbeatsCoalesced))
	counter(c.proposals, float64(s.ProposalsIn))
	counter(c.snapsSent, float64(s.SnapshotsSent))
	counter(c.snapsRecv, float64(s.SnapshotsRecv))
	for _, p := range c.e.PeerStats() {
		peer := strconv.FormatUint(p.NodeID, 10)
		counter(c.peerMessages, float64(p.Messages), peer)
		counter(c.peerBytes, float64(p.Bytes), peer)
	}
	gauge(c.shards, float64(s.Shards))
	gauge(c.shardsLeading, float64(s.ShardsLeading))
	gauge(c.shardsQuiesced, float64(s.ShardsQuiesced))
	gauge(c.shardsLeaderless, float64(uint64(s.Shards)-min(s.ShardsLed, uint64(s.Shards))))
	for d, h := range map[*prometheus.Desc]engine.Histogram{c.syncLatency: c.e.SyncLatency(), c.applyLatency: c.e.ApplyLatency()} {
		buckets := make(map[float64]uint64, len(h.Bounds))
		for i, b := range h.Bounds {
			buckets[b] = h.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets)
	}
	if c.t == nil {
		return
	}
	for id, p := range c.t.Stats() {
		peer := strconv.FormatUint(id, 10)
		counter(c.framesSent, float64(p.FramesSent), peer)
		counter(c.transportMsgs, float64(p.MessagesSent), peer)
		counter(c.framesRecv, float64(p.FramesReceived), peer)
		counter(c.dropped, float64(p.Dropped), peer)
		counter(c.refused, float64(p.Refused), peer)
		counter(c.snapBytes, float64(p.SnapshotBytesSent), peer)
	}
}
