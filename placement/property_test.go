package placement

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestPlanProperties plans random clusters to convergence through the
// simulator, with membership events (nodes join, die, drain, turn suspect
// for a while, at the start and once more later) and operations failing at random, and checks at
// every step what checkPlan and the simulator check (one operation per
// shard and none on a busy one; never onto a node that is not live or
// drains, or that holds the shard; disk and snapshot limits; never below
// quorum; a plan independent of input order), then: convergence within
// 2 × shards + nodes steps of the last event (× ⌈3 / MaxSnapshotsPerNode⌉:
// a move takes three steps); no replica move undone by a later move of the
// same shard between the same two nodes, and no more leadership transfers
// undone than leaderships handed over by moves; and a final state with
// every shard repaired and drained, replica counts within tolerance, and
// leader counts either within tolerance or with no transfer left that the
// rule of balance allows (leaderships go to voters only; the test reports
// how often and how far they stopped out of band).
//
// PLACEMENT_SEED=n runs seed n alone; PLACEMENT_SEEDS=n runs seeds 1..n
// (default 300; 50 with -short or -race). PLACEMENT_TRACE=1 logs every
// plan.
func TestPlanProperties(t *testing.T) {
	seeds := []uint64{}
	if v := os.Getenv("PLACEMENT_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("PLACEMENT_SEED: %v", err)
		}
		seeds = append(seeds, seed)
	} else {
		n := 300
		if v := os.Getenv("PLACEMENT_SEEDS"); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil {
				t.Fatalf("PLACEMENT_SEEDS: %v", err)
			}
		} else if testing.Short() || raceEnabled {
			n = 50 // one goroutine: the race detector has nothing to find here
		}
		for i := range n {
			seeds = append(seeds, uint64(i+1))
		}
	}
	start := time.Now()
	var steps, ops, stuck int
	var excess float64
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			s, summary := runRandom(t, seed)
			steps += s.step
			ops += s.executed
			// With replication factor 1 a node leads what it holds: leader
			// counts follow replica counts. Only the others are reported.
			if s.leaderExcess > 0 && s.cfg.withDefaults().ReplicationFactor > 1 {
				t.Logf("leaders stopped %.2f out of band: %s", s.leaderExcess, summary)
				stuck++
				excess = max(excess, s.leaderExcess)
			}
			if len(seeds) == 1 || t.Failed() {
				t.Logf("seed %d: %s; %d steps, %d operations %v", seed, summary, s.step, s.executed, s.kinds)
			}
		})
	}
	t.Logf("%d seeds (%d..%d): %d steps, %d operations in %v; replication factor > 1 with leaders out of band where no transfer may serve them: %d seeds, by at most %.2f",
		len(seeds), seeds[0], seeds[len(seeds)-1], steps, ops, time.Since(start).Round(time.Millisecond), stuck, excess)
}

