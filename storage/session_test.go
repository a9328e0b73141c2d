package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

func TestSessionKeys(t *testing.T) {
	ordered := [][]byte{
		raftKey(1, raftTrunc), raftKey(^uint64(0), raftTrunc),
		SessionHeaderKey(1, 0), SessionResultKey(1, 0, 0), SessionResultKey(1, 0, ^uint64(0)),
		SessionHeaderKey(1, 5), SessionResultKey(1, 5, 7), SessionHeaderKey(1, ^uint64(0)),
		SessionHeaderKey(2, 0), SessionHeaderKey(^uint64(0), 3),
		DataKey(0, nil), Descriptor{ShardID: SystemShardBase}.DataKey(0, nil),
	}
	for i := 1; i < len(ordered); i++ {
		if bytes.Compare(ordered[i-1], ordered[i]) >= 0 {
			t.Fatalf("%s !< %s", DescribeKey(ordered[i-1]), DescribeKey(ordered[i]))
		}
	}
	for _, id := range []uint64{1, ^uint64(0)} {
		start, end := SessionSpan(id)
		for _, k := range ordered {
			sk, ok := DecodeSessionKey(k)
			in := bytes.Compare(k, start) >= 0 && bytes.Compare(k, end) < 0
			if in != (ok && sk.ShardID == id) {
				t.Errorf("shard %d span [%x, %x) and %s: in %v", id, start, end, DescribeKey(k), in)
			}
		}
	}
	for _, c := range []struct {
		key  []byte
		want SessionKey
		desc string
	}{
		{SessionHeaderKey(3, 9), SessionKey{ShardID: 3, SessionID: 9}, "/shard/3/session/9"},
		{SessionResultKey(3, 9, 4), SessionKey{ShardID: 3, SessionID: 9, Result: true, Seq: 4}, "/shard/3/session/9/result/4"},
	} {
		if sk, ok := DecodeSessionKey(c.key); !ok || sk != c.want {
			t.Errorf("decode %x: %+v %v", c.key, sk, ok)
		}
		if d := DescribeKey(c.key); d != c.desc {
			t.Errorf("describe %x: %s", c.key, d)
		}
	}
	for _, k := range [][]byte{DataKey(1, nil), raftKey(1, raftHard), SessionHeaderKey(1, 2)[:18], append(SessionHeaderKey(1, 2), 0)} {
		if sk, ok := DecodeSessionKey(k); ok {
			t.Errorf("%x decoded as %+v", k, sk)
		}
	}
}

