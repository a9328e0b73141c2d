package engine

import (
	"encoding/binary"
	"fmt"
)

// A Batch command applies several Puts, Deletes and CompareAndSwaps of
// distinct keys as one: every CAS's condition is checked against the state
// before the batch, and either all of them hold and every write is made, or
// one fails and nothing is written. It is one raft entry, so it is bounded by
// Config.MaxProposalBytes like any command. The meta shard uses it to write a
// record together with the version of the set it belongs to.
//
// Result: 1 when applied; else 0 uvarint(i) found current, the index of the
// first CAS whose condition failed, whether its key exists and its value.

// BatchCommand encodes a batch of Put, Delete and CAS commands (PutCommand,
// DeleteCommand, CASCommand) on distinct keys, applied all or none; the
// result decodes with DecodeBatchResult. A batch that repeats a key or
// holds another kind of command is refused with ErrBadRequest at apply.
func BatchCommand(ops ...[]byte) []byte {
	n := 1 + binary.MaxVarintLen32
	for _, op := range ops {
		n += binary.MaxVarintLen32 + len(op)
	}
	b := make([]byte, 0, n)
	b = append(b, kvBatch)
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, op := range ops {
		b = appendField(b, op)
	}
	return b
}

// BatchResult is a decoded batch result.
type BatchResult struct {
	// Applied: every condition held and every write was made.
	Applied bool
	// Failed is the index of the first CAS whose condition failed, when
	// not Applied; Found and Current are its key's state.
	Failed  int
	Found   bool
	Current []byte
}

// DecodeBatchResult decodes the result of a Batch.
func DecodeBatchResult(b []byte) (BatchResult, error) {
	switch {
	case len(b) == 1 && b[0] == 1:
		return BatchResult{Applied: true}, nil
	case len(b) < 3 || b[0] != 0:
		return BatchResult{}, fmt.Errorf("%w: batch result of %d bytes", ErrBadRequest, len(b))
	}
	i, w := binary.Uvarint(b[1:])
	if w <= 0 || len(b) < 2+w || i > 1<<31 {
		return BatchResult{}, fmt.Errorf("%w: batch result", ErrBadRequest)
	}
	rest := b[1+w:]
	return BatchResult{Failed: int(i), Found: rest[0] == 1, Current: rest[1:]}, nil
}

// applyBatch applies the body of a Batch command: it decodes and checks
// every op before it writes anything.
func applyBatch(s *ApplyContext, b []byte) ([]byte, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 {
		return nil, fmt.Errorf("%w: truncated batch", ErrBadRequest)
	}
	b = b[w:]
	writes := make([]kvWrite, 0, min(n, uint64(len(b))))
	keys := make(map[string]struct{}, cap(writes))
	for i := range n {
		op, rest, err := cutField(b)
		if err != nil {
			return nil, err
		}
		wr, err := decodeWrite(op)
		if err != nil {
			return nil, fmt.Errorf("batch op %d: %w", i, err)
		}
		if _, dup := keys[string(wr.key)]; dup {
			return nil, fmt.Errorf("%w: batch op %d repeats a key", ErrBadRequest, i)
		}
		if err := s.Check(wr.key); err != nil {
			return nil, err
		}
		keys[string(wr.key)] = struct{}{}
		writes = append(writes, wr)
		b = rest
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the batch's ops", ErrBadRequest, len(b))
	}
	for i, wr := range writes {
		if wr.op != kvCAS {
			continue
		}
		cur, found, err := s.Get(wr.key)
		if err != nil {
			return nil, err
		}
		if !wr.holds(cur, found) {
			res := binary.AppendUvarint([]byte{0}, uint64(i))
			if found {
				return append(append(res, 1), cur...), nil
			}
			return append(res, 0), nil
		}
	}
	for _, wr := range writes {
		if err := wr.write(s); err != nil {
			return nil, err
		}
	}
	return []byte{1}, nil
}
