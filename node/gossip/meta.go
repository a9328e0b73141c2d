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

// Meta is what a node advertises about itself to the cluster. The load
// fields (Replicas to WriteRate) are refreshed by the node every second or
// so; a peer of an older version advertises them as zero.
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

	// Replicas and Leaders count the shard replicas the node holds and
	// those it leads.
	Replicas, Leaders uint32
	// DiskUsed is the size of the node's store on disk, in bytes.
	DiskUsed uint64
	// DiskCapacity is the size the node's store could grow to, in bytes:
	// DiskUsed plus the space still available on the store's file system
	// (space taken by other data does not count). 0: unknown.
	DiskCapacity uint64
	// WriteRate is how fast the node's shards write to its store, in bytes
	// per second (whole bytes: finer is noise), averaged over the last
	// refresh interval.
	WriteRate uint64
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
		m.Replicas == o.Replicas && m.Leaders == o.Leaders && m.DiskUsed == o.DiskUsed &&
		m.DiskCapacity == o.DiskCapacity && m.WriteRate == o.WriteRate
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
	// Meta is what the member advertises. When MetaErr is set it holds
	// nothing but NodeID (taken from the member's gossip name).
	Meta  Meta
	Addr  string // gossip address, host:port
	State State
	// MetaErr, when not nil, is why the member's last metadata did not
	// decode (it wraps ErrMalformedMeta): a node of an incompatible
	// version, or a bug. Its State is still what failure detection says,
	// but nothing it advertises is known: it must not be taken for a
	// healthy node, nor be given work (placement treats its liveness as
	// unknown). The flag clears when the member advertises metadata that
	// decodes.
	MetaErr error
}

// Usable reports whether m is Alive and its metadata decoded: the only
// members whose Meta describes a node fit to be given work.
func (m Member) Usable() bool { return m.State == Alive && m.MetaErr == nil }

// Meta wire format. The first byte is the version; each version's decoder
// is strict about what it knows and rejects anything malformed with
// ErrMalformedMeta instead of guessing.
//
// Version 1 (nodes before the load fields wrote it; decoders still read
// it, for a rolling upgrade) is a fixed sequence:
//
//	version    byte (1)
//	flags      uvarint (bit 0: leaving)
//	NodeID, ClusterID, Instance           uvarint
//	RaftAddr, ClientAddr, HTTPAddr        uvarint length + bytes
//	BootstrapExpect, InitialShards, Replication   zig-zag varint
//	len(Bootstrap) uvarint, then each ID  uvarint
//	Replicas, Leaders                     uvarint (<= MaxUint32)
//
// Unknown flags and trailing bytes are errors in version 1.
//
// Version 2 (what encodeMeta writes) is the version byte followed by
// tagged fields, in any order:
//
//	tag      uvarint (nonzero)
//	length   uvarint
//	payload  length bytes
//
// The fields of version 2, all of them optional but NodeID:
//
//	tag  field            payload
//	 2   flags            uvarint (bit 0: leaving)
//	 4   NodeID           uvarint (nonzero)
//	 6   ClusterID        uvarint
//	 8   Instance         uvarint
//	10   RaftAddr         the bytes
//	12   ClientAddr       the bytes
//	14   HTTPAddr         the bytes
//	16   BootstrapExpect  zig-zag varint
//	18   InitialShards    zig-zag varint
//	20   Replication      zig-zag varint
//	22   Bootstrap        each ID as a uvarint, back to back
//	24   Replicas         uvarint (<= MaxUint32)
//	26   Leaders          uvarint (<= MaxUint32)
//	28   DiskUsed         uvarint, bytes
//	30   DiskCapacity     uvarint, bytes
//	32   WriteRate        uvarint, bytes per second
//
// The encoder writes the flags (always, so that setting the leaving flag
// never changes the size) and every nonzero field, each once, in tag order.
// A missing field is zero: that is how a decoder reads an older peer's
// meta. And how it reads a newer peer's:
//
//   - Every version from 2 up is decoded as this framing, for the tags the
//     decoder knows. A later version may add fields under new tags, never
//     change the framing or the meaning of a tag.
//   - An unknown tag is skipped if it is even. An odd tag is mandatory: a
//     newer peer's field that must not be ignored (one that changes how
//     other fields read, say). A decoder that does not know it fails, and
//     the member is listed flagged (Member.MetaErr) rather than misread.
//     Every tag above is even.
//   - Unknown flag bits are ignored (decodeMeta returns the known ones
//     only): a newer peer may add only flags that are safe to ignore, and
//     uses a mandatory tag for anything else.
//
// The decoder stays strict where it matters: version 0, input larger than
// MaxMetaSize, truncation, a length beyond the input, tag 0, a known tag
// twice, a known tag's payload that does not decode, is out of range or
// has bytes left over, and a missing or zero NodeID are errors.
const (
	metaVersion1 byte = 1
	// metaVersion is what encodeMeta writes; every version from it up is
	// decoded as the tagged framing.
	metaVersion byte = 2

	metaFlagLeaving uint64 = 1 << 0
	metaFlagsKnown         = metaFlagLeaving
)

