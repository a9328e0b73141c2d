package engine_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// The membership half of the chaos test's nemesis. While the fault nemesis
// partitions, drops, delays and crashes, this one changes the shards'
// membership, one change at a time, as an operator or the placement driver
// would, against each shard's descriptor as its leader applied it:
//
//   - a voter is removed, and its node comes back later as a learner and is
//     then promoted: it must come back under a fresh replica ID;
//   - learners are added on the spare nodes and removed again;
//   - a learner is promoted and a voter removed (or demoted) in one joint
//     change, left automatically, or explicitly (as the placement driver
//     moves a leader's replica): the shard then stays joint until the
//     nemesis comes back to it and hands the leadership of a demoted or
//     outgoing leader to an incoming voter, or leaves the joint state.
//
// Changes of replicas the shard holds are fenced by their replica IDs.
//
// A shard below its number of voters is repaired first (the removed node is
// added back, then promoted), so that shards have their voters most of the
// time. Refusals that chaos causes (no leader, a change in progress, a
// quorum at risk, a timeout, an ambiguous outcome) are counted and the
// change is tried again later; a refusal because the nemesis's view was stale
// is checked to be one. Every descriptor seen on any node is recorded in a
// descHistory, whose invariants are checked at the end.

// memberNemesis changes memberships until stopped; it is owned by one
// goroutine.
type memberNemesis struct {
	t      *testing.T
	c      *testcluster.Cluster
	rng    *rand.Rand
	shards []uint64
	voters int // voters a shard should have
	hist   *descHistory
	// removed is, per shard, the node whose voter the nemesis last removed
	// and the replica ID it had: the nemesis adds that node back first.
	removed map[uint64]storage.Replica
	// done counts the changes made, by kind; refused the changes refused or
	// left unknown, by reason.
	done, refused map[string]int
	rejoined      int // nodes added back under a fresh replica ID
}

// changeTimeout bounds one membership change.
const changeTimeout = time.Second

func newMemberNemesis(t *testing.T, c *testcluster.Cluster, seed uint64, shards []uint64, voters int) *memberNemesis {
	return &memberNemesis{
		t: t, c: c, rng: rand.New(rand.NewPCG(seed, 2)), shards: shards, voters: voters,
		hist: newDescHistory(), removed: map[uint64]storage.Replica{},
		done: map[string]int{}, refused: map[string]int{},
	}
}

// run changes memberships every few milliseconds until stop is closed.
func (m *memberNemesis) run(stop chan struct{}) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*changeTimeout)
		m.step(ctx)
		cancel()
	}
}

func (m *memberNemesis) step(ctx context.Context) {
	m.hist.observeAll(ctx, m.c)
	shard := m.shards[m.rng.IntN(len(m.shards))]
	leader := m.c.Leader(ctx, shard)
	e := m.c.Engine(leader)
	if e == nil {
		m.refused["no leader"]++
		return
	}
	st, err := e.Status(ctx, shard)
	if err != nil || st.State != "StateLeader" {
		m.refused["no leader"]++
		return
	}
	m.hist.observe(leader, st)
	if isJoint(st.Desc) {
		m.joint(ctx, e, st)
		return
	}
	kind, changes := m.plan(st)
	if len(changes) == 0 {
		return
	}
	req := engine.ChangeRequest{ShardID: shard, Changes: changes}
	if len(changes) > 1 && m.rng.IntN(2) == 0 {
		req.Explicit = true
		kind += " (explicit)"
	}
	cctx, cancel := context.WithTimeout(ctx, changeTimeout)
	err = e.ChangeReplicasWith(cctx, req)
	cancel()
	m.settle(ctx, e, st.Desc, kind, changes, err)
}

// joint works on a shard whose configuration is joint, led by e: a leader
// on its way out hands its leadership to an incoming voter half of the
// time; otherwise the joint state is left (explicitly: one left
// automatically is refused as in progress, or left already).
func (m *memberNemesis) joint(ctx context.Context, e *engine.Engine, st engine.ShardStatus) {
	self, _ := st.Desc.ReplicaOfNode(e.NodeID())
	var incoming []uint64
	for _, r := range st.Desc.Replicas {
		if r.Role == storage.RoleVoterIncoming {
			incoming = append(incoming, r.NodeID)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, changeTimeout)
	defer cancel()
	if (self.Role == storage.RoleVoterDemoting || self.Role == storage.RoleVoterOutgoing) && len(incoming) > 0 && m.rng.IntN(2) == 0 {
		to := incoming[m.rng.IntN(len(incoming))]
		if err := e.TransferLeader(cctx, st.ShardID, to); err != nil {
			m.refused["transfer while joint: "+errClass(err)]++
			return
		}
		m.done["transfer while joint"]++
		return
	}
	m.settle(ctx, e, st.Desc, "leave joint", nil, e.ChangeReplicasWith(cctx, engine.ChangeRequest{ShardID: st.ShardID, LeaveJoint: true}))
}

// errClass names the kind of a refusal for the summary.
func errClass(err error) string {
	var nl *engine.NotLeaderError
	switch {
	case errors.As(err, &nl):
		return "not leader"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, engine.ErrClosed), errors.Is(err, engine.ErrShardNotFound), errors.Is(err, engine.ErrShardRemoved):
		return "leader gone"
	}
	return err.Error()
}

