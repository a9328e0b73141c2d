package engine_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/linearize"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
	"github.com/flotilla-db/flotilla/transport/memtransport"
)

// chaosSeeds is the fixed set of seeds the linearizability test runs; set
// FLOTILLA_SEEDS=a,b,c to run others (a failure prints its seed).
func chaosSeeds(t *testing.T, def []uint64) []uint64 {
	s := os.Getenv("FLOTILLA_SEEDS")
	if s == "" {
		return def
	}
	var out []uint64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
		if err != nil {
			t.Fatalf("FLOTILLA_SEEDS: %v", err)
		}
		out = append(out, v)
	}
	return out
}

// router is the tests' client-side routing: key -> shard by the ring of
// descs (refreshed from the nodes' descriptors when a shard says a key is
// not its own: a split), shard -> the leader it last heard of.
type router struct {
	c *testcluster.Cluster
	// replicaReads counts the reads ReadOnReplica answered (of which
	// followerReads on a replica that did not lead).
	replicaReads, followerReads atomic.Int64
	leaseReads                  atomic.Int64 // ReadLease answers
	mu                          sync.Mutex
	ring                        []storage.Descriptor // sorted by Start
	lead                        map[uint64]uint64
}

func newRouter(c *testcluster.Cluster, descs []storage.Descriptor) *router {
	return &router{c: c, ring: slices.Clone(descs), lead: map[uint64]uint64{}}
}

// shardOf returns the shard whose range holds key's hash in the ring the
// router knows (0 if none does: a split it has half seen).
func (r *router) shardOf(key []byte) uint64 {
	h := engine.DefaultConfig(1, 1, "x").PartitionRule.Hash(key)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.ring {
		if d.Contains(h) {
			return d.ShardID
		}
	}
	return 0
}

// descs returns the ring the router knows.
func (r *router) descs() []storage.Descriptor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ring)
}

// refresh rebuilds the ring from the descriptors of the running nodes'
// replicas: per shard the highest generation, and where two ranges
// overlap (a node that has not applied a split yet), the higher
// generation; a ring with a gap (no running node holds some shard now)
// leaves the known one.
func (r *router) refresh(ctx context.Context) {
	best := map[uint64]storage.Descriptor{}
	r.c.EachStatus(ctx, func(_ uint64, st engine.ShardStatus) {
		if b, ok := best[st.ShardID]; st.Initialized && !storage.IsSystemShard(st.ShardID) && (!ok || st.Desc.Generation > b.Generation) {
			best[st.ShardID] = st.Desc
		}
	})
	var ring []storage.Descriptor
	for _, d := range best {
		ring = append(ring, d)
	}
	// Higher generations first: a range overlapping one kept is older.
	slices.SortFunc(ring, func(a, b storage.Descriptor) int { return cmp.Compare(b.Generation, a.Generation) })
	var kept []storage.Descriptor
	for _, d := range ring {
		if !slices.ContainsFunc(kept, d.Overlaps) {
			kept = append(kept, d)
		}
	}
	slices.SortFunc(kept, func(a, b storage.Descriptor) int { return cmp.Compare(a.Start, b.Start) })
	if !ringCovers(kept) {
		return // a shard none of the running nodes holds initialized now: keep the ring known
	}
	r.mu.Lock()
	r.ring = kept
	r.mu.Unlock()
}

// target returns the engine to send a request for shard to: the cached
// leader if it runs, else a random running node.
func (r *router) target(rng *rand.Rand, shard uint64) *engine.Engine {
	r.mu.Lock()
	l := r.lead[shard]
	r.mu.Unlock()
	if e := r.c.Engine(l); e != nil {
		return e
	}
	ids := r.c.IDs()
	for range ids {
		if e := r.c.Engine(ids[rng.IntN(len(ids))]); e != nil {
			return e
		}
	}
	return nil
}

// pick picks one of keys, and the engine to send a request for it to (nil
// if none runs, or the key's shard is unknown).
func (r *router) pick(rng *rand.Rand, keys []string) (key string, shard uint64, e *engine.Engine) {
	key = keys[rng.IntN(len(keys))]
	if shard = r.shardOf([]byte(key)); shard == 0 {
		return key, 0, nil
	}
	return key, shard, r.target(rng, shard)
}

