package engine_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/internal/testcluster"
	"github.com/flotilla-db/flotilla/storage"
)

// TestQuiescenceScripts replays the quiescence protocol's scenarios in
// testdata/quiesce*.txt (cockroachdb/datadriven; -rewrite regenerates the
// expected output). The cluster runs no clock: time moves only by the
// scripts' ticks, and every command that depends on the workers waits on a
// condition, so the output is deterministic.
//
// Commands:
//
//	cluster nodes=N                   a new cluster of N nodes
//	create shards=N voters=1,2,3      N shards over the ring on those voters
//	put shard=S                       a write through the shard's leader
//	request node=N shard=S op=put|read  a request sent to node N: its outcome
//	tick [n=K]                        K ticks, each taken by every worker
//	wait-quiesced [shards=N]          tick until every replica is quiesced
//	wait-leader shard=S [not=N after=T]  tick until S has a leader (other
//	                                  than N, at a term above T) all agree on
//	crash node=N                      crash node N
//	stop node=N                       close node N cleanly
//	start node=N                      start node N again on its store
//	state shard=S                     each running node's view of S
func TestQuiescenceScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		if !strings.Contains(path, "quiesce") {
			return
		}
		var c *testcluster.Cluster
		ctx := ctxT(t, 2*time.Minute)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			arg := func(key string) uint64 {
				for _, a := range d.CmdArgs {
					if a.Key == key {
						v, err := strconv.ParseUint(a.Vals[0], 10, 64)
						if err != nil {
							d.Fatalf(t, "%s: %v", key, err)
						}
						return v
					}
				}
				return 0
			}
			switch d.Cmd {
			case "cluster":
				c = testcluster.New(t, testcluster.Config{Nodes: int(arg("nodes"))})
				return "ok"
			case "create":
				var voters []uint64
				for _, a := range d.CmdArgs {
					if a.Key == "voters" {
						for _, v := range a.Vals {
							for _, f := range strings.Split(v, ",") {
								n, err := strconv.ParseUint(f, 10, 64)
								if err != nil {
									d.Fatalf(t, "voters: %v", err)
								}
								voters = append(voters, n)
							}
						}
					}
				}
				if err := c.CreateShards(ctx, testcluster.EvenDescriptors(1, int(arg("shards"))), voters); err != nil {
					return err.Error()
				}
				return "ok"
			case "put":
				if _, err := c.Propose(ctx, arg("shard"), engine.PutCommand(scriptKey(arg("shard"), arg("shards")), []byte("v"))); err != nil {
					return err.Error()
				}
				return "ok"
			case "request":
				e, shard := c.Engine(arg("node")), arg("shard")
				var err error
				if d.HasArg("op") && scriptOp(t, d) == "read" {
					_, err = e.Read(ctx, shard, engine.GetQuery([]byte("k")))
				} else {
					_, err = e.Propose(ctx, shard, engine.PutCommand([]byte("k"), nil))
				}
				var nl *engine.NotLeaderError
				if errors.As(err, &nl) {
					return fmt.Sprintf("not leader (hint: node %d)", nl.Leader)
				}
				if err != nil {
					return err.Error()
				}
				return "ok"
			case "tick":
				n := max(int(arg("n")), 1)
				for i := 0; i < n; i++ {
					settledTick(t, ctx, c)
				}
				return fmt.Sprintf("%d ticks", n)
			case "wait-quiesced":
				shards := max(arg("shards"), 1)
				if err := tickUntil(t, ctx, c, "quiesced everywhere", quiescedEverywhere(c, shards)); err != nil {
					return err.Error()
				}
				return "quiesced"
			case "wait-leader":
				// Without not=: the leader (deterministic: the voter the
				// shard ID picks campaigns at creation). With not=N: which
				// survivor wins depends on timing, so the output says only
				// that every running replica agrees on a leader other than
				// N, in a term later than after=T.
				shard, not, after := arg("shard"), arg("not"), arg("after")
				var leader uint64
				if err := tickUntil(t, ctx, c, "a leader all agree on", func() bool {
					leader = c.Leader(ctx, shard)
					if leader == 0 || leader == not {
						return false
					}
					for _, id := range c.IDs() {
						if e := c.Engine(id); e != nil {
							if st, err := e.Status(ctx, shard); err != nil || st.Leader != leader || st.Term <= after {
								return false
							}
						}
					}
					return true
				}); err != nil {
					return err.Error()
				}
				if not != 0 {
					return fmt.Sprintf("shard %d: led again, not by node %d, in a term after %d; all replicas agree", shard, not, after)
				}
				return fmt.Sprintf("shard %d: leader node %d", shard, leader)
			case "crash":
				c.Crash(arg("node"))
				return "ok"
			case "stop":
				c.Stop(arg("node"))
				return "ok"
			case "start":
				if err := c.Start(arg("node")); err != nil {
					return err.Error()
				}
				return "ok"
			case "state":
				var b strings.Builder
				for _, id := range c.IDs() {
					e := c.Engine(id)
					if e == nil {
						fmt.Fprintf(&b, "node %d: down\n", id)
						continue
					}
					st, err := e.Status(ctx, arg("shard"))
					if err != nil {
						fmt.Fprintf(&b, "node %d: %v\n", id, err)
						continue
					}
					q := "awake"
					if st.Quiesced {
						q = "quiesced"
					}
					fmt.Fprintf(&b, "node %d: %s, leader node %d, term %d, %s\n", id,
						strings.TrimPrefix(st.State, "State"), st.Leader, st.Term, q)
				}
				return b.String()
			}
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		})
	})
}

