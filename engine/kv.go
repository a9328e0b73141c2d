package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The built-in key-value state machine, the storage a sharded database
// builds on: Put, Delete, CompareAndSwap and Batch are commands (Propose),
// Get and Scan are queries (Read, ReadLocal). Keys live in the shared Pebble
// under the user-data keys, placed by the PartitionRule; writes are applied
// in the batch that also advances the applied index.
//
// Wire format of commands and queries, first byte the operation:
//
//	Put    1 uvarint(len key) key value
//	Delete 2 key
//	CAS    3 uvarint(len key) key flags uvarint(len old) old new
//	       flags: 1 = expect the key absent, 2 = delete on swap
//	Get    4 key
//	Scan   5 uvarint(limit) uvarint(len after) after
//	Batch  6 uvarint(n) n × (uvarint(len op) op), each op a Put, Delete or
//	       CAS of a distinct key, applied all or none (kvbatch.go)
const (
	kvPut    = 1
	kvDelete = 2
	kvCAS    = 3
	kvGet    = 4
	kvScan   = 5
	kvBatch  = 6

	casExpectAbsent = 1
	casDelete       = 2
)

// ErrEmptyKey is returned for a command or query with an empty key.
var ErrEmptyKey = errors.New("engine: empty key")

// KV is the built-in key-value state machine.
type KV struct{}

// NewKV returns the key-value state machine.
func NewKV() *KV { return &KV{} }

func appendField(b, f []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

func cutField(b []byte) (f, rest []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, nil, fmt.Errorf("%w: truncated field", ErrBadRequest)
	}
	return b[w : w+int(n)], b[w+int(n):], nil
}

// PutCommand encodes Put(key, value).
func PutCommand(key, value []byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen32+len(key)+len(value))
	b = append(b, kvPut)
	b = appendField(b, key)
	return append(b, value...)
}

// DeleteCommand encodes Delete(key); its result decodes with DecodeDeleteResult.
func DeleteCommand(key []byte) []byte { return append([]byte{kvDelete}, key...) }

// CASCommand encodes CompareAndSwap: if key's value is old (or the key is
// absent, when old is nil), set it to new (or delete it, when new is nil).
// The result decodes with DecodeCASResult.
func CASCommand(key, old, new []byte) []byte {
	var flags byte
	if old == nil {
		flags |= casExpectAbsent
	}
	if new == nil {
		flags |= casDelete
	}
	b := make([]byte, 0, 3+2*binary.MaxVarintLen32+len(key)+len(old)+len(new))
	b = append(b, kvCAS)
	b = appendField(b, key)
	b = append(b, flags)
	b = appendField(b, old)
	return append(b, new...)
}

// GetQuery encodes Get(key); the result decodes with DecodeGetResult.
func GetQuery(key []byte) []byte { return append([]byte{kvGet}, key...) }

// ScanQuery encodes a scan of up to limit keys of the shard in hash order,
// after the position after (nil: from the start; else the Next of a previous
// ScanResult).
func ScanQuery(after []byte, limit int) []byte {
	b := []byte{kvScan}
	b = binary.AppendUvarint(b, uint64(limit))
	return appendField(b, after)
}

// DecodeGetResult decodes the result of a Get.
func DecodeGetResult(b []byte) (value []byte, found bool, err error) {
	if len(b) < 1 {
		return nil, false, fmt.Errorf("%w: empty get result", ErrBadRequest)
	}
	return b[1:], b[0] == 1, nil
}

// DecodeDeleteResult reports whether the deleted key existed.
func DecodeDeleteResult(b []byte) (existed bool, err error) {
	if len(b) != 1 {
		return false, fmt.Errorf("%w: delete result of %d bytes", ErrBadRequest, len(b))
	}
	return b[0] == 1, nil
}

// DecodeCASResult decodes the result of a CompareAndSwap: whether it
// swapped, and the value it found (found false: the key was absent).
func DecodeCASResult(b []byte) (swapped bool, current []byte, found bool, err error) {
	if len(b) < 2 {
		return false, nil, false, fmt.Errorf("%w: cas result of %d bytes", ErrBadRequest, len(b))
	}
	return b[0] == 1, b[2:], b[1] == 1, nil
}

// KeyValue is one pair of a scan.
type KeyValue struct{ Key, Value []byte }

// ScanResult is a decoded scan: the pairs, and the position to resume after
// (nil when the shard's range is exhausted).
type ScanResult struct {
	Pairs []KeyValue
	Next  []byte
}

