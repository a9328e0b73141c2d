package placement

import "time"

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

const (
	mb = uint64(1) << 20
	gb = uint64(1) << 30
)

// liveNodes returns live nodes 1..n with 100 GB disks.
func liveNodes(n int) []Node {
	out := make([]Node, n)
	for i := range out {
		out[i] = Node{ID: uint64(i + 1), Liveness: Live, Since: t0.Add(-time.Hour), DiskCapacity: 100 * gb}
	}
	return out
}

// shardOn returns shard id with voters on nodeIDs (replica IDs 1, 2, ...)
// led by the first, 64 MB.
func shardOn(id uint64, nodeIDs ...uint64) Shard {
	sh := Shard{ID: id, Start: id << 32, Last: id<<32 | 0xffff, Generation: 1, Size: 64 * mb, Leader: nodeIDs[0]}
	for i, n := range nodeIDs {
		sh.Replicas = append(sh.Replicas, Replica{NodeID: n, ReplicaID: uint64(i + 1), Role: Voter})
	}
	return sh
}

// roundRobin returns shards 1..count with rf voters each on consecutive
// nodes of nodeIDs, led by the first.
func roundRobin(count int, nodeIDs []uint64, rf int) []Shard {
	out := make([]Shard, count)
	for i := range out {
		var on []uint64
		for k := range rf {
			on = append(on, nodeIDs[(i+k)%len(nodeIDs)])
		}
		out[i] = shardOn(uint64(i+1), on...)
	}
	return out
}

// withDisk sets every node's DiskUsed to the sizes of its replicas.
func withDisk(st State) State {
	for i := range st.Nodes {
		st.Nodes[i].DiskUsed = 0
		for _, sh := range st.Shards {
			if _, ok := replicaOn(&sh, st.Nodes[i].ID); ok {
				st.Nodes[i].DiskUsed += sh.Size
			}
		}
	}
	return st
}