// The tags of version 2's fields. A new field takes the next even tag (odd
// for a mandatory one); known tags stay below 64, the width of the
// decoder's duplicate check.
const (
	metaTagFlags uint64 = 2 * (iota + 1)
	metaTagNodeID
	metaTagClusterID
	metaTagInstance
	metaTagRaftAddr
	metaTagClientAddr
	metaTagHTTPAddr
	metaTagBootstrapExpect
	metaTagInitialShards
	metaTagReplication
	metaTagBootstrap
	metaTagReplicas
	metaTagLeaders
	metaTagDiskUsed
	metaTagDiskCapacity
	metaTagWriteRate
	metaTagEnd // above the last known tag
)

// metaTagNames names the known tags, for errors; "" is an unknown tag.
var metaTagNames = [metaTagEnd]string{
	metaTagFlags:           "flags",
	metaTagNodeID:          "NodeID",
	metaTagClusterID:       "ClusterID",
	metaTagInstance:        "Instance",
	metaTagRaftAddr:        "RaftAddr",
	metaTagClientAddr:      "ClientAddr",
	metaTagHTTPAddr:        "HTTPAddr",
	metaTagBootstrapExpect: "BootstrapExpect",
	metaTagInitialShards:   "InitialShards",
	metaTagReplication:     "Replication",
	metaTagBootstrap:       "Bootstrap",
	metaTagReplicas:        "Replicas",
	metaTagLeaders:         "Leaders",
	metaTagDiskUsed:        "DiskUsed",
	metaTagDiskCapacity:    "DiskCapacity",
	metaTagWriteRate:       "WriteRate",
}

// encodeMeta encodes m with the given flags in version metaVersion. It
// fails with ErrMetaTooLarge when the result exceeds MaxMetaSize.
func encodeMeta(m Meta, flags uint64) ([]byte, error) {
	e := metaEncoder{b: make([]byte, 0, 128+len(m.RaftAddr)+len(m.ClientAddr)+len(m.HTTPAddr)+4*len(m.Bootstrap))}
	e.b = append(e.b, metaVersion)
	e.header(metaTagFlags, uvarintLen(flags))
	e.b = binary.AppendUvarint(e.b, flags)
	e.uvarint(metaTagNodeID, m.NodeID)
	e.uvarint(metaTagClusterID, m.ClusterID)
	e.uvarint(metaTagInstance, m.Instance)
	e.string(metaTagRaftAddr, m.RaftAddr)
	e.string(metaTagClientAddr, m.ClientAddr)
	e.string(metaTagHTTPAddr, m.HTTPAddr)
	e.varint(metaTagBootstrapExpect, m.BootstrapExpect)
	e.varint(metaTagInitialShards, m.InitialShards)
	e.varint(metaTagReplication, m.Replication)
	if len(m.Bootstrap) > 0 {
		n := 0
		for _, id := range m.Bootstrap {
			n += uvarintLen(id)
		}
		e.header(metaTagBootstrap, n)
		for _, id := range m.Bootstrap {
			e.b = binary.AppendUvarint(e.b, id)
		}
	}
	e.uvarint(metaTagReplicas, uint64(m.Replicas))
	e.uvarint(metaTagLeaders, uint64(m.Leaders))
	e.uvarint(metaTagDiskUsed, m.DiskUsed)
	e.uvarint(metaTagDiskCapacity, m.DiskCapacity)
	e.uvarint(metaTagWriteRate, m.WriteRate)
	if len(e.b) > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(e.b), MaxMetaSize)
	}
	return e.b, nil
}

// metaEncoder appends the tagged fields of version 2, leaving out the zero
// ones.
type metaEncoder struct{ b []byte }

// header appends a field's tag and payload length.
func (e *metaEncoder) header(tag uint64, n int) {
	e.b = binary.AppendUvarint(e.b, tag)
	e.b = binary.AppendUvarint(e.b, uint64(n))
}

func (e *metaEncoder) uvarint(tag, v uint64) {
	if v != 0 {
		e.header(tag, uvarintLen(v))
		e.b = binary.AppendUvarint(e.b, v)
	}
}

// varint appends v zig-zag encoded, as binary.AppendVarint does.
func (e *metaEncoder) varint(tag uint64, v int) {
	x := int64(v)
	ux := uint64(x) << 1
	if x < 0 {
		ux = ^ux
	}
	e.uvarint(tag, ux)
}

func (e *metaEncoder) string(tag uint64, s string) {
	if s != "" {
		e.header(tag, len(s))
		e.b = append(e.b, s...)
	}
}

// decodeMeta decodes an encoded Meta of any version it can read, and its
// known flags. Every failure wraps ErrMalformedMeta and says what is wrong
// (and in which field).
func decodeMeta(b []byte) (Meta, uint64, error) {
	m, flags, err := decodeMetaVersion(b)
	if err == nil && m.NodeID == 0 {
		err = errNodeZero
	}
	if err != nil {
		return Meta{}, 0, fmt.Errorf("%w: %w", ErrMalformedMeta, err)
	}
	return m, flags, nil
}