func runRandom(t *testing.T, seed uint64) (*sim, string) {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	st, cfg, summary := randomCluster(r)
	t.Logf("seed %d: %s (PLACEMENT_SEED=%d to rerun)", seed, summary, seed)
	s := newSim(t, st, cfg, r)
	s.failRate = []float64{0, 0.05, 0.15}[r.IntN(3)]
	nextID := uint64(len(st.Nodes)) + 1
	killed := false
	var events map[int]func()
	event := func() {
		switch r.IntN(4) {
		case 0: // a node joins, with a meta learner as join adds
			s.st.Nodes = append(s.st.Nodes, Node{ID: nextID, Liveness: Live, Since: s.st.Now,
				DiskCapacity: s.st.Nodes[0].DiskCapacity})
			if m := s.meta(); m != nil {
				m.Replicas = append(m.Replicas, Replica{NodeID: nextID, ReplicaID: s.nextReplicaID(m), Role: Learner})
			}
			summary += fmt.Sprintf("; step %d: node %d joins", s.step, nextID)
			nextID++
		case 1: // a node dies, for good at once or DownAfter later; one at
			// most, so that shards keep a quorum (but those of RF 1)
			if id := s.pick(r, 2); id != 0 && !killed {
				killed = true
				n := s.node(id)
				n.Liveness, n.Since = Dead, s.st.Now
				if r.IntN(2) == 0 {
					n.Since = s.st.Now.Add(-time.Hour)
				}
				summary += fmt.Sprintf("; step %d: node %d dies", s.step, id)
			}
		case 2: // a node drains
			if id := s.pick(r, 1); id != 0 && CanDecommission(s.st, id) == nil {
				s.node(id).Draining = true
				summary += fmt.Sprintf("; step %d: node %d drains", s.step, id)
			}
		case 3: // a node is suspect for a while, then live again
			if id := s.pick(r, 2); id != 0 {
				s.node(id).Liveness = Suspect
				back := s.step + 1 + r.IntN(8)
				prev := events[back]
				events[back] = func() {
					if prev != nil {
						prev()
					}
					s.node(id).Liveness = Live
				}
				summary += fmt.Sprintf("; step %d: node %d suspect until step %d", s.step, id, back)
			}
		}
	}
	events = map[int]func(){0: func() {
		for range r.IntN(3) {
			event()
		}
	}}
	if r.IntN(2) == 0 {
		events[1+r.IntN(20)] = event
	}
	// A move takes three steps here and a node receives at most
	// MaxSnapshotsPerNode at once: the bound grows when that is below 3.
	shards := len(st.Shards)
	slow := (3 + cfg.withDefaults().MaxSnapshotsPerNode - 1) / cfg.withDefaults().MaxSnapshotsPerNode
	s.run((2*shards+len(st.Nodes))*slow, events)
	s.checkFinal()
	return s, summary
}

// randomCluster returns 3 to 7 nodes with 10 to 120 shards placed with a
// skew towards the lower node IDs, replication factor mostly 3 (sometimes
// 1 or 5), leaders skewed too, disks equal or of different sizes, now and
// then a node whose disk is almost full of other data, a meta shard, and a
// random MaxSnapshotsPerNode and MaxOpsPerPlan now and then.
func randomCluster(r *rand.Rand) (State, Config, string) {
	n := 3 + r.IntN(5)
	rf := 3
	switch r.IntN(10) {
	case 0:
		rf = 1
	case 1:
		if n >= 5 {
			rf = 5
		}
	}
	cfg := Config{ReplicationFactor: rf}
	if r.IntN(4) == 0 {
		cfg.MaxSnapshotsPerNode = 1 + r.IntN(4)
	}
	if r.IntN(4) == 0 {
		cfg.MaxOpsPerPlan = 4 + r.IntN(16)
	}
	weighted := r.IntN(3) == 0
	st := State{Now: t0}
	for i := range n {
		node := Node{ID: uint64(i + 1), Liveness: Live, Since: t0.Add(-time.Hour), DiskCapacity: 100 * gb}
		if weighted {
			node.DiskCapacity = uint64(50+r.IntN(51)) * gb
		}
		st.Nodes = append(st.Nodes, node)
	}
	full := uint64(0)
	if r.IntN(6) == 0 {
		full = uint64(1 + r.IntN(n))
		st.Nodes[full-1].DiskUsed = st.Nodes[full-1].DiskCapacity * 93 / 100
	}
	shards := 10 + r.IntN(111)
	weights := make([]float64, n)
	for i := range weights {
		weights[i] = 1 / float64(i+1)
	}
	for id := 1; id <= shards; id++ {
		on := pickWeighted(r, weights, rf)
		sh := shardOn(uint64(id), on...)
		sh.Size = uint64(16+r.IntN(497)) * mb
		sh.WriteRate = float64(r.IntN(1000))
		if r.IntN(10) < 3 {
			sh.Leader = on[r.IntN(len(on))]
		} else {
			sh.Leader = slices.Min(on)
		}
		st.Shards = append(st.Shards, sh)
		for _, nid := range on {
			st.Nodes[nid-1].DiskUsed += sh.Size
		}
	}
	meta := Shard{ID: 1 << 63, Last: math.MaxUint64, Generation: 1, Size: mb, Meta: true, Leader: 1}
	voters := min(5, n)
	if voters%2 == 0 {
		voters--
	}
	for i := range n {
		role := Learner
		if i < voters {
			role = Voter
		}
		meta.Replicas = append(meta.Replicas, Replica{NodeID: uint64(i + 1), ReplicaID: uint64(i + 1), Role: role})
	}
	st.Shards = append(st.Shards, meta)
	summary := fmt.Sprintf("%d nodes, %d shards, RF %d, weighted %v, full node %d, config %+v", n, shards, rf, weighted, full, cfg)
	return st, cfg, summary
}