// plan picks the next change of st's shard.
func (m *memberNemesis) plan(st engine.ShardStatus) (kind string, changes []engine.ReplicaChange) {
	var voters, learners, others []uint64
	for _, id := range m.c.IDs() {
		switch rep, ok := st.Desc.ReplicaOfNode(id); {
		case !ok:
			others = append(others, id)
		case rep.Role == storage.RoleVoter:
			voters = append(voters, id)
		case rep.Role == storage.RoleLearner:
			learners = append(learners, id)
		}
	}
	pick := func(ids []uint64) uint64 { return ids[m.rng.IntN(len(ids))] }
	change := func(t engine.ChangeType, node uint64) engine.ReplicaChange {
		rep, _ := st.Desc.ReplicaOfNode(node) // fenced: that very replica
		return engine.ReplicaChange{Type: t, NodeID: node, ReplicaID: rep.ReplicaID}
	}
	// Repairs first: the node removed last comes back as a learner, and is
	// promoted once caught up (now and then before: a voter that lags).
	switch {
	case len(voters) < m.voters && len(learners) > 0:
		l := m.preferRemoved(st.ShardID, learners)
		if !caughtUp(st, l) && m.rng.IntN(4) != 0 {
			return "", nil
		}
		return "promote", []engine.ReplicaChange{change(engine.AddVoter, l)}
	case len(voters) < m.voters && len(others) > 0:
		n := m.preferRemoved(st.ShardID, others)
		if m.removed[st.ShardID].NodeID == n {
			return "add back as learner", []engine.ReplicaChange{change(engine.AddLearner, n)}
		}
		return "add learner", []engine.ReplicaChange{change(engine.AddLearner, n)}
	case len(voters) > m.voters:
		return "remove voter", []engine.ReplicaChange{change(engine.Remove, pick(voters))}
	case len(voters) < m.voters:
		return "", nil
	}
	switch p := m.rng.IntN(10); {
	case p < 3: // the leader too, now and then
		return "remove voter", []engine.ReplicaChange{change(engine.Remove, pick(voters))}
	case p < 6 && len(learners) > 0:
		l, v := pick(learners), pick(voters)
		if m.rng.IntN(4) == 0 {
			return "joint promote+demote", []engine.ReplicaChange{change(engine.AddVoter, l), change(engine.AddLearner, v)}
		}
		return "joint promote+remove", []engine.ReplicaChange{change(engine.AddVoter, l), change(engine.Remove, v)}
	case p < 8 && len(others) > 0:
		return "add learner", []engine.ReplicaChange{change(engine.AddLearner, pick(others))}
	case len(learners) > 0:
		return "remove learner", []engine.ReplicaChange{change(engine.Remove, pick(learners))}
	}
	return "", nil
}

// preferRemoved returns the node the nemesis last removed from shard if it
// is among ids, else one of ids.
func (m *memberNemesis) preferRemoved(shard uint64, ids []uint64) uint64 {
	if n := m.removed[shard].NodeID; slices.Contains(ids, n) {
		return n
	}
	return ids[m.rng.IntN(len(ids))]
}

// caughtUp reports whether the leader's progress has node's replica at its
// commit index.
func caughtUp(st engine.ShardStatus, node uint64) bool {
	for _, p := range st.Progress {
		if p.NodeID == node {
			return p.Match >= st.Commit
		}
	}
	return false
}

// isJoint reports whether d is a joint configuration.
func isJoint(d storage.Descriptor) bool {
	for _, r := range d.Replicas {
		if r.Role != storage.RoleVoter && r.Role != storage.RoleLearner {
			return true
		}
	}
	return false
}

