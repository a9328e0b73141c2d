package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
	"github.com/flotilla-db/flotilla/node/nodepb"
)

// The JSON documents of `flotillactl --output json shards` and of
// add-replica / remove-replica, as far as this test reads them.
type (
	ctlShards struct {
		Shards      []ctlShard `json:"shards"`
		Unreachable []uint64   `json:"unreachable"`
	}
	ctlShard struct {
		ShardID    uint64       `json:"shard_id"`
		Leader     uint64       `json:"leader"`
		Term       uint64       `json:"term"`
		Replicas   []ctlReplica `json:"replicas"`
		ReportedBy uint64       `json:"reported_by"`
	}
	ctlReplica struct {
		NodeID    uint64 `json:"node_id"`
		ReplicaID uint64 `json:"replica_id"`
		Role      string `json:"role"`
	}
	ctlChange struct {
		ShardID  uint64       `json:"shard_id"`
		Op       string       `json:"op"`
		NodeID   uint64       `json:"node_id"`
		Replicas []ctlReplica `json:"replicas"`
	}
)

func (s ctlShard) replicaOn(nodeID uint64) (ctlReplica, bool) {
	for _, r := range s.Replicas {
		if r.NodeID == nodeID {
			return r, true
		}
	}
	return ctlReplica{}, false
}

// ctlBounded runs flotillactl with its --timeout set to d and the process
// killed after d plus 10s, so that a command that hangs fails the step
// instead of the test's deadline.
func ctlBounded(ctx context.Context, t *testing.T, d time.Duration, args ...string) (string, time.Duration, error) {
	t.Helper()
	_, bin := build(t)
	cctx, cancel := context.WithTimeout(ctx, d+10*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(cctx, bin, append([]string{"--timeout", d.String()}, args...)...).CombinedOutput()
	took := time.Since(start)
	if cctx.Err() != nil {
		err = fmt.Errorf("flotillactl %v still running after %v (killed): %w", args, took.Round(time.Millisecond), cctx.Err())
	}
	return string(out), took, err
}

// writeLoad is a continuous write load: each writer owns its keys and
// writes them in turn with values never written before, retrying a write
// that failed with the same value until it is acknowledged, so that the
// last acknowledged value of each key is the value it must end with. Once
// stopped (stop), a writer finishes the write it has begun and starts no
// other: no write is left with an unknown outcome.
type writeLoad struct {
	c       *client.Client
	shardID uint64        // the shard being reconfigured
	timeout time.Duration // of one Put, client retries included; 3s if 0
	wg      sync.WaitGroup
	stopped chan struct{}
	stop    func()       // closes stopped; safe to call again
	acks    atomic.Int64 // acknowledged writes
	onShard atomic.Int64 // of which on shardID
	failed  atomic.Int64 // attempts that returned an error (then retried)
	ambig   atomic.Int64 // of which with an unknown outcome

	mu struct {
		sync.Mutex
		lastOnShard time.Time     // the last acknowledgement on shardID
		maxGap      time.Duration // the longest time between two of them
	}
	writers []*writer
}

type writer struct {
	keys  []string
	acked map[string]string // owned by the writer's goroutine until wg.Wait
}

// start runs perShard writers on keys of l.shardID and others writers on
// keys of any shard, keysEach keys each, until l.stop is called (then they
// finish their current write) or ctx ends (then they give it up).
func (l *writeLoad) start(ctx context.Context, t *testing.T, perShard, others, keysEach int) {
	t.Helper()
	l.stopped = make(chan struct{})
	l.stop = sync.OnceFunc(func() { close(l.stopped) })
	n := 0
	for w := range perShard + others {
		wr := &writer{acked: map[string]string{}}
		for len(wr.keys) < keysEach {
			k := fmt.Sprintf("w%02d-key-%06d", w, n)
			n++
			shard, err := l.c.ShardOf([]byte(k))
			if err != nil {
				t.Fatal(err)
			}
			if w < perShard && shard != l.shardID {
				continue
			}
			wr.keys = append(wr.keys, k)
		}
		l.writers = append(l.writers, wr)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.run(ctx, wr, w < perShard)
		}()
	}
	l.mu.Lock()
	l.mu.lastOnShard = time.Now()
	l.mu.Unlock()
}

