package linearize

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Results, for brevity.
var (
	none    = Result{}
	swapped = Result{Swapped: true}
)

func found(v string) Result { return Result{Value: v, Found: true} }

// do records a complete operation that no other operation overlaps.
func do(r *Recorder, clientID int, op Op, out Result) { r.Begin(clientID, op).End(out) }

func check(t *testing.T, r *Recorder) CheckResult {
	t.Helper()
	res, err := r.Check(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCheck checks hand-built histories. Each one is recorded from a single
// goroutine, so the order of Begin and End calls is the history.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(r *Recorder)
		want  Outcome
	}{
		{"empty", func(r *Recorder) {}, Ok},
		{"sequential", func(r *Recorder) {
			do(r, 0, Get("k"), none)
			do(r, 0, Put("k", "a"), none)
			do(r, 1, Get("k"), found("a"))
			do(r, 1, CompareAndSwap("k", "a", "b"), swapped)
			do(r, 0, CompareAndSwap("k", "a", "c"), none)
			do(r, 0, Get("k"), found("b"))
			do(r, 1, Delete("k"), none)
			do(r, 0, Get("k"), none)
			do(r, 0, CompareAndSwapAbsent("k", "d"), swapped)
			do(r, 1, CompareAndSwapAbsent("k", "e"), none)
			do(r, 1, Get("k"), found("d"))
		}, Ok},
		{"read concurrent with write sees the new value", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			w := r.Begin(0, Put("k", "b"))
			g := r.Begin(1, Get("k"))
			g.End(found("b"))
			w.End(none)
		}, Ok},
		{"read concurrent with write sees the old value", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			w := r.Begin(0, Put("k", "b"))
			g := r.Begin(1, Get("k"))
			w.End(none)
			g.End(found("a"))
		}, Ok},
		{"concurrent reads disagree in a legal order", func(r *Recorder) {
			w := r.Begin(0, Put("k", "a"))
			g1 := r.Begin(1, Get("k"))
			g2 := r.Begin(2, Get("k"))
			g1.End(found("a"))
			g2.End(none)
			w.End(none)
		}, Ok},
		{"keys are independent", func(r *Recorder) {
			do(r, 0, Put("x", "1"), none)
			do(r, 1, Put("y", "2"), none)
			do(r, 0, Get("y"), found("2"))
			do(r, 1, Get("x"), found("1"))
			do(r, 1, Get("z"), none)
		}, Ok},
		{"concurrent CAS from the same old value, one wins", func(r *Recorder) {
			do(r, 0, Put("k", "0"), none)
			c1 := r.Begin(1, CompareAndSwap("k", "0", "1"))
			c2 := r.Begin(2, CompareAndSwap("k", "0", "2"))
			c2.End(none)
			c1.End(swapped)
			do(r, 0, Get("k"), found("1"))
		}, Ok},

		{"stale read after a completed write", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			do(r, 0, Put("k", "b"), none)
			do(r, 1, Get("k"), found("a"))
		}, Illegal},
		{"lost write", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			do(r, 1, Get("k"), found("a"))
			do(r, 1, Get("k"), none)
		}, Illegal},
		{"read goes back in time", func(r *Recorder) {
			w := r.Begin(0, Put("k", "a"))
			do(r, 1, Get("k"), found("a"))
			do(r, 2, Get("k"), none)
			w.End(none)
		}, Illegal},
		{"CAS succeeds twice from the same old value", func(r *Recorder) {
			do(r, 0, Put("k", "0"), none)
			c1 := r.Begin(1, CompareAndSwap("k", "0", "1"))
			c2 := r.Begin(2, CompareAndSwap("k", "0", "2"))
			c1.End(swapped)
			c2.End(swapped)
		}, Illegal},
		{"CAS from absent succeeds on a present key", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			do(r, 1, CompareAndSwapAbsent("k", "b"), swapped)
		}, Illegal},
		{"read of a value never written", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			g := r.Begin(1, Get("k"))
			w := r.Begin(0, Put("k", "b"))
			g.End(found("c"))
			w.End(none)
		}, Illegal},
		{"one bad key among good ones", func(r *Recorder) {
			do(r, 0, Put("x", "1"), none)
			do(r, 0, Put("y", "1"), none)
			do(r, 1, Get("x"), found("1"))
			do(r, 1, Get("y"), found("2"))
		}, Illegal},

		{"unknown write that took effect", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(0, Put("k", "b")).Unknown()
			do(r, 1, Get("k"), found("b"))
		}, Ok},
		{"unknown write that did not take effect", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(0, Put("k", "b")).Unknown()
			do(r, 1, Get("k"), found("a"))
			do(r, 1, Get("k"), found("a"))
		}, Ok},
		{"unknown write that took effect late", func(r *Recorder) {
			r.Begin(0, Put("k", "b")).Unknown()
			do(r, 1, Get("k"), none)
			do(r, 1, Put("k", "a"), none)
			do(r, 1, Get("k"), found("a"))
			do(r, 1, Get("k"), found("b"))
		}, Ok},
		{"unknown write cannot be undone", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(0, Put("k", "b")).Unknown()
			do(r, 1, Get("k"), found("b"))
			do(r, 1, Get("k"), found("a"))
		}, Illegal},
		{"unknown delete that took effect", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(0, Delete("k")).Unknown()
			do(r, 1, Get("k"), none)
		}, Ok},
		{"unknown delete that did not take effect", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(0, Delete("k")).Unknown()
			do(r, 1, Get("k"), found("a"))
		}, Ok},
		{"unknown CAS that took effect", func(r *Recorder) {
			do(r, 0, Put("k", "0"), none)
			r.Begin(0, CompareAndSwap("k", "0", "1")).Unknown()
			do(r, 1, Get("k"), found("1"))
		}, Ok},
		{"unknown CAS that did not take effect", func(r *Recorder) {
			do(r, 0, Put("k", "0"), none)
			r.Begin(0, CompareAndSwap("k", "0", "1")).Unknown()
			do(r, 1, Get("k"), found("0"))
		}, Ok},
		{"unknown CAS cannot swap from another value", func(r *Recorder) {
			do(r, 0, Put("k", "0"), none)
			r.Begin(0, CompareAndSwap("k", "9", "1")).Unknown()
			do(r, 1, Get("k"), found("1"))
		}, Illegal},
		{"unknown read is dropped", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(1, Get("k")).Unknown()
		}, Ok},
		{"failed write is dropped", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(0, Put("k", "b")).Failed()
			do(r, 1, Get("k"), found("a"))
		}, Ok},
		{"failed write cannot be seen", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(0, Put("k", "b")).Failed()
			do(r, 1, Get("k"), found("b"))
		}, Illegal},
		{"write in flight at check counts as unknown", func(r *Recorder) {
			do(r, 0, Put("k", "a"), none)
			r.Begin(0, Put("k", "b"))
			r.Begin(2, Get("k"))
			do(r, 1, Get("k"), found("b"))
		}, Ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRecorder(DefaultConfig())
			tc.build(r)
			if res := check(t, r); res.Outcome != tc.want {
				t.Fatalf("got %v, want %s", res, tc.want)
			}
		})
	}
}