func TestSessionHeaderEncoding(t *testing.T) {
	for _, h := range []SessionHeader{
		{},
		{Watermark: 3, LastUsed: -1},
		{Watermark: 3, LastUsed: 1e18, Results: []uint64{3, 4, 90}},
	} {
		got, err := UnmarshalSessionHeader(h.Append(nil), nil)
		if err != nil || got.Watermark != h.Watermark || got.LastUsed != h.LastUsed || !slices.Equal(got.Results, h.Results) {
			t.Errorf("%+v: %+v %v", h, got, err)
		}
	}
	for name, b := range map[string][]byte{
		"short":     make([]byte, 15),
		"ragged":    make([]byte, 17),
		"below":     binary.BigEndian.AppendUint64(SessionHeader{Watermark: 5}.Append(nil), 4),
		"unordered": binary.BigEndian.AppendUint64(SessionHeader{Results: []uint64{2}}.Append(nil), 2),
	} {
		if _, err := UnmarshalSessionHeader(b, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzUnmarshalSessionHeader: headers are read from disk and arrive in
// snapshots.
func FuzzUnmarshalSessionHeader(f *testing.F) {
	f.Add(SessionHeader{Watermark: 1, LastUsed: 2, Results: []uint64{3}}.Append(nil))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := UnmarshalSessionHeader(b, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if !bytes.Equal(h.Append(nil), b) {
			t.Fatalf("round trip of %x: %+v", b, h)
		}
	})
}

// transferSnapshot streams desc's shard from src into a snapshot staged
// (and finished) on dst, and returns it with the number of chunks and the
// first key sent.
func transferSnapshot(t *testing.T, src, dst *Store, desc Descriptor, chunkSize int) (st *StagedSnapshot, chunks int, firstKey []byte) {
	t.Helper()
	source, err := src.NewSnapshotSource(desc, chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	if st, err = dst.StageSnapshot(desc); err != nil {
		t.Fatal(err)
	}
	for {
		c, err := source.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if chunks == 0 {
			firstKey, _, _ = cutLengthPrefixed(c)
			firstKey = bytes.Clone(firstKey)
		}
		if err := st.Write(c); err != nil {
			t.Fatal(err)
		}
		chunks++
	}
	if err := st.Finish(); err != nil {
		t.Fatal(err)
	}
	return st, chunks, firstKey
}

type kvPair struct{ k, v string }

// spanContents lists the keys and values of [start, end).
func spanContents(t *testing.T, s *Store, start, end []byte) []kvPair {
	t.Helper()
	it, err := s.DB().NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []kvPair
	for it.First(); it.Valid(); it.Next() {
		out = append(out, kvPair{string(it.Key()), string(it.Value())})
	}
	return out
}

// putSessions writes n sessions of shardID, each with a header and two
// results, tagged so that two stores' records differ.
func putSessions(t *testing.T, s *Store, shardID uint64, n int, tag string) {
	t.Helper()
	b := s.DB().NewBatch()
	for id := uint64(1); id <= uint64(n); id++ {
		h := SessionHeader{Watermark: 10, LastUsed: int64(id), Results: []uint64{10, 12}}
		b.Set(SessionHeaderKey(shardID, id), h.Append(nil), nil)
		for _, seq := range h.Results {
			b.Set(SessionResultKey(shardID, id, seq), []byte(fmt.Sprintf("%s-%d-%d", tag, id, seq)), nil)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotCarriesSessions streams a shard with sessions into a store
// that holds stale sessions of the same shard and live ones of another: the
// shard's sessions are replaced exactly, the other shard's are untouched.
func TestSnapshotCarriesSessions(t *testing.T) {
	src := openMem(t, vfs.NewMem())
	defer src.Close()
	desc := Descriptor{ShardID: 4, Start: 1000, Last: 1999}
	putSessions(t, src, 4, 200, "src")
	putSessions(t, src, 5, 3, "src-other") // another shard's: not sent
	for i := 0; i < 100; i++ {
		if err := src.DB().Set(DataKey(1000+uint64(i), []byte("k")), []byte("v"), nil); err != nil {
			t.Fatal(err)
		}
	}
	dst := openMem(t, vfs.NewMem())
	defer dst.Close()
	l, err := dst.CreateShard(withReplicas(desc, []uint64{1}, nil), 1)
	if err != nil {
		t.Fatal(err)
	}
	putSessions(t, dst, 4, 300, "stale") // more sessions than the source: some only here
	putSessions(t, dst, 5, 2, "dst-other")
	otherBefore := spanContents(t, dst, SessionHeaderKey(5, 0), SessionHeaderKey(6, 0))

	st, _, firstKey := transferSnapshot(t, src, dst, desc, 512)
	if _, ok := DecodeSessionKey(firstKey); !ok {
		t.Fatalf("first key of the stream is %s, not a session", DescribeKey(firstKey))
	}
	if want := uint64(200*3 + 100); st.Keys != want {
		t.Fatalf("%d keys staged, want %d", st.Keys, want)
	}
	snap := raftpb.Snapshot{Data: desc.Marshal(), Metadata: raftpb.SnapshotMetadata{Index: 50, Term: 8, ConfState: raftpb.ConfState{Voters: []uint64{1}}}}
	if err := l.ApplySnapshot(st, snap, raftpb.HardState{Term: 8, Commit: 50}); err != nil {
		t.Fatal(err)
	}
	ss, se := SessionSpan(4)
	if got, want := spanContents(t, dst, ss, se), spanContents(t, src, ss, se); !slices.Equal(got, want) {
		t.Fatalf("sessions after the snapshot: %d records, want the source's %d", len(got), len(want))
	}
	if got := spanContents(t, dst, SessionHeaderKey(5, 0), SessionHeaderKey(6, 0)); !slices.Equal(got, otherBefore) {
		t.Fatalf("another shard's sessions changed: %d records, had %d", len(got), len(otherBefore))
	}
	ds, de := desc.DataSpan()
	if n := len(spanContents(t, dst, ds, de)); n != 100 {
		t.Fatalf("%d data keys, want 100", n)
	}
}

func TestStagedSnapshotSessionKeys(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	desc := Descriptor{ShardID: 2, Start: 10, Last: 20}
	for name, c := range map[string]struct {
		chunk []byte
		ok    bool
	}{
		"session then data": {append(chunkOf(SessionHeaderKey(2, 1), nil), chunkOf(DataKey(15, []byte("a")), nil)...), true},
		"data then session": {append(chunkOf(DataKey(15, []byte("a")), nil), chunkOf(SessionHeaderKey(2, 1), nil)...), false},
		"other shard":       {chunkOf(SessionHeaderKey(3, 1), nil), false},
		"raft key":          {chunkOf(raftKey(2, raftHard), nil), false},
	} {
		st, err := s.StageSnapshot(desc)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Write(c.chunk); (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrBadSnapshot)) {
			t.Errorf("%s: %v", name, err)
		}
		st.Abort()
	}
}

func TestDestroyReplicaClearsSessions(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	for _, id := range []uint64{1, 2, 3} {
		if _, err := s.CreateShard(withReplicas(Descriptor{ShardID: id, Start: id * 100, Last: id*100 + 99}, []uint64{1}, nil), 1); err != nil {
			t.Fatal(err)
		}
		putSessions(t, s, id, 4, "x")
	}
	d := Descriptor{ShardID: 2, Start: 200, Last: 299}
	if err := s.DestroyReplica(2, &d, 2); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{1, 2, 3} {
		start, end := SessionSpan(id)
		n, want := len(spanContents(t, s, start, end)), 4*3
		if id == 2 {
			want = 0
		}
		if n != want {
			t.Errorf("shard %d: %d session records, want %d", id, n, want)
		}
	}
}
