package storage

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

func openMem(t *testing.T, fs vfs.FS) *Store {
	t.Helper()
	s, err := Open(Config{Dir: "/db", FS: fs, EntryCacheEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ents(term uint64, from, to uint64) []raftpb.Entry {
	var out []raftpb.Entry
	for i := from; i <= to; i++ {
		out = append(out, raftpb.Entry{Index: i, Term: term, Data: []byte(fmt.Sprintf("e%d-%d", term, i))})
	}
	return out
}

func commit(t *testing.T, b *Batch) {
	t.Helper()
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	b.Reset()
}

func TestKeyOrder(t *testing.T) {
	ordered := [][]byte{
		identKey, tombstoneKey(1), tombstoneKey(2),
		raftKey(1, raftConf), raftKey(1, raftDesc), raftKey(1, raftHard),
		logKey(1, 0), logKey(1, 1), logKey(1, 256), logKey(1, ^uint64(0)), raftKey(1, raftTrunc),
		raftPrefix(2), DataKey(0, nil), DataKey(0, []byte("a")), DataKey(1, nil), DataKey(^uint64(0), []byte("z")),
	}
	for i := 1; i < len(ordered); i++ {
		if bytes.Compare(ordered[i-1], ordered[i]) >= 0 {
			t.Fatalf("%s !< %s", DescribeKey(ordered[i-1]), DescribeKey(ordered[i]))
		}
	}
	s1, e1 := raftSpan(1)
	if bytes.Compare(logKey(1, ^uint64(0)), e1) >= 0 || bytes.Compare(s1, raftKey(1, raftConf)) > 0 {
		t.Fatal("raft span does not cover shard 1")
	}
	ds, de := DataSpan(5, ^uint64(0))
	if bytes.Compare(DataKey(5, nil), ds) < 0 || bytes.Compare(DataKey(^uint64(0), []byte("zz")), de) >= 0 {
		t.Fatal("data span")
	}
	h, k, ok := DecodeDataKey(DataKey(42, []byte("key")))
	if !ok || h != 42 || string(k) != "key" {
		t.Fatal("DecodeDataKey")
	}
}

func TestLogAppendTermEntriesConflict(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	l, err := s.CreateShard(withReplicas(Descriptor{ShardID: 7, Last: ^uint64(0)}, []uint64{1, 2, 3}, nil), 1)
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	if err := l.Append(b, ents(6, 11, 20)); err != nil {
		t.Fatal(err)
	}
	commit(t, b)
	if fi, _ := l.FirstIndex(); fi != InitialIndex+1 {
		t.Fatalf("first %d", fi)
	}
	if li, _ := l.LastIndex(); li != 20 {
		t.Fatalf("last %d", li)
	}
	if _, err := l.Term(9); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("term 9: %v", err)
	}
	if tm, _ := l.Term(10); tm != InitialTerm {
		t.Fatalf("term 10: %d", tm)
	}
	// 11..16 come from Pebble (the cache holds 4), 17..20 from the cache.
	got, err := l.Entries(11, 21, 1<<30)
	if err != nil || len(got) != 10 || got[0].Index != 11 || got[9].Index != 20 {
		t.Fatalf("entries: %v %v", got, err)
	}
	if got, _ := l.Entries(11, 21, 1); len(got) != 1 {
		t.Fatalf("maxSize: %d entries", len(got))
	}
	// A conflicting append from a new leader replaces 15..20 by 15..16.
	if err := l.Append(b, ents(7, 15, 16)); err != nil {
		t.Fatal(err)
	}
	commit(t, b)
	if li, _ := l.LastIndex(); li != 16 {
		t.Fatalf("last after conflict %d", li)
	}
	if tm, _ := l.Term(16); tm != 7 {
		t.Fatalf("term 16 = %d", tm)
	}
	if _, err := l.Entries(11, 18, 1<<30); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("beyond last: %v", err)
	}
	// Reopen: the same log, from Pebble alone.
	l2, err := s.OpenLog(7)
	if err != nil {
		t.Fatal(err)
	}
	if li, _ := l2.LastIndex(); li != 16 {
		t.Fatalf("reopened last %d", li)
	}
	got, err = l2.Entries(11, 17, 1<<30)
	if err != nil || len(got) != 6 || got[5].Term != 7 || got[3].Term != 6 {
		t.Fatalf("reopened entries %v %v", got, err)
	}
	// Truncation.
	l.SetApplied(b, 14, 6)
	if err := l.Truncate(b, 16); err == nil {
		t.Fatal("truncate above applied")
	}
	if err := l.Truncate(b, 13); err != nil {
		t.Fatal(err)
	}
	commit(t, b)
	if fi, _ := l.FirstIndex(); fi != 14 {
		t.Fatalf("first after truncate %d", fi)
	}
	if _, err := l.Entries(12, 14, 100); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("compacted: %v", err)
	}
	l3, err := s.OpenLog(7)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := l3.FirstIndex(); fi != 14 {
		t.Fatalf("reopened first %d", fi)
	}
	if tm, _ := l3.Term(13); tm != 6 {
		t.Fatalf("truncated term %d", tm)
	}
	if a, _ := l3.Applied(); a != 14 {
		t.Fatalf("applied %d", a)
	}
}

