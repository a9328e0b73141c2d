package linearize

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// store is a linearizable in-memory key-value store: a map under a mutex.
type store struct {
	mu sync.Mutex
	m  map[string]string
}

func newStore() *store { return &store{m: make(map[string]string)} }

func (s *store) apply(op Op) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[op.Key]
	switch op.Kind {
	case OpPut:
		s.m[op.Key] = op.Value
	case OpGet:
		return Result{Value: v, Found: ok}
	case OpDelete:
		delete(s.m, op.Key)
	case OpCAS:
		if (op.OldAbsent && !ok) || (!op.OldAbsent && ok && v == op.Old) {
			s.m[op.Key] = op.Value
			return Result{Swapped: true}
		}
	}
	return Result{}
}

// randomOp returns a random operation on one of nKeys keys; name makes the
// values it writes unique.
func randomOp(rng *rand.Rand, nKeys int, name string) Op {
	key := fmt.Sprintf("k%d", rng.IntN(nKeys))
	switch n := rng.IntN(10); {
	case n < 4:
		return Get(key)
	case n < 7:
		return Put(key, name)
	case n < 8:
		return Delete(key)
	case n < 9:
		return CompareAndSwapAbsent(key, name)
	default:
		// Old values are "c<client>-<i>": guess a recent one.
		return CompareAndSwap(key, fmt.Sprintf("c%d-%d", rng.IntN(2), rng.IntN(8)), name)
	}
}

func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// TestConcurrentRecording records clients that run concurrently against a
// linearizable store, some of whose operations fail or have unknown
// outcomes, and checks that the history is linearizable.
func TestConcurrentRecording(t *testing.T) {
	const (
		clients = 8
		opsEach = 150
		keys    = 4
	)
	seed := newRand(t).Uint64()
	s := newStore()
	r := NewRecorder(DefaultConfig())
	kept := make([]int, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			for i := range opsEach {
				op := randomOp(rng, keys, fmt.Sprintf("c%d-%d", c%2, i))
				p := r.Begin(c, op)
				switch n := rng.IntN(40); {
				case n == 0: // not applied, and known so
					p.Failed()
				case n == 1: // ambiguous: applied or not
					if rng.IntN(2) == 0 {
						s.apply(op)
					}
					p.Unknown()
					if op.Kind != OpGet {
						kept[c]++
					}
				default:
					p.End(s.apply(op))
					kept[c]++
				}
			}
		})
	}
	wg.Wait()

	want := 0
	for _, n := range kept {
		want += n
	}
	if got := len(r.history()); got != want {
		t.Fatalf("history has %d operations, want %d", got, want)
	}
	start := time.Now()
	if res := check(t, r); res.Outcome != Ok {
		t.Fatalf("got %v, want ok", res)
	}
	t.Logf("checked %d operations in %s", want, time.Since(start))
}

// TestRandomSequential checks a larger sequential history: it must pass,
// quickly, and fail once a single read is corrupted.
func TestRandomSequential(t *testing.T) {
	const n, keys = 20000, 16
	rng := newRand(t)
	s := newStore()
	r := NewRecorder(DefaultConfig())
	corrupt := NewRecorder(DefaultConfig())
	corrupted := false
	for i := range n {
		c := rng.IntN(4)
		op := randomOp(rng, keys, fmt.Sprintf("c%d-%d", c%2, i%8))
		out := s.apply(op)
		do(r, c, op, out)
		if !corrupted && i > n/2 && op.Kind == OpGet && out.Found {
			out.Value += "!"
			corrupted = true
		}
		do(corrupt, c, op, out)
	}

	start := time.Now()
	if res := check(t, r); res.Outcome != Ok {
		t.Fatalf("got %v, want ok", res)
	}
	t.Logf("checked %d operations in %s", n, time.Since(start))
	if res := check(t, corrupt); res.Outcome != Illegal {
		t.Fatalf("corrupted history: got %v, want illegal", res)
	} else {
		t.Log(res)
	}
}