func (l *writeLoad) run(ctx context.Context, wr *writer, onShard bool) {
	timeout := l.timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	for seq := 0; ; seq++ {
		select {
		case <-l.stopped:
			return
		default:
		}
		k := wr.keys[seq%len(wr.keys)]
		v := fmt.Sprintf("%s=%d", k, seq)
		for {
			if ctx.Err() != nil {
				return
			}
			wctx, cancel := context.WithTimeout(ctx, timeout)
			err := l.c.Put(wctx, []byte(k), []byte(v))
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return // the test failed: this write's outcome is not checked
			}
			l.failed.Add(1)
			if errors.Is(err, client.ErrAmbiguous) {
				l.ambig.Add(1)
			}
		}
		wr.acked[k] = v
		l.acks.Add(1)
		if onShard {
			l.onShard.Add(1)
			now := time.Now()
			l.mu.Lock()
			l.mu.maxGap = max(l.mu.maxGap, now.Sub(l.mu.lastOnShard))
			l.mu.lastOnShard = now
			l.mu.Unlock()
		}
	}
}

func (l *writeLoad) maxGap() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.maxGap
}

// checkAcked reads back, once the load has stopped, every key written with
// its last acknowledged value through l.c, and returns the keys.
func (l *writeLoad) checkAcked(ctx context.Context, t *testing.T) []string {
	t.Helper()
	var keys []string
	want := map[string]string{}
	for _, wr := range l.writers {
		for k, v := range wr.acked {
			keys = append(keys, k)
			want[k] = v
		}
	}
	slices.Sort(keys)
	checkValues(ctx, t, l.c, keys, want)
	return keys
}

// waitProgress waits until more than n writes on the shard are
// acknowledged.
func (l *writeLoad) waitProgress(ctx context.Context, t *testing.T, what string, n int64) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	poll(t, wctx, what, func() error {
		if got := l.onShard.Load(); got <= n {
			return fmt.Errorf("%d writes acknowledged on the shard, none since the step", got)
		}
		return nil
	})
}

// realProcesses skips the test under -short, builds the binaries, and
// returns the time it began and a context that ends after d or with the
// test.
func realProcesses(t *testing.T, d time.Duration) (context.Context, time.Time) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs real processes")
	}
	build(t)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx, began
}

