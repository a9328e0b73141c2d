package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-db/flotilla/engine"
	"github.com/flotilla-db/flotilla/router"
	"github.com/flotilla-db/flotilla/storage"
)

// splitter splits the shards of one cluster, one at a time, and keeps what
// each split took. Its methods run on one goroutine (the run's).
type splitter struct {
	o       *options
	c       *cluster
	rt      *splitRouter
	nextID  uint64 // the next child's shard ID
	records []splitRecord
}

// splitRecord is what one split took.
type splitRecord struct {
	parent, child, at uint64
	round             int
	start             time.Time // of the Split call that succeeded
	probe             bool      // done with the load paused and settled: bytes counted
	leader            uint64    // the node the split ran on: the parent's leader
	childLeader       uint64    // the node first announced as the child's leader
	// From the Split call's start: until it returned, until the child's
	// first leader was announced, until the child acknowledged a write
	// (splits under load only; 0 otherwise).
	returned, led, wrote time.Duration
	// Probes: the WAL bytes in and written over the nodes, and whether the
	// parent's log was truncated meanwhile on some replica (the bytes then
	// include the truncation's).
	bytes, walWritten uint64
	truncated         bool
}

func (sp *splitter) close() {
	sp.rt.close()
	sp.c.close()
}

// split splits d at the middle of its range on its leader (the generation
// from the leader's Status), installs the result in the ring and waits
// until a leader of the child is announced; within --op-timeout.
func (sp *splitter) split(ctx context.Context, d storage.Descriptor, round int) (splitRecord, error) {
	rec := splitRecord{parent: d.ShardID, child: sp.nextID, at: d.Start + (d.Last-d.Start)/2 + 1, round: round}
	sp.nextID++
	ctx, cancel := context.WithTimeout(ctx, sp.o.opTimeout)
	defer cancel()
	var (
		res engine.SplitResult
		err error
	)
	for backoff := time.Millisecond; ; backoff = min(2*backoff, 20*time.Millisecond) {
		var st engine.ShardStatus
		if rec.leader, st, err = sp.leaderStatus(ctx, d.ShardID); err == nil {
			rec.start = time.Now()
			req := engine.SplitRequest{ShardID: d.ShardID, Generation: st.Desc.Generation, At: rec.at, ChildID: rec.child}
			if res, err = sp.c.engine(rec.leader).Split(ctx, req); err == nil {
				break
			}
			if notLeader(err) == nil && !errors.Is(err, engine.ErrProposalDropped) {
				return rec, fmt.Errorf("split shard %d at %016x into %d: %w", d.ShardID, rec.at, rec.child, err)
			}
		}
		if perr := pause(ctx, backoff); perr != nil {
			return rec, fmt.Errorf("split shard %d: %w (last: %v)", d.ShardID, perr, err)
		}
	}
	rec.returned = time.Since(rec.start)
	if err := sp.rt.install(res); err != nil {
		return rec, err
	}
	l, err := sp.rt.waitLed(ctx, rec.child)
	if err != nil {
		return rec, err
	}
	rec.led, rec.childLeader = l.first.Sub(rec.start), l.firstLeader
	return rec, nil
}

// errNotLeading: the node thought to lead a shard does not (yet).
var errNotLeading = errors.New("bench: no node leads the shard yet")

// leaderStatus returns the node that leads shardID and its status there.
func (sp *splitter) leaderStatus(ctx context.Context, shardID uint64) (uint64, engine.ShardStatus, error) {
	id := sp.rt.leader(shardID).leader
	if id == 0 || sp.c.engine(id) == nil {
		id = sp.c.leaderOf(ctx, shardID)
	}
	e := sp.c.engine(id)
	if e == nil {
		return 0, engine.ShardStatus{}, errNotLeading
	}
	st, err := e.Status(ctx, shardID)
	if err == nil && st.State != "StateLeader" {
		err = errNotLeading
	}
	return id, st, err
}

// loaded splits d under load: the split's time runs until the child
// acknowledged a write.
func (sp *splitter) loaded(ctx context.Context, d storage.Descriptor, round int) error {
	rec, err := sp.split(ctx, d, round)
	if err == nil {
		if err = sp.writeChild(ctx, rec.child); err == nil {
			rec.wrote = time.Since(rec.start)
		}
	}
	sp.records = append(sp.records, rec)
	return err
}