// settle looks at the outcome of a change planned against before on leader
// e: a change made must show in the leader's descriptor (a node added under
// a fresh replica ID); a refusal must be one chaos explains.
func (m *memberNemesis) settle(ctx context.Context, e *engine.Engine, before storage.Descriptor, kind string, changes []engine.ReplicaChange, err error) {
	shard := before.ShardID
	var nl *engine.NotLeaderError
	switch {
	case err == nil:
		m.done[kind]++
		// The leader's replica is gone if the change removed it.
		st, serr := e.Status(ctx, shard)
		if serr == nil {
			m.hist.observe(e.NodeID(), st)
		}
		for _, ch := range changes {
			if msg := changeShows(before, st.Desc, ch); serr == nil && msg != "" {
				m.t.Errorf("shard %d: %s %+v applied on node %d, but %s (descriptor before %v, after %v)",
					shard, kind, changes, e.NodeID(), msg, before, st.Desc)
			}
			old, had := before.ReplicaOfNode(ch.NodeID)
			switch {
			case ch.Type == engine.Remove && old.Role == storage.RoleVoter:
				m.removed[shard] = old
			case !had && m.removed[shard].NodeID == ch.NodeID:
				m.rejoined++
				delete(m.removed, shard)
			}
		}
	case errors.Is(err, engine.ErrReplicaExists), errors.Is(err, engine.ErrReplicaNotFound), errors.Is(err, engine.ErrLastVoter):
		// Planned against a descriptor the leader no longer has: it must
		// have changed since (a change that timed out applied after all).
		st, serr := e.Status(ctx, shard)
		if serr == nil && st.Desc.Equal(before) {
			m.t.Errorf("shard %d: %s %+v refused by node %d against the descriptor it was planned on (%v): %v",
				shard, kind, changes, e.NodeID(), before, err)
		}
		m.refused["stale view"]++
	case errors.As(err, &nl):
		m.refused["not leader"]++
	case errors.Is(err, engine.ErrConfChangeInProgress):
		m.refused["in progress"]++
	case errors.Is(err, engine.ErrQuorumAtRisk):
		m.refused["quorum at risk"]++
	case errors.Is(err, engine.ErrShardMerging):
		m.refused["frozen for a merge"]++
	case errors.Is(err, engine.ErrAmbiguous):
		m.refused["ambiguous"]++
	case errors.Is(err, context.DeadlineExceeded):
		m.refused["timeout"]++
	case errors.Is(err, engine.ErrClosed), errors.Is(err, engine.ErrShardNotFound), errors.Is(err, engine.ErrShardRemoved),
		errors.Is(err, engine.ErrProposalDropped):
		m.refused["leader gone"]++ // crashed, or its replica removed, before or as it proposed
	default:
		m.t.Errorf("shard %d: %s %+v on node %d: unexpected error: %v", shard, kind, changes, e.NodeID(), err)
	}
}

// changeShows returns what is wrong with after as the descriptor right
// after ch applied to before ("" if nothing): the node's role, and its
// replica ID: kept by a node that stays, fresh for a node added.
func changeShows(before, after storage.Descriptor, ch engine.ReplicaChange) string {
	old, had := before.ReplicaOfNode(ch.NodeID)
	now, has := after.ReplicaOfNode(ch.NodeID)
	switch {
	case ch.Type == engine.Remove:
		if has && now.Role != storage.RoleVoterOutgoing {
			return fmt.Sprintf("node %d is still %s", ch.NodeID, now.Role)
		}
		return ""
	case !has:
		return fmt.Sprintf("node %d holds no replica", ch.NodeID)
	case had && now.ReplicaID != old.ReplicaID:
		return fmt.Sprintf("node %d's replica ID changed from %d to %d", ch.NodeID, old.ReplicaID, now.ReplicaID)
	case !had && now.ReplicaID < before.NextReplicaID:
		return fmt.Sprintf("node %d was added under replica ID %d, below the next ID %d", ch.NodeID, now.ReplicaID, before.NextReplicaID)
	case ch.Type == engine.AddVoter && !now.Role.IsVoter():
		return fmt.Sprintf("node %d is %s, not a voter", ch.NodeID, now.Role)
	case ch.Type == engine.AddLearner && now.Role != storage.RoleLearner && now.Role != storage.RoleVoterDemoting:
		return fmt.Sprintf("node %d is %s, not a learner", ch.NodeID, now.Role)
	}
	return ""
}

func (m *memberNemesis) history() *descHistory { return m.hist }

// progressed: the membership nemesis makes changes all the time.
func (m *memberNemesis) progressed() bool { return true }

