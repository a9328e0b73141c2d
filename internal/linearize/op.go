package linearize

import (
	"fmt"
	"strconv"
)

// OpKind is the kind of a key-value operation.
type OpKind uint8

const (
	// OpPut writes Value under Key.
	OpPut OpKind = iota + 1
	// OpGet reads Key.
	OpGet
	// OpDelete removes Key.
	OpDelete
	// OpCAS writes Value under Key iff the current value matches Old (or the
	// key is absent, if OldAbsent).
	OpCAS
)

func (k OpKind) String() string {
	switch k {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	default:
		return fmt.Sprintf("OpKind(%d)", uint8(k))
	}
}

// Op is the input of one operation. Build it with Put, Get, Delete,
// CompareAndSwap or CompareAndSwapAbsent.
type Op struct {
	Kind OpKind
	Key  string
	// Value is the value written by a Put, or the new value of a CAS.
	Value string
	// Old is the value a CAS expects; ignored if OldAbsent.
	Old string
	// OldAbsent makes a CAS expect the key to be absent.
	OldAbsent bool
}

// Put returns the Op that writes value under key.
func Put(key, value string) Op { return Op{Kind: OpPut, Key: key, Value: value} }

// Get returns the Op that reads key.
func Get(key string) Op { return Op{Kind: OpGet, Key: key} }

// Delete returns the Op that removes key.
func Delete(key string) Op { return Op{Kind: OpDelete, Key: key} }

// CompareAndSwap returns the Op that writes new under key iff key is present
// with value old.
func CompareAndSwap(key, old, new string) Op {
	return Op{Kind: OpCAS, Key: key, Old: old, Value: new}
}

// CompareAndSwapAbsent returns the Op that writes new under key iff key is
// absent.
func CompareAndSwapAbsent(key, new string) Op {
	return Op{Kind: OpCAS, Key: key, OldAbsent: true, Value: new}
}

func (op Op) valid() bool { return op.Kind >= OpPut && op.Kind <= OpCAS }

func (op Op) String() string {
	switch op.Kind {
	case OpPut:
		return fmt.Sprintf("put(%q, %q)", op.Key, op.Value)
	case OpGet:
		return fmt.Sprintf("get(%q)", op.Key)
	case OpDelete:
		return fmt.Sprintf("delete(%q)", op.Key)
	case OpCAS:
		old := "absent"
		if !op.OldAbsent {
			old = strconv.Quote(op.Old)
		}
		return fmt.Sprintf("cas(%q, %s -> %q)", op.Key, old, op.Value)
	default:
		return op.Kind.String()
	}
}

// Result is the output of a completed operation. Only the fields of the
// operation's kind are read: Value and Found for a Get, Swapped for a CAS.
// Put and Delete have no output.
type Result struct {
	Value   string
	Found   bool
	Swapped bool
}

// output is what the history stores as porcupine's Operation.Output.
type output struct {
	res Result
	// unknown marks an operation whose outcome is unknown: the model accepts
	// any output for it.
	unknown bool
}

// describe renders an operation for descriptions and the visualization.
func describe(op Op, out output) string {
	switch {
	case out.unknown:
		return op.String() + " -> unknown"
	case op.Kind == OpGet && !out.res.Found:
		return op.String() + " -> absent"
	case op.Kind == OpGet:
		return fmt.Sprintf("%s -> %q", op, out.res.Value)
	case op.Kind == OpCAS:
		return fmt.Sprintf("%s -> %t", op, out.res.Swapped)
	default:
		return op.String()
	}
}
