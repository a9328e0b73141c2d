package splitter

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeMeta hands out IDs from 100 up and keeps the records written.
type fakeMeta struct {
	mu       sync.Mutex
	next     uint64
	allocErr error
	written  [][]nodemeta.ShardRecord
}

func (m *fakeMeta) AllocateShardID(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.allocErr != nil {
		return 0, m.allocErr
	}
	m.next++
	return 99 + m.next, nil
}

func (m *fakeMeta) PutShards(_ context.Context, recs []nodemeta.ShardRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.written = append(m.written, slices.Clone(recs))
	return nil
}

// splitCluster starts three nodes with shard 1 over the whole hash space
// on all of them, and returns the cluster and shard 1's leader.
func splitCluster(t *testing.T, ctx context.Context) (*testcluster.Cluster, uint64) {
	t.Helper()
	c := testcluster.New(t, testcluster.Config{Nodes: 3})
	c.RunClock(2 * time.Millisecond)
	desc := storage.Descriptor{ShardID: 1, Start: 0, Last: ^uint64(0), Generation: 1}
	if err := c.CreateShards(ctx, []storage.Descriptor{desc}, c.IDs()); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitLeaders(ctx, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	return c, c.Leader(ctx, 1)
}

func newSplitter(t *testing.T, c *testcluster.Cluster, node uint64, m Meta) *Splitter {
	t.Helper()
	e := c.Engine(node)
	s, err := New(Config{NodeID: node, DB: e.Store().DB(), Logger: slog.New(slog.DiscardHandler)}, e, m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSplit: a split on the leader, by the median of the data or at a
// given point, with the child's ID from the meta shard and both records
// written in one batch; then the refusals, each with its typed error and
// nothing split.
func TestSplit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, leader := splitCluster(t, ctx)
	m := &fakeMeta{}
	s := newSplitter(t, c, leader, m)
	// Rows at the low end of the range: the median is there, not the
	// middle.
	for i := range 9 {
		if _, err := c.Engine(leader).Propose(ctx, 1, engine.PutCommand([]byte{byte('a' + i)}, []byte("v"))); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Split(ctx, Request{ShardID: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, ch := res.Parent, res.Child
	if ch.ShardID != 100 || p.Last+1 != ch.Start || p.Start != 0 || ch.Last != ^uint64(0) || p.Generation != 2 || ch.Generation != 2 {
		t.Fatalf("split: parent %v, child %v", p, ch)
	}
	if res.Point != PointMedian {
		t.Fatalf("point %s at %016x", res.Point, ch.Start)
	}
	if len(m.written) != 1 || len(m.written[0]) != 2 || !m.written[0][0].Equal(nodemeta.RecordOf(p)) || !m.written[0][1].Equal(nodemeta.RecordOf(ch)) {
		t.Fatalf("records written: %+v", m.written)
	}
	// The child's replica is here, led soon by this node, which campaigns.
	if err := c.WaitFor(ctx, "the child's leader", func() bool { return c.Leader(ctx, 100) != 0 }); err != nil {
		t.Fatal(err)
	}
	s = newSplitter(t, c, c.Leader(ctx, 100), m)
	at := ch.Start + (ch.Last-ch.Start)/4
	res, err = s.Split(ctx, Request{ShardID: 100, At: at, Generation: 2})
	if err != nil || res.Point != PointGiven || res.Child.Start != at || res.Child.ShardID != 101 || res.Parent.Last != at-1 {
		t.Fatalf("split at %016x: %+v, %v", at, res, err)
	}

	// Refusals.
	s = newSplitter(t, c, leader, m)
	follower := c.IDs()[0]
	if follower == leader {
		follower = c.IDs()[1]
	}
	var (
		stale *engine.StaleGenerationError
		nl    *engine.NotLeaderError
		pe    *PointError
	)
	for _, tc := range []struct {
		name string
		s    *Splitter
		req  Request
		ok   func(error) bool
	}{
		{"unknown shard", s, Request{ShardID: 77}, func(err error) bool { return errors.Is(err, engine.ErrShardNotFound) }},
		{"system shard", s, Request{ShardID: storage.SystemShardBase}, func(err error) bool { return errors.Is(err, ErrSystemShard) }},
		{"stale generation", s, Request{ShardID: 1, Generation: 1}, func(err error) bool {
			return errors.As(err, &stale) && stale.Generation == 2 && stale.Last == p.Last
		}},
		{"past the last hash", s, Request{ShardID: 1, At: p.Last + 1}, func(err error) bool {
			return errors.As(err, &pe) && errors.Is(err, ErrOutOfRange) && pe.Last == p.Last && pe.Generation == 2
		}},
		{"not the leader", newSplitter(t, c, follower, m), Request{ShardID: 1}, func(err error) bool {
			return errors.As(err, &nl) && nl.Leader == leader
		}},
	} {
		if _, err := tc.s.Split(ctx, tc.req); !tc.ok(err) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	m.allocErr = errors.New("no meta leader")
	if _, err := s.Split(ctx, Request{ShardID: 1}); !errors.Is(err, ErrMetaUnavailable) || !errors.Is(err, m.allocErr) {
		t.Errorf("meta unavailable: %v", err)
	}
	m.allocErr = nil

	// A joint configuration: node 3's voter being demoted.
	demote := c.IDs()[2]
	if demote == leader {
		demote = c.IDs()[1]
	}
	err = c.Engine(leader).ChangeReplicasWith(ctx, engine.ChangeRequest{ShardID: 1, Explicit: true,
		Changes: []engine.ReplicaChange{{Type: engine.AddLearner, NodeID: demote}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Split(ctx, Request{ShardID: 1}); !errors.Is(err, ErrJointConfig) {
		t.Errorf("joint configuration: %v", err)
	}
	st, err := c.Engine(leader).Status(ctx, 1)
	if err != nil || st.Desc.Generation != 2 || st.Desc.Last != p.Last {
		t.Fatalf("shard 1 after the refusals: %v, %v", st.Desc, err)
	}
	if len(m.written) != 2 {
		t.Fatalf("records written by refused splits: %+v", m.written[2:])
	}
}

// TestCheck: the refusals before anything is asked of the meta shard.
func TestCheck(t *testing.T) {
	d := storage.Descriptor{ShardID: 4, Start: 100, Last: 200, Generation: 3, Replicas: []storage.Replica{
		{NodeID: 1, ReplicaID: 1, Role: storage.RoleVoter}, {NodeID: 2, ReplicaID: 4, Role: storage.RoleLearner}}}
	joint := d.Clone()
	joint.Replicas[1].Role = storage.RoleVoterIncoming
	one := d.Clone()
	one.Last = one.Start
	for _, tc := range []struct {
		name string
		d    storage.Descriptor
		req  Request
		want error // nil: accepted
	}{
		{"point chosen", d, Request{ShardID: 4}, nil},
		{"generation given", d, Request{ShardID: 4, Generation: 3}, nil},
		{"the last hash", d, Request{ShardID: 4, At: 200}, nil},
		{"the hash after the first", d, Request{ShardID: 4, At: 101}, nil},
		{"the first hash", d, Request{ShardID: 4, At: 100}, ErrOutOfRange},
		{"below the range", d, Request{ShardID: 4, At: 50}, ErrOutOfRange},
		{"above the range", d, Request{ShardID: 4, At: 201}, ErrOutOfRange},
		{"a range of one hash", one, Request{ShardID: 4}, ErrOutOfRange},
		{"stale generation", d, Request{ShardID: 4, Generation: 2, At: 500}, engine.ErrStaleGeneration},
		{"joint", joint, Request{ShardID: 4}, ErrJointConfig},
	} {
		if err := check(tc.d, tc.req); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