// TestReconfigUnderLoad removes one node's replica of a shard and adds it
// back, 20 times in a row, with the flotillactl binary as an operator
// would, while three flotilla processes take a continuous write load through
// the Go client. Every other round the node leads the shard when its
// replica is removed, so the admin path hands the leadership over first.
// After each command: it returned within its timeout; `flotillactl shards`
// shows the shard out of any joint configuration, with a leader and only
// voters, the node gone after a remove and back after an add under a replica
// ID greater than every one it had before; writes on the shard are still
// acknowledged. At the end every acknowledged write reads back, by a
// linearizable Get, as its key's last acknowledged value.
func TestReconfigUnderLoad(t *testing.T) {
	ctx, began := realProcesses(t, 3*time.Minute)
	// Replicas move by hand here: no placement driver fights the test.
	ps, endpoints := startCluster(ctx, t, t.TempDir(), 4, "--no-placement")
	eps := strings.Join(endpoints, ",")
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("cluster ready in %v", time.Since(began).Round(time.Millisecond))

	// The shard: the first user shard; the node: its leader now.
	shardID := slices.Min(c.Shards())
	shardArg := strconv.FormatUint(shardID, 10)
	var first ctlShard
	shardsOK(ctx, t, eps, shardID, "shard with a leader", func(s ctlShard) error {
		if s.Leader == 0 || len(s.Replicas) != 3 {
			return fmt.Errorf("leader %d, replicas %v", s.Leader, s.Replicas)
		}
		first = s
		return nil
	})
	nodeID := first.Leader
	nodeArg := strconv.FormatUint(nodeID, 10)
	rep, _ := first.replicaOn(nodeID)
	lastID := rep.ReplicaID
	if lastID == 0 {
		t.Fatalf("shards shows no replica ID for node %d: %+v", nodeID, first)
	}
	t.Logf("shard %d, node %d (replica %d, the leader); replicas %v", shardID, nodeID, lastID, first.Replicas)

	loadCtx, abortLoad := context.WithCancel(ctx)
	load := &writeLoad{c: c, shardID: shardID}
	defer func() { abortLoad(); load.wg.Wait() }() // should a check fail
	load.start(loadCtx, t, 4, 4, 64)
	load.waitProgress(ctx, t, "first writes on the shard", 0)

	const rounds = 20
	const cmdTimeout = 30 * time.Second
	var adm nodepb.AdminClient // the node's
	for _, p := range ps {
		if nodeIDOf(t, p.dir) == nodeID {
			adm = adminClient(t, p.client)
		}
	}
	lingered := 0 // rounds whose removed replica was still on the node after the remove
	ids := []uint64{lastID}
	var removeTook, addTook []time.Duration
	run := func(args ...string) (string, time.Duration) {
		t.Helper()
		out, took, err := ctlBounded(ctx, t, cmdTimeout, append([]string{"--endpoints", eps, "--output", "json"}, args...)...)
		if err != nil {
			shards, _, _ := ctlBounded(ctx, t, 5*time.Second, "--endpoints", eps, "shards")
			t.Fatalf("flotillactl %s: %v after %v\n%s\nshards now:\n%s", strings.Join(args, " "), err, took.Round(time.Millisecond), out, shards)
		}
		return out, took
	}
	for round := range rounds {
		if round%2 == 0 {
			// The node leads the shard when its replica is removed.
			run("transfer-leader", shardArg, nodeArg)
		}
		acked := load.onShard.Load()
		out, took := run("remove-replica", shardArg, nodeArg)
		removeTook = append(removeTook, took)
		var ch ctlChange
		if err := json.Unmarshal([]byte(out), &ch); err != nil {
			t.Fatalf("round %d: remove-replica: %v\n%s", round, err, out)
		}
		if _, ok := (ctlShard{Replicas: ch.Replicas}).replicaOn(nodeID); ok {
			t.Fatalf("round %d: remove-replica returned with node %d still a replica: %v", round, nodeID, ch.Replicas)
		}
		shardsOK(ctx, t, eps, shardID, fmt.Sprintf("round %d: node %d removed", round, nodeID), func(s ctlShard) error {
			if r, ok := s.replicaOn(nodeID); ok {
				return fmt.Errorf("node %d still holds replica %d (%s)", nodeID, r.ReplicaID, r.Role)
			}
			return settled(s, 2)
		})
		load.waitProgress(ctx, t, fmt.Sprintf("round %d: writes on the shard after the remove", round), acked)
		// Whether the removed replica has been destroyed on its node yet
		// (it may not learn of its removal): counted, not required.
		if old, err := localShard(ctx, adm, shardID); err != nil {
			t.Fatalf("round %d: LocalShards on node %d: %v", round, nodeID, err)
		} else if old != nil {
			lingered++
		}

		acked = load.onShard.Load()
		out, took = run("add-replica", shardArg, nodeArg)
		addTook = append(addTook, took)
		if err := json.Unmarshal([]byte(out), &ch); err != nil {
			t.Fatalf("round %d: add-replica: %v\n%s", round, err, out)
		}
		added, ok := (ctlShard{Replicas: ch.Replicas}).replicaOn(nodeID)
		if !ok || added.Role != "voter" || added.ReplicaID <= lastID {
			t.Fatalf("round %d: add-replica returned node %d as %+v (present %v), want a voter with a replica ID above %d: %v",
				round, nodeID, added, ok, lastID, ch.Replicas)
		}
		shardsOK(ctx, t, eps, shardID, fmt.Sprintf("round %d: node %d added back", round, nodeID), func(s ctlShard) error {
			r, ok := s.replicaOn(nodeID)
			if !ok || r.ReplicaID != added.ReplicaID {
				return fmt.Errorf("node %d: %+v (present %v), want replica %d", nodeID, r, ok, added.ReplicaID)
			}
			return settled(s, 3)
		})
		// The node's own replica knows itself under its new ID.
		waitLocal(ctx, t, adm, nodeID, shardID, added.ReplicaID)
		load.waitProgress(ctx, t, fmt.Sprintf("round %d: writes on the shard after the add", round), acked)
		lastID = added.ReplicaID
		ids = append(ids, lastID)
		t.Logf("round %2d: remove %v, add %v: node %d is replica %d; %d writes acknowledged (%d on the shard)",
			round+1, removeTook[round].Round(time.Millisecond), addTook[round].Round(time.Millisecond),
			nodeID, lastID, load.acks.Load(), load.onShard.Load())
	}
	load.stop()
	load.wg.Wait()
	t.Logf("replica IDs of node %d on shard %d: %v", nodeID, shardID, ids)
	t.Logf("remove-replica took %s; add-replica took %s; the removed replica was still on node %d after %d of %d removes",
		spread(removeTook), spread(addTook), nodeID, lingered, rounds)
	t.Logf("writes acknowledged: %d (%d on shard %d); failed attempts, retried: %d (%d with an unknown outcome); longest wait between two acknowledgements on the shard: %v",
		load.acks.Load(), load.onShard.Load(), shardID, load.failed.Load(), load.ambig.Load(), load.maxGap().Round(time.Millisecond))

	// Every acknowledged write reads back as its key's last value.
	keys := load.checkAcked(ctx, t)
	t.Logf("%d keys read back with their last acknowledged values; %v in all, after the build", len(keys), time.Since(began).Round(time.Millisecond))
}

