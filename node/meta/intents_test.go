package meta

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/engine"
)

// countingEngine counts the proposals made through it.
type countingEngine struct {
	Engine
	proposals atomic.Int64
}

func (e *countingEngine) Propose(ctx context.Context, shardID uint64, cmd []byte) ([]byte, error) {
	e.proposals.Add(1)
	return e.Engine.Propose(ctx, shardID, cmd)
}

// intent is a JSON value of an intent, told apart by n.
func intent(shardID uint64, n int) []byte {
	return fmt.Appendf(nil, `{"op":{"shard_id":%d},"learners":[%d]}`, shardID, n)
}

// show formats intents by shard ID.
func show(m map[uint64][]byte) string {
	var b []byte
	for _, id := range slices.Sorted(maps.Keys(m)) {
		b = fmt.Appendf(b, "%d:%s ", id, m[id])
	}
	return string(b)
}

// checkIntents fails unless the store's intents are want, both through the
// index (Intents, either consistency) and in a scan of every intent record
// (no record the index does not list), and the index is sorted.
func checkIntents(t *testing.T, s *Store, want map[uint64][]byte) {
	t.Helper()
	ctx := context.Background()
	for _, c := range []Consistency{Linearizable, Local} {
		got, err := s.Intents(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Fatalf("intents (consistency %d): %s, want %s", c, show(got), show(want))
		}
	}
	scanned := map[uint64][]byte{}
	if err := s.scan(ctx, IntentPrefix, Local, func(key, value []byte) error {
		var id uint64
		if _, err := fmt.Sscanf(string(key), IntentPrefix+"%d", &id); err != nil || string(IntentKey(id)) != string(key) {
			return fmt.Errorf("intent key %q: %v", key, err)
		}
		scanned[id] = value
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(scanned, want, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("intent records: %s, want %s", show(scanned), show(want))
	}
	idx, _, _, err := getRecord[IntentIndex](ctx, s, []byte(KeyIntents), Local)
	if err != nil || !slices.IsSorted(idx.ShardIDs) || !slices.Equal(idx.ShardIDs, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("intent index %v, %v", idx.ShardIDs, err)
	}
}

// TestIntents: intents are put, replaced, listed and deleted, the index in
// step; writing what is there already (the same value, a delete of none)
// proposes nothing.
func TestIntents(t *testing.T) {
	s0, e := newStore(t, Config{})
	ce := &countingEngine{Engine: e}
	s, err := New(ce, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	checkIntents(t, s, map[uint64][]byte{})
	if err := s.DeleteIntent(ctx, 7); err != nil {
		t.Fatalf("deleting an intent that never was: %v", err)
	}
	want := map[uint64][]byte{}
	for _, id := range []uint64{12, 3, ShardID, 1 << 40} {
		want[id] = intent(id, 1)
		if err := s.PutIntent(ctx, id, want[id]); err != nil {
			t.Fatal(err)
		}
	}
	checkIntents(t, s, want)

	want[3] = intent(3, 2)
	if err := s.PutIntent(ctx, 3, want[3]); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, want)

	delete(want, 12)
	if err := s.DeleteIntent(ctx, 12); err != nil {
		t.Fatal(err)
	}
	checkIntents(t, s, want)

	before := ce.proposals.Load()
	if err := s.PutIntent(ctx, 3, intent(3, 2)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{12, 12, 99} {
		if err := s.DeleteIntent(ctx, id); err != nil {
			t.Fatalf("deleting the absent intent of shard %d: %v", id, err)
		}
	}
	if n := ce.proposals.Load() - before; n != 0 {
		t.Fatalf("writes of what was there already proposed %d commands", n)
	}
	checkIntents(t, s0, want)

	for _, id := range slices.Collect(maps.Keys(want)) {
		delete(want, id)
		if err := s.DeleteIntent(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	checkIntents(t, s, want)
}

// TestIntentsBadInput: shard ID 0 and values that are not JSON are refused
// and nothing is written.
func TestIntentsBadInput(t *testing.T) {
	s, _ := newStore(t, Config{MaxProposalBytes: 4 << 10})
	ctx := context.Background()
	for name, put := range map[string]func() error{
		"shard 0":     func() error { return s.PutIntent(ctx, 0, intent(0, 1)) },
		"nil value":   func() error { return s.PutIntent(ctx, 1, nil) },
		"empty":       func() error { return s.PutIntent(ctx, 1, []byte{}) },
		"not JSON":    func() error { return s.PutIntent(ctx, 1, []byte(`{"op":`)) },
		"del shard 0": func() error { return s.DeleteIntent(ctx, 0) },
	} {
		if err := put(); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: %v, want ErrBadRecord", name, err)
		}
	}
	big := fmt.Appendf(nil, `"%0*d"`, 8<<10, 0)
	if err := s.PutIntent(ctx, 1, big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("an intent larger than a proposal: %v", err)
	}
	checkIntents(t, s, map[uint64][]byte{})
}

// TestIntentsConcurrent: writers of different shards and of one shard race
// on the index and the records; none is lost, and the index lists exactly
// the shards left with a record.
func TestIntentsConcurrent(t *testing.T) {
	s, _ := newStore(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const shards = 10
	// Three writers of each shard's intent, with different values.
	concurrently(t, 3*shards, func(i uint64) error {
		return s.PutIntent(ctx, i%shards+1, intent(i%shards+1, int(i/shards)))
	})
	got, err := s.Intents(ctx, Linearizable)
	if err != nil || len(got) != shards {
		t.Fatalf("%d intents, %v", len(got), err)
	}
	// Two deleters of each even shard's, while the odd ones are replaced.
	concurrently(t, 2*shards, func(i uint64) error {
		id := i%shards + 1
		if id%2 == 0 {
			return s.DeleteIntent(ctx, id)
		}
		return s.PutIntent(ctx, id, intent(id, 10+int(i/shards)))
	})
	got, err = s.Intents(ctx, Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]byte{}
	for id := uint64(1); id <= shards; id += 2 {
		if v := string(got[id]); v != string(intent(id, 10)) && v != string(intent(id, 11)) {
			t.Fatalf("shard %d: intent %s, want one of the last writers'", id, v)
		}
		want[id] = got[id]
	}
	checkIntents(t, s, want)
}

// TestIntentsOnFollower: a node that does not lead the meta shard (a
// learner: it never can) can neither write nor delete an intent, nor read
// them linearizably; the engine refuses with a *NotLeaderError naming the
// leader, and nothing changes. It reads them from its own copy.
func TestIntentsOnFollower(t *testing.T) {
	c := newMetaCluster(t, 2)
	leader, err := New(c.Engine(1), Config{})
	if err != nil {
		t.Fatal(err)
	}
	follower, err := New(c.Engine(2), Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[uint64][]byte{5: intent(5, 1)}
	if err := leader.PutIntent(ctx, 5, want[5]); err != nil {
		t.Fatal(err)
	}
	// The learner names the leader once it has heard from it.
	if err := c.WaitFor(ctx, "the learner knows its leader", func() bool {
		st, err := c.Engine(2).Status(ctx, ShardID)
		return err == nil && st.Leader == 1
	}); err != nil {
		t.Fatal(err)
	}
	for name, write := range map[string]func() error{
		"put":     func() error { return follower.PutIntent(ctx, 6, intent(6, 1)) },
		"replace": func() error { return follower.PutIntent(ctx, 5, intent(5, 2)) },
		"delete":  func() error { return follower.DeleteIntent(ctx, 5) },
		"read":    func() error { _, err := follower.Intents(ctx, Linearizable); return err },
	} {
		var nl *engine.NotLeaderError
		if err := write(); !errors.As(err, &nl) || nl.ShardID != ShardID || nl.Leader != 1 {
			t.Errorf("%s on a follower: %v, want a *NotLeaderError naming node 1", name, err)
		}
	}
	checkIntents(t, leader, want)
	if err := c.WaitFor(ctx, "the intent on the learner", func() bool {
		got, err := follower.Intents(ctx, Local)
		return err == nil && string(got[5]) == string(want[5])
	}); err != nil {
		t.Fatal(err)
	}
}
