package linearize

import (
	"fmt"
	"hash/maphash"
	"strconv"
	"time"

	"github.com/anishathalye/porcupine"
)

// state is the model's state for one key.
type state struct {
	value   string
	present bool
}

func (s state) String() string {
	if !s.present {
		return "absent"
	}
	return strconv.Quote(s.value)
}

// step applies op with output out to s. It reports whether the sequential
// specification allows that output, and the next state. It is pure.
func step(s state, op Op, out output) (bool, state) {
	switch op.Kind {
	case OpPut:
		return true, state{value: op.Value, present: true}
	case OpDelete:
		return true, state{}
	case OpGet:
		if out.unknown {
			return true, s
		}
		ok := out.res.Found == s.present && (!s.present || out.res.Value == s.value)
		return ok, s
	case OpCAS:
		matches := s.present && s.value == op.Old
		if op.OldAbsent {
			matches = !s.present
		}
		if !out.unknown && out.res.Swapped != matches {
			return false, s
		}
		if matches {
			return true, state{value: op.Value, present: true}
		}
		return true, s
	default:
		return false, s
	}
}

// partition splits a history by key, keys in order of first appearance.
// A key-value history is linearizable iff the history of each key is.
func partition(history []porcupine.Operation) [][]porcupine.Operation {
	index := make(map[string]int)
	var parts [][]porcupine.Operation
	for _, o := range history {
		key := o.Input.(Op).Key
		i, ok := index[key]
		if !ok {
			i = len(parts)
			index[key] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], o)
	}
	return parts
}

// model returns the porcupine model of a key-value store, partitioned by
// key: each partition's state is a single state.
func model() porcupine.Model {
	seed := maphash.MakeSeed()
	return porcupine.Model{
		Partition: partition,
		Init:      func() any { return state{} },
		Step: func(s, in, out any) (bool, any) {
			return step(s.(state), in.(Op), out.(output))
		},
		Equal: func(a, b any) bool { return a.(state) == b.(state) },
		Hash:  func(s any) uint64 { return maphash.Comparable(seed, s.(state)) },
		DescribeOperation: func(in, out any) string {
			return describe(in.(Op), out.(output))
		},
		DescribeState: func(s any) string { return s.(state).String() },
		DescribeOperationMetadata: func(m any) string {
			if m, ok := m.(timing); ok {
				return m.String()
			}
			return ""
		},
	}
}

// timing is an operation's porcupine Metadata: wall-clock offsets from the
// Recorder's creation, to match an operation with the cluster's logs.
type timing struct {
	call, ret time.Duration
	unknown   bool // ret is meaningless
}

func (t timing) String() string {
	if t.unknown {
		return fmt.Sprintf("called at %s, outcome unknown", t.call)
	}
	return fmt.Sprintf("called at %s, returned at %s", t.call, t.ret)
}
