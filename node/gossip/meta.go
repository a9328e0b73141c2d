package gossip

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/hashicorp/memberlist"
)

// MaxMetaSize is the largest encoded Meta memberlist accepts as node
// metadata.
const MaxMetaSize = memberlist.MetaMaxSize

// Meta is what a node advertises about itself to the cluster.
type Meta struct {
	NodeID uint64
	// ClusterID is 0 while the node has not joined or bootstrapped a cluster.
	ClusterID uint64
	// Instance is random per data directory; it tells apart two processes
	// claiming one node ID.
	Instance   uint64
	RaftAddr   string
	ClientAddr string
	HTTPAddr   string
	// BootstrapExpect is the node's --bootstrap-expect (0: none).
	BootstrapExpect int
	InitialShards   int
	Replication     int
	// Bootstrap lists the node IDs of the bootstrap members when this node
	// bootstrapped the cluster, else nil. An empty list is equivalent to nil.
	Bootstrap []uint64
	// Load.
	Replicas, Leaders uint32
}

// Clone returns a deep copy of m.
func (m Meta) Clone() Meta {
	m.Bootstrap = slices.Clone(m.Bootstrap)
	if len(m.Bootstrap) == 0 {
		m.Bootstrap = nil
	}
	return m
}

// Equal reports whether m and o advertise the same thing (a nil and an empty
// Bootstrap are equal).
func (m Meta) Equal(o Meta) bool {
	return m.NodeID == o.NodeID && m.ClusterID == o.ClusterID && m.Instance == o.Instance &&
		m.RaftAddr == o.RaftAddr && m.ClientAddr == o.ClientAddr && m.HTTPAddr == o.HTTPAddr &&
		m.BootstrapExpect == o.BootstrapExpect && m.InitialShards == o.InitialShards &&
		m.Replication == o.Replication && slices.Equal(m.Bootstrap, o.Bootstrap) &&
		m.Replicas == o.Replicas && m.Leaders == o.Leaders
}

// State is a member's state as seen by the local node.
type State int

// Member states.
const (
	// Alive: the member is up as far as we know.
	Alive State = iota
	// Suspect: our probes of the member failed; it is declared dead unless
	// it refutes the suspicion in time.
	Suspect
	// Dead: the member failed (it did not leave gracefully).
	Dead
	// Left: the member left gracefully (Leave).
	Left
)

// String returns "live", "suspect", "dead" or "left".
func (s State) String() string {
	switch s {
	case Alive:
		return "live"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	case Left:
		return "left"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Gone reports whether s is Dead or Left.
func (s State) Gone() bool { return s == Dead || s == Left }

// Member is a node of the cluster as seen by the local node.
type Member struct {
	Meta  Meta
	Addr  string // gossip address, host:port
	State State
}

// Meta wire format, version 1:
//
//	version    byte (1)
//	flags      uvarint (bit 0: leaving)
//	NodeID, ClusterID, Instance           uvarint
//	RaftAddr, ClientAddr, HTTPAddr        uvarint length + bytes
//	BootstrapExpect, InitialShards, Replication   zig-zag varint
//	len(Bootstrap) uvarint, then each ID  uvarint
//	Replicas, Leaders                     uvarint (<= MaxUint32)
//
// Decoding is strict: unknown versions and flags, truncation, overlong
// lengths, out-of-range values and trailing bytes are errors. A new field
// needs a new version, which new decoders must accept alongside the old.
const (
	metaVersion byte = 1

	metaFlagLeaving uint64 = 1 << 0
	metaFlagsKnown         = metaFlagLeaving
)

// encodeMeta encodes m with the given flags. It fails with ErrMetaTooLarge
// when the result exceeds MaxMetaSize.
func encodeMeta(m Meta, flags uint64) ([]byte, error) {
	b := make([]byte, 0, 64+len(m.RaftAddr)+len(m.ClientAddr)+len(m.HTTPAddr)+4*len(m.Bootstrap))
	b = append(b, metaVersion)
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
	b = binary.AppendUvarint(b, uint64(m.Leaders))
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(b), MaxMetaSize)
	}
	return b, nil
}

// decodeMeta decodes an encoded Meta and its flags. Every failure wraps
// ErrMalformedMeta.
func decodeMeta(b []byte) (Meta, uint64, error) {
	var m Meta
	if len(b) == 0 {
		return m, 0, fmt.Errorf("%w: empty", ErrMalformedMeta)
	}
	if b[0] != metaVersion {
		return m, 0, fmt.Errorf("%w: unknown version %d", ErrMalformedMeta, b[0])
	}
	r := reader{b: b[1:]}
	flags := r.uvarint()
	m.NodeID = r.uvarint()
	m.ClusterID = r.uvarint()
	m.Instance = r.uvarint()
	m.RaftAddr = r.string()
	m.ClientAddr = r.string()
	m.HTTPAddr = r.string()
	m.BootstrapExpect = r.int()
	m.InitialShards = r.int()
	m.Replication = r.int()
	if n := r.count(1); n > 0 {
		m.Bootstrap = make([]uint64, n)
		for i := range m.Bootstrap {
			m.Bootstrap[i] = r.uvarint()
		}
	}
	m.Replicas = r.uint32()
	m.Leaders = r.uint32()
	if err := r.finish(); err != nil {
		return Meta{}, 0, fmt.Errorf("%w: %w", ErrMalformedMeta, err)
	}
	if flags&^metaFlagsKnown != 0 {
		return Meta{}, 0, fmt.Errorf("%w: unknown flags %#x", ErrMalformedMeta, flags)
	}
	if m.NodeID == 0 {
		return Meta{}, 0, fmt.Errorf("%w: node ID 0", ErrMalformedMeta)
	}
	return m, flags, nil
}

// reader decodes the primitives of the wire formats. The first error sticks:
// later reads return zero values, and finish reports it.
type reader struct {
	b   []byte
	err error
}

// decodeError is a reader failure; callers wrap it in their sentinel.
type decodeError string

func (e decodeError) Error() string { return string(e) }

const (
	errTruncated  decodeError = "truncated"
	errOverflow   decodeError = "value out of range"
	errTrailing   decodeError = "trailing bytes"
	errBadLength  decodeError = "length exceeds the input"
	errBadVarint  decodeError = "bad varint"
	errZeroShard  decodeError = "shard 0"
	errEmptyBatch decodeError = "no updates"
)

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	switch {
	case n == 0:
		r.fail(errTruncated)
		return 0
	case n < 0:
		r.fail(errBadVarint)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) int() int {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	switch {
	case n == 0:
		r.fail(errTruncated)
		return 0
	case n < 0:
		r.fail(errBadVarint)
		return 0
	}
	r.b = r.b[n:]
	if v < math.MinInt || v > math.MaxInt {
		r.fail(errOverflow)
		return 0
	}
	return int(v)
}

func (r *reader) uint32() uint32 {
	v := r.uvarint()
	if v > math.MaxUint32 {
		r.fail(errOverflow)
		return 0
	}
	return uint32(v)
}

// count reads a uvarint element count and checks that count elements of at
// least minSize bytes each can follow, so garbage cannot make the decoder
// allocate much.
func (r *reader) count(minSize int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/minSize) {
		r.fail(errBadLength)
		return 0
	}
	return int(n)
}

func (r *reader) string() string {
	n := r.count(1)
	if r.err != nil {
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// finish returns the first error, or errTrailing if input is left over.
func (r *reader) finish() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return errTrailing
	}
	return nil
}