// settled reports whether s is the view of its leader, with exactly voters
// plain voters: no learner, no joint configuration.
func settled(s ctlShard, voters int) error {
	if s.Leader == 0 || s.ReportedBy != s.Leader {
		return fmt.Errorf("leader %d, reported by %d, not the leader's view", s.Leader, s.ReportedBy)
	}
	for _, r := range s.Replicas {
		if r.Role != "voter" {
			return fmt.Errorf("node %d is %q: %v", r.NodeID, r.Role, s.Replicas)
		}
	}
	if len(s.Replicas) != voters {
		return fmt.Errorf("%d replicas, want %d: %v", len(s.Replicas), voters, s.Replicas)
	}
	return nil
}

// shardsOK polls `flotillactl --output json shards` until check passes on
// shardID's entry, for at most 15s.
func shardsOK(ctx context.Context, t *testing.T, eps string, shardID uint64, what string, check func(ctlShard) error) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	poll(t, wctx, what, func() error {
		out, _, err := ctlBounded(wctx, t, 5*time.Second, "--endpoints", eps, "--output", "json", "shards")
		if err != nil {
			return fmt.Errorf("flotillactl shards: %v: %s", err, out)
		}
		var v ctlShards
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return fmt.Errorf("flotillactl shards: %v: %s", err, out)
		}
		for _, s := range v.Shards {
			if s.ShardID == shardID {
				return check(s)
			}
		}
		return fmt.Errorf("shard %d not listed: %s", shardID, out)
	})
}

// localShard returns shardID as the node's own replica reports it
// (LocalShards on the node, adm), or nil if the node has no replica of it.
func localShard(ctx context.Context, adm nodepb.AdminClient, shardID uint64) (*nodepb.ShardInfo, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := adm.LocalShards(rctx, &nodepb.LocalShardsRequest{})
	if err != nil {
		return nil, err
	}
	for _, s := range resp.GetShards() {
		if s.GetShardId() == shardID {
			return s, nil
		}
	}
	return nil, nil
}

// replicaIDOf returns the replica ID of nodeID's replica in s, 0 if none.
func replicaIDOf(s *nodepb.ShardInfo, nodeID uint64) uint64 {
	for _, r := range s.GetReplicas() {
		if r.GetNodeId() == nodeID {
			return r.GetReplicaId()
		}
	}
	return 0
}

// waitLocal waits until node nodeID's own replica of shardID (LocalShards on
// that node, adm) lists itself under replicaID, knows a leader and has
// applied entries.
func waitLocal(ctx context.Context, t *testing.T, adm nodepb.AdminClient, nodeID, shardID, replicaID uint64) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	poll(t, wctx, fmt.Sprintf("node %d's own replica %d of shard %d", nodeID, replicaID, shardID), func() error {
		s, err := localShard(wctx, adm, shardID)
		if err != nil {
			return err
		}
		if s == nil {
			return errors.New("no replica of the shard there yet")
		}
		if replicaIDOf(s, nodeID) != replicaID || s.GetLeader() == 0 || s.GetApplied() == 0 {
			return fmt.Errorf("its view: leader %d, applied %d, replicas %v", s.GetLeader(), s.GetApplied(), s.GetReplicas())
		}
		return nil
	})
}

// spread renders durations as min/median/max.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("min %v, median %v, max %v", s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}
