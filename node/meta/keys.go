package meta

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/flotilla-db/flotilla/storage"
)

// ShardID is the meta shard's ID: the first system shard, so that it is not
// part of the ring and its data lives in a key space of its own.
const ShardID = storage.SystemShardBase

// Keys of the meta shard's records. IDs and versions are written as 20-digit
// zero-padded decimals, so that key order is numeric order.
const (
	KeyCluster   = "cluster"
	KeyNodes     = "nodes"
	KeyRing      = "ring"
	KeyIntents   = "intents"
	KeyShardIDs  = "shard-ids"
	NodePrefix   = "node/"
	ShardPrefix  = "shard/"
	ChangePrefix = "ring/change/"
	IntentPrefix = "intent/"
	MergedPrefix = "merged/"
)

func idKey(prefix string, id uint64) []byte {
	return fmt.Appendf(nil, "%s%020d", prefix, id)
}

// ShardKey returns the key of shard shardID's record: "shard/" and the ID
// in 20 zero-padded digits.
func ShardKey(shardID uint64) []byte { return idKey(ShardPrefix, shardID) }

// NodeKey returns the key of node nodeID's record: "node/" and the ID in 20
// zero-padded digits.
func NodeKey(nodeID uint64) []byte { return idKey(NodePrefix, nodeID) }

// IntentKey returns the key of shard shardID's intent record: "intent/"
// and the ID in 20 zero-padded digits.
func IntentKey(shardID uint64) []byte { return idKey(IntentPrefix, shardID) }

// MergedKey returns the key of the tombstone of shard shardID, merged into
// its left neighbour: "merged/" and the ID in 20 zero-padded digits.
func MergedKey(shardID uint64) []byte { return idKey(MergedPrefix, shardID) }

// ChangeKey returns the key of the change entry of ring version v.
func ChangeKey(v uint64) []byte { return idKey(ChangePrefix, v) }

// ParseShardKey returns the shard ID of a shard record's key.
func ParseShardKey(key []byte) (uint64, bool) { return parseIDKey(ShardPrefix, key) }

// ParseMergedKey returns the shard ID of a merged shard's tombstone key.
func ParseMergedKey(key []byte) (uint64, bool) { return parseIDKey(MergedPrefix, key) }

func parseIDKey(prefix string, key []byte) (uint64, bool) {
	s, ok := strings.CutPrefix(string(key), prefix)
	if !ok || len(s) != 20 {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 10, 64)
	return id, err == nil
}