// learn takes in what err says of shard: its leader, or a ring to refresh.
func (r *router) learn(ctx context.Context, shard uint64, err error) {
	var nl *engine.NotLeaderError
	var kns *engine.KeyNotInShardError
	if errors.As(err, &kns) || errors.Is(err, engine.ErrStaleGeneration) || errors.Is(err, engine.ErrShardMerging) ||
		errors.Is(err, engine.ErrShardNotFound) {
		r.refresh(ctx)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if errors.As(err, &nl) {
		r.lead[shard] = nl.Leader
	} else if err != nil {
		r.lead[shard] = 0
	}
}

func (r *router) success(shard, node uint64) {
	r.mu.Lock()
	r.lead[shard] = node
	r.mu.Unlock()
}

// definiteFailure reports whether err means the command was certainly not
// applied.
func definiteFailure(err error) bool {
	var nl *engine.NotLeaderError
	var kns *engine.KeyNotInShardError
	return errors.As(err, &nl) || errors.Is(err, engine.ErrProposalDropped) || errors.As(err, &kns) ||
		errors.Is(err, engine.ErrShardNotFound) || errors.Is(err, engine.ErrBadRequest) || errors.Is(err, engine.ErrShardMerging)
}

// TestLinearizability runs concurrent clients against shards of 3 and 5
// voters, on one node more (a spare), while a nemesis partitions, drops,
// duplicates, delays, transfers leaders, crashes and restarts nodes, and
// changes the shards' membership (see memberNemesis), with logs truncated
// so short that followers are caught up by snapshots all the time. Each
// history is checked per key with porcupine; then the CAS counters (see
// counters), the descriptors seen (see descHistory), and, once no shard is
// joint or has a conf change pending, that replicas at the same applied
// index hold the same data.
func TestLinearizability(t *testing.T) {
	seeds := chaosSeeds(t, []uint64{1, 2, 3, 4, 5, 6})
	for _, voters := range []int{3, 5} {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("voters=%d/seed=%d", voters, seed), func(t *testing.T) {
				runLinearizability(t, chaosRun{voters: voters, nodes: voters + 1, shards: 3, runFor: 1500 * time.Millisecond}, seed)
			})
		}
	}
}

// TestLinearizabilityCatchesBrokenFollowerReads: the chaos test's reads on
// any node's replica, made to skip the read index (answered from the
// replica as it is, stale on a follower behind), are caught by the
// linearizability check in one of a few seeds: the check would catch
// ReadOnReplica if it skipped the read index.
func TestLinearizabilityCatchesBrokenFollowerReads(t *testing.T) {
	for _, seed := range chaosSeeds(t, []uint64{1, 2, 3, 4, 5, 6}) {
		caught := false
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			caught = runLinearizability(t, chaosRun{voters: 3, nodes: 4, shards: 3, runFor: 1500 * time.Millisecond, brokenReads: true}, seed)
		})
		if caught {
			t.Logf("seed %d: the stale reads were caught", seed)
			return
		}
	}
	t.Fatal("reads that skip the read index went unnoticed in every seed")
}

// TestLinearizabilityLeaseReads is TestLinearizability in lease mode (a
// mix of membership changes, partitions, leader transfers, crashes):
// the leader's reads are lease reads, half the reads follower reads.
func TestLinearizabilityLeaseReads(t *testing.T) {
	seeds := chaosSeeds(t, []uint64{1, 2, 3, 4})
	for _, voters := range []int{3, 5} {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("voters=%d/seed=%d", voters, seed), func(t *testing.T) {
				runLinearizability(t, chaosRun{voters: voters, nodes: voters + 1, shards: 3, runFor: 1500 * time.Millisecond, lease: true}, seed)
			})
		}
	}
}

