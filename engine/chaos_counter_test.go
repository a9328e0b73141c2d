package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/linearize"
	"github.com/flotilla-db/flotilla/storage"
)

// CAS counters: clients increment a counter per shard by compare-and-swap,
// "n|tag" to "n+1|tag'", where a tag names the operation that wrote the
// value. Values never repeat, so the final value of a counter names the
// swap that wrote it, whose expected old value names the one before, and so
// on down to the absent key: the chain of swaps that took effect, exactly
// once each. Checked against what the clients saw, every swap acknowledged
// is in the chain, every swap in the chain was acknowledged or has an
// unknown outcome (none that failed or reported no swap), and the counter
// equals the acknowledged swaps plus the unknown ones the chain shows took
// effect.

// counters are the chaos test's CAS counters and the swaps tried on them.
type counters struct {
	keys []string
	mu   sync.Mutex
	// swaps are the swaps tried, by the value they write (unique).
	swaps map[string]counterSwap
}

// counterSwap is one swap tried and what its client saw.
type counterSwap struct {
	key, old  string
	oldAbsent bool
	result    outcome
	swapped   bool // for outcomeOK: the result said it swapped
}

// newCounters makes a counter in each shard of descs.
func newCounters(descs []storage.Descriptor) *counters {
	c := &counters{swaps: map[string]counterSwap{}}
	for _, d := range descs {
		c.keys = append(c.keys, string(keysOf(d, 1)[0]))
	}
	return c
}

// countOf returns the count of a counter's value ("n|tag").
func countOf(v string) (int, error) {
	n, _, ok := strings.Cut(v, "|")
	if !ok {
		return 0, fmt.Errorf("counter value %q has no tag", v)
	}
	return strconv.Atoi(n)
}

// increment reads a counter on its leader and tries to swap its value for
// the next count; the read and the swap go into the history too.
func (cs *counters) increment(ctx context.Context, rt *router, rec *linearize.Recorder, rng *rand.Rand, sw *sessionWriter, client, n int) outcome {
	key, shard, e := rt.pick(rng, cs.keys)
	if e == nil {
		return outcomeNone
	}
	octx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	cur, found, ok := recordedGet(octx, rt, rec, e, shard, client, key, readLeader)
	if !ok {
		return outcomeFailed
	}
	count := 0
	if found {
		var err error
		if count, err = countOf(string(cur)); err != nil {
			panic(err) // only counters write these keys
		}
	}
	s := counterSwap{key: key, old: string(cur), oldAbsent: !found}
	next := fmt.Sprintf("%d|c%d-%d", count+1, client, n)
	op := linearize.CompareAndSwap(key, s.old, next)
	var old []byte
	if s.oldAbsent {
		op = linearize.CompareAndSwapAbsent(key, next)
	} else {
		old = cur
	}
	pend := rec.Begin(client, op)
	res, _, err := sw.write(octx, rt, rng, key, engine.CASCommand([]byte(key), old, []byte(next)))
	s.swapped, _, _, _ = engine.DecodeCASResult(res)
	s.result = finishSessionWrite(pend, err, linearize.Result{Swapped: s.swapped})
	cs.mu.Lock()
	cs.swaps[next] = s
	cs.mu.Unlock()
	return s.result
}

// check follows the chain of swaps down from key's final value and returns
// the count, the swaps acknowledged, and the swaps of unknown outcome that
// took effect; or what is wrong.
func (cs *counters) check(key, final string, found bool) (count, acked, unknown int, err error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if found {
		if count, err = countOf(final); err != nil {
			return 0, 0, 0, err
		}
	}
	inChain := map[string]bool{}
	v, present := final, found
	for depth := count; present; depth-- {
		s, ok := cs.swaps[v]
		switch {
		case !ok || s.key != key:
			return 0, 0, 0, fmt.Errorf("%q holds %q, which no swap of it wrote", key, v)
		case s.result == outcomeFailed || s.result == outcomeOK && !s.swapped:
			return 0, 0, 0, fmt.Errorf("%q: the swap that wrote %q took effect, but its client was told it did not (%v)", key, v, s.result)
		case depth <= 0:
			return 0, 0, 0, fmt.Errorf("%q: the chain of swaps down from %q is longer than its count", key, final)
		}
		if c, _ := countOf(v); c != depth {
			return 0, 0, 0, fmt.Errorf("%q: %q is at depth %d of the chain down from %q", key, v, depth, final)
		}
		inChain[v] = true
		if s.result == outcomeOK {
			acked++
		} else {
			unknown++
		}
		v, present = s.old, !s.oldAbsent
	}
	if acked+unknown != count {
		return 0, 0, 0, fmt.Errorf("%q: the chain down from %q has %d swaps, the count is %d", key, final, acked+unknown, count)
	}
	for v, s := range cs.swaps {
		if s.key == key && s.result == outcomeOK && s.swapped && !inChain[v] {
			return 0, 0, 0, fmt.Errorf("%q: the acknowledged swap to %q was lost (final value %q)", key, v, final)
		}
	}
	return count, acked, unknown, nil
}

// unknownSwaps returns the number of swaps of key whose outcome is unknown.
func (cs *counters) unknownSwaps(key string) int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	n := 0
	for _, s := range cs.swaps {
		if s.key == key && s.result == outcomeUnknown {
			n++
		}
	}
	return n
}
