package storage

import (
	"encoding/binary"
	"fmt"
)

// The key schema. Every key is fixed-width big-endian up to its variable tail,
// so that a shard's raft state is one contiguous range, its log one contiguous
// sub-range in index order, and the user data of a hash range one contiguous
// range:
//
//	0x01 'm' 'i'                        node identity (cluster ID, node ID)
//	0x01 'm' 's' <childID u64>          split marker: a split child to create
//	                                    (split.go)
//	0x01 'm' 'v'                        store format version (u64)
//	0x01 'm' 'x' <shardID u64>          tombstone of removed replicas: the
//	                                    lowest replica ID allowed here again
//	0x01 'r' <shardID u64> 'c'          ConfState as of the applied index
//	0x01 'r' <shardID u64> 'd'          shard descriptor (hash range, generation)
//	0x01 'r' <shardID u64> 'h'          raft state: HardState (term, vote,
//	                                    commit) and applied (index, term)
//	0x01 'r' <shardID u64> 'i'          this replica's ID in the shard
//	0x01 'r' <shardID u64> 'l' <idx u64> raft log entry
//	0x01 'r' <shardID u64> 't'          truncated state (index, term)
//	0x01 's' <shardID u64> <session u64> 0x00           client session header
//	0x01 's' <shardID u64> <session u64> 0x01 <seq u64> a session's result
//	0x02 <hash u64> <key>               user data
//	0x03 <shardID u64> <hash u64> <key> data of a system shard
//
// User data is ordered by the key's hash, not by shard: a shard owns the hash
// range [Start, Last] of its descriptor, so its data is one contiguous range,
// and a split whose replicas stay on the same nodes moves no data. Shards
// hosted on one node therefore never have overlapping ranges.
//
// A shard's client sessions (session.go) are one span too, before every
// data key, so that a snapshot streams them first, then the data.
//
// System shards (IDs from SystemShardBase up, such as the meta shard) are not
// part of the ring: each keeps its data in a key space of its own, prefixed
// by its shard ID, with the same hash-ordered layout inside, so that the
// state machine, snapshots and replica removal treat them like any shard.
const (
	prefixLocal = 0x01
	prefixData  = 0x02
	prefixSys   = 0x03

	localMeta     = 'm'
	localRaft     = 'r'
	metaIdent     = 'i'
	metaTomb      = 'x'
	raftConf      = 'c'
	raftDesc      = 'd'
	raftHard      = 'h'
	raftReplicaID = 'i'
	metaVersion   = 'v'
	raftLog       = 'l'
	raftTrunc     = 't'
	raftKeyLen    = 2 + 8 + 1
	logKeyLen     = raftKeyLen + 8
	dataKeyMin    = 1 + 8
)

// identKey is the node identity key; versionKey the store format version's.
var (
	identKey   = []byte{prefixLocal, localMeta, metaIdent}
	versionKey = []byte{prefixLocal, localMeta, metaVersion}
)

func tombstoneKey(shardID uint64) []byte { return localMetaKey(metaTomb, shardID) }

// localMetaKey is the key of a node-local record of kind about shardID
// (a tombstone, a split or merge marker): 0x01 'm' kind <shardID u64>.
func localMetaKey(kind byte, shardID uint64) []byte {
	k := make([]byte, 3+8)
	k[0], k[1], k[2] = prefixLocal, localMeta, kind
	binary.BigEndian.PutUint64(k[3:], shardID)
	return k
}

// raftPrefix returns the first key of shardID's raft state.
func raftPrefix(shardID uint64) []byte {
	k := make([]byte, 2+8)
	k[0], k[1] = prefixLocal, localRaft
	binary.BigEndian.PutUint64(k[2:], shardID)
	return k
}

// raftSpan returns [start, end) covering every raft key of shardID.
func raftSpan(shardID uint64) (start, end []byte) {
	start = raftPrefix(shardID)
	if shardID == ^uint64(0) {
		return start, []byte{prefixLocal, localRaft + 1}
	}
	return start, raftPrefix(shardID + 1)
}

func raftKey(shardID uint64, suffix byte) []byte {
	k := make([]byte, raftKeyLen)
	k[0], k[1] = prefixLocal, localRaft
	binary.BigEndian.PutUint64(k[2:], shardID)
	k[10] = suffix
	return k
}

// appendLogKey appends the log key of (shardID, index) to dst.
func appendLogKey(dst []byte, shardID, index uint64) []byte {
	dst = append(dst, prefixLocal, localRaft)
	dst = binary.BigEndian.AppendUint64(dst, shardID)
	dst = append(dst, raftLog)
	return binary.BigEndian.AppendUint64(dst, index)
}

func logKey(shardID, index uint64) []byte {
	return appendLogKey(make([]byte, 0, logKeyLen), shardID, index)
}

// DataKey returns the storage key of a user key whose ring position is hash.
// The hash is computed by the router's PartitionRule, never here.
func DataKey(hash uint64, key []byte) []byte {
	return AppendDataKey(make([]byte, 0, dataKeyMin+len(key)), hash, key)
}

