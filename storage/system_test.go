package storage

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// TestSystemShardKeySpace: a system shard covers the whole hash space in a
// key space of its own, so it overlaps no user shard, its snapshot carries
// only its own keys, and destroying it leaves user data alone.
func TestSystemShardKeySpace(t *testing.T) {
	sys := Descriptor{ShardID: SystemShardBase + 1, Start: 0, Last: ^uint64(0), Generation: 1}
	other := Descriptor{ShardID: SystemShardBase + 2, Start: 0, Last: ^uint64(0), Generation: 1}
	user := Descriptor{ShardID: 7, Start: 0, Last: ^uint64(0), Generation: 1}
	if sys.Overlaps(user) || user.Overlaps(sys) || sys.Overlaps(other) || !sys.Overlaps(sys) {
		t.Fatal("system shards must overlap nothing but themselves")
	}
	h, k, ok := sys.DecodeDataKey(sys.DataKey(42, []byte("node/1")))
	if !ok || h != 42 || string(k) != "node/1" {
		t.Fatal("system DecodeDataKey")
	}
	if _, _, ok := other.DecodeDataKey(sys.DataKey(42, []byte("x"))); ok {
		t.Fatal("a system key decoded as another shard's")
	}
	if _, _, ok := sys.DecodeDataKey(DataKey(42, []byte("x"))); ok {
		t.Fatal("a user key decoded as a system key")
	}
	s0, e0 := sys.DataSpan()
	s1, _ := other.DataSpan()
	us, ue := user.DataSpan()
	if bytes.Compare(e0, s1) > 0 || bytes.Compare(ue, s0) > 0 || bytes.Compare(sys.DataKey(^uint64(0), []byte("zz")), e0) >= 0 || bytes.Compare(us, ue) >= 0 {
		t.Fatal("system spans are not disjoint from each other and from user data")
	}
	if d := DescribeKey(sys.DataKey(1, []byte("a"))); d != fmt.Sprintf("/system/%d/0000000000000001/\"a\"", sys.ShardID) {
		t.Fatalf("describe %s", d)
	}

	src := openMem(t, vfs.NewMem())
	defer src.Close()
	for i := 0; i < 100; i++ {
		key := []byte(fmt.Sprintf("k%03d", i))
		for _, d := range []Descriptor{sys, other, user} {
			if err := src.DB().Set(d.DataKey(uint64(i)<<56, key), []byte(fmt.Sprint(d.ShardID)), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	dst := openMem(t, vfs.NewMem())
	defer dst.Close()
	l, err := dst.CreateShard(withReplicas(sys, []uint64{1}, nil), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.DB().Set(user.DataKey(5, []byte("mine")), []byte("u"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	st, _, _ := transferSnapshot(t, src, dst, sys, 512)
	snap := raftpb.Snapshot{Data: sys.Marshal(), Metadata: raftpb.SnapshotMetadata{Index: 20, Term: 3, ConfState: raftpb.ConfState{Voters: []uint64{1}}}}
	if err := l.ApplySnapshot(st, snap, raftpb.HardState{Term: 3, Commit: 20}); err != nil {
		t.Fatal(err)
	}
	count := func(d Descriptor) (n int) {
		start, end := d.DataSpan()
		it, _ := dst.DB().NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
		defer it.Close()
		for it.First(); it.Valid(); it.Next() {
			if string(it.Value()) != fmt.Sprint(d.ShardID) && d.ShardID == sys.ShardID {
				t.Fatalf("shard %d holds %s = %s", d.ShardID, DescribeKey(it.Key()), it.Value())
			}
			n++
		}
		return n
	}
	if n := count(sys); n != 100 {
		t.Fatalf("system shard holds %d keys after the snapshot, want 100", n)
	}
	if n := count(other); n != 0 {
		t.Fatalf("the other system shard got %d keys", n)
	}
	if n := count(user); n != 1 {
		t.Fatalf("user data: %d keys, want the 1 written before", n)
	}
	if err := dst.DestroyReplica(sys.ShardID, &sys, 2); err != nil {
		t.Fatal(err)
	}
	if n, u := count(sys), count(user); n != 0 || u != 1 {
		t.Fatalf("after destroy: system %d keys, user %d", n, u)
	}
}
