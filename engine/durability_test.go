package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/group"
	"github.com/flotilla-db/flotilla/heartbeat"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
	"go.etcd.io/raft/v3/raftpb"
)

// TestDurability checks raft's durability contract where the engine keeps
// it, on the send path, under a write load with leader transfers. A hook on
// every node's transport (testcluster.Config.OnSend), run by the sending
// goroutine, takes what the disks would hold after a crash at that instant
// (testcluster.CrashImage), which a checker goroutine then reads with
// package storage:
//
//	(a) a follower acknowledges only what is durable: a MsgAppResp (not a
//	    rejection) with index i finds the sender's durable log holding i,
//	    with the term of the leader's entry at i (known from the leader's
//	    MsgApps of the same term, when they carried i);
//	(b) a vote is durable before it is sent or counted: a granted
//	    MsgVoteResp finds the sender's durable HardState at the message's
//	    term with the vote for the candidate, and a leader's MsgApp finds a
//	    quorum of the nodes' durable votes for it in its term (a candidate
//	    counts its own vote only once durable; its MsgVote requests, and a
//	    new leader's first appends, may go before its new term is written,
//	    as raft's asynchronous storage mode sends them);
//	(c) a leader advertises only a commit index that a quorum's disks hold:
//	    a MsgApp or heartbeat with commit c finds the durable logs of 2 of
//	    the 3 nodes holding c. Heartbeats are checked both uncoalesced and
//	    coalesced (the node-level message of shard 0 is decoded); a
//	    coalesced one leaves from the tick loop some time after its worker
//	    made it, which can only make its check easier to pass.
//
// (d) At random moments of the load, after the writes acknowledged so far
// are recorded, crash images of all three nodes are taken: each of those
// writes is in the durable log or state machine of 2 of the 3 images.
//
// Reading an image opens a Pebble store, which is slow under the race
// detector: the hook checks the first sends of each kind, then a sample, as
// many as the checker keeps up with. Breaking the contract in the engine
// fails the test within its first checks: sending a pass's messages before
// its batch is synced (a, b and c), syncing a pass only if it appends
// entries (b: votes), not syncing a leader's own appends (c).
func TestDurability(t *testing.T) {
	for _, mode := range []string{"async", "sync-in-worker"} {
		for _, seed := range chaosSeeds(t, []uint64{1}) {
			t.Run(fmt.Sprintf("%s/seed=%d", mode, seed), func(t *testing.T) { runDurability(t, seed, mode == "sync-in-worker") })
		}
	}
}

// Sampling of the checks at send time: the first ...First sends holding a
// message of a kind are checked, the sending worker waiting for the checker
// if it is behind; then one in ...Every, unless the checker is behind.
const (
	durAckFirst, durAckEvery       = 40, 4
	durVoteFirst, durVoteEvery     = 16, 1
	durCommitFirst, durCommitEvery = 12, 8
)

