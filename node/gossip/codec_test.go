package gossip

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
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
		DiskUsed:        math.MaxUint64,
		DiskCapacity:    1 << 40,
		WriteRate:       12345,
	}
}

// encodeMetaV1 is the encoder of version 1, which older nodes run.
func encodeMetaV1(m Meta, flags uint64) []byte {
	b := []byte{metaVersion1}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, m.NodeID)
	b = binary.AppendUvarint(b, m.ClusterID)
	b = binary.AppendUvarint(b, m.Instance)
	for _, s := range []string{m.RaftAddr, m.ClientAddr, m.HTTPAddr} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, int64(m.BootstrapExpect))
	b = binary.AppendVarint(b, int64(m.InitialShards))
	b = binary.AppendVarint(b, int64(m.Replication))
	b = binary.AppendUvarint(b, uint64(len(m.Bootstrap)))
	for _, id := range m.Bootstrap {
		b = binary.AppendUvarint(b, id)
	}
	b = binary.AppendUvarint(b, uint64(m.Replicas))
	return binary.AppendUvarint(b, uint64(m.Leaders))
}

// field is a tagged field of version 2 and later, for hand-made input.
type field struct {
	tag uint64
	p   []byte
}

func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

// tagged encodes fields after a version byte, as given (in order, zero
// values and duplicates included).
func tagged(version byte, fields ...field) []byte {
	b := []byte{version}
	for _, f := range fields {
		b = binary.AppendUvarint(b, f.tag)
		b = binary.AppendUvarint(b, uint64(len(f.p)))
		b = append(b, f.p...)
	}
	return b
}

// metaCases are metas and flags to encode.
var metaCases = []struct {
	m     Meta
	flags uint64
}{
	{Meta{NodeID: 1}, 0},
	{testMeta(3), metaFlagLeaving},
	{fullMeta(), 0},
	{fullMeta(), metaFlagLeaving},
	{Meta{NodeID: 5, Bootstrap: []uint64{}}, 0}, // empty decodes as nil
	{Meta{NodeID: 6, BootstrapExpect: math.MinInt, InitialShards: math.MaxInt, Bootstrap: []uint64{0}}, 0},
}

func TestMetaRoundTrip(t *testing.T) {
	for _, tc := range metaCases {
		b, err := encodeMeta(tc.m, tc.flags)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != metaVersion {
			t.Fatalf("encoded as version %d", b[0])
		}
		got, flags, err := decodeMeta(b)
		if err != nil || flags != tc.flags || !got.Equal(tc.m) {
			t.Fatalf("round trip of %+v: %+v %#x %v", tc.m, got, flags, err)
		}
		if len(tc.m.Bootstrap) == 0 && got.Bootstrap != nil {
			t.Fatalf("empty Bootstrap decoded as %#v", got.Bootstrap)
		}
		// The leaving flag does not change the size (Leave relies on it).
		other, _ := encodeMeta(tc.m, tc.flags^metaFlagLeaving)
		if len(other) != len(b) {
			t.Fatalf("%d bytes with flags %#x, %d without", len(b), tc.flags, len(other))
		}
	}
}

// TestMetaSize: a meta with the longest fields a deployment plausibly has
// (host names of 64 bytes, seven bootstrap members, every number at its
// largest) fits memberlist's limit with room to spare.
func TestMetaSize(t *testing.T) {
	host := strings.Repeat("h", 58) + ":65535"
	m := fullMeta()
	m.ClusterID, m.Instance = math.MaxUint64, math.MaxUint64
	m.RaftAddr, m.ClientAddr, m.HTTPAddr = host, host, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
	m.BootstrapExpect, m.InitialShards, m.Replication = math.MaxInt, math.MaxInt, math.MaxInt
	m.Bootstrap = slices.Repeat([]uint64{math.MaxUint64}, 7)
	m.Leaders, m.DiskCapacity, m.WriteRate = math.MaxUint32, math.MaxUint64, math.MaxUint64
	b, err := encodeMeta(m, metaFlagLeaving)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("largest plausible meta: %d bytes (limit %d)", len(b), MaxMetaSize)
	if len(b) > MaxMetaSize-64 {
		t.Errorf("%d bytes leaves less than 64 of the %d for later fields", len(b), MaxMetaSize)
	}
}

// TestMetaDecodeV1: version 1, what older nodes advertise, still decodes
// (its load beyond replica and leader counts is zero).
func TestMetaDecodeV1(t *testing.T) {
	for _, tc := range metaCases {
		want := tc.m.Clone()
		want.DiskUsed, want.DiskCapacity, want.WriteRate = 0, 0, 0
		got, flags, err := decodeMeta(encodeMetaV1(tc.m, tc.flags))
		if err != nil || flags != tc.flags || !got.Equal(want) {
			t.Fatalf("version 1 of %+v: %+v %#x %v", want, got, flags, err)
		}
	}
}