func TestIllegalDescription(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.html")
	r := NewRecorder(Config{VisualizationPath: path})
	do(r, 0, Put("good", "1"), none)
	do(r, 0, Put("bad", "a"), none)
	do(r, 0, Put("bad", "b"), none)
	do(r, 1, Get("good"), found("1"))
	do(r, 1, Get("bad"), found("a"))

	res := check(t, r)
	t.Log(res)
	if res.Outcome != Illegal {
		t.Fatalf("got %v, want illegal", res)
	}
	for _, want := range []string{`1 key not linearizable`, `key "bad"`, `client 0: put("bad", "b")`, `client 1: get("bad") -> "a"`} {
		if !strings.Contains(res.Description, want) {
			t.Errorf("description lacks %q:\n%s", want, res.Description)
		}
	}
	if strings.Contains(res.Description, `"good"`) {
		t.Errorf("description names a linearizable key:\n%s", res.Description)
	}
	if res.Visualization != path {
		t.Fatalf("visualization path %q, want %q", res.Visualization, path)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("visualization not written: %v", err)
	}
}

func TestVisualizationError(t *testing.T) {
	r := NewRecorder(Config{VisualizationPath: filepath.Join(t.TempDir(), "missing", "h.html")})
	do(r, 0, Get("k"), found("a"))
	res, err := r.Check(10 * time.Second)
	if err == nil || res.Outcome != Illegal || res.Visualization != "" {
		t.Fatalf("got %v, %v; want illegal and an error", res, err)
	}
}

func TestFinishTwicePanics(t *testing.T) {
	r := NewRecorder(DefaultConfig())
	p := r.Begin(0, Put("k", "a"))
	p.End(none)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	p.Unknown()
}

func TestCheckTimeout(t *testing.T) {
	// Refuting the read takes trying every order of the writes whose outcome
	// is unknown: far longer than the timeout.
	r := NewRecorder(DefaultConfig())
	for i := range 30 {
		r.Begin(i, Put("k", fmt.Sprint(i))).Unknown()
	}
	do(r, 30, Get("k"), found("never written"))
	res, err := r.Check(50 * time.Millisecond)
	if err != nil || res.Outcome != Unknown {
		t.Fatalf("got %v, %v; want unknown", res, err)
	}
}
