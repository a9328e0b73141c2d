package linearize

import "testing"

func TestStep(t *testing.T) {
	absent := state{}
	a := state{value: "a", present: true}
	empty := state{value: "", present: true}
	done := func(r Result) output { return output{res: r} }
	unknown := output{unknown: true}

	for _, tc := range []struct {
		name   string
		s      state
		op     Op
		out    output
		wantOk bool
		want   state
	}{
		{"put", absent, Put("k", "a"), done(Result{}), true, a},
		{"put overwrites", empty, Put("k", "a"), done(Result{}), true, a},
		{"delete", a, Delete("k"), done(Result{}), true, absent},
		{"delete absent", absent, Delete("k"), done(Result{}), true, absent},
		{"get value", a, Get("k"), done(Result{Value: "a", Found: true}), true, a},
		{"get wrong value", a, Get("k"), done(Result{Value: "b", Found: true}), false, a},
		{"get absent", absent, Get("k"), done(Result{}), true, absent},
		{"get absent but present", a, Get("k"), done(Result{}), false, a},
		{"get empty value is not absent", empty, Get("k"), done(Result{}), false, empty},
		{"get empty value", empty, Get("k"), done(Result{Found: true}), true, empty},
		{"get found but absent", absent, Get("k"), done(Result{Found: true}), false, absent},
		{"get unknown", a, Get("k"), unknown, true, a},
		{"cas match swaps", a, CompareAndSwap("k", "a", "b"), done(Result{Swapped: true}), true, state{"b", true}},
		{"cas match must swap", a, CompareAndSwap("k", "a", "b"), done(Result{}), false, a},
		{"cas mismatch", a, CompareAndSwap("k", "x", "b"), done(Result{}), true, a},
		{"cas mismatch cannot swap", a, CompareAndSwap("k", "x", "b"), done(Result{Swapped: true}), false, a},
		{"cas on absent", absent, CompareAndSwap("k", "", "b"), done(Result{}), true, absent},
		{"cas absent on absent", absent, CompareAndSwapAbsent("k", "b"), done(Result{Swapped: true}), true, state{"b", true}},
		{"cas absent on empty value", empty, CompareAndSwapAbsent("k", "b"), done(Result{}), true, empty},
		{"cas unknown match", a, CompareAndSwap("k", "a", "b"), unknown, true, state{"b", true}},
		{"cas unknown mismatch", a, CompareAndSwap("k", "x", "b"), unknown, true, a},
		{"put unknown", absent, Put("k", "a"), unknown, true, a},
		{"invalid op", a, Op{Key: "k"}, done(Result{}), false, a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, got := step(tc.s, tc.op, tc.out)
			if ok != tc.wantOk || (ok && got != tc.want) {
				t.Fatalf("step(%v, %v, %+v) = %t, %v; want %t, %v", tc.s, tc.op, tc.out, ok, got, tc.wantOk, tc.want)
			}
		})
	}
}
