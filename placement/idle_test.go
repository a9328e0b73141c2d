package placement

import (
	"context"
	"testing"
	"time"
)

// versionedFake is the fake cluster as a VersionedSource whose version the
// test moves by hand.
type versionedFake struct {
	*fakeCluster
	version uint64
	// cost: how far State moves the fake clock (a step that takes time).
	cost time.Duration
}

func (v *versionedFake) State(ctx context.Context) (State, error) {
	v.now = v.now.Add(v.cost)
	return v.fakeCluster.State(ctx)
}

func (v *versionedFake) Version(context.Context) (uint64, error) { return v.version, nil }

// TestDriverIdle: once a step finds nothing to do, Run's steps are skipped
// (due is false) until the source's version moves or IdleInterval passes;
// a step that finds something to do, operations in flight, a source
// without a version, or a node that does not lead the meta shard never
// skip.
func TestDriverIdle(t *testing.T) {
	f := newFake(t, 3, 3, 30, 3)
	vf := &versionedFake{fakeCluster: f}
	h := newHarness(t, f, DriverConfig{})
	h.src = vf
	h.newDriver()
	ctx := context.Background()
	idle := h.d.cfg.IdleInterval

	h.settle(200) // balanced: nothing to do
	h.step(time.Second)
	if h.d.due(ctx) {
		t.Fatal("due after a step that found nothing to do")
	}
	f.now = f.now.Add(idle - 2*time.Second)
	if h.d.due(ctx) {
		t.Fatal("due before IdleInterval with the version unchanged")
	}
	vf.version++
	if !h.d.due(ctx) {
		t.Fatal("not due after the version moved")
	}
	h.step(time.Second)
	if h.d.due(ctx) {
		t.Fatal("due after a step on the new version that found nothing to do")
	}
	f.now = f.now.Add(idle)
	if !h.d.due(ctx) {
		t.Fatal("not due once IdleInterval passed")
	}

	// A node joins: the step that plans the moves, and those that follow
	// while they are in flight, are never skipped.
	join(f, 4)
	vf.version++
	h.step(time.Second)
	if h.d.Stats().InFlight == 0 {
		t.Fatal("nothing started for the new node")
	}
	for i := 0; i < 3 && h.d.Stats().InFlight > 0; i++ {
		if !h.d.due(ctx) {
			t.Fatalf("not due with %d operations in flight", h.d.Stats().InFlight)
		}
		h.step(time.Second)
	}

	// Not leading: every step is due (it abandons, and notices leading again).
	h.settle(400)
	h.step(time.Second)
	if h.d.due(ctx) {
		t.Fatal("due after a step that found nothing to do")
	}
	h.leader = false
	vf.version++
	h.step(time.Second)
	if !h.d.due(ctx) {
		t.Fatal("not due after a step on a node that does not lead")
	}

	// A source without a version: every step is due.
	h.src, h.leader = nil, true
	h.newDriver()
	h.step(time.Second)
	if !h.d.due(ctx) {
		t.Fatal("due skipped a step of a source without a version")
	}
}

// TestDriverIdleWaitGrowsWithCost: an idle driver whose steps are costly
// (a large cluster) waits a hundred times a step's cost between idle
// steps when that is longer than IdleInterval, so that finding nothing to
// do costs at most 1% of a core; the version moving still makes it step.
func TestDriverIdleWaitGrowsWithCost(t *testing.T) {
	f := newFake(t, 3, 3, 30, 3)
	vf := &versionedFake{fakeCluster: f}
	h := newHarness(t, f, DriverConfig{})
	h.src = vf
	h.newDriver()
	ctx := context.Background()
	idle := h.d.cfg.IdleInterval

	h.settle(200)
	vf.cost = idle / 20 // a step costs 0.5 s: idle steps 50 s apart
	vf.version++
	h.step(time.Second)
	if h.d.due(ctx) {
		t.Fatal("due after a step that found nothing to do")
	}
	f.now = f.now.Add(2 * idle)
	if h.d.due(ctx) {
		t.Fatalf("due %v after a step that cost %v", 2*idle, vf.cost)
	}
	f.now = f.now.Add(4 * idle)
	if !h.d.due(ctx) {
		t.Fatalf("not due %v after a step that cost %v", 6*idle, vf.cost)
	}
	h.step(time.Second)
	vf.version++
	if !h.d.due(ctx) {
		t.Fatal("not due after the version moved")
	}
}
