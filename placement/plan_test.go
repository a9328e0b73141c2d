package placement

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustPlan(t *testing.T, st State, cfg Config, inflight []Op) []Op {
	t.Helper()
	ops, err := Plan(st, cfg, inflight)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	return ops
}

func kinds(ops []Op) map[Kind]int {
	m := map[Kind]int{}
	for _, op := range ops {
		m[op.Kind]++
	}
	return m
}

func counts(st State) (replicas, leaders map[uint64]int) {
	replicas, leaders = map[uint64]int{}, map[uint64]int{}
	for _, sh := range st.Shards {
		if sh.Meta {
			continue
		}
		for _, r := range sh.Replicas {
			replicas[r.NodeID]++
		}
		if sh.Leader != 0 {
			leaders[sh.Leader]++
		}
	}
	return replicas, leaders
}

// withinTolerance checks that every eligible node's count is within
// ±max(tol·mean, minTol) of the mean (equal weights).
func withinTolerance(t *testing.T, what string, c map[uint64]int, nodeIDs []uint64) {
	t.Helper()
	total := 0
	for _, id := range nodeIDs {
		total += c[id]
	}
	mean := float64(total) / float64(len(nodeIDs))
	band := max(0.05*mean, 2)
	for _, id := range nodeIDs {
		if math.Abs(float64(c[id])-mean) > band+1e-9 {
			t.Errorf("%s: node %d has %d, mean %.1f ± %.1f (all: %v)", what, id, c[id], mean, band, c)
		}
	}
}

func TestRepairDeadNodeOntoEmptiestNode(t *testing.T) {
	// Shards 1-6 on nodes 1, 2, 3; shards 7-9 on 1, 2, 4; node 5 is empty.
	// Node 3 has been dead for 6 minutes.
	st := State{Now: t0, Nodes: liveNodes(5)}
	for id := uint64(1); id <= 6; id++ {
		st.Shards = append(st.Shards, shardOn(id, 1, 2, 3))
	}
	for id := uint64(7); id <= 9; id++ {
		st.Shards = append(st.Shards, shardOn(id, 1, 2, 4))
	}
	st.Nodes[2].Liveness, st.Nodes[2].Since = Dead, t0.Add(-6*time.Minute)
	st = withDisk(st)

	ops := mustPlan(t, st, Config{}, nil)
	// Two snapshots at once per node: node 5 (emptiest) takes two, node 4
	// the next two. Repairs come first; leadership moves follow.
	want := []struct{ shard, add uint64 }{{1, 5}, {2, 5}, {3, 4}, {4, 4}}
	if len(ops) < len(want) || kinds(ops)[Repair] != len(want) {
		t.Fatalf("got %v, want %d repairs first", ops, len(want))
	}
	for i, w := range want {
		op := ops[i]
		if op.Kind != Repair || op.ShardID != w.shard || !slices.Equal(op.Add, []uint64{w.add}) ||
			op.Remove != (Replica{NodeID: 3, ReplicaID: 3, Role: Voter}) {
			t.Errorf("op %d: %v, want repair of shard %d onto node %d removing node 3's replica", i, op, w.shard, w.add)
		}
	}
	if r := ops[0].Reason; r != "node 3 dead for 6m0s; shard 1 has 2 of 3 replicas" {
		t.Errorf("reason %q", r)
	}

	s := newSim(t, st, Config{}, nil)
	s.run(100, nil)
	rep, _ := counts(s.st)
	if rep[3] != 0 {
		t.Errorf("node 3 still holds %d replicas", rep[3])
	}
	withinTolerance(t, "replicas", rep, []uint64{1, 2, 4, 5})
}

func TestNoRepairBeforeDownAfter(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(4), Shards: roundRobin(6, []uint64{1, 2, 3}, 3)}
	st.Nodes[2].Liveness, st.Nodes[2].Since = Dead, t0.Add(-4*time.Minute)
	for _, op := range mustPlan(t, st, Config{}, nil) {
		if op.Kind != TransferLeader {
			t.Errorf("%v: only leadership moves before DownAfter", op)
		}
	}
	st.Now = t0.Add(time.Minute)
	if k := kinds(mustPlan(t, st, Config{}, nil)); k[Repair] == 0 {
		t.Errorf("no repair once dead for DownAfter: %v", k)
	}
}

