package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/flotilla-db/flotilla/client"
)

// ctlRanges is what this test reads of `flotillactl --output json shards`.
type ctlRanges struct {
	Shards []struct {
		ShardID uint64 `json:"shard_id"`
		Start   string `json:"start"`
		Last    string `json:"last"`
		System  bool   `json:"system"`
	} `json:"shards"`
}

type ctlRange struct {
	id          uint64
	start, last uint64
}

// userRangesOf lists the user shards' ranges by flotillactl, in hash
// order, and checks that they tile the hash space with no gap or overlap.
func userRangesOf(ctx context.Context, t *testing.T, eps string) ([]ctlRange, error) {
	out, err := ctl(t, "--endpoints", eps, "--output", "json", "shards")
	if err != nil {
		return nil, fmt.Errorf("flotillactl shards: %w: %s", err, out)
	}
	var doc ctlRanges
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("flotillactl shards: %w: %s", err, out)
	}
	var rs []ctlRange
	for _, s := range doc.Shards {
		if s.System {
			continue
		}
		start, err1 := strconv.ParseUint(s.Start, 16, 64)
		last, err2 := strconv.ParseUint(s.Last, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("shard %d: range %q..%q", s.ShardID, s.Start, s.Last)
		}
		rs = append(rs, ctlRange{s.ShardID, start, last})
	}
	slices.SortFunc(rs, func(a, b ctlRange) int {
		if a.start < b.start {
			return -1
		}
		return 1
	})
	next := uint64(0)
	for i, r := range rs {
		if r.start != next || (r.last == ^uint64(0)) != (i == len(rs)-1) {
			return rs, fmt.Errorf("the ranges do not tile the hash space at shard %d [%016x, %016x]: %v", r.id, r.start, r.last, rs)
		}
		next = r.last + 1
	}
	return rs, nil
}

// TestResharding: 3 `flotilla start` processes with one shard, under a
// continuous write load through the Go client, with the split rate scaled
// down to what this machine's load reaches (--split-writes 60): the
// placement driver splits the shard, by load, into at least 16 within 5
// minutes; then `flotillactl merge` takes them back to 4. Not one write
// fails, every acknowledged key reads back with its value, and the ranges
// tile the hash space at every check.
func TestResharding(t *testing.T) {
	ctx, began := realProcesses(t, 8*time.Minute)
	flags := []string{"--split-writes", "60", "--no-merges"}
	ps, endpoints := startCluster(ctx, t, t.TempDir(), 1, flags...)
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eps := ps[0].client
	t.Logf("3 nodes ready in %v", time.Since(began).Round(time.Millisecond))

	loadCtx, abortLoad := context.WithCancel(ctx)
	load := &writeLoad{c: c, timeout: 30 * time.Second}
	defer func() { abortLoad(); load.wg.Wait() }()
	load.start(loadCtx, t, 0, 16, 4096)
	waitAcks(ctx, t, load, "first writes", 0)
	checkNoFailure := func(step string) {
		t.Helper()
		if n := load.failed.Load(); n != 0 {
			t.Fatalf("%s: %d writes failed (%d with an unknown outcome)", step, n, load.ambig.Load())
		}
	}

	start := time.Now()
	sctx, scancel := context.WithTimeout(ctx, 5*time.Minute)
	var shards int
	pollEvery(t, sctx, time.Second, "the load split into at least 16 shards", func() error {
		rs, err := userRangesOf(ctx, t, eps)
		if err != nil {
			return err
		}
		if shards = len(rs); shards < 16 {
			return fmt.Errorf("%d shards", shards)
		}
		return nil
	})
	scancel()
	splitTook := time.Since(start)
	t.Logf("split by load into %d shards in %v; %d writes acknowledged", shards, splitTook.Round(time.Millisecond), load.acks.Load())
	checkNoFailure("the splits")

	// Back to 4 by hand, under the same load.
	start = time.Now()
	merges := 0
	for {
		// The placement driver may still split by load meanwhile: a
		// listing taken while one applies is asked again, for a while.
		var rs []ctlRange
		lctx, lcancel := context.WithTimeout(ctx, 30*time.Second)
		pollEvery(t, lctx, 500*time.Millisecond, "a listing of ranges that tile the hash space", func() error {
			var err error
			rs, err = userRangesOf(ctx, t, eps)
			return err
		})
		lcancel()
		if len(rs) <= 4 {
			break
		}
		left := rs[(merges*2)%(len(rs)-1)] // merge pairs across the ring
		out, err := ctl(t, "--endpoints", eps, "merge", strconv.FormatUint(left.id, 10))
		if err != nil {
			t.Logf("flotillactl merge %d: %v: %s", left.id, err, lastLine(out))
			continue // a merge refused (a split or leadership move meanwhile) is tried again on the new ring
		}
		merges++
		if merges > 100 {
			t.Fatalf("%d merges and still %d shards", merges, len(rs))
		}
	}
	mergeTook := time.Since(start)
	t.Logf("merged back to 4 shards by %d flotillactl merges in %v", merges, mergeTook.Round(time.Millisecond))
	acked := load.acks.Load()
	waitAcks(ctx, t, load, "writes after the merges", acked)
	load.stop()
	load.wg.Wait()
	checkNoFailure("the end")
	keys := load.checkAcked(ctx, t)
	rs, err := userRangesOf(ctx, t, eps)
	if err != nil || len(rs) != 4 {
		t.Fatalf("at the end: %v, %v", rs, err)
	}
	t.Logf("split to %d shards in %v, merged to 4 in %v; writes acknowledged %d, failed %d; %d keys read back with their last acknowledged values; %v in all",
		shards, splitTook.Round(time.Millisecond), mergeTook.Round(time.Millisecond), load.acks.Load(), load.failed.Load(), len(keys),
		time.Since(began).Round(time.Millisecond))
}