func runDurability(t *testing.T, seed uint64, syncInWorker bool) {
	rng := rand.New(rand.NewPCG(seed, 10))
	chk := newDurabilityChecker()
	t.Cleanup(chk.stop) // after the cluster has closed (cleanups run last first)
	c := newCluster(t, testcluster.Config{Nodes: 3, Seed: int64(seed), OnSend: chk.onSend, Engine: func(cfg *engine.Config) {
		cfg.SyncInWorker = syncInWorker
		cfg.LogTruncateEntries = 50 // truncation points move under the checks too
		// Small memtables: the stores flush and switch WALs often, and a
		// crash image opens fast (its short WAL is all it replays).
		cfg.MemTableBytes = 64 << 10
	}})
	chk.c.Store(c)
	ctx := ctxT(t, 60*time.Second)
	lctx, stopLoad := context.WithCancel(ctx)
	descs := testcluster.EvenDescriptors(1, 3)
	if err := c.CreateShards(ctx, descs, c.IDs()); err != nil {
		t.Fatal(err)
	}
	// An election timeout of 30ms: the checker's first jobs hold the
	// workers for a while, which a faster clock turns into elections.
	c.RunClock(3 * time.Millisecond)
	rt := newRouter(c, descs)

	var (
		mu    sync.Mutex // guards acked
		acked []durWrite
		wg    sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; lctx.Err() == nil; n++ {
				key := fmt.Sprintf("w%d-k%d", w, n)
				shard := rt.shardOf([]byte(key))
				if _, err := c.Propose(lctx, shard, engine.PutCommand([]byte(key), []byte(key+"-v"))); err != nil {
					return // the load or the test ends
				}
				mu.Lock()
				acked = append(acked, durWrite{key: key, shard: shard})
				mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() { stopLoad(); wg.Wait() }) // before the cluster closes
	ackedNow := func() []durWrite {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(acked)
	}

	// The moments: after a random number of further acknowledgements; a
	// leader transfer between two moments brings more elections.
	const moments = 6
	var images []durMoment
	next := 0
	for i := 0; i < moments; i++ {
		next += 30 + rng.IntN(90)
		if err := c.WaitFor(ctx, "acknowledged writes", func() bool { return len(ackedNow()) >= next }); err != nil {
			t.Fatal(err)
		}
		m := durMoment{acked: ackedNow()}
		for _, id := range c.IDs() {
			m.images = append(m.images, c.CrashImage(id))
		}
		images = append(images, m)
		shard := descs[rng.IntN(len(descs))].ShardID
		if l := c.Leader(ctx, shard); l != 0 {
			target := 1 + (l+1+rng.Uint64N(2))%3 // one of the other two
			tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := c.Engine(l).TransferLeader(tctx, shard, target); err != nil {
				t.Logf("transfer shard %d from node %d to %d: %v", shard, l, target, err)
			}
			cancel()
		}
	}
	stopLoad()
	wg.Wait()
	chk.stop()
	if ctx.Err() != nil {
		t.Fatalf("the test ran out of time: %v", ctx.Err())
	}

	chk.report(t)
	for i, m := range images {
		checkMoment(t, i, m)
	}
	all := ackedNow()
	t.Logf("seed %d: %d writes acknowledged, %d checked in %d sets of crash images; at send: %s",
		seed, len(all), len(images[len(images)-1].acked), len(images), chk.summary())
}

// durWrite is one acknowledged put: key -> key+"-v".
type durWrite struct {
	key   string
	shard uint64
}

// durMoment is the crash images of every node, taken after the writes in
// acked were acknowledged.
type durMoment struct {
	acked  []durWrite
	images []*vfs.MemFS // of nodes 1, 2, 3
}

// Kinds of messages the hook checks.
const (
	durAck    = iota // MsgAppResp, not a rejection
	durVote          // MsgVote, MsgVoteResp
	durCommit        // MsgApp, MsgHeartbeat with a commit index
	durKinds
)

var durKindNames = [durKinds]string{"acknowledgements", "votes", "commit indexes"}

// sentMsg is one raft message a node sent: a worker's, or a Beat of a
// coalesced heartbeat expanded.
type sentMsg struct {
	shardID uint64
	m       raftpb.Message
	// want is the term of the leader's entry at the index the message
	// acknowledges (durAck) or advertises as committed (durCommit), if a
	// MsgApp of the leader's term carried it; else 0.
	want uint64
}

func (s *sentMsg) kind() int {
	switch t := s.m.Type; {
	case t == raftpb.MsgAppResp && !s.m.Reject:
		return durAck
	case t == raftpb.MsgVote || t == raftpb.MsgVoteResp:
		return durVote
	case (t == raftpb.MsgApp || t == raftpb.MsgHeartbeat) && s.m.Commit > 0:
		return durCommit
	}
	return -1
}

func (s *sentMsg) String() string {
	m := &s.m
	str := fmt.Sprintf("%v from replica %d to %d, term %d", m.Type, m.From, m.To, m.Term)
	switch m.Type {
	case raftpb.MsgApp:
		str += fmt.Sprintf(", index %d, log term %d, %d entries, commit %d", m.Index, m.LogTerm, len(m.Entries), m.Commit)
	case raftpb.MsgAppResp:
		str += fmt.Sprintf(", index %d, reject %v", m.Index, m.Reject)
	case raftpb.MsgHeartbeat:
		str += fmt.Sprintf(", commit %d", m.Commit)
	case raftpb.MsgVoteResp:
		str += fmt.Sprintf(", reject %v", m.Reject)
	}
	return str
}

// termKey is an index of a shard's log as the leader of term sent it.
type termKey struct{ shardID, term, index uint64 }

// durabilityChecker is the OnSend hook. At a send it picks, it takes the
// crash images it needs (the sender's; every node's for a commit index) and
// hands them to a checker goroutine: taking an image is quick and holds the
// sending worker for as long, opening one is slow (a Pebble store), and is
// done off the workers' path, one job at a time.
type durabilityChecker struct {
	c    atomic.Pointer[testcluster.Cluster]
	jobs chan durJob
	done chan struct{} // closed when the checker goroutine has returned

	stopMu  sync.RWMutex // held (read) while a job is queued; stop takes it to close jobs
	stopped bool         // guarded by stopMu

	mu         sync.Mutex // guards the fields below
	terms      map[termKey]uint64
	seen       [durKinds]int              // sends holding a message of the kind
	checked    [durKinds]int              // of which checked
	msgs       map[raftpb.MessageType]int // messages checked, by type
	withTerm   [2]int                     // acknowledgements, commit indexes checked against a known term
	violations []durViolation
}

// durJob is the check of one send.
type durJob struct {
	from, to uint64
	sent     []sentMsg
	images   map[uint64]*vfs.MemFS // the sender's, or every node's
	quorum   bool                  // check the commit indexes (every node's image)
}

type durViolation struct{ rule, msg string }

func newDurabilityChecker() *durabilityChecker {
	d := &durabilityChecker{
		terms: make(map[termKey]uint64),
		msgs:  make(map[raftpb.MessageType]int),
		jobs:  make(chan durJob, 8),
		done:  make(chan struct{}),
	}
	go d.run()
	return d
}

// stop makes the hook ignore further sends and waits for the queued checks.
func (d *durabilityChecker) stop() {
	d.stopMu.Lock()
	if !d.stopped {
		d.stopped = true
		close(d.jobs)
	}
	d.stopMu.Unlock()
	<-d.done
}

// fail records a violation of rule (a, b or c of TestDurability's doc;
// "" for an error of the check itself).
func (d *durabilityChecker) fail(rule, format string, args ...any) {
	d.mu.Lock()
	d.failLocked(rule, format, args...)
	d.mu.Unlock()
}

func (d *durabilityChecker) failLocked(rule, format string, args ...any) {
	d.violations = append(d.violations, durViolation{rule, fmt.Sprintf(format, args...)})
}

// onSend implements testcluster.Config.OnSend.
func (d *durabilityChecker) onSend(from, to uint64, msgs []engine.Message) {
	c := d.c.Load()
	if c == nil {
		return
	}
	var sent []sentMsg
	for _, m := range msgs {
		if m.ShardID != 0 {
			sent = append(sent, sentMsg{shardID: m.ShardID, m: m.Msg})
			continue
		}
		beats, err := heartbeat.DecodeBatch(nil, m.Msg.Context)
		if err != nil {
			d.fail("", "node %d sent node %d a heartbeat batch that does not decode: %v", from, to, err)
			return
		}
		for _, b := range beats {
			sent = append(sent, sentMsg{shardID: b.ShardID, m: b.Message()})
		}
	}
	check, quorum, must := d.sample(sent)
	if !check {
		return
	}
	d.stopMu.RLock()
	defer d.stopMu.RUnlock()
	if d.stopped {
		return
	}
	job := durJob{from: from, to: to, sent: sent, images: map[uint64]*vfs.MemFS{}, quorum: quorum}
	job.images[from] = c.CrashImage(from) // first: the state the messages leave in
	if quorum {
		for _, id := range c.IDs() {
			if id != from {
				job.images[id] = c.CrashImage(id)
			}
		}
	}
	if must {
		d.jobs <- job
		return
	}
	select {
	case d.jobs <- job:
	default: // the checker is behind: skip this sample
	}
}

// sample records the terms of the leaders' entries that the messages carry,
// looks up the terms the checks want, and decides whether this send is
// checked (on every node's image for its commit indexes: quorum), and
// whether the check must not be skipped even if the checker is behind.
func (d *durabilityChecker) sample(sent []sentMsg) (check, quorum, must bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var has [durKinds]bool
	for i := range sent {
		s := &sent[i]
		if m := &s.m; m.Type == raftpb.MsgApp {
			d.recordTerm(termKey{s.shardID, m.Term, m.Index}, m.LogTerm)
			for _, e := range m.Entries {
				d.recordTerm(termKey{s.shardID, m.Term, e.Index}, e.Term)
			}
		}
		switch k := s.kind(); k {
		case durAck:
			s.want = d.terms[termKey{s.shardID, s.m.Term, s.m.Index}]
			has[k] = true
		case durCommit:
			s.want = d.terms[termKey{s.shardID, s.m.Term, s.m.Commit}]
			has[k] = true
		case durVote:
			has[k] = true
		}
	}
	first := [durKinds]int{durAckFirst, durVoteFirst, durCommitFirst}
	every := [durKinds]int{durAckEvery, durVoteEvery, durCommitEvery}
	for k := range has {
		if !has[k] {
			continue
		}
		d.seen[k]++
		pick := d.seen[k]%every[k] == 0
		if d.seen[k] <= first[k] {
			pick, must = true, true
		}
		check = check || pick
		if k == durCommit {
			quorum = pick
		}
	}
	return check, quorum, must
}

// run checks the queued jobs until stop.
func (d *durabilityChecker) run() {
	defer close(d.done)
	for job := range d.jobs {
		d.check(job)
	}
}

// check opens a job's images and checks its messages.
func (d *durabilityChecker) check(job durJob) {
	imgs := make(map[uint64]*diskImage, len(job.images))
	for id, fs := range job.images {
		img, err := openImage(fs)
		if err != nil {
			d.fail("", "node %d's crash image does not open: %v", id, err)
			return
		}
		defer img.close()
		imgs[id] = img
	}
	var has [durKinds]bool
	for i := range job.sent {
		s := &job.sent[i]
		k := s.kind()
		d.checkSent(imgs[job.from], job.from, job.to, s)
		if k == durCommit && job.quorum {
			d.checkQuorum(imgs, job.from, job.to, s)
		}
		if k < 0 || (k == durCommit && !job.quorum) {
			continue
		}
		has[k] = true
		d.mu.Lock()
		d.msgs[s.m.Type]++
		if s.want != 0 && k == durAck {
			d.withTerm[0]++
		} else if s.want != 0 && k == durCommit {
			d.withTerm[1]++
		}
		d.mu.Unlock()
	}
	d.mu.Lock()
	for k := range has {
		if has[k] {
			d.checked[k]++
		}
	}
	d.mu.Unlock()
}

// recordTerm records the leader's term at an index; locked.
func (d *durabilityChecker) recordTerm(k termKey, term uint64) {
	if k.index == 0 {
		return
	}
	if old, ok := d.terms[k]; ok && old != term {
		d.failLocked("", "shard %d: the leader of term %d sent entry %d with term %d, and before with term %d",
			k.shardID, k.term, k.index, term, old)
	}
	d.terms[k] = term
}

// checkSent checks (a) and (b) for one message against the sender's disk.
func (d *durabilityChecker) checkSent(img *diskImage, from, to uint64, s *sentMsg) {
	m := &s.m
	if m.Term == 0 || m.Type == raftpb.MsgPreVote || m.Type == raftpb.MsgPreVoteResp {
		return // a pre-vote's term is the one its campaign would take, not persisted
	}
	l, err := img.log(s.shardID)
	if err != nil {
		d.fail("", "shard %d: node %d's crash image: %v", s.shardID, from, err)
		return
	}
	hs := l.HardState()
	where := func() string {
		first, _ := l.FirstIndex()
		last, _ := l.LastIndex()
		return fmt.Sprintf("durable: term %d, vote %d, commit %d, log %d..%d", hs.Term, hs.Vote, hs.Commit, first, last)
	}
	// A later term already durable supersedes a vote: the node votes no
	// more in the message's term.
	newTerm := hs.Term < m.Term
	ack := m.Type == raftpb.MsgAppResp && !m.Reject
	held, why := true, ""
	if ack {
		held, why = holds(l, m.Index, s.want)
	}
	switch {
	case ack && !held:
		d.fail("a", "shard %d: node %d acknowledged index %d to node %d before it was durable: %s; %s (%s)", s.shardID, from, m.Index, to, s, why, where())
	case m.Type == raftpb.MsgVoteResp && !m.Reject && (newTerm || hs.Term == m.Term && hs.Vote != m.To):
		d.fail("b", "shard %d: node %d granted its vote to node %d before the vote was durable: %s (%s)", s.shardID, from, to, s, where())
	}
	// Other messages promise nothing about the sender's disk: raft's
	// asynchronous storage mode sends vote requests, and a new leader's
	// appends, while the sender's new term (and its vote for itself) are
	// being written; what must hold is that the votes that made a leader
	// are durable (checkQuorum, for the MsgApps it checks).
}

// checkQuorum checks (c) for one message: a quorum's disks hold the commit
// index it advertises.
func (d *durabilityChecker) checkQuorum(imgs map[uint64]*diskImage, from, to uint64, s *sentMsg) {
	c := s.m.Commit
	var (
		have []uint64
		not  []string
	)
	for _, id := range slices.Sorted(maps.Keys(imgs)) {
		l, err := imgs[id].log(s.shardID)
		if err != nil {
			d.fail("", "shard %d: node %d's crash image: %v", s.shardID, id, err)
			return
		}
		if ok, why := holds(l, c, s.want); ok {
			have = append(have, id)
		} else {
			not = append(not, fmt.Sprintf("node %d: %s", id, why))
		}
	}
	if len(have) < len(imgs)/2+1 {
		d.fail("c", "shard %d: node %d advertised commit index %d to node %d that only nodes %v hold durably: %s; %v",
			s.shardID, from, c, to, have, s, not)
	}
	if s.m.Type != raftpb.MsgApp {
		return
	}
	// (b) A leader's votes: a quorum of the nodes voted for it in its term,
	// durably (or moved on to a later term, durably, which they reach only
	// after that vote).
	var voted []uint64
	for _, id := range slices.Sorted(maps.Keys(imgs)) {
		l, err := imgs[id].log(s.shardID)
		if err != nil {
			return
		}
		if hs := l.HardState(); hs.Term > s.m.Term || hs.Term == s.m.Term && hs.Vote == s.m.From {
			voted = append(voted, id)
		}
	}
	if len(voted) < len(imgs)/2+1 {
		d.fail("b", "shard %d: node %d leads term %d with the durable votes of nodes %v only: %s", s.shardID, from, s.m.Term, voted, s)
	}
}

// holds reports whether l (read from a crash image) holds index i: in its
// log, with term want if want is not 0, or below its truncation point (then
// applied: in the state machine, or in the snapshot it was installed from).
func holds(l *storage.Log, i, want uint64) (bool, string) {
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	switch {
	case i < first:
		return true, ""
	case i > last:
		return false, fmt.Sprintf("its durable log ends at %d", last)
	}
	term, err := l.Term(i)
	switch {
	case err != nil:
		return false, fmt.Sprintf("its durable entry %d does not read: %v", i, err)
	case want != 0 && term != want:
		return false, fmt.Sprintf("its durable entry %d has term %d, the leader's has term %d", i, term, want)
	}
	return true, ""
}

func (d *durabilityChecker) summary() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s string
	for k := 0; k < durKinds; k++ {
		s += fmt.Sprintf("%s in %d of %d sends, ", durKindNames[k], d.checked[k], d.seen[k])
	}
	s += fmt.Sprintf("%d acknowledgements and %d commit indexes against the leader's term; messages checked:", d.withTerm[0], d.withTerm[1])
	for _, t := range slices.Sorted(maps.Keys(d.msgs)) {
		s += fmt.Sprintf(" %d %v", d.msgs[t], t)
	}
	return s
}