func TestDecommissionEmptiesDrainingNode(t *testing.T) {
	ids := []uint64{1, 2, 3, 4}
	st := withDisk(State{Now: t0, Nodes: liveNodes(4), Shards: roundRobin(24, ids, 3)})
	st.Nodes[1].Draining = true
	if err := CanDecommission(st, 2); err != nil {
		t.Fatal(err)
	}
	ops := mustPlan(t, st, Config{}, nil)
	firstMove := slices.IndexFunc(ops, func(op Op) bool { return op.Kind == Decommission })
	if firstMove < 0 {
		t.Fatalf("no decommission move: %v", ops)
	}
	for i, op := range ops {
		if op.Kind == TransferLeader && i > firstMove {
			t.Errorf("leadership transfer %v after a replica move", op)
		}
		if op.Kind == TransferLeader && !strings.Contains(op.Reason, "node 2 is draining") {
			t.Errorf("reason %q", op.Reason)
		}
		if op.Kind == Decommission && (op.Remove.NodeID != 2 || slices.Contains(op.Add, 2)) {
			t.Errorf("%v", op)
		}
	}
	s := newSim(t, st, Config{}, nil)
	s.run(100, nil)
	rep, lead := counts(s.st)
	if rep[2] != 0 || lead[2] != 0 {
		t.Errorf("node 2 still holds %d replicas, leads %d", rep[2], lead[2])
	}
	withinTolerance(t, "replicas", rep, []uint64{1, 3, 4})
	withinTolerance(t, "leaders", lead, []uint64{1, 3, 4})
}

func TestDecommissionBelowReplicationFactor(t *testing.T) {
	// Three nodes, three replicas each: once node 3 drains, no node can
	// take its replicas; they are removed, the shards keep two voters.
	st := withDisk(State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(6, []uint64{1, 2, 3}, 3)})
	st.Nodes[2].Draining = true
	s := newSim(t, st, Config{}, nil)
	s.run(50, nil)
	for _, sh := range s.st.Shards {
		if len(sh.Replicas) != 2 || slices.ContainsFunc(sh.Replicas, func(r Replica) bool { return r.NodeID == 3 }) {
			t.Errorf("shard %d: %v", sh.ID, sh.Replicas)
		}
	}
}

func TestDecommissionSingleVoter(t *testing.T) {
	st := withDisk(State{Now: t0, Nodes: liveNodes(2), Shards: roundRobin(4, []uint64{1, 2}, 1)})
	st.Nodes[0].Draining = true
	s := newSim(t, st, Config{ReplicationFactor: 1}, nil)
	s.run(50, nil)
	for _, sh := range s.st.Shards {
		if len(sh.Replicas) != 1 || sh.Replicas[0].NodeID != 2 || sh.Leader != 2 {
			t.Errorf("shard %d: %v, leader %d", sh.ID, sh.Replicas, sh.Leader)
		}
	}
}

func TestJoiningNodeFilledWithinTolerance(t *testing.T) {
	st := withDisk(State{Now: t0, Nodes: liveNodes(4), Shards: roundRobin(30, []uint64{1, 2, 3}, 3)})
	s := newSim(t, st, Config{}, nil)
	s.run(2*30+4, nil)
	rep, lead := counts(s.st)
	withinTolerance(t, "replicas", rep, []uint64{1, 2, 3, 4})
	withinTolerance(t, "leaders", lead, []uint64{1, 2, 3, 4})
	if s.kinds[RebalanceReplica] == 0 {
		t.Errorf("no rebalance: %v", s.kinds)
	}
}