// chaosRun shapes one run of the chaos test.
type chaosRun struct {
	voters int // per shard, on the first voters nodes
	nodes  int
	shards int
	runFor time.Duration // with the nemesis on
	// placement: the placement driver changes the memberships (see
	// placementNemesis) instead of memberNemesis.
	placement bool
	// splits: the split nemesis splits shards too (see splitNemesis);
	// merges: and merges them.
	splits, merges bool
	// noMembership: no membership nemesis.
	noMembership bool
	// brokenReads: the reads on any node's replica skip the read index
	// (readBroken); the run must find the history not linearizable.
	brokenReads bool
	// lease: the engines run in lease mode, and the reads on the leader
	// are lease reads (ReadLease).
	lease bool
}

// idleNemesis changes no membership.
type idleNemesis struct{ hist *descHistory }

func (n idleNemesis) run(stop chan struct{}) { <-stop }
func (n idleNemesis) progressed() bool       { return true }
func (n idleNemesis) history() *descHistory  { return n.hist }
func (n idleNemesis) summary() string        { return "no membership changes" }

// membershipNemesis changes the shards' memberships while the fault
// nemesis runs, and records every descriptor it sees.
type membershipNemesis interface {
	run(stop chan struct{})
	// progressed reports whether the nemesis has done enough to end the
	// run (it is asked from another goroutine).
	progressed() bool
	history() *descHistory
	summary() string
}

