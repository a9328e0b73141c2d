package node

import (
	"time"

	"github.com/flotilla-db/flotilla/node/gossip"
	"github.com/flotilla-db/flotilla/storage"
)

// The load a node advertises by gossip (loadLoop, in cluster_loops.go),
// sampled from its store: the replica and leader counts come from the
// engine's Stats, the rest from here.

// How often loadLoop samples the load, and how long a load that changed
// a little waits before it is advertised (see loadMoved).
const (
	loadInterval = time.Second
	loadRefresh  = 10 * time.Second
)

// loadSampler samples the store for the disk and write load. It belongs
// to loadLoop.
type loadSampler struct {
	store   *storage.Store
	written uint64    // bytes in the write-ahead log at the last sample
	at      time.Time // the last sample
}

func newLoadSampler(s *storage.Store, now time.Time) *loadSampler {
	return &loadSampler{store: s, written: s.DB().Metrics().WAL.BytesIn, at: now}
}

// sample returns, as of now:
//   - used: the store's size on disk (Pebble's DiskSpaceUsage: write-ahead
//     log, sstables, manifest; with what the current log file holds);
//   - capacity: used plus the space available to the store on its file
//     system (statfs), 0 where that is unknown;
//   - rate: the bytes per second committed to the store's write-ahead log
//     since the previous sample (the shards' raft log entries, applied
//     commands and raft state; snapshots received, ingested as sstables,
//     are not counted).
func (ls *loadSampler) sample(now time.Time) (used, capacity, rate uint64) {
	m := ls.store.DB().Metrics()
	used = m.DiskSpaceUsage()
	if m.WAL.Size > m.WAL.PhysicalSize {
		// Pebble counts the current log file at its size when opened.
		used += m.WAL.Size - m.WAL.PhysicalSize
	}
	if du, err := ls.store.DiskUsage(); err == nil {
		capacity = used + du.AvailBytes
	}
	written := m.WAL.BytesIn
	if d := now.Sub(ls.at); d > 0 && written >= ls.written {
		rate = uint64(float64(written-ls.written)/d.Seconds() + 0.5)
	}
	ls.written, ls.at = written, now
	return used, capacity, rate
}

// Changes of disk use or capacity, and of the write rate, smaller than
// these are never urgent (see loadMoved).
const (
	loadDiskSlack = 64 << 20 // bytes
	loadRateSlack = 64 << 10 // bytes per second
)

// loadMoved reports whether next's load differs from the advertised m's
// enough to be advertised at once: another replica or leader count, or a
// disk use, capacity or write rate that moved by more than a fifth and
// more than the slack. Smaller changes wait for loadRefresh, so that a
// busy node does not re-advertise its meta every second for noise.
func loadMoved(m, next gossip.Meta) bool {
	return m.Replicas != next.Replicas || m.Leaders != next.Leaders ||
		farApart(m.DiskUsed, next.DiskUsed, loadDiskSlack) ||
		farApart(m.DiskCapacity, next.DiskCapacity, loadDiskSlack) ||
		farApart(m.WriteRate, next.WriteRate, loadRateSlack)
}

// farApart reports whether a and b differ by more than a fifth of the
// larger and by more than slack.
func farApart(a, b, slack uint64) bool {
	lo, hi := min(a, b), max(a, b)
	return hi-lo > max(hi/5, slack)
}