// AppendDataKey appends DataKey(hash, key) to dst.
func AppendDataKey(dst []byte, hash uint64, key []byte) []byte {
	dst = append(dst, prefixData)
	dst = binary.BigEndian.AppendUint64(dst, hash)
	return append(dst, key...)
}

// DecodeDataKey splits a storage data key into its hash and user key.
func DecodeDataKey(k []byte) (hash uint64, key []byte, ok bool) {
	if len(k) < dataKeyMin || k[0] != prefixData {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(k[1:9]), k[9:], true
}

// DataSpan returns the storage span [start, end) of the user data whose hash
// lies in [first, last].
func DataSpan(first, last uint64) (start, end []byte) {
	start = DataKey(first, nil)
	if last == ^uint64(0) {
		return start, []byte{prefixData + 1}
	}
	return start, DataKey(last+1, nil)
}

// SystemShardBase is the first system shard ID; user shards (the ring's)
// have IDs below it.
const SystemShardBase uint64 = 1 << 63

// IsSystemShard reports whether id is a system shard's.
func IsSystemShard(id uint64) bool { return id >= SystemShardBase }

// AppendDataKey appends the storage key of the data key of d's shard whose
// hash is hash.
func (d Descriptor) AppendDataKey(dst []byte, hash uint64, key []byte) []byte {
	if !IsSystemShard(d.ShardID) {
		return AppendDataKey(dst, hash, key)
	}
	dst = append(dst, prefixSys)
	dst = binary.BigEndian.AppendUint64(dst, d.ShardID)
	dst = binary.BigEndian.AppendUint64(dst, hash)
	return append(dst, key...)
}

// DataKey returns d.AppendDataKey(nil, hash, key).
func (d Descriptor) DataKey(hash uint64, key []byte) []byte {
	return d.AppendDataKey(make([]byte, 0, 17+len(key)), hash, key)
}

// DecodeDataKey splits a storage data key of d's shard into hash and key.
func (d Descriptor) DecodeDataKey(k []byte) (hash uint64, key []byte, ok bool) {
	if !IsSystemShard(d.ShardID) {
		return DecodeDataKey(k)
	}
	if len(k) < 17 || k[0] != prefixSys || binary.BigEndian.Uint64(k[1:9]) != d.ShardID {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(k[9:17]), k[17:], true
}

// DataSpan returns the storage span [start, end) of d's data.
func (d Descriptor) DataSpan() (start, end []byte) {
	if !IsSystemShard(d.ShardID) {
		return DataSpan(d.Start, d.Last)
	}
	start = d.DataKey(d.Start, nil)
	if d.Last == ^uint64(0) {
		end = make([]byte, 0, 9)
		end = append(end, prefixSys)
		if d.ShardID == ^uint64(0) {
			return start, []byte{prefixSys + 1}
		}
		return start, binary.BigEndian.AppendUint64(end, d.ShardID+1)
	}
	return start, d.DataKey(d.Last+1, nil)
}

// DescribeKey renders a storage key for humans (the admin tool's inspect
// commands, error messages).
func DescribeKey(k []byte) string {
	switch {
	case len(k) >= 3 && k[0] == prefixLocal && k[1] == localMeta && k[2] == metaIdent:
		return "/meta/ident"
	case len(k) == 3 && k[0] == prefixLocal && k[1] == localMeta && k[2] == metaVersion:
		return "/meta/version"
	case len(k) == 11 && k[0] == prefixLocal && k[1] == localMeta && k[2] == metaTomb:
		return fmt.Sprintf("/meta/tombstone/%d", binary.BigEndian.Uint64(k[3:]))
	case len(k) >= raftKeyLen && k[0] == prefixLocal && k[1] == localRaft:
		shard := binary.BigEndian.Uint64(k[2:10])
		switch k[10] {
		case raftConf:
			return fmt.Sprintf("/shard/%d/confstate", shard)
		case raftDesc:
			return fmt.Sprintf("/shard/%d/descriptor", shard)
		case raftHard:
			return fmt.Sprintf("/shard/%d/state", shard)
		case raftReplicaID:
			return fmt.Sprintf("/shard/%d/replica-id", shard)
		case raftTrunc:
			return fmt.Sprintf("/shard/%d/truncated", shard)
		case raftLog:
			if len(k) == logKeyLen {
				return fmt.Sprintf("/shard/%d/log/%d", shard, binary.BigEndian.Uint64(k[11:]))
			}
		}
	case len(k) >= 2 && k[0] == prefixLocal && k[1] == localSession:
		if d, ok := describeSessionKey(k); ok {
			return d
		}
	case len(k) >= dataKeyMin && k[0] == prefixData:
		return fmt.Sprintf("/data/%016x/%q", binary.BigEndian.Uint64(k[1:9]), k[9:])
	case len(k) >= 17 && k[0] == prefixSys:
		return fmt.Sprintf("/system/%d/%016x/%q", binary.BigEndian.Uint64(k[1:9]), binary.BigEndian.Uint64(k[9:17]), k[17:])
	}
	return fmt.Sprintf("/unknown/%x", k)
}