// runLinearizability runs the chaos test once; with run.brokenReads it
// returns, right after the history check, whether the checker found the
// history not linearizable (otherwise true).
func runLinearizability(t *testing.T, run chaosRun, seed uint64) (caught bool) {
	voters := run.voters
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	applies := &applyCounts{n: map[applyKey]int{}}
	c := newCluster(t, testcluster.Config{Nodes: run.nodes, Seed: int64(seed), Engine: func(cfg *engine.Config) {
		// A follower a dozen entries behind gets a snapshot, and a
		// proposal whose entry a snapshot covers ends ambiguous.
		cfg.LogTruncateEntries = 24
		cfg.LogTruncateBytes = 16 << 10
		if run.lease {
			cfg.ReadMode = engine.ReadModeLease
		}
		applies.wrap(cfg)
	}})
	ctx := ctxT(t, 120*time.Second)
	descs := testcluster.EvenDescriptors(1, run.shards)
	var shards []uint64
	for _, d := range descs {
		shards = append(shards, d.ShardID)
	}
	if err := c.CreateShards(ctx, descs, c.IDs()[:voters]); err != nil {
		t.Fatal(err)
	}
	c.RunClock(time.Millisecond)
	if err := c.WaitLeaders(ctx, shards); err != nil {
		t.Fatal(err)
	}
	rt := newRouter(c, descs)
	rec := linearize.NewRecorder(linearize.Config{
		VisualizationPath: filepath.Join(t.TempDir(), "history.html"),
	})
	keys := []string{"a", "b", "c", "d", "e", "f"}
	for i := len(keys); i < 2*run.shards; i++ {
		keys = append(keys, fmt.Sprintf("k%d", i))
	}
	cnt := newCounters(descs)

	// The run lasts runFor with the nemesis on. On a loaded machine (the
	// race detector, CI packages in parallel) the faults can starve the
	// clients, and a near-empty history proves nothing: then the nemesis
	// keeps going for up to starveFor more, is stopped, and the clients go
	// on against the healed cluster until minOK operations succeeded. A
	// cluster that cannot reach minOK once healed fails the test. The
	// membership nemesis may ask for more time likewise (see
	// membershipNemesis.progressed).
	const clients, counterClients, minOK = 6, 2, 50
	maxOps, runFor, starveFor := 3000, run.runFor, 3*time.Second
	if run.placement {
		maxOps, starveFor = 10000, 10*time.Second
	}
	var okOps, failedOps, unknownOps atomicCounters
	var wg sync.WaitGroup
	var stopClients atomic.Bool
	stopNemesis := make(chan struct{})
	nemesisDone := make(chan struct{})
	var snaps snapshotCounts
	var mem membershipNemesis
	down := &downNodes{}
	switch {
	case run.placement:
		mem = newPlacementNemesis(t, c, rng.Uint64(), shards, voters, down)
	case run.noMembership:
		mem = idleNemesis{newDescHistory()}
	default:
		mem = newMemberNemesis(t, c, rng.Uint64(), shards, voters)
	}
	faultSeed := rng.Uint64()
	var splits *splitNemesis
	if run.splits {
		splits = newSplitNemesis(t, c, rng.Uint64(), rt, down, run.merges)
	}
	go func() {
		defer close(nemesisDone)
		var nwg sync.WaitGroup
		nwg.Add(2)
		go func() { defer nwg.Done(); nemesis(t, c, faultSeed, shards, voters, down, &snaps, stopNemesis) }()
		go func() { defer nwg.Done(); mem.run(stopNemesis) }()
		if splits != nil {
			nwg.Add(1)
			go func() { defer nwg.Done(); splits.run(stopNemesis) }()
		}
		nwg.Wait()
	}()
	for cl := 0; cl < clients+counterClients; cl++ {
		wg.Add(1)
		crng := rand.New(rand.NewPCG(seed, uint64(cl)))
		sw := newSessionWriter(seed, cl)
		go func() {
			defer wg.Done()
			for n := 0; n < maxOps && !stopClients.Load() && ctx.Err() == nil; n++ {
				var o outcome
				if cl < clients {
					o = clientOp(ctx, rt, rec, crng, sw, cl, n, keys, run)
				} else {
					o = cnt.increment(ctx, rt, rec, crng, sw, cl, n)
				}
				switch o {
				case outcomeOK:
					okOps.add()
				case outcomeFailed, outcomeNone:
					if o == outcomeFailed {
						failedOps.add()
					}
					// Refused (mostly: no leader), or nowhere to send it (no
					// node runs, the ring is being refreshed): back off a
					// millisecond, as a client would, rather than spin the
					// CPU the cluster needs to elect one (or burn through
					// maxOps doing nothing).
					sleepCtx(ctx, time.Millisecond)
				case outcomeUnknown:
					unknownOps.add()
				}
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	start := time.Now()
	poll := time.NewTicker(10 * time.Millisecond)
	healed := false
wait:
	for {
		select {
		case <-allDone: // every client reached maxOps or ctx expired
			break wait
		case <-poll.C:
		}
		elapsed := time.Since(start)
		if elapsed >= runFor && okOps.load() >= minOK && (healed || mem.progressed()) {
			break
		}
		if !healed && elapsed >= runFor+starveFor {
			close(stopNemesis)
			<-nemesisDone
			healed = true
			t.Logf("seed %d: %d operations succeeded under faults; nemesis stopped", seed, okOps.load())
		}
	}
	poll.Stop()
	stopClients.Store(true)
	<-allDone
	if !healed {
		close(stopNemesis)
		<-nemesisDone
	}
	t.Logf("seed %d: %d ok, %d failed, %d unknown operations; %d reads answered by ReadOnReplica, %d of them on a replica that did not lead then",
		seed, okOps.load(), failedOps.load(), unknownOps.load(), rt.replicaReads.Load(), rt.followerReads.Load())
	if run.lease {
		fromLease, held := snaps.leases(c)
		t.Logf("seed %d: %d lease reads answered (%d served from a lease, the others by ReadIndex); %d vote requests held by the vote gate",
			seed, rt.leaseReads.Load(), fromLease, held)
	}
	t.Logf("seed %d: %s", seed, mem.summary())
	if okOps.load() < minOK {
		t.Errorf("seed %d: only %d operations succeeded", seed, okOps.load())
	}
	res, err := rec.Check(60 * time.Second)
	if err != nil {
		t.Errorf("seed %d: check: %v", seed, err)
	}
	if run.brokenReads {
		// Only whether the checker caught the stale reads matters.
		t.Logf("seed %d: with reads that skip the read index, the history is %s", seed, res.Outcome)
		return res.Outcome != linearize.Ok
	}
	if res.Outcome != linearize.Ok {
		t.Errorf("seed %d (voters %d): history is %s\n%s", seed, voters, res.Outcome, res)
	}
	if splits != nil {
		if err := splits.settle(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("seed %d: %s", seed, splits.summary())
		// The ring the splits left, as the nodes have it once healed.
		if err := c.WaitFor(ctx, "a ring with no gap", func() bool { rt.refresh(ctx); return ringCovers(rt.descs()) }); err != nil {
			t.Fatal(err)
		}
		descs = rt.descs()
	}
	checkAfterChaos(t, ctx, c, descs, cnt, mem.history(), &snaps)
	applies.check(t, seed)
	return true
}

type outcome int

const (
	outcomeNone outcome = iota
	outcomeOK
	outcomeFailed
	outcomeUnknown
)

type atomicCounters struct{ n atomic.Int64 }

func (a *atomicCounters) add()        { a.n.Add(1) }
func (a *atomicCounters) load() int64 { return a.n.Load() }

// clientOp runs one random operation of a client. Writes go through the
// client's session (sw): retried until certain or their deadline, applied
// at most once.
func clientOp(ctx context.Context, rt *router, rec *linearize.Recorder, rng *rand.Rand, sw *sessionWriter, client, n int, keys []string, run chaosRun) outcome {
	key, shard, e := rt.pick(rng, keys)
	if e == nil {
		return outcomeNone
	}
	octx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	value := fmt.Sprintf("c%d-%d", client, n)
	switch p := rng.IntN(10); {
	case p < 4: // get: on the leader, or half the time on any node's replica
		how := readLeader
		if run.lease {
			how = readLease
		}
		if rng.IntN(2) == 0 {
			ids := rt.c.IDs()
			if o := rt.c.Engine(ids[rng.IntN(len(ids))]); o != nil {
				e, how = o, readOnReplica
				if run.brokenReads {
					how = readBroken
				}
			}
		}
		if _, _, ok := recordedGet(octx, rt, rec, e, shard, client, key, how); !ok {
			return outcomeFailed
		}
		return outcomeOK
	case p < 7: // put
		pend := rec.Begin(client, linearize.Put(key, value))
		_, _, err := sw.write(octx, rt, rng, key, engine.PutCommand([]byte(key), []byte(value)))
		return finishSessionWrite(pend, err, linearize.Result{})
	case p < 9: // cas from what a local read says (often stale: fine)
		cur, _ := e.ReadLocal(shard, engine.GetQuery([]byte(key)))
		old, found, _ := engine.DecodeGetResult(cur)
		var op linearize.Op
		var cmd []byte
		if found {
			op = linearize.CompareAndSwap(key, string(old), value)
			cmd = engine.CASCommand([]byte(key), old, []byte(value))
		} else {
			op = linearize.CompareAndSwapAbsent(key, value)
			cmd = engine.CASCommand([]byte(key), nil, []byte(value))
		}
		pend := rec.Begin(client, op)
		res, _, err := sw.write(octx, rt, rng, key, cmd)
		swapped, _, _, _ := engine.DecodeCASResult(res)
		return finishSessionWrite(pend, err, linearize.Result{Swapped: swapped})
	default:
		pend := rec.Begin(client, linearize.Delete(key))
		_, _, err := sw.write(octx, rt, rng, key, engine.DeleteCommand([]byte(key)))
		return finishSessionWrite(pend, err, linearize.Result{})
	}
}

// finishSessionWrite records the outcome of a session write.
func finishSessionWrite(pend *linearize.Pending, err error, ok linearize.Result) outcome {
	switch {
	case err == nil:
		pend.End(ok)
		return outcomeOK
	case definiteFailure(err):
		pend.Failed()
		return outcomeFailed
	default:
		pend.Unknown()
		return outcomeUnknown
	}
}

// readHow is how recordedGet reads.
type readHow int

const (
	readLeader    readHow = iota // Engine.Read: on the leader
	readOnReplica                // Engine.ReadOnReplica: on e's replica, leader or not
	// readBroken: e's replica as it is (ReadLocal), no read index: stale
	// on a follower behind; the test must catch it (chaosRun.brokenReads).
	readBroken
	readLease // Engine.ReadLease: on the leader, from its lease
)

// recordedGet reads key on e as how says, recorded in rec as a
// linearizable read; ok is false if the read failed.
func recordedGet(ctx context.Context, rt *router, rec *linearize.Recorder, e *engine.Engine, shard uint64, client int, key string, how readHow) (value []byte, found, ok bool) {
	pend := rec.Begin(client, linearize.Get(key))
	var res []byte
	var err error
	switch how {
	case readLeader:
		res, err = e.Read(ctx, shard, engine.GetQuery([]byte(key)))
	case readOnReplica:
		res, err = e.ReadOnReplica(ctx, shard, engine.GetQuery([]byte(key)))
	case readBroken:
		res, err = e.ReadLocal(shard, engine.GetQuery([]byte(key)))
	case readLease:
		res, err = e.ReadLease(ctx, shard, engine.GetQuery([]byte(key)))
	}
	onLeader := how == readLeader || how == readLease
	var nl *engine.NotLeaderError
	if onLeader || (err != nil && !errors.As(err, &nl)) {
		rt.learn(ctx, shard, err) // a follower's refusal says nothing of the leader
	}
	if err != nil {
		pend.Failed()
		return nil, false, false
	}
	if onLeader {
		rt.success(shard, e.NodeID())
	}
	if how == readLease {
		rt.leaseReads.Add(1)
	}
	if how == readOnReplica {
		rt.replicaReads.Add(1)
		if st, err := e.Status(ctx, shard); err == nil && st.Leader != e.NodeID() {
			rt.followerReads.Add(1)
		}
	}
	value, found, _ = engine.DecodeGetResult(res)
	pend.End(linearize.Result{Value: string(value), Found: found})
	return value, found, true
}

// nemesis injects one fault at a time until stop: partitions, isolation,
// drops and duplicates, delays, leader transfers, crashes. A crashed node
// comes back at the next step; at most a minority of the voters a shard
// should have is cut off at once. It adds the counters of the engines it
// crashes to snaps.
func nemesis(t *testing.T, c *testcluster.Cluster, seed uint64, shards []uint64, voters int, down *downNodes, snaps *snapshotCounts, stop chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := c.IDs()
	minority := (voters - 1) / 2
	tick := time.NewTicker(15 * time.Millisecond)
	defer tick.Stop()
	var crashed []uint64
	heal := func() {
		c.Heal()
		for _, id := range crashed {
			if err := c.Start(id); err != nil {
				t.Errorf("restart node %d: %v", id, err)
			}
		}
		crashed = nil
		down.release(downByFaults)
	}
	defer heal()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		heal()
		perm := rng.Perm(len(ids))
		switch rng.IntN(7) {
		case 0: // partition a minority away
			var a, b []uint64
			for i, p := range perm {
				if i < 1+rng.IntN(minority) {
					a = append(a, ids[p])
				} else {
					b = append(b, ids[p])
				}
			}
			c.Partition(a, b)
		case 1:
			c.Isolate(ids[perm[0]])
		case 2:
			_ = c.SetFaults(memtransport.Faults{DropProb: 0.2, DupProb: 0.2})
		case 3:
			_ = c.SetFaults(memtransport.Faults{DelayMin: 0, DelayMax: 5 * time.Millisecond, ReorderProb: 0.3})
		case 4, 5: // transfer the leadership of a shard to one of its voters
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			shard := shards[rng.IntN(len(shards))]
			if e := c.Engine(c.Leader(ctx, shard)); e != nil {
				if st, err := e.Status(ctx, shard); err == nil && len(st.Voters) > 0 {
					_ = e.TransferLeader(ctx, shard, st.Voters[rng.IntN(len(st.Voters))])
				}
			}
			cancel()
		case 6:
			if !down.take(downByFaults) {
				break // the other nemesis holds a node down
			}
			for i := 0; i < 1+rng.IntN(minority); i++ {
				id := ids[perm[i]]
				if e := c.Engine(id); e != nil {
					snaps.add(e.Stats())
				}
				c.Crash(id)
				crashed = append(crashed, id)
			}
		}
	}
}