func TestCapacityWeightedBalance(t *testing.T) {
	for _, tc := range []struct {
		nodes, shards int
		want          map[uint64]float64
	}{
		// Node 6 has twice the disk of the others: it gets twice their
		// share of 210 replicas.
		{6, 70, map[uint64]float64{1: 30, 2: 30, 3: 30, 4: 30, 5: 30, 6: 60}},
		// Node 4's share, 2/5 of 180, is more than one replica of each of
		// the 60 shards: it holds all 60, the others share the rest.
		{4, 60, map[uint64]float64{1: 40, 2: 40, 3: 40, 4: 60}},
	} {
		var ids []uint64
		for i := range tc.nodes {
			ids = append(ids, uint64(i+1))
		}
		st := State{Now: t0, Nodes: liveNodes(tc.nodes), Shards: roundRobin(tc.shards, ids, 3)}
		st.Nodes[tc.nodes-1].DiskCapacity = 200 * gb
		s := newSim(t, withDisk(st), Config{}, nil)
		s.run(2*tc.shards+tc.nodes, nil)
		rep, _ := counts(s.st)
		for id, want := range tc.want {
			band := max(0.05*want, 2)
			if math.Abs(float64(rep[id])-want) > band {
				t.Errorf("%d nodes: node %d: %d replicas, want %v ± %v (%v)", tc.nodes, id, rep[id], want, band, rep)
			}
		}
	}
}

func TestLeaderBalance(t *testing.T) {
	// Measured after a bootstrap: 29 / 4,992 / 4,979 leaders of 10,000
	// shards on 3 nodes.
	st := State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(10000, []uint64{1, 2, 3}, 3)}
	want := map[uint64]int{1: 29, 2: 4992, 3: 4979}
	i := 0
	for _, id := range []uint64{1, 2, 3} {
		for range want[id] {
			st.Shards[i].Leader = id
			i++
		}
	}
	ops := mustPlan(t, st, Config{}, nil)
	for _, op := range ops {
		if op.Kind != TransferLeader || op.Leader != 1 {
			t.Fatalf("%v: only transfers to node 1", op)
		}
	}
	// 3,300 transfers at 64 a plan take some 50 plans; 500 a plan keep the
	// test short.
	s := newSim(t, st, Config{MaxOpsPerPlan: 500}, nil)
	start := time.Now()
	s.run(100, nil)
	_, lead := counts(s.st)
	withinTolerance(t, "leaders", lead, []uint64{1, 2, 3})
	if s.kinds[TransferLeader] != s.executed {
		t.Errorf("operations other than transfers: %v", s.kinds)
	}
	t.Logf("leaders %v after %d steps, %d transfers (%v)", lead, s.step, s.executed, time.Since(start).Round(time.Millisecond))
}

// TestNoLeaderBalanceOnAPartialPicture: while more shards than the band
// have no known leader (a start, whose elections and leader hand-back are
// under way), leaderships are not balanced; once enough are known, they
// are.
func TestNoLeaderBalanceOnAPartialPicture(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(1000, []uint64{1, 2, 3}, 3)}
	// 800 of 1,000 known, all on node 1: far from balanced.
	for i := range st.Shards {
		st.Shards[i].Leader = 0
		if i < 800 {
			st.Shards[i].Leader = 1
		}
	}
	for _, op := range mustPlan(t, st, Config{}, nil) {
		if op.Kind == TransferLeader {
			t.Fatalf("%v: with 200 of 1,000 leaders unknown", op)
		}
	}
	// 960 known: 40 unknown is within the band (5% of 1,000).
	for i := 800; i < 960; i++ {
		st.Shards[i].Leader = 1
	}
	transfers := 0
	for _, op := range mustPlan(t, st, Config{}, nil) {
		if op.Kind == TransferLeader {
			transfers++
		}
	}
	if transfers == 0 {
		t.Fatal("no transfer with 960 of 1,000 leaders on node 1")
	}
}

