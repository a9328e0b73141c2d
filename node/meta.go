package node

import (
	nodemeta "github.com/flotilla-db/flotilla/node/meta"
	"github.com/flotilla-db/flotilla/storage"
)

// The meta shard is the cluster's authority on what it is made of: the
// cluster record, one record per node (IDs are never reused: a removed
// node's record stays, marked removed) and one record per shard, a copy of
// the shard's own replicated descriptor. Package node/meta owns the records
// and the code that writes, follows and repairs them; this package wires it
// in (cluster.go, records.go). Voters sit on up to five nodes, every other
// node holds a learner: each node's router reads its own local copy.
//
// Leadership is not in the meta shard: it changes too often and is spread by
// gossip (see cluster.go).
const MetaShardID = nodemeta.ShardID

// MaxMetaVoters is the most voters the meta shard gets at bootstrap.
const MaxMetaVoters = nodemeta.MaxVoters

// MetaDescriptor is the meta shard's descriptor: the whole hash space of its
// own key space.
func MetaDescriptor() storage.Descriptor {
	return storage.Descriptor{ShardID: MetaShardID, Start: 0, Last: ^uint64(0), Generation: 1}
}

// ClusterRecord and NodeRecord are the meta shard's records of the cluster
// and of a node (package node/meta owns them).
type (
	ClusterRecord = nodemeta.ClusterRecord
	NodeRecord    = nodemeta.NodeRecord
)