// pickWeighted picks k distinct indices (as node IDs, from 1) with the
// given weights.
func pickWeighted(r *rand.Rand, weights []float64, k int) []uint64 {
	w := slices.Clone(weights)
	var out []uint64
	for range k {
		var sum float64
		for _, x := range w {
			sum += x
		}
		x := r.Float64() * sum
		i := 0
		for ; i < len(w)-1 && x >= w[i]; i++ {
			x -= w[i]
		}
		for w[i] == 0 { // rounding landed on a taken one
			i = (i + 1) % len(w)
		}
		out = append(out, uint64(i+1))
		w[i] = 0
	}
	slices.Sort(out)
	return out
}

func (s *sim) meta() *Shard {
	for i := range s.st.Shards {
		if s.st.Shards[i].Meta {
			return &s.st.Shards[i]
		}
	}
	return nil
}

// pick returns a random live node that is not draining, if at least keep
// others would remain; 0 otherwise.
func (s *sim) pick(r *rand.Rand, keep int) uint64 {
	var ids []uint64
	for _, n := range s.st.Nodes {
		if s.eligible(n.ID) {
			ids = append(ids, n.ID)
		}
	}
	if len(ids) <= keep {
		return 0
	}
	return ids[r.IntN(len(ids))]
}

// checkFinal checks the converged state: every shard that can commit is
// out of the joint state, without stray learners, with its voters on
// eligible nodes numbering min(RF, eligible nodes) and nothing on a
// draining node; the meta shard has enough voters on eligible nodes; and
// replica and leader counts are within tolerance of their targets.
func (s *sim) checkFinal() {
	s.t.Helper()
	cfg := s.cfg.withDefaults()
	var eligible []uint64
	for _, n := range s.st.Nodes {
		if s.eligible(n.ID) {
			eligible = append(eligible, n.ID)
		}
	}
	users := 0
	for _, sh := range s.st.Shards {
		if !sh.Meta {
			users++
		}
	}
	for i := range s.st.Shards {
		sh := &s.st.Shards[i]
		if !s.liveQuorum(sh) {
			continue
		}
		if sh.Joint {
			s.t.Errorf("shard %d is still joint: %v", sh.ID, sh.Replicas)
		}
		// Eligible nodes without the shard: with room for it, and full.
		roomy, full := 0, 0
		for _, id := range eligible {
			if _, ok := replicaOn(sh, id); ok {
				continue
			}
			if n := s.node(id); float64(n.DiskUsed+sh.Size) <= cfg.MaxDiskFraction*float64(n.DiskCapacity) {
				roomy++
			} else {
				full++
			}
		}
		// Removing a voter from a draining node must keep a quorum.
		var voters, liveOthers int
		for _, r := range sh.Replicas {
			if r.Role == Voter {
				voters++
				if s.live(r.NodeID) && !s.node(r.NodeID).Draining {
					liveOthers++
				}
			}
		}
		canRemove := liveOthers >= quorum(voters-1)
		onEligible := 0
		for _, r := range sh.Replicas {
			n := s.node(r.NodeID)
			if n.Draining && !n.Removed && !s.gone(n.ID) && (roomy > 0 || (full == 0 && canRemove)) {
				s.t.Errorf("shard %d still has %v on draining node %d", sh.ID, r, n.ID)
			}
			if r.Role == Learner && (!sh.Meta || s.gone(n.ID)) {
				s.t.Errorf("shard %d: learner %v left", sh.ID, r)
			}
			if r.Role == Voter && s.eligible(r.NodeID) {
				onEligible++
			}
		}
		if sh.Meta {
			want := min(cfg.MetaVoters, len(eligible))
			if want%2 == 0 {
				want--
			}
			if onEligible < want {
				s.t.Errorf("meta shard: %d voters on eligible nodes, want %d: %v", onEligible, want, sh.Replicas)
			}
			continue
		}
		// As many voters on eligible nodes as the replication factor, or
		// as there are eligible nodes that hold it or have room for it.
		if want := min(cfg.ReplicationFactor, onEligible+roomy); onEligible != want {
			s.t.Errorf("shard %d: %d voters on eligible nodes, want %d: %v", sh.ID, onEligible, want, sh.Replicas)
		}
	}
	// Balance: targets as the planner defines them (capacity weights when
	// every eligible node reports one and they differ; a full node keeps at
	// most what it has; no node above one replica per shard).
	rep, lead := counts(s.st)
	voters := map[uint64]int{}
	for _, sh := range s.st.Shards {
		for _, r := range sh.Replicas {
			if !sh.Meta && r.Role == Voter {
				voters[r.NodeID]++
			}
		}
	}
	var caps, weights, leaderCaps, ones []float64
	var totalRep, totalLead float64
	var capsSeen []uint64
	for _, id := range eligible {
		n := s.node(id)
		capsSeen = append(capsSeen, n.DiskCapacity)
		c := float64(users)
		if float64(n.DiskUsed) > cfg.MaxDiskFraction*float64(n.DiskCapacity) {
			c = min(c, float64(rep[id]))
		}
		caps = append(caps, c)
		weights = append(weights, float64(n.DiskCapacity))
		leaderCaps = append(leaderCaps, float64(voters[id]))
		ones = append(ones, 1)
		totalRep += float64(rep[id])
		totalLead += float64(lead[id])
	}
	if len(eligible) < 2 {
		return
	}
	if slices.Min(capsSeen) == slices.Max(capsSeen) {
		weights = ones
	}
	rtargets := waterFill(totalRep, weights, caps)
	for i, id := range eligible {
		band := max(cfg.Tolerance*rtargets[i], float64(cfg.MinTolerance))
		if math.Abs(float64(rep[id])-rtargets[i]) > band+1e-9 {
			s.t.Errorf("replicas: node %d has %d, target %.2f ± %.2f (all %v)", id, rep[id], rtargets[i], band, rep)
		}
	}
	// Leaders go to voters only, so their balance can be stuck by where
	// the voters are. Checked: it stops only when the rule of balance
	// allows no transfer (above its band to below the mean, or above the
	// mean to below its band); how far off it stopped is reported.
	mean := totalLead / float64(len(eligible))
	band := max(cfg.Tolerance*mean, float64(cfg.MinTolerance))
	for _, sh := range s.st.Shards {
		if sh.Meta || sh.Joint || !s.eligible(sh.Leader) {
			continue
		}
		ds := float64(lead[sh.Leader]) - mean
		for _, r := range sh.Replicas {
			if r.Role != Voter || r.NodeID == sh.Leader || !s.eligible(r.NodeID) {
				continue
			}
			if dt := float64(lead[r.NodeID]) - mean; (ds > band+1e-9 && dt < -1e-9) || (ds > 1e-9 && dt < -band-1e-9) {
				s.t.Errorf("leaders: shard %d could go from node %d (%d) to node %d (%d), mean %.2f ± %.2f",
					sh.ID, sh.Leader, lead[sh.Leader], r.NodeID, lead[r.NodeID], mean, band)
			}
		}
	}
	for _, id := range eligible {
		if off := math.Abs(float64(lead[id])-mean) - band; off > 1e-9 {
			s.leaderExcess = max(s.leaderExcess, off)
		}
	}
}