func TestDiskAboveLimitNeverChosen(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(5), Shards: roundRobin(6, []uint64{1, 2, 3}, 3)}
	st.Nodes[2].Liveness, st.Nodes[2].Since = Dead, t0.Add(-time.Hour)
	st = withDisk(st)
	st.Nodes[3].DiskUsed = 95 * gb // node 4: empty of replicas but full
	st.Nodes[4].DiskUsed = 50 * gb
	ops := mustPlan(t, st, Config{MaxSnapshotsPerNode: 10}, nil)
	for _, op := range ops {
		if slices.Contains(op.Add, 4) {
			t.Errorf("%v: node 4 is 95%% full", op)
		}
	}
	if k := kinds(ops); k[Repair] != 6 {
		t.Errorf("want 6 repairs onto node 5: %v", ops)
	}
	// Node 5 at 89.99%: one more 64 MB shard would pass 90%.
	st.Nodes[4].DiskUsed = 90*gb - 1*mb
	for _, op := range mustPlan(t, st, Config{}, nil) {
		if len(op.Add) > 0 {
			t.Errorf("%v: no node has room", op)
		}
	}
}

func TestJointShardLeftAlone(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(5), Shards: roundRobin(4, []uint64{1, 2, 3}, 3)}
	st.Nodes[2].Liveness, st.Nodes[2].Since = Dead, t0.Add(-time.Hour)
	// Shard 1 is joint: node 3's voter outgoing, node 4's incoming.
	st.Shards[0].Joint = true
	st.Shards[0].Replicas = []Replica{{1, 1, Voter}, {2, 2, Voter}, {3, 3, VoterOutgoing}, {4, 4, VoterIncoming}}
	inflight := []Op{{Kind: Repair, ShardID: 1, Add: []uint64{4}, Remove: Replica{3, 3, Voter}}}
	for _, op := range mustPlan(t, st, Config{}, inflight) {
		if op.ShardID == 1 {
			t.Errorf("%v: shard 1 has an operation in flight", op)
		}
	}
	// The operation was lost (say, the driver's node crashed): the shard
	// is taken out of the joint state and nothing else.
	var got []Op
	for _, op := range mustPlan(t, st, Config{}, nil) {
		if op.ShardID == 1 {
			got = append(got, op)
		}
	}
	if len(got) != 1 || got[0].Kind != LeaveJoint {
		t.Errorf("shard 1: %v, want one leave-joint", got)
	}
}

func TestQuorumLostReported(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(5), Shards: roundRobin(3, []uint64{1, 2, 3}, 3)}
	st.Shards[0] = shardOn(1, 1, 4, 5)
	st.Nodes[3].Liveness, st.Nodes[3].Since = Dead, t0.Add(-time.Hour)
	st.Nodes[4].Liveness = Suspect
	ops := mustPlan(t, st, Config{MaxOpsPerPlan: 1}, nil)
	var got []Op
	for _, op := range ops {
		if op.ShardID == 1 {
			got = append(got, op)
		}
	}
	if len(got) != 1 || got[0].Kind != QuorumLost || got[0].Executable() {
		t.Fatalf("shard 1: %v, want one quorum-lost report", got)
	}
	want := "shard 1 has 1 of 3 voters live, quorum is 2: node 4 dead for 1h0m0s, node 5 suspect; no change can commit"
	if got[0].Reason != want {
		t.Errorf("reason %q\nwant   %q", got[0].Reason, want)
	}
}

func TestInflightRespected(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(5), Shards: roundRobin(6, []uint64{1, 2, 3}, 3)}
	st.Nodes[2].Liveness, st.Nodes[2].Since = Dead, t0.Add(-time.Hour)
	st = withDisk(st)
	// Two moves onto node 4 in flight: node 4 takes no more; shard 1 has one.
	inflight := []Op{
		{Kind: Repair, ShardID: 1, Add: []uint64{4}, Remove: Replica{3, 3, Voter}},
		{Kind: Repair, ShardID: 2, Add: []uint64{4}, Remove: Replica{3, 3, Voter}},
	}
	ops := mustPlan(t, st, Config{}, inflight)
	for _, op := range ops {
		if op.ShardID == 1 || op.ShardID == 2 || slices.Contains(op.Add, 4) {
			t.Errorf("%v conflicts with the operations in flight", op)
		}
	}
	if k := kinds(ops); k[Repair] != 2 {
		t.Errorf("want two repairs onto node 5: %v", ops)
	}
}

