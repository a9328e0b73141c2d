package meta

import (
	"context"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// scaleShards is the size of TestScale: FLOTILLA_META_SHARDS if set, else
// 100,000, or 10,000 with -short or the race detector (scripts/test.sh
// runs the 100,000 without it; with it they take some 90 s on 2 cores).
func scaleShards(t *testing.T) int {
	if v := os.Getenv("FLOTILLA_META_SHARDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("FLOTILLA_META_SHARDS=%q", v)
		}
		return n
	}
	if testing.Short() || raceEnabled {
		return 10_000
	}
	return 100_000
}

// TestScale creates the records of a cluster of 100,000 shards in the meta
// shard, reads them back, updates every one (a replica move each) and
// follows both with a watcher. Not a timed test: it logs how long each
// step takes. Its size: scaleShards.
func TestScale(t *testing.T) {
	n := scaleShards(t)
	s, _ := newStore(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	step := func(what string, start time.Time) {
		t.Logf("%d shards: %s in %v", n, what, time.Since(start).Round(time.Millisecond))
	}

	start := time.Now()
	c := ClusterRecord{ClusterID: 1, Bootstrap: []uint64{1, 2, 3, 4, 5}, InitialShards: n, Replication: 3}
	if err := s.Bootstrap(ctx, c); err != nil {
		t.Fatal(err)
	}
	h, _ := s.Header(ctx, Local)
	step("bootstrap records written in "+strconv.FormatUint(h.Version, 10)+" batches", start)

	start = time.Now()
	w := NewWatcher(s)
	u, _, err := w.Poll(ctx)
	if err != nil || !u.Full || len(u.Shards) != n || u.Ring == nil || u.Ring.Len() != n {
		t.Fatalf("first poll: full %v, %d records, ring %v, %v", u.Full, len(u.Shards), u.Ring != nil, err)
	}
	step("watcher's first poll (full read, ring built)", start)

	start = time.Now()
	recs, h, err := s.Shards(ctx, Linearizable)
	if err != nil || len(recs) != n || h.Shards != n {
		t.Fatalf("%d records, header %+v, %v", len(recs), h, err)
	}
	step("linearizable Shards", start)

	// Move one replica of every shard: node k -> node k+5.
	for i := range recs {
		r := &recs[i]
		r.ConfIndex += 2
		r.Replicas[0] = Replica{NodeID: r.Replicas[0].NodeID + 5, ReplicaID: r.NextReplicaID, Role: RoleVoter}
		r.NextReplicaID++
	}
	start = time.Now()
	if err := s.PutShards(ctx, recs); err != nil {
		t.Fatal(err)
	}
	after, _ := s.Header(ctx, Local)
	step("every record updated in "+strconv.FormatUint(after.Version-h.Version, 10)+" batches", start)
	if after.Generation != h.Generation || after.Shards != n {
		t.Fatalf("a replica move changed the ring: %+v -> %+v", h, after)
	}

	start = time.Now()
	u, _, err = w.Poll(ctx)
	if err != nil || len(u.Shards) != n || u.Ring != nil {
		t.Fatalf("poll after the updates: %d records, ring %v, %v", len(u.Shards), u.Ring != nil, err)
	}
	for i, r := range u.Shards {
		if !r.Equal(recs[i]) {
			t.Fatalf("record %d: %+v, want %+v", i, r, recs[i])
		}
	}
	step("watcher's poll of every record changed (a full read)", start)

	// A few changes are read from the change entries.
	few := recs[n/2 : n/2+10]
	for i := range few {
		few[i].ConfIndex++
	}
	if err := s.PutShards(ctx, few); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	u, _, err = w.Poll(ctx)
	if err != nil || u.Full || len(u.Shards) != len(few) || !u.Shards[0].Equal(few[0]) {
		t.Fatalf("poll after 10 changes: full %v, %d records, %v", u.Full, len(u.Shards), err)
	}
	step("watcher's poll of 10 changes (change entries)", start)
	after, _ = s.Header(ctx, Local)

	start = time.Now()
	if _, changed, err := w.Poll(ctx); err != nil || changed {
		t.Fatalf("idle poll: %v, %v", changed, err)
	}
	step("idle poll", start)
	start = time.Now()
	if err := s.PutShards(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Header(ctx, Local); !reflect.DeepEqual(again, after) {
		t.Fatalf("writing the same records again wrote: %+v -> %+v", after, again)
	}
	step("the same records again (no-op)", start)

	// The placement driver's intents: a few hundred among the shard
	// records, read through their index, and for comparison by a scan of
	// their prefix, which walks the whole meta shard.
	const intents = 300
	start = time.Now()
	for i := range uint64(intents) {
		id := i*uint64(n)/intents + 1
		if err := s.PutIntent(ctx, id, intent(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	step(strconv.Itoa(intents)+" intents written", start)
	start = time.Now()
	if got, err := s.Intents(ctx, Linearizable); err != nil || len(got) != intents {
		t.Fatalf("%d intents, %v", len(got), err)
	}
	step(strconv.Itoa(intents)+" intents read through their index", start)
	start = time.Now()
	scanned := 0
	if err := s.scan(ctx, IntentPrefix, Linearizable, func(key, value []byte) error { scanned++; return nil }); err != nil || scanned != intents {
		t.Fatalf("%d intent records scanned, %v", scanned, err)
	}
	step(strconv.Itoa(intents)+" intents read by a scan of their prefix (for comparison)", start)
}