func scriptOp(t *testing.T, d *datadriven.TestData) string {
	var op string
	d.ScanArgs(t, "op", &op)
	return op
}

// tickUntil ticks, one settled tick at a time, until cond holds (at most
// 2,000 ticks). The cluster's WaitFor ticks every 2 ms regardless of what
// the nodes have received: on a loaded machine, an election timeout of such
// ticks can pass before a frame is delivered, and a live node is suspected
// down.
func tickUntil(t *testing.T, ctx context.Context, c *testcluster.Cluster, what string, cond func() bool) error {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		settledTick(t, ctx, c)
	}
	return fmt.Errorf("waiting for %s: not after 2,000 ticks", what)
}

// settledTick ticks every running node once and waits until the tick has
// been taken everywhere: each node's clock moved, its workers took what is
// queued (two round trips, since a worker runs the closures of a cycle
// before its ticks), and it heard every other running node within the tick
// (the manual clock ticks far faster than real time: without this wait, a
// slow delivery, as under the race detector, would look like a dead node).
// The last wait is bounded: a frame lost for good only delays the next tick.
func settledTick(t *testing.T, ctx context.Context, c *testcluster.Cluster) {
	t.Helper()
	var running []uint64
	before := map[uint64]uint64{}
	for _, id := range c.IDs() {
		if e := c.Engine(id); e != nil {
			running = append(running, id)
			before[id] = e.TestingNow()
		}
	}
	c.Tick()
	spin := func(what string, limit time.Duration, cond func() bool) bool {
		deadline := time.Now().Add(limit)
		for !cond() {
			if ctx.Err() != nil || time.Now().After(deadline) {
				return false
			}
			runtime.Gosched()
		}
		return true
	}
	for _, id := range running {
		e := c.Engine(id)
		if !spin("tick", 10*time.Second, func() bool { return e.TestingNow() > before[id] }) {
			t.Fatalf("node %d did not take its tick", id)
		}
		for i := 0; i < 2; i++ {
			if _, err := e.Statuses(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range running {
		e := c.Engine(id)
		spin("heard", 2*time.Second, func() bool { return e.TestingHeard(running) })
	}
}

// scriptKey returns a key of shard of an even ring of shards shards.
func scriptKey(shard, shards uint64) []byte {
	descs := testcluster.EvenDescriptors(1, int(max(shards, 1)))
	var d storage.Descriptor
	for _, x := range descs {
		if x.ShardID == shard {
			d = x
		}
	}
	return keysOf(d, 1)[0]
}