// probe splits d with the load paused: it waits until every replica has
// settled (applied its leader's whole log, the WALs quiet), splits, waits
// until the replicas have settled again, and counts the WAL bytes between;
// then it has the child acknowledge a write, not timed.
func (sp *splitter) probe(ctx context.Context, d storage.Descriptor, round int) error {
	before, err := sp.settle(ctx)
	if err != nil {
		return fmt.Errorf("before splitting shard %d: %w", d.ShardID, err)
	}
	in0, written0 := sp.c.walBytes()
	rec, err := sp.split(ctx, d, round)
	if err == nil {
		var after map[uint64]map[uint64]engine.ShardStatus
		if after, err = sp.settle(ctx); err != nil {
			err = fmt.Errorf("after splitting shard %d: %w", d.ShardID, err)
		} else {
			in1, written1 := sp.c.walBytes()
			rec.probe, rec.bytes, rec.walWritten = true, in1-in0, written1-written0
			for node, sts := range after {
				rec.truncated = rec.truncated || sts[d.ShardID].FirstIndex != before[node][d.ShardID].FirstIndex
			}
			err = sp.writeChild(ctx, rec.child)
		}
	}
	sp.records = append(sp.records, rec)
	return err
}

// writeChild has shardID, a child just split off, acknowledge a write of
// a key of its range, routed like the load's.
func (sp *splitter) writeChild(ctx context.Context, shardID uint64) error {
	d := sp.rt.desc(shardID)
	key := keyOf(d, 0)
	value := make([]byte, 8)
	stampValue(value, 1<<20, shardID) // a client ID no load client has
	var rule router.PartitionRule
	if err := sp.rt.put(ctx, rule.Hash(key), engine.PutCommand(key, value)); err != nil {
		return fmt.Errorf("a write to shard %d, just split off: %w", shardID, err)
	}
	return nil
}

// splitMetrics sets the splits' figures: their number, the times of those
// under load to the child's first write, every split's time to the child's
// first leader, the probes' bytes, and the splits whose child's first
// leader was not the parent's.
func (sp *splitter) splitMetrics(m map[string]float64) {
	var wrote, led, returned []time.Duration
	var bytes, written []float64
	elsewhere, truncated := 0, 0
	for _, r := range sp.records {
		led, returned = append(led, r.led), append(returned, r.returned)
		if r.wrote > 0 {
			wrote = append(wrote, r.wrote)
		}
		if r.probe {
			bytes, written = append(bytes, float64(r.bytes)), append(written, float64(r.walWritten))
		}
		if r.childLeader != 0 && r.childLeader != r.leader {
			elsewhere++
		}
		if r.truncated {
			truncated++
		}
	}
	m["splits"], m["splits_under_load"], m["split_probes"] = float64(len(sp.records)), float64(len(wrote)), float64(len(bytes))
	durationMetrics(m, "split_", wrote)
	durationMetrics(m, "led_", led)
	durationMetrics(m, "returned_", returned)
	if len(bytes) > 0 {
		slices.Sort(bytes)
		slices.Sort(written)
		m["split_bytes_min"], m["split_bytes_p50"], m["split_bytes_max"] = bytes[0], bytes[(len(bytes)-1)/2], bytes[len(bytes)-1]
		m["split_wal_written_p50"], m["split_wal_written_max"] = written[(len(written)-1)/2], written[len(written)-1]
	}
	m["child_led_elsewhere"], m["probes_truncated"] = float64(elsewhere), float64(truncated)
}

// durationMetrics sets prefix+"p50_s" and "max_s" of ds, nothing if empty.
func durationMetrics(m map[string]float64, prefix string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	ps := percentiles(slices.Clone(ds), 0.5, 1)
	m[prefix+"p50_s"], m[prefix+"max_s"] = ps[0].Seconds(), ps[1].Seconds()
}

// timeline returns one line per split.
func (sp *splitter) timeline() []string {
	out := make([]string, 0, len(sp.records))
	for i, r := range sp.records {
		s := fmt.Sprintf("split %d (round %d): shard %d at %016x -> %d on node %d; returned %v, led %v (node %d)",
			i+1, r.round, r.parent, r.at, r.child, r.leader, r.returned.Round(time.Microsecond), r.led.Round(time.Microsecond), r.childLeader)
		if r.wrote > 0 {
			s += fmt.Sprintf(", wrote %v", r.wrote.Round(time.Microsecond))
		}
		if r.probe {
			s += fmt.Sprintf("; load paused: %d bytes in the WALs (%d written)", r.bytes, r.walWritten)
			if r.truncated {
				s += ", the parent's log truncated meanwhile"
			}
		}
		out = append(out, s)
	}
	return out
}

// shardsLed returns, once every replica has settled, how many shards of
// the ring have a leader, and how many each node leads.
func (sp *splitter) shardsLed(ctx context.Context) (int, map[uint64]int, error) {
	sts, err := sp.settle(ctx)
	if err != nil {
		return 0, nil, err
	}
	n, byNode := 0, map[uint64]int{}
	for _, id := range sp.c.ids() {
		byNode[id] = 0
	}
	for _, d := range sp.rt.descs() {
		if lead, ok := leaderOfStatuses(sts, d.ShardID); ok {
			n++
			byNode[lead.NodeID]++
		}
	}
	return n, byNode, nil
}