// report fails t with the violations found, and if the checks saw too
// little to mean anything.
func (d *durabilityChecker) report(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	count := map[string]int{}
	for i, v := range d.violations {
		count[v.rule]++
		if i < 10 {
			t.Errorf("(%s) %s", v.rule, v.msg)
		}
	}
	if len(d.violations) > 0 {
		t.Errorf("%d violations: (a) %d, (b) %d, (c) %d, other %d", len(d.violations), count["a"], count["b"], count["c"], count[""])
	}
	if min := [durKinds]int{durAckFirst, 8, durCommitFirst}; d.checked[durAck] < min[durAck] || d.checked[durVote] < min[durVote] || d.checked[durCommit] < min[durCommit] {
		t.Errorf("checked too few sends: %v of %v at least", d.checked, min)
	}
}

// checkMoment checks (d): every write acknowledged before m's images were
// taken is in the durable log or state machine of a quorum of them.
func checkMoment(t *testing.T, i int, m durMoment) {
	t.Helper()
	present := make([][]uint64, len(m.acked)) // nodes holding each write
	hash := engine.DefaultConfig(1, 1, "x").PartitionRule.Hash
	for n, fs := range m.images {
		id := uint64(n + 1)
		img, err := openImage(fs)
		if err != nil {
			t.Fatalf("images %d: node %d's does not open: %v", i, id, err)
		}
		cmds := map[uint64]map[string]bool{} // shard -> commands in its durable log
		for j, w := range m.acked {
			l, err := img.log(w.shard)
			if err != nil {
				t.Fatalf("images %d: node %d: %v", i, id, err)
			}
			if cmds[w.shard] == nil {
				cmds[w.shard] = logCommands(t, l)
			}
			value := w.key + "-v"
			if cmds[w.shard][string(engine.PutCommand([]byte(w.key), []byte(value)))] {
				present[j] = append(present[j], id)
				continue
			}
			desc, ok := l.Descriptor()
			if !ok {
				continue
			}
			v, closer, err := img.s.DB().Get(desc.DataKey(hash([]byte(w.key)), []byte(w.key)))
			if err == nil {
				if string(v) == value {
					present[j] = append(present[j], id)
				}
				closer.Close()
			} else if !errors.Is(err, pebble.ErrNotFound) {
				t.Fatalf("images %d: node %d: get %q: %v", i, id, w.key, err)
			}
		}
		img.close()
	}
	quorum := len(m.images)/2 + 1
	lost := 0
	for j, w := range m.acked {
		if len(present[j]) < quorum {
			if lost++; lost <= 3 {
				t.Errorf("(d) images %d: write %q (shard %d), acknowledged before they were taken, is durable on nodes %v only, not on %d of %d",
					i, w.key, w.shard, present[j], quorum, len(m.images))
			}
		}
	}
	if lost > 0 {
		t.Errorf("(d) images %d: %d of %d acknowledged writes not durable on a quorum", i, lost, len(m.acked))
	}
}

