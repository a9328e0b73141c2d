package linearize

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Outcome is the verdict of a linearizability check.
type Outcome string

const (
	// Ok means the history is linearizable.
	Ok Outcome = "ok"
	// Illegal means the history is not linearizable.
	Illegal Outcome = "illegal"
	// Unknown means the check timed out before reaching a verdict.
	Unknown Outcome = "unknown"
)

// CheckResult is the result of Check.
type CheckResult struct {
	Outcome Outcome
	// Description says, for Illegal, which keys are not linearizable and
	// which of their operations the checker could not order. If the timeout
	// expired meanwhile, a key whose check it cut short is listed too.
	Description string
	// Visualization is the path of the HTML visualization Check wrote, or "".
	Visualization string
}

func (r CheckResult) String() string {
	s := string(r.Outcome)
	if r.Description != "" {
		s += ": " + r.Description
	}
	if r.Visualization != "" {
		s += "\nvisualization: " + r.Visualization
	}
	return s
}

// Limits that keep a Description short.
const (
	maxKeysDescribed = 3
	maxOpsDescribed  = 5
)

// Check checks the history recorded so far for linearizability, key by key.
// Operations still in flight count as having an unknown outcome. A timeout
// of 0 means no timeout; when it expires the outcome is Unknown. Check may
// be called while clients are still recording.
//
// If the history is Illegal and Config.VisualizationPath is set, Check writes
// the visualization there; the error reports a failure to write it.
func (r *Recorder) Check(timeout time.Duration) (CheckResult, error) {
	history := r.history()
	slices.SortFunc(history, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	m := model()
	res, info := porcupine.CheckOperationsVerbose(m, history, timeout)
	switch res {
	case porcupine.Ok:
		return CheckResult{Outcome: Ok}, nil
	case porcupine.Unknown:
		return CheckResult{Outcome: Unknown}, nil
	}
	out := CheckResult{Outcome: Illegal, Description: describeIllegal(partition(history), info)}
	if path := r.cfg.VisualizationPath; path != "" {
		if err := porcupine.VisualizePath(m, info, path); err != nil {
			return out, fmt.Errorf("linearize: writing visualization: %w", err)
		}
		out.Visualization = path
	}
	return out, nil
}

// describeIllegal describes the partitions (in the order partition returns
// them, as porcupine does) that have no complete linearization.
func describeIllegal(parts [][]porcupine.Operation, info porcupine.LinearizationInfo) string {
	partials := info.PartialLinearizationsOperations()
	var b strings.Builder
	illegal := 0
	for i, ops := range parts {
		var longest []porcupine.Operation
		for _, l := range partials[i] {
			if len(l) > len(longest) {
				longest = l
			}
		}
		if len(longest) == len(ops) {
			continue
		}
		illegal++
		if illegal <= maxKeysDescribed {
			describeKey(&b, ops, longest)
		}
	}
	if illegal > maxKeysDescribed {
		fmt.Fprintf(&b, "\n... and %d more keys", illegal-maxKeysDescribed)
	}
	keys := "keys"
	if illegal == 1 {
		keys = "key"
	}
	return fmt.Sprintf("%d %s not linearizable%s", illegal, keys, b.String())
}

// describeKey describes one key's history ops, whose longest linearizable
// prefix is longest: the end of that prefix, and the operations left out.
func describeKey(b *strings.Builder, ops, longest []porcupine.Operation) {
	key := ops[0].Input.(Op).Key
	fmt.Fprintf(b, "\nkey %q: %d operations, longest linearizable prefix %d", key, len(ops), len(longest))
	s := state{}
	for _, o := range longest {
		_, s = step(s, o.Input.(Op), o.Output.(output))
	}
	if len(longest) > 0 {
		fmt.Fprintf(b, ", ending in state %s with:", s)
		for _, o := range longest[max(0, len(longest)-maxOpsDescribed):] {
			fmt.Fprintf(b, "\n    %s", describeOp(o))
		}
	}
	// Calls are unique stamps: they identify operations.
	in := make(map[int64]bool, len(longest))
	for _, o := range longest {
		in[o.Call] = true
	}
	var left []porcupine.Operation
	for _, o := range ops {
		if !in[o.Call] {
			left = append(left, o)
		}
	}
	slices.SortFunc(left, func(a, b porcupine.Operation) int { return cmp.Compare(a.Return, b.Return) })
	b.WriteString("\n  left out (earliest return first):")
	for _, o := range left[:min(len(left), maxOpsDescribed)] {
		fmt.Fprintf(b, "\n    %s", describeOp(o))
	}
	if len(left) > maxOpsDescribed {
		fmt.Fprintf(b, "\n    ... and %d more", len(left)-maxOpsDescribed)
	}
}

func describeOp(o porcupine.Operation) string {
	return fmt.Sprintf("client %d: %s [%s]", o.ClientId, describe(o.Input.(Op), o.Output.(output)), o.Metadata.(timing))
}