func TestMaxOpsPerPlan(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(9), Shards: roundRobin(50, []uint64{1, 2, 3}, 3)}
	st.Nodes[2].Liveness, st.Nodes[2].Since = Dead, t0.Add(-time.Hour)
	if ops := mustPlan(t, st, Config{MaxOpsPerPlan: 5, MaxSnapshotsPerNode: 50}, nil); len(ops) != 5 {
		t.Errorf("%d ops, want 5: %v", len(ops), ops)
	}
}

func TestMetaShard(t *testing.T) {
	meta := Shard{ID: 1 << 63, Last: math.MaxUint64, Generation: 1, Size: mb, Meta: true, Leader: 1,
		Replicas: []Replica{{1, 1, Voter}, {2, 2, Learner}, {3, 3, Learner}, {4, 4, Learner}, {5, 5, Learner}}}
	st := State{Now: t0, Nodes: liveNodes(5), Shards: append(roundRobin(10, []uint64{1, 2, 3, 4, 5}, 3), meta)}
	ops := mustPlan(t, st, Config{}, nil)
	i := slices.IndexFunc(ops, func(op Op) bool { return op.Kind == MetaVoter })
	if i < 0 || len(ops[i].Add) != 2 {
		t.Fatalf("want the meta shard grown by two voters: %v", ops)
	}
	s := newSim(t, st, Config{}, nil)
	s.run(50, nil)
	if v := metaVoters(s.st); len(v) != 5 {
		t.Fatalf("meta voters %v, want 5", v)
	}
	// A meta voter dies for good: a learner on a sixth node takes its place.
	s.st.Nodes = append(s.st.Nodes, Node{ID: 6, Liveness: Live, DiskCapacity: 100 * gb})
	m := s.shard(1 << 63)
	m.Replicas = append(m.Replicas, Replica{NodeID: 6, ReplicaID: 100, Role: Learner})
	dead := s.node(2)
	dead.Liveness, dead.Since = Dead, s.st.Now.Add(-time.Hour)
	ops = s.plan()
	i = slices.IndexFunc(ops, func(op Op) bool { return op.ShardID == 1<<63 })
	if i < 0 || ops[i].Kind != MetaVoter || !slices.Equal(ops[i].Add, []uint64{6}) || ops[i].Remove.NodeID != 2 {
		t.Fatalf("want node 2's meta voter replaced by node 6: %v", ops)
	}
	s.run(100, nil)
	if v := metaVoters(s.st); !slices.Equal(v, []uint64{1, 3, 4, 5, 6}) {
		t.Errorf("meta voters %v", v)
	}
}

// TestMetaShardEvenVotersShedAGoneOne: four meta voters, one gone and no
// node to take its place (every live node votes already): the gone voter
// is removed, so that the three left need two of them, not all three. With
// three voters, one gone, it is kept.
func TestMetaShardEvenVotersShedAGoneOne(t *testing.T) {
	meta := Shard{ID: 1 << 63, Last: math.MaxUint64, Generation: 1, Size: mb, Meta: true, Leader: 1,
		Replicas: []Replica{{1, 1, Voter}, {2, 2, Voter}, {3, 3, Voter}, {4, 4, Voter}}}
	nodes := liveNodes(4)
	nodes[3].Liveness, nodes[3].Since = Dead, t0.Add(-time.Hour)
	st := State{Now: t0, Nodes: nodes, Shards: []Shard{shardOn(1, 1, 2, 3), meta}}
	ops := mustPlan(t, st, Config{}, nil)
	i := slices.IndexFunc(ops, func(op Op) bool { return op.ShardID == 1<<63 })
	if i < 0 || ops[i].Kind != MetaVoter || len(ops[i].Add) != 0 || ops[i].Remove.NodeID != 4 {
		t.Fatalf("want node 4's meta voter removed: %v", ops)
	}
	nodes = liveNodes(5)
	nodes[4].Liveness, nodes[4].Since = Dead, t0.Add(-time.Hour)
	meta.Replicas = append(meta.Replicas, Replica{5, 5, Voter}) // five voters: odd
	st = State{Now: t0, Nodes: nodes, Shards: []Shard{shardOn(1, 1, 2, 3), meta}}
	ops = mustPlan(t, st, Config{}, nil)
	if slices.ContainsFunc(ops, func(op Op) bool { return op.ShardID == 1<<63 && op.Remove.NodeID != 0 }) {
		t.Fatalf("an odd meta shard lost a voter: %v", ops)
	}
}

