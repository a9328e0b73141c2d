package heartbeat

import (
	"errors"
	"reflect"
	"sort"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

func TestRoundTrip(t *testing.T) {
	beats := []Beat{
		{ShardID: 1, From: 1, To: 2, Term: 5, Commit: 10},
		{ShardID: 1 << 40, From: 9, To: 1 << 35, Term: 1 << 33, Commit: 0, Resp: true},
		{ShardID: 7, From: 3, To: 4, Term: 6, Commit: 99, Quiesce: true},
	}
	got, err := DecodeBatch(nil, AppendBatch(nil, beats))
	if err != nil || !reflect.DeepEqual(got, beats) {
		t.Fatalf("got %v %v", got, err)
	}
	if got, err := DecodeBatch(nil, AppendBatch(nil, nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"version 1": {1, 1, 1, 1, 0},
		"truncated": {2, 5, 6},
		"flags":     {2, 1, 1, 2, 1, 1, 0x80 | 4},
		"bad flag":  {2, 1, 1, 2, 1, 1, 4},
		"shard 0":   {2, 0, 1, 2, 1, 1, 0},
		"replica 0": {2, 1, 0, 2, 1, 1, 0},
	} {
		if _, err := DecodeBatch(nil, b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMessageConversion(t *testing.T) {
	for _, m := range []raftpb.Message{
		{Type: raftpb.MsgHeartbeat, From: 1, To: 2, Term: 3, Commit: 4},
		{Type: raftpb.MsgHeartbeatResp, From: 2, To: 1, Term: 3},
	} {
		if !IsCoalescable(&m) {
			t.Fatalf("%v not coalescable", m.Type)
		}
		if got := FromMessage(9, &m).Message(); !reflect.DeepEqual(got, m) {
			t.Fatalf("got %+v want %+v", got, m)
		}
	}
	for _, m := range []raftpb.Message{
		{Type: raftpb.MsgHeartbeat, Context: []byte("read")},
		{Type: raftpb.MsgApp},
	} {
		if IsCoalescable(&m) {
			t.Fatalf("%v coalescable", m)
		}
	}
}

func TestCoalescerFlush(t *testing.T) {
	c := NewCoalescer()
	c.Add(2, Beat{ShardID: 1}, Beat{ShardID: 2})
	c.Add(3, Beat{ShardID: 3})
	c.Add(2, Beat{ShardID: 4})
	got := map[uint64]int{}
	var order []uint64
	c.Flush([]uint64{2, 4}, func(to uint64, beats []Beat) {
		got[to] = len(beats)
		order = append(order, to)
	})
	sort.Slice(order, func(i, j int) bool { return order[i] < order[j] })
	if !reflect.DeepEqual(got, map[uint64]int{2: 3, 3: 1, 4: 0}) || len(order) != 3 {
		t.Fatalf("flush: %v", got)
	}
	calls := 0
	c.Flush(nil, func(uint64, []Beat) { calls++ })
	if calls != 0 || c.Added() != 4 {
		t.Fatalf("second flush %d calls, added %d", calls, c.Added())
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(AppendBatch(nil, []Beat{{ShardID: 1, From: 1, To: 2, Term: 2, Commit: 3, Quiesce: true}}))
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		beats, err := DecodeBatch(nil, b)
		if err != nil {
			return
		}
		again, err := DecodeBatch(nil, AppendBatch(nil, beats))
		if err != nil || !reflect.DeepEqual(again, beats) && len(beats) > 0 {
			t.Fatalf("re-encode: %v %v vs %v", err, again, beats)
		}
	})
}