// DecodeScanResult decodes the result of a Scan.
func DecodeScanResult(b []byte) (ScanResult, error) {
	var res ScanResult
	n, w := binary.Uvarint(b)
	if w <= 0 {
		return res, fmt.Errorf("%w: scan result", ErrBadRequest)
	}
	b = b[w:]
	for i := uint64(0); i < n; i++ {
		k, rest, err := cutField(b)
		if err != nil {
			return res, err
		}
		v, rest, err := cutField(rest)
		if err != nil {
			return res, err
		}
		res.Pairs = append(res.Pairs, KeyValue{k, v})
		b = rest
	}
	next, _, err := cutField(b)
	if err != nil {
		return res, err
	}
	if len(next) > 0 {
		res.Next = next
	}
	return res, nil
}

// kvWrite is one decoded Put, Delete or CAS.
type kvWrite struct {
	op    byte
	key   []byte
	flags byte   // of a CAS
	old   []byte // of a CAS
	value []byte // of a Put; a CAS's new value
}

// decodeWrite decodes a Put, Delete or CAS command.
func decodeWrite(cmd []byte) (kvWrite, error) {
	if len(cmd) == 0 {
		return kvWrite{}, fmt.Errorf("%w: empty command", ErrBadRequest)
	}
	w := kvWrite{op: cmd[0]}
	var err error
	switch w.op {
	case kvPut:
		w.key, w.value, err = cutField(cmd[1:])
	case kvDelete:
		w.key = cmd[1:]
	case kvCAS:
		var rest []byte
		if w.key, rest, err = cutField(cmd[1:]); err == nil {
			if len(rest) < 1 {
				return w, fmt.Errorf("%w: truncated cas", ErrBadRequest)
			}
			w.flags = rest[0]
			w.old, w.value, err = cutField(rest[1:])
		}
	default:
		return w, fmt.Errorf("%w: unknown command %d", ErrBadRequest, w.op)
	}
	if err != nil {
		return w, err
	}
	if len(w.key) == 0 {
		return w, ErrEmptyKey
	}
	return w, nil
}

// holds reports whether w's condition holds on the key's current value:
// always for a Put or a Delete.
func (w kvWrite) holds(cur []byte, found bool) bool {
	if w.op != kvCAS {
		return true
	}
	if w.flags&casExpectAbsent != 0 {
		return !found
	}
	return found && string(cur) == string(w.old)
}

// write makes w's change, its condition aside.
func (w kvWrite) write(s *ApplyContext) error {
	if w.op == kvDelete || (w.op == kvCAS && w.flags&casDelete != 0) {
		return s.Delete(w.key)
	}
	return s.Set(w.key, w.value)
}

// Apply implements StateMachine.
func (KV) Apply(s *ApplyContext, cmd []byte) ([]byte, error) {
	if len(cmd) > 0 && cmd[0] == kvBatch {
		return applyBatch(s, cmd[1:])
	}
	w, err := decodeWrite(cmd)
	if err != nil {
		return nil, err
	}
	if w.op == kvPut {
		return nil, w.write(s)
	}
	cur, found, err := s.Get(w.key)
	if err != nil {
		return nil, err
	}
	if w.op == kvDelete {
		if !found {
			return []byte{0}, nil
		}
		return []byte{1}, w.write(s)
	}
	res := []byte{0, 0}
	if found {
		res[1] = 1
	}
	if !w.holds(cur, found) {
		return append(res, cur...), nil
	}
	res[0] = 1
	return append(res, cur...), w.write(s)
}

// Query implements StateMachine.
func (KV) Query(s *QueryContext, q []byte) ([]byte, error) {
	if len(q) == 0 {
		return nil, fmt.Errorf("%w: empty query", ErrBadRequest)
	}
	switch q[0] {
	case kvGet:
		if len(q) == 1 {
			return nil, ErrEmptyKey
		}
		v, found, err := s.Get(q[1:])
		if err != nil {
			return nil, err
		}
		if !found {
			return []byte{0}, nil
		}
		return append([]byte{1}, v...), nil
	case kvScan:
		limit, w := binary.Uvarint(q[1:])
		if w <= 0 {
			return nil, fmt.Errorf("%w: truncated scan", ErrBadRequest)
		}
		after, _, err := cutField(q[1+w:])
		if err != nil {
			return nil, err
		}
		if len(after) == 0 {
			after = nil
		}
		if limit == 0 {
			limit = 1000
		}
		var (
			n    uint64
			body []byte
		)
		last, err := s.Scan(after, func(k, v []byte) bool {
			body = appendField(body, k)
			body = appendField(body, v)
			n++
			return n < limit
		})
		if err != nil {
			return nil, err
		}
		out := binary.AppendUvarint(nil, n)
		out = append(out, body...)
		if n < limit {
			last = nil // exhausted
		}
		return appendField(out, last), nil
	}
	return nil, fmt.Errorf("%w: unknown query %d", ErrBadRequest, q[0])
}