func metaVoters(st State) []uint64 {
	var out []uint64
	for _, sh := range st.Shards {
		if sh.Meta {
			for _, r := range sh.Replicas {
				if r.Role == Voter {
					out = append(out, r.NodeID)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestPlanLeavesInputAlone(t *testing.T) {
	st := withDisk(State{Now: t0, Nodes: liveNodes(4), Shards: roundRobin(12, []uint64{3, 2, 1}, 3)})
	st.Nodes[1].Draining = true
	st.Shards[0].Replicas[0], st.Shards[0].Replicas[2] = st.Shards[0].Replicas[2], st.Shards[0].Replicas[0]
	before := State{Now: st.Now, Nodes: slices.Clone(st.Nodes)}
	for _, sh := range st.Shards {
		sh.Replicas = slices.Clone(sh.Replicas)
		before.Shards = append(before.Shards, sh)
	}
	inflight := []Op{{Kind: Repair, ShardID: 5, Add: []uint64{4}}}
	if ops := mustPlan(t, st, Config{}, inflight); len(ops) == 0 {
		t.Fatal("empty plan")
	}
	if !reflect.DeepEqual(st, before) {
		t.Error("Plan changed its input")
	}
}

func TestPlanRefusesBadInput(t *testing.T) {
	good := State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(3, []uint64{1, 2, 3}, 3)}
	noLive := State{Now: t0, Nodes: liveNodes(3), Shards: good.Shards}
	for i := range noLive.Nodes {
		noLive.Nodes[i].Liveness = Suspect
	}
	bad := State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(3, []uint64{1, 2, 3}, 3)}
	bad.Shards[0].Replicas[1].NodeID = 9
	for name, tc := range map[string]struct {
		st   State
		cfg  Config
		want error
	}{
		"no live nodes": {noLive, Config{}, ErrNoLiveNodes},
		"empty state":   {State{Now: t0}, Config{}, ErrNoLiveNodes},
		"bad state":     {bad, Config{}, ErrBadState},
		"bad config":    {good, Config{MetaVoters: 4}, ErrBadConfig},
	} {
		if ops, err := Plan(tc.st, tc.cfg, nil); !errors.Is(err, tc.want) || ops != nil {
			t.Errorf("%s: ops %v, err %v; want %v and nothing planned", name, ops, err, tc.want)
		}
	}
}

func TestCanDecommission(t *testing.T) {
	st := State{Now: t0, Nodes: liveNodes(3), Shards: roundRobin(3, []uint64{1, 2, 3}, 3)}
	st.Nodes[1].Draining = true
	st.Nodes[2].Removed = true
	for _, tc := range []struct {
		node uint64
		want error
	}{
		{1, ErrLastNode},    // node 2 drains, node 3 is removed
		{2, nil},            // already draining; node 1 remains
		{3, ErrNodeRemoved}, // gone for good
		{7, ErrUnknownNode},
	} {
		if err := CanDecommission(st, tc.node); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("node %d: %v, want %v", tc.node, err, tc.want)
		}
	}
	st.Nodes[0].Liveness = Suspect
	st.Nodes[1].Liveness = Suspect
	if err := CanDecommission(st, 1); !errors.Is(err, ErrNoLiveNodes) {
		t.Errorf("no live node: %v", err)
	}
}

func TestWaterFill(t *testing.T) {
	for _, tc := range []struct {
		total         float64
		weights, caps []float64
		want          []float64
	}{
		{90, []float64{1, 1, 1}, []float64{100, 100, 100}, []float64{30, 30, 30}},
		{90, []float64{1, 2, 3}, []float64{100, 100, 100}, []float64{15, 30, 45}},
		{90, []float64{1, 1, 1}, []float64{10, 100, 100}, []float64{10, 40, 40}},
		{90, []float64{1, 1, 4}, []float64{100, 100, 30}, []float64{30, 30, 30}},
		{50, []float64{1, 1}, []float64{10, 10}, []float64{10, 10}},
	} {
		got := waterFill(tc.total, tc.weights, tc.caps)
		for i := range got {
			if math.Abs(got[i]-tc.want[i]) > 1e-9 {
				t.Errorf("waterFill(%v, %v, %v) = %v, want %v", tc.total, tc.weights, tc.caps, got, tc.want)
				break
			}
		}
	}
}

func TestOpString(t *testing.T) {
	op := Op{Kind: RebalanceReplica, ShardID: 7, Add: []uint64{4}, Remove: Replica{2, 5, Voter}, Reason: "why"}
	if s := op.String(); s != "rebalance-replica shard 7 +n4 -n2(r5 voter): why" {
		t.Errorf("%q", s)
	}
	if b, _ := QuorumLost.MarshalText(); string(b) != "quorum-lost" {
		t.Errorf("%s", b)
	}
}

// TestJSONRoundTrip: what the node sends flotillactl (Ops, Moves, Stats as
// JSON) reads back as it was, an Op that removes nothing included.
func TestJSONRoundTrip(t *testing.T) {
	started := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	moves := []Move{
		{Op: Op{Kind: TransferLeader, ShardID: 3, Leader: 2, Reason: "balance"}, Step: "transfer to n2", Started: started},
		{Op: Op{Kind: Decommission, ShardID: 7, Add: []uint64{4}, Remove: Replica{2, 5, Voter}}, Started: started,
			Finished: started.Add(time.Second), Outcome: Dropped, Err: "stale", Resumed: true},
	}
	stats := Stats{Started: map[Kind]uint64{Repair: 2, QuorumLost: 1}, Succeeded: map[Kind]uint64{}, Failed: map[Kind]uint64{},
		Dropped: map[Kind]uint64{LeaveJoint: 1}, Plans: 9, InFlight: 1, ReplicaSpread: 2, Paused: true}
	for _, v := range []any{moves, stats} {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		back := reflect.New(reflect.TypeOf(v))
		if err := json.Unmarshal(raw, back.Interface()); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if got := back.Elem().Interface(); !reflect.DeepEqual(got, v) {
			t.Errorf("%s read back as %+v, want %+v", raw, got, v)
		}
	}
}

func TestWithinBand(t *testing.T) {
	// Mean 10, band ±2 (5% of 10 is below the minimum of 2).
	if err := WithinBand(map[uint64]int{1: 8, 2: 10, 3: 12}, Config{}); err != nil {
		t.Fatal(err)
	}
	if err := WithinBand(map[uint64]int{1: 7, 2: 10, 3: 13}, Config{}); err == nil || !strings.Contains(err.Error(), "node 1 has 7") {
		t.Fatalf("7 and 13 around a mean of 10: %v", err)
	}
	// Mean 100, band ±5.
	if err := WithinBand(map[uint64]int{1: 94, 2: 100, 3: 106}, Config{}); err == nil {
		t.Fatal("94 and 106 around a mean of 100 passed")
	}
	// Edges are in the band, as the planner judges them, though float64
	// puts 700 - 2000/3 a hair above 0.05 × 2000/3.
	for _, tc := range []struct {
		counts []int // of nodes 1, 2, 3
		in     bool
	}{
		{[]int{667, 667, 666}, true},
		{[]int{644, 700, 656}, true},  // 700: exactly mean + 5%
		{[]int{633, 700, 667}, false}, // 633: mean - 5.05%
		{[]int{0, 3, 3}, true},        // mean 2, ±2
		{[]int{0, 4, 4}, false},       // mean 2.7, ±2
		{[]int{0, 0, 0}, true},
	} {
		counts := map[uint64]int{}
		for i, c := range tc.counts {
			counts[uint64(i+1)] = c
		}
		if err := WithinBand(counts, Config{}); (err == nil) != tc.in {
			t.Errorf("WithinBand(%v) = %v, want in the band: %v", tc.counts, err, tc.in)
		}
	}
}