// TestMetaDecodeNewer: a newer peer's meta (a later version, fields in
// another order, unknown tags and flags) decodes for what this version
// knows; an older version-2 peer's missing fields are zero.
func TestMetaDecodeNewer(t *testing.T) {
	want := Meta{NodeID: 7, RaftAddr: "10.0.0.7:7000", Bootstrap: []uint64{1, 300}, Replicas: 12, DiskUsed: 1 << 33}
	fields := []field{
		{metaTagDiskUsed, uv(1 << 33)},
		{metaTagEnd, []byte("a field of a later version")},
		{metaTagRaftAddr, []byte("10.0.0.7:7000")},
		{1 << 40, nil}, // even, however large
		{metaTagFlags, uv(metaFlagLeaving | 1<<9 | 1<<63)},
		{metaTagNodeID, uv(7)},
		{100, uv(math.MaxUint64)},
		{metaTagBootstrap, append(uv(1), uv(300)...)},
		{metaTagReplicas, uv(12)},
		{metaTagEnd, nil}, // unknown tags may repeat
	}
	for _, version := range []byte{metaVersion, 3, 255} {
		got, flags, err := decodeMeta(tagged(version, fields...))
		if err != nil || flags != metaFlagLeaving || !got.Equal(want) {
			t.Fatalf("version %d: %+v %#x %v", version, got, flags, err)
		}
	}
	// Zero values may be sent, or not.
	got, flags, err := decodeMeta(tagged(3, field{metaTagNodeID, uv(7)}, field{metaTagClusterID, uv(0)}, field{metaTagHTTPAddr, nil}))
	if err != nil || flags != 0 || !got.Equal(Meta{NodeID: 7}) {
		t.Fatalf("minimal: %+v %#x %v", got, flags, err)
	}
}

func TestMetaDecodeRejects(t *testing.T) {
	good, err := encodeMeta(fullMeta(), 0)
	if err != nil {
		t.Fatal(err)
	}
	goodV1 := encodeMetaV1(fullMeta(), 0)
	minimalV1 := encodeMetaV1(Meta{NodeID: 1}, 0)
	node := field{metaTagNodeID, uv(1)}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version 0", append([]byte{0}, good[1:]...)},
		{"too large", tagged(metaVersion, node, field{metaTagEnd, make([]byte, MaxMetaSize)})},
		{"truncated", good[:len(good)-1]},
		{"truncated header", append(slices.Clone(good), byte(metaTagLeaders))},
		{"truncated tag", append(slices.Clone(good), 0x80)},
		{"length beyond input", append(tagged(metaVersion, node), byte(metaTagEnd), 5, 1, 2)},
		{"length overflows", append(tagged(metaVersion, node), byte(metaTagEnd), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"tag 0", tagged(metaVersion, node, field{0, nil})},
		{"no node ID", tagged(metaVersion, field{metaTagClusterID, uv(3)})},
		{"node ID 0", tagged(metaVersion, field{metaTagNodeID, uv(0)})},
		{"node ID twice", tagged(metaVersion, node, node)},
		{"known tag twice", tagged(3, node, field{metaTagRaftAddr, nil}, field{metaTagRaftAddr, []byte("x")})},
		{"unknown mandatory tag", tagged(3, node, field{metaTagEnd + 1, nil})},
		{"odd tag among the known", tagged(metaVersion, node, field{metaTagNodeID + 1, uv(1)})},
		{"empty number", tagged(metaVersion, node, field{metaTagDiskUsed, nil})},
		{"bytes left in a payload", tagged(metaVersion, field{metaTagNodeID, []byte{1, 0}})},
		{"varint cut in a payload", tagged(metaVersion, node, field{metaTagWriteRate, []byte{0x80}})},
		{"varint overflow", tagged(metaVersion, node, field{metaTagDiskCapacity, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}})},
		{"uint32 overflow", tagged(metaVersion, node, field{metaTagLeaders, uv(math.MaxUint32 + 1)})},
		{"bootstrap cut", tagged(metaVersion, node, field{metaTagBootstrap, []byte{1, 0x80}})},
		{"v1 truncated", goodV1[:len(goodV1)-1]},
		{"v1 trailing", append(slices.Clone(goodV1), 0)},
		{"v1 unknown flag", append([]byte{metaVersion1, 2}, minimalV1[2:]...)},
		{"v1 node 0", []byte{metaVersion1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"v1 string too big", []byte{metaVersion1, 0, 1, 0, 0, 0x7f, 'a'}},
		{"v1 bootstrap huge", []byte{metaVersion1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1}},
		{"v1 uint32 overflow", []byte{metaVersion1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0}},
		{"v1 varint overflow", []byte{metaVersion1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	} {
		m, flags, err := decodeMeta(tc.b)
		if !errors.Is(err, ErrMalformedMeta) || !m.Equal(Meta{}) || flags != 0 {
			t.Errorf("%s: decoded %+v %#x, %v", tc.name, m, flags, err)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
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
		f.Add(encodeMetaV1(m, 0))
	}
	leaving, _ := encodeMeta(testMeta(4), metaFlagLeaving)
	f.Add(leaving)
	f.Add(encodeMetaV1(testMeta(4), metaFlagLeaving))
	f.Add(tagged(3, field{metaTagNodeID, uv(9)}, field{metaTagEnd, []byte("new")}, field{metaTagFlags, uv(1<<7 | 1)}))
	f.Add([]byte{})
	f.Add([]byte{metaVersion})
	f.Add([]byte{metaVersion1, 0, 1, 0, 0, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, flags, err := decodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedMeta) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if flags&^metaFlagsKnown != 0 {
			t.Fatalf("unknown flags %#x returned", flags)
		}
		// Whatever decodes re-encodes and decodes the same. The encoding is
		// never longer than the input but for the flags field it always
		// writes (3 bytes), unless the input is of version 1, whose fields
		// take less room when they are set.
		enc, err := encodeMeta(m, flags)
		if errors.Is(err, ErrMetaTooLarge) && (b[0] == metaVersion1 || len(b)+3 > MaxMetaSize) {
			return
		}
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", m, err)
		}
		if b[0] != metaVersion1 && len(enc) > len(b)+3 {
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
