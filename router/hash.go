package router

import (
	"bytes"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// PartitionRule says which part of a key is hashed to place it in the ring, so
// that the keys of one partition land in one shard. The zero value hashes the
// whole key.
//
// The rule is defined here once and used both by Lookup and by the storage key
// encoding (engine's key-value state machine), so that a key's position in the
// ring and in Pebble never disagree.
type PartitionRule struct {
	// Separator, when UseSeparator is set, ends the partition prefix: the key
	// is hashed up to (not including) the first Separator byte, or whole if it
	// has none.
	Separator    byte
	UseSeparator bool
	// PrefixLen, when > 0, hashes only the first PrefixLen bytes of the key
	// (the whole key if it is shorter). Ignored when UseSeparator is set.
	PrefixLen int
}

// Partition returns the part of key that the rule hashes.
func (r PartitionRule) Partition(key []byte) []byte {
	switch {
	case r.UseSeparator:
		if i := bytes.IndexByte(key, r.Separator); i >= 0 {
			return key[:i]
		}
	case r.PrefixLen > 0 && len(key) > r.PrefixLen:
		return key[:r.PrefixLen]
	}
	return key
}

// Hash returns the position of key in the hash space [0, 2^64).
func (r PartitionRule) Hash(key []byte) uint64 {
	return xxhash.Sum64(r.Partition(key))
}

// Validate checks that the rule is well formed: PrefixLen is not negative and
// is not combined with UseSeparator (Partition would ignore it, which is
// almost certainly a mistake). It does not modify r.
func (r PartitionRule) Validate() error {
	switch {
	case r.PrefixLen < 0:
		return fmt.Errorf("router: partition rule PrefixLen %d < 0", r.PrefixLen)
	case r.UseSeparator && r.PrefixLen != 0:
		return fmt.Errorf("router: partition rule sets both UseSeparator and PrefixLen %d", r.PrefixLen)
	}
	return nil
}
