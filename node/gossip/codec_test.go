package gossip

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func fullMeta() Meta {
	return Meta{
		NodeID:          math.MaxUint64,
		ClusterID:       0xC0FFEE,
		Instance:        1 << 63,
		RaftAddr:        "10.1.2.3:7000",
		ClientAddr:      "[::1]:7001",
		HTTPAddr:        "",
		BootstrapExpect: 3,
		InitialShards:   -1, // not meaningful, but representable
		Replication:     math.MaxInt32,
		Bootstrap:       []uint64{1, 2, math.MaxUint64},
		Replicas:        math.MaxUint32,
		Leaders:         7,
	}
}

func TestMetaRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		m     Meta
		flags uint64
	}{
		{Meta{NodeID: 1}, 0},
		{testMeta(3), metaFlagLeaving},
		{fullMeta(), 0},
		{Meta{NodeID: 5, Bootstrap: []uint64{}}, 0}, // empty decodes as nil
	} {
		b, err := encodeMeta(tc.m, tc.flags)
		if err != nil {
			t.Fatal(err)
		}
		got, flags, err := decodeMeta(b)
		if err != nil || flags != tc.flags || !got.Equal(tc.m) {
			t.Fatalf("round trip of %+v: %+v %#x %v", tc.m, got, flags, err)
		}
		if len(tc.m.Bootstrap) == 0 && got.Bootstrap != nil {
			t.Fatalf("empty Bootstrap decoded as %#v", got.Bootstrap)
		}
	}
}

func TestMetaDecodeRejects(t *testing.T) {
	good, err := encodeMeta(fullMeta(), 0)
	if err != nil {
		t.Fatal(err)
	}
	minimal, _ := encodeMeta(Meta{NodeID: 1}, 0)
	cases := map[string][]byte{
		"empty":          nil,
		"version":        append([]byte{2}, good[1:]...),
		"truncated":      good[:len(good)-1],
		"trailing":       append(slices.Clone(good), 0),
		"unknown flag":   append([]byte{metaVersion, 2}, minimal[2:]...),
		"node 0":         {metaVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"string too big": {metaVersion, 0, 1, 0, 0, 0x7f, 'a'},
		"bootstrap huge": {metaVersion, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1},
		"uint32 overflow": {metaVersion, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			0x80, 0x80, 0x80, 0x80, 0x10, 0},
		"varint overflow": {metaVersion, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, b := range cases {
		if m, _, err := decodeMeta(b); !errors.Is(err, ErrMalformedMeta) {
			t.Errorf("%s: decoded %+v, %v", name, m, err)
		}
	}
}

func TestPackLeaders(t *testing.T) {
	var us []LeaderUpdate
	for s := uint64(1); s <= 2000; s++ {
		us = append(us, LeaderUpdate{ShardID: s * 1000003, Leader: s % 7, Term: s * s})
	}
	us = append(us, LeaderUpdate{ShardID: math.MaxUint64, Leader: math.MaxUint64, Term: math.MaxUint64})
	var got []LeaderUpdate
	msgs := 0
	for rest := us; len(rest) > 0; {
		msg, n := packLeaders(rest, maxLeaderMsgSize)
		if n == 0 || len(msg) > maxLeaderMsgSize {
			t.Fatalf("packed %d updates in %d bytes", n, len(msg))
		}
		if len(rest) > n && len(msg)+leaderEntrySize(rest[n])+1 <= maxLeaderMsgSize-1 {
			t.Fatalf("message of %d bytes left room for the next update", len(msg))
		}
		var err error
		if got, err = decodeLeaders(got, msg); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
		msgs++
	}
	if !slices.Equal(got, us) {
		t.Fatal("updates lost or changed in packing")
	}
	t.Logf("%d updates in %d messages", len(us), msgs)
	if _, n := packLeaders(us, minLeaderEntrySize); n != 0 {
		t.Fatalf("packed %d updates in %d bytes", n, minLeaderEntrySize)
	}
}

func TestDecodeLeadersRejects(t *testing.T) {
	good, _ := packLeaders([]LeaderUpdate{{ShardID: 1, Leader: 2, Term: 3}, {ShardID: 300, Term: 1}}, 100)
	for name, b := range map[string][]byte{
		"empty":     nil,
		"type":      {'X', leadersVersion, 1, 1, 1, 1},
		"version":   {msgTypeLeaders, 2, 1, 1, 1, 1},
		"count 0":   {msgTypeLeaders, leadersVersion, 0},
		"shard 0":   {msgTypeLeaders, leadersVersion, 1, 0, 1, 1},
		"count big": {msgTypeLeaders, leadersVersion, 2, 1, 1, 1},
		"truncated": good[:len(good)-1],
		"trailing":  append(slices.Clone(good), 1),
	} {
		if us, err := decodeLeaders([]LeaderUpdate{{ShardID: 9}}, b); !errors.Is(err, ErrMalformedMessage) || len(us) != 1 {
			t.Errorf("%s: %v %v", name, us, err)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []Meta{{NodeID: 1}, testMeta(2), fullMeta()} {
		b, err := encodeMeta(m, 0)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	leaving, _ := encodeMeta(testMeta(4), metaFlagLeaving)
	f.Add(leaving)
	f.Add([]byte{})
	f.Add([]byte{metaVersion})
	f.Add([]byte{metaVersion, 0, 1, 0, 0, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, flags, err := decodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedMeta) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Whatever decodes re-encodes (it came in within the size limit,
		// and canonical varints are never longer) and decodes the same.
		enc, err := encodeMeta(m, flags)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", m, err)
		}
		if len(enc) > len(b) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(b), len(enc))
		}
		m2, flags2, err := decodeMeta(enc)
		if err != nil || flags2 != flags || !m2.Equal(m) {
			t.Fatalf("round trip: %+v %#x -> %+v %#x %v", m, flags, m2, flags2, err)
		}
	})
}

func FuzzDecodeLeaders(f *testing.F) {
	for _, us := range [][]LeaderUpdate{
		{{ShardID: 1, Leader: 2, Term: 3}},
		{{ShardID: 1, Leader: 0, Term: 0}, {ShardID: 1 << 20, Leader: 5, Term: 1 << 40}},
		{{ShardID: math.MaxUint64, Leader: math.MaxUint64, Term: math.MaxUint64}},
	} {
		msg, _ := packLeaders(us, maxLeaderMsgSize)
		f.Add(msg)
	}
	f.Add([]byte{})
	f.Add([]byte{msgTypeLeaders, leadersVersion, 0})
	f.Add([]byte{msgTypeLeaders, leadersVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		us, err := decodeLeaders(nil, b)
		if err != nil {
			if !errors.Is(err, ErrMalformedMessage) || len(us) != 0 {
				t.Fatalf("error %v with %d updates", err, len(us))
			}
			return
		}
		if len(us) == 0 || len(us) > len(b)/minLeaderEntrySize {
			t.Fatalf("%d updates from %d bytes", len(us), len(b))
		}
		msg, n := packLeaders(us, len(b))
		if n != len(us) {
			t.Fatalf("re-packed %d of %d updates in %d bytes", n, len(us), len(b))
		}
		again, err := decodeLeaders(nil, msg)
		if err != nil || !slices.Equal(again, us) {
			t.Fatalf("round trip: %v %v", again, err)
		}
	})
}
