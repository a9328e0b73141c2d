package storage

import (
	"encoding/binary"
	"fmt"
)

// Client session records (the engine's exactly-once writes, package engine's
// session.go). A shard's sessions live in a key space of their own, next to
// its raft state and apart from its user data:
//
//	0x01 's' <shardID u64> <sessionID u64> 0x00             session header
//	0x01 's' <shardID u64> <sessionID u64> 0x01 <seq u64>   result of seq
//
// so that one shard's records are one contiguous span (SessionSpan) that
// sorts before every data key: a snapshot streams that span, then the data
// span, in one increasing key order; a removed replica is one more
// DeleteRange. The storage package only lays the records out; the engine
// decides what they mean, and writes them in the batch of the command they
// belong to.
const (
	localSession     = 's'
	sessionHeader    = 0x00
	sessionResult    = 0x01
	sessionPrefixLen = 2 + 8
	sessionKeyLen    = sessionPrefixLen + 8 + 1
	sessionResultLen = sessionKeyLen + 8
	sessionHeaderMin = 16
)

func appendSessionPrefix(dst []byte, shardID uint64) []byte {
	dst = append(dst, prefixLocal, localSession)
	return binary.BigEndian.AppendUint64(dst, shardID)
}

// SessionSpan returns the span [start, end) of every session record of
// shardID.
func SessionSpan(shardID uint64) (start, end []byte) {
	start = appendSessionPrefix(make([]byte, 0, sessionPrefixLen), shardID)
	if shardID == ^uint64(0) {
		return start, []byte{prefixLocal, localSession + 1}
	}
	return start, appendSessionPrefix(make([]byte, 0, sessionPrefixLen), shardID+1)
}

// AppendSessionHeaderKey appends the key of the header of session sessionID
// of shardID to dst.
func AppendSessionHeaderKey(dst []byte, shardID, sessionID uint64) []byte {
	dst = appendSessionPrefix(dst, shardID)
	dst = binary.BigEndian.AppendUint64(dst, sessionID)
	return append(dst, sessionHeader)
}

// SessionHeaderKey returns AppendSessionHeaderKey(nil, shardID, sessionID).
func SessionHeaderKey(shardID, sessionID uint64) []byte {
	return AppendSessionHeaderKey(make([]byte, 0, sessionKeyLen), shardID, sessionID)
}

// AppendSessionResultKey appends the key of the result of request seq of
// session sessionID of shardID to dst.
func AppendSessionResultKey(dst []byte, shardID, sessionID, seq uint64) []byte {
	dst = appendSessionPrefix(dst, shardID)
	dst = binary.BigEndian.AppendUint64(dst, sessionID)
	dst = append(dst, sessionResult)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// SessionResultKey returns AppendSessionResultKey(nil, shardID, sessionID,
// seq).
func SessionResultKey(shardID, sessionID, seq uint64) []byte {
	return AppendSessionResultKey(make([]byte, 0, sessionResultLen), shardID, sessionID, seq)
}

// SessionKey is a decoded session record key.
type SessionKey struct {
	ShardID   uint64
	SessionID uint64
	// Result is set for a result record (of request Seq), clear for a
	// session header.
	Result bool
	Seq    uint64
}

// DecodeSessionKey decodes a session record key; ok is false for any other
// key.
func DecodeSessionKey(k []byte) (sk SessionKey, ok bool) {
	if len(k) < sessionKeyLen || k[0] != prefixLocal || k[1] != localSession {
		return SessionKey{}, false
	}
	sk.ShardID = binary.BigEndian.Uint64(k[2:10])
	sk.SessionID = binary.BigEndian.Uint64(k[10:18])
	switch {
	case len(k) == sessionKeyLen && k[18] == sessionHeader:
		return sk, true
	case len(k) == sessionResultLen && k[18] == sessionResult:
		sk.Result, sk.Seq = true, binary.BigEndian.Uint64(k[19:])
		return sk, true
	}
	return SessionKey{}, false
}

// SessionHeader is the state of one client session of a shard.
type SessionHeader struct {
	// Watermark is the lowest request sequence number the session may still
	// send: the client has the responses of every request below it.
	Watermark uint64
	// LastUsed is when the session last wrote, in Unix nanoseconds of the
	// leaders' clocks, as carried by the log.
	LastUsed int64
	// Results lists, in increasing order, the sequence numbers (at or above
	// Watermark) whose results are stored: the only result records the
	// session has, so that they are deleted by point deletions, without a
	// scan.
	Results []uint64
}

// Append appends h's encoding to dst: Watermark, LastUsed, then each of
// Results, 8 bytes big-endian each.
func (h SessionHeader) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, h.Watermark)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.LastUsed))
	for _, seq := range h.Results {
		dst = binary.BigEndian.AppendUint64(dst, seq)
	}
	return dst
}

// UnmarshalSessionHeader decodes what Append encoded (ErrCorrupt if
// malformed). Results reuses the capacity of into.
func UnmarshalSessionHeader(b []byte, into []uint64) (SessionHeader, error) {
	if len(b) < sessionHeaderMin || len(b)%8 != 0 {
		return SessionHeader{}, fmt.Errorf("%w: session header of %d bytes", ErrCorrupt, len(b))
	}
	h := SessionHeader{
		Watermark: binary.BigEndian.Uint64(b),
		LastUsed:  int64(binary.BigEndian.Uint64(b[8:])),
		Results:   into[:0],
	}
	for b = b[sessionHeaderMin:]; len(b) > 0; b = b[8:] {
		seq := binary.BigEndian.Uint64(b)
		if n := len(h.Results); seq < h.Watermark || n > 0 && seq <= h.Results[n-1] {
			return SessionHeader{}, fmt.Errorf("%w: session header results out of order", ErrCorrupt)
		}
		h.Results = append(h.Results, seq)
	}
	return h, nil
}

// describeSessionKey renders a session record key for DescribeKey.
func describeSessionKey(k []byte) (string, bool) {
	sk, ok := DecodeSessionKey(k)
	switch {
	case !ok:
		return "", false
	case sk.Result:
		return fmt.Sprintf("/shard/%d/session/%d/result/%d", sk.ShardID, sk.SessionID, sk.Seq), true
	}
	return fmt.Sprintf("/shard/%d/session/%d", sk.ShardID, sk.SessionID), true
}