// logCommands returns the commands of the entries in l's durable log.
func logCommands(t *testing.T, l *storage.Log) map[string]bool {
	out := map[string]bool{}
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if last < first {
		return out
	}
	ents, err := l.Entries(first, last+1, ^uint64(0))
	if err != nil {
		t.Fatalf("shard %d: entries %d..%d: %v", l.ShardID(), first, last, err)
	}
	for _, e := range ents {
		if e.Type != raftpb.EntryNormal {
			continue
		}
		if _, cmd, err := group.DecodeEntry(e.Data); err == nil && cmd != nil {
			out[string(cmd)] = true
		}
	}
	return out
}

// diskImage is a crash image of a node's disk, opened read-only.
type diskImage struct {
	s    *storage.Store
	logs map[uint64]*storage.Log
}

func openImage(fs *vfs.MemFS) (*diskImage, error) {
	s, err := storage.Open(storage.Config{
		Dir: "/data", FS: fs, ReadOnly: true,
		CacheBytes: 1 << 20, MemTableBytes: 4 << 20,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	return &diskImage{s: s, logs: map[uint64]*storage.Log{}}, nil
}

func (im *diskImage) log(shardID uint64) (*storage.Log, error) {
	if l := im.logs[shardID]; l != nil {
		return l, nil
	}
	l, err := im.s.OpenLog(shardID)
	if err != nil {
		return nil, err
	}
	im.logs[shardID] = l
	return l, nil
}

func (im *diskImage) close() { _ = im.s.Close() }