func TestCreateListDestroyTombstone(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	for _, id := range []uint64{3, 1, 2} {
		if _, err := s.CreateShard(withReplicas(Descriptor{ShardID: id, Start: id * 100, Last: id*100 + 99}, []uint64{1}, nil), 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateShard(withReplicas(Descriptor{ShardID: 2, Start: 200, Last: 299}, []uint64{1}, nil), 1); !errors.Is(err, ErrShardExists) {
		t.Fatalf("twice: %v", err)
	}
	ids, err := s.ShardIDs()
	if err != nil || fmt.Sprint(ids) != "[1 2 3]" {
		t.Fatalf("ids %v %v", ids, err)
	}
	d := Descriptor{ShardID: 2, Start: 200, Last: 299}
	if err := s.DB().Set(DataKey(250, []byte("k")), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := s.DestroyReplica(2, &d, 5); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.get(DataKey(250, []byte("k"))); v != nil {
		t.Fatal("data survived destroy")
	}
	ids, _ = s.ShardIDs()
	if fmt.Sprint(ids) != "[1 3]" {
		t.Fatalf("after destroy %v", ids)
	}
	if l, err := s.OpenLog(2); err != nil || l.Initialized() || l.ReplicaID() != 0 {
		t.Fatalf("open destroyed: %v", err)
	}
	// The tombstone refuses replica IDs below 5, and allows 5 and above: a
	// node added back to a shard comes back under a fresh ID.
	if _, err := s.CreateShard(withReplicas(d, []uint64{1}, nil), 1); !errors.Is(err, ErrTombstoned) {
		t.Fatalf("create tombstoned: %v", err)
	}
	if ts, _ := s.Tombstones(); fmt.Sprint(ts) != "map[2:5]" {
		t.Fatalf("tombstones %v", ts)
	}
	again := Descriptor{ShardID: 2, Start: 200, Last: 299, NextReplicaID: 6, Replicas: []Replica{{NodeID: 1, ReplicaID: 5, Role: RoleVoter}}}
	if _, err := s.CreateShard(again, 5); err != nil {
		t.Fatalf("create with a fresh replica ID: %v", err)
	}
}

func TestIdent(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	if _, ok, _ := s.Ident(); ok {
		t.Fatal("fresh store has ident")
	}
	if err := s.EnsureIdent(Ident{ClusterID: 9, NodeID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureIdent(Ident{ClusterID: 9, NodeID: 2}); !errors.Is(err, ErrIdentMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
}

// TestSnapshotRoundTrip streams a shard from one store into another that
// already holds stale data and log of the shard, and checks that the new
// state replaces the old exactly, also across a crash right after.
func TestSnapshotRoundTrip(t *testing.T) {
	src := openMem(t, vfs.NewMem())
	defer src.Close()
	desc := Descriptor{ShardID: 4, Start: 1000, Last: 1999}
	for i := 0; i < 3000; i++ {
		h := uint64(900 + i%1200) // some outside the range
		if err := src.DB().Set(DataKey(h, []byte(fmt.Sprintf("k%05d", i))), bytes.Repeat([]byte{byte(i)}, 100), nil); err != nil {
			t.Fatal(err)
		}
	}
	fs := vfs.NewCrashableMem()
	dst := openMem(t, fs)
	l, err := dst.CreateShard(withReplicas(desc, []uint64{1, 2}, nil), 1)
	if err != nil {
		t.Fatal(err)
	}
	b := dst.NewBatch()
	if err := l.Append(b, ents(6, 11, 30)); err != nil {
		t.Fatal(err)
	}
	b.Pebble().Set(DataKey(1500, []byte("stale")), []byte("x"), nil)
	b.Pebble().Set(DataKey(2500, []byte("other-shard")), []byte("y"), nil)
	commit(t, b)

	st, chunks, _ := transferSnapshot(t, src, dst, desc, 4096)
	if chunks < 10 {
		t.Fatalf("only %d chunks", chunks)
	}
	snap := raftpb.Snapshot{Data: desc.Marshal(), Metadata: raftpb.SnapshotMetadata{Index: 50, Term: 8, ConfState: raftpb.ConfState{Voters: []uint64{1, 2, 3}}}}
	if err := l.ApplySnapshot(st, snap, raftpb.HardState{Term: 8, Vote: 2, Commit: 50}); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, l *Log) {
		t.Helper()
		if fi, _ := l.FirstIndex(); fi != 51 {
			t.Fatalf("first %d", fi)
		}
		if li, _ := l.LastIndex(); li != 50 {
			t.Fatalf("last %d", li)
		}
		if a, at := l.Applied(); a != 50 || at != 8 {
			t.Fatalf("applied %d %d", a, at)
		}
		if cs := l.ConfState(); len(cs.Voters) != 3 {
			t.Fatalf("confstate %v", cs)
		}
		if v, _ := s.get(DataKey(1500, []byte("stale"))); v != nil {
			t.Fatal("stale key survived the snapshot")
		}
		if v, _ := s.get(DataKey(2500, []byte("other-shard"))); v == nil {
			t.Fatal("snapshot deleted another shard's key")
		}
		if v, _ := s.get(logKey(4, 20)); v != nil {
			t.Fatal("old log entry survived")
		}
		n := 0
		start, end := DataSpan(desc.Start, desc.Last)
		it, _ := s.DB().NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
		for it.First(); it.Valid(); it.Next() {
			n++
		}
		it.Close()
		if n != 2500 {
			t.Fatalf("%d keys in range, want 2500", n)
		}
	}
	check(dst, l)
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	dst.Close()
	re, err := Open(Config{Dir: "/db", FS: crashed})
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	l2, err := re.OpenLog(4)
	if err != nil {
		t.Fatal(err)
	}
	check(re, l2)
}

func TestStagedSnapshotRejectsBadChunks(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	desc := Descriptor{ShardID: 1, Start: 10, Last: 20}
	cases := map[string][]byte{
		"truncated": {0x05, 'a'},
		"outside":   chunkOf(DataKey(30, []byte("k")), []byte("v")),
		"order":     append(chunkOf(DataKey(15, []byte("b")), nil), chunkOf(DataKey(15, []byte("a")), nil)...),
	}
	for name, c := range cases {
		st, err := s.StageSnapshot(desc)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Write(c); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v", name, err)
		}
		st.Abort()
	}
}

func chunkOf(k, v []byte) []byte {
	var b []byte
	b = appendUvarint(b, len(k))
	b = append(b, k...)
	b = appendUvarint(b, len(v))
	return append(b, v...)
}

func appendUvarint(b []byte, n int) []byte {
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

// TestTruncateInSameBatch truncates at an applied entry appended in the same,
// uncommitted batch and already out of the (tiny) entry cache.
func TestTruncateInSameBatch(t *testing.T) {
	s, err := Open(Config{Dir: "/db", FS: vfs.NewMem(), EntryCacheEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := s.CreateShard(withReplicas(Descriptor{ShardID: 1, Last: ^uint64(0)}, []uint64{1}, nil), 1)
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	if err := l.Append(b, ents(6, 11, 15)); err != nil {
		t.Fatal(err)
	}
	l.SetApplied(b, 14, 6)
	if err := l.Truncate(b, 14); err != nil {
		t.Fatal(err)
	}
	commit(t, b)
	if fi, _ := l.FirstIndex(); fi != 15 {
		t.Fatalf("first index %d", fi)
	}
	if tm, _ := l.Term(14); tm != 6 {
		t.Fatalf("term at truncation %d", tm)
	}
}

func TestDumpReadOnly(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs)
	l, err := s.CreateShard(withReplicas(Descriptor{ShardID: 3, Start: 5, Last: 9}, []uint64{1, 2}, []uint64{4}), 1)
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	if err := l.Append(b, ents(6, 11, 13)); err != nil {
		t.Fatal(err)
	}
	commit(t, b)
	s.Close()
	ro, err := Open(Config{Dir: "/db", FS: fs, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	dump, err := ro.Dump()
	if err != nil || len(dump) != 1 {
		t.Fatalf("dump %v %v", dump, err)
	}
	d := dump[0]
	if d.ShardID != 3 || !d.Initialized || d.Desc.Last != 9 || d.FirstIndex != InitialIndex+1 || d.LastIndex != 13 ||
		d.Applied != InitialIndex || len(d.ConfState.Voters) != 2 || len(d.ConfState.Learners) != 1 {
		t.Fatalf("dump %+v", d)
	}
	if _, err := Open(Config{Dir: "/nothing", FS: fs, ReadOnly: true}); err == nil {
		t.Fatal("read-only open of a missing store succeeded")
	}
}

// withReplicas returns d with the replicas of a new shard whose first
// members are voters and learners (replica IDs 1, 2, ...).
func withReplicas(d Descriptor, voters, learners []uint64) Descriptor {
	n := NewDescriptor(d.ShardID, d.Start, d.Last, d.Generation, voters, learners)
	return n
}

// TestOldStoreFormatRefused: a store written before format version 2 (no
// version record, node IDs as raft IDs) is refused with a clear error and
// left as it was; a new store is stamped with the version and reopens.
func TestOldStoreFormatRefused(t *testing.T) {
	fs := vfs.NewMem()
	db, err := pebble.Open("/old", &pebble.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(identKey, make([]byte, 16), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Config{Dir: "/old", FS: fs})
	if !errors.Is(err, ErrStoreVersion) || !strings.Contains(err.Error(), "empty data directory") {
		t.Fatalf("old store: %v", err)
	}
	s := openMem(t, fs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, fs)
	if v, _ := s.get(versionKey); len(v) != 8 || v[7] != FormatVersion {
		t.Fatalf("version record %x", v)
	}
	s.Close()
	// A store of a later format is refused too.
	db, err = pebble.Open("/db", &pebble.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(versionKey, []byte{0, 0, 0, 0, 0, 0, 0, 9}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(Config{Dir: "/db", FS: fs}); !errors.Is(err, ErrStoreVersion) {
		t.Fatalf("newer store: %v", err)
	}
}