func (m *memberNemesis) summary() string {
	format := func(c map[string]int) string {
		var parts []string
		for k, v := range c {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		return strings.Join(parts, ", ")
	}
	return fmt.Sprintf("membership changes: %s; %d nodes added back under a fresh replica ID; not made: %s",
		format(m.done), m.rejoined, format(m.refused))
}

// descHistory records the descriptors that nodes report, by shard, conf
// index and generation (a split changes a shard's range, not its
// configuration), and checks them: one descriptor per conf index and
// generation; a replica's own ID
// matching its descriptor; across conf indexes, a replica ID that names one
// node only, NextReplicaID that never goes back, and a node removed and
// added back under a replica ID greater than every one it had.
type descHistory struct {
	mu    sync.Mutex
	descs map[uint64]map[descAt]storage.Descriptor // shard -> (conf index, generation) -> descriptor
	errs  []string
}

// descAt is where a descriptor stands in its shard's history.
type descAt struct{ conf, gen uint64 }

func (a descAt) compare(b descAt) int {
	if c := cmp.Compare(a.conf, b.conf); c != 0 {
		return c
	}
	return cmp.Compare(a.gen, b.gen)
}

func newDescHistory() *descHistory {
	return &descHistory{descs: map[uint64]map[descAt]storage.Descriptor{}}
}

// observeAll records the descriptors of every replica on every running node.
func (h *descHistory) observeAll(ctx context.Context, c *testcluster.Cluster) {
	c.EachStatus(ctx, h.observe)
}

// observe records the descriptor of node's replica st.
func (h *descHistory) observe(node uint64, st engine.ShardStatus) {
	if !st.Initialized {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d := st.Desc
	if rep, ok := d.ReplicaOfNode(node); ok && rep.ReplicaID != st.ReplicaID {
		h.errs = append(h.errs, fmt.Sprintf("node %d's replica of shard %d is replica %d, its descriptor says %d: %v", node, st.ShardID, st.ReplicaID, rep.ReplicaID, d))
	}
	byIndex := h.descs[st.ShardID]
	if byIndex == nil {
		byIndex = map[descAt]storage.Descriptor{}
		h.descs[st.ShardID] = byIndex
	}
	at := descAt{d.ConfIndex, d.Generation}
	if prev, ok := byIndex[at]; !ok {
		byIndex[at] = d.Clone()
	} else if !prev.Equal(d) || prev.Start != d.Start || prev.Last != d.Last {
		h.errs = append(h.errs, fmt.Sprintf("shard %d: two descriptors at conf index %d, generation %d: %v and (node %d) %v", st.ShardID, d.ConfIndex, d.Generation, prev, node, d))
	}
}

// check returns every violation seen, and a count of the descriptors and
// incarnations (replicas of a node after the first) checked.
func (h *descHistory) check() (errs []string, descs, incarnations int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	errs = slices.Clone(h.errs)
	for shard, byIndex := range h.descs {
		indexes := make([]descAt, 0, len(byIndex))
		for i := range byIndex {
			indexes = append(indexes, i)
		}
		slices.SortFunc(indexes, descAt.compare)
		descs += len(indexes)
		nodeOf := map[uint64]uint64{}  // replica ID -> node
		current := map[uint64]uint64{} // node -> replica ID in the previous descriptor (0: none)
		highest := map[uint64]uint64{} // node -> highest replica ID it had
		var next uint64
		for _, ci := range indexes {
			d := byIndex[ci]
			if d.NextReplicaID < next {
				errs = append(errs, fmt.Sprintf("shard %d: NextReplicaID went back from %d to %d at conf index %d", shard, next, d.NextReplicaID, ci))
			}
			next = d.NextReplicaID
			now := map[uint64]uint64{}
			for _, r := range d.Replicas {
				now[r.NodeID] = r.ReplicaID
				if n, ok := nodeOf[r.ReplicaID]; ok && n != r.NodeID {
					errs = append(errs, fmt.Sprintf("shard %d: replica ID %d on node %d and, at conf index %d, on node %d", shard, r.ReplicaID, n, ci, r.NodeID))
				}
				nodeOf[r.ReplicaID] = r.NodeID
				if r.ReplicaID != current[r.NodeID] {
					if r.ReplicaID <= highest[r.NodeID] {
						errs = append(errs, fmt.Sprintf("shard %d: node %d came back at conf index %d as replica %d, not above its earlier replica %d",
							shard, r.NodeID, ci, r.ReplicaID, highest[r.NodeID]))
					}
					if highest[r.NodeID] != 0 {
						incarnations++
					}
					highest[r.NodeID] = max(highest[r.NodeID], r.ReplicaID)
				}
			}
			current = now
		}
	}
	return errs, descs, incarnations
}