func decodeMetaVersion(b []byte) (Meta, uint64, error) {
	switch {
	case len(b) == 0:
		return Meta{}, 0, errEmpty
	case len(b) > MaxMetaSize:
		return Meta{}, 0, fmt.Errorf("%d bytes, limit %d", len(b), MaxMetaSize)
	case b[0] == 0:
		return Meta{}, 0, errVersionZero
	case b[0] == metaVersion1:
		return decodeMetaV1(b[1:])
	}
	m, flags, err := decodeMetaTagged(b[1:])
	if err != nil {
		return Meta{}, 0, fmt.Errorf("version %d: %w", b[0], err)
	}
	return m, flags, nil
}

// decodeMetaV1 decodes what follows the version byte of version 1.
func decodeMetaV1(b []byte) (Meta, uint64, error) {
	var m Meta
	r := reader{b: b}
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
		return Meta{}, 0, fmt.Errorf("version 1: %w", err)
	}
	if flags&^metaFlagsKnown != 0 {
		return Meta{}, 0, fmt.Errorf("version 1: unknown flags %#x", flags)
	}
	return m, flags, nil
}

// decodeMetaTagged decodes the tagged fields of version 2 and later.
func decodeMetaTagged(b []byte) (Meta, uint64, error) {
	var m Meta
	var flags, seen uint64
	r := reader{b: b}
	for len(r.b) > 0 {
		tag := r.uvarint()
		p := r.bytes()
		if r.err != nil {
			return Meta{}, 0, r.err
		}
		switch {
		case tag == 0:
			return Meta{}, 0, errTagZero
		case tag >= metaTagEnd || metaTagNames[tag] == "":
			if tag&1 != 0 {
				return Meta{}, 0, fmt.Errorf("unknown mandatory tag %d", tag)
			}
			continue // a newer peer's field
		case seen&(1<<tag) != 0:
			return Meta{}, 0, fmt.Errorf("tag %d (%s) twice", tag, metaTagNames[tag])
		}
		seen |= 1 << tag
		if err := decodeMetaField(&m, &flags, tag, p); err != nil {
			return Meta{}, 0, fmt.Errorf("tag %d (%s): %w", tag, metaTagNames[tag], err)
		}
	}
	return m, flags & metaFlagsKnown, nil
}

// decodeMetaField decodes the payload p of known tag into m or flags. The
// payload must be used up.
func decodeMetaField(m *Meta, flags *uint64, tag uint64, p []byte) error {
	r := reader{b: p}
	switch tag {
	case metaTagFlags:
		*flags = r.uvarint()
	case metaTagNodeID:
		m.NodeID = r.uvarint()
	case metaTagClusterID:
		m.ClusterID = r.uvarint()
	case metaTagInstance:
		m.Instance = r.uvarint()
	case metaTagRaftAddr:
		m.RaftAddr, r.b = string(p), nil
	case metaTagClientAddr:
		m.ClientAddr, r.b = string(p), nil
	case metaTagHTTPAddr:
		m.HTTPAddr, r.b = string(p), nil
	case metaTagBootstrapExpect:
		m.BootstrapExpect = r.int()
	case metaTagInitialShards:
		m.InitialShards = r.int()
	case metaTagReplication:
		m.Replication = r.int()
	case metaTagBootstrap:
		if len(p) == 0 {
			break // nil, as an empty list decodes
		}
		// Each uvarint ends with the one byte of it below 0x80.
		n := 0
		for _, c := range p {
			if c < 0x80 {
				n++
			}
		}
		m.Bootstrap = make([]uint64, 0, n)
		for len(r.b) > 0 && r.err == nil {
			m.Bootstrap = append(m.Bootstrap, r.uvarint())
		}
	case metaTagReplicas:
		m.Replicas = r.uint32()
	case metaTagLeaders:
		m.Leaders = r.uint32()
	case metaTagDiskUsed:
		m.DiskUsed = r.uvarint()
	case metaTagDiskCapacity:
		m.DiskCapacity = r.uvarint()
	case metaTagWriteRate:
		m.WriteRate = r.uvarint()
	default:
		panic(fmt.Sprintf("gossip: meta tag %d has a name but no decoder", tag))
	}
	return r.finish()
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
	errEmpty       decodeError = "empty"
	errNodeZero    decodeError = "node ID 0 or missing"
	errVersionZero decodeError = "version 0"
	errTagZero     decodeError = "tag 0"
	errTruncated   decodeError = "truncated"
	errOverflow    decodeError = "value out of range"
	errTrailing    decodeError = "trailing bytes"
	errBadLength   decodeError = "length exceeds the input"
	errBadVarint   decodeError = "bad varint"
	errZeroShard   decodeError = "shard 0"
	errEmptyBatch  decodeError = "no updates"
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

// bytes reads a uvarint length and that many bytes (not copied).
func (r *reader) bytes() []byte {
	n := r.count(1)
	if r.err != nil {
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) string() string { return string(r.bytes()) }

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
