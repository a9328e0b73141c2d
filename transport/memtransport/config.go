package memtransport

import (
	"errors"
	"fmt"
	"time"
)

// Config configures a Network. A zero field means its default; NewNetwork
// copies the Config.
type Config struct {
	// ClusterID is stamped on every Batch and SnapshotHeader the network
	// carries. Default: 1.
	ClusterID uint64
	// QueueLen bounds, in messages, the queue an endpoint keeps for each
	// destination node. A Send that does not fit fails with
	// engine.ErrQueueFull. Default: 4096.
	QueueLen int
	// SnapshotBuffer bounds, in chunks, what a snapshot stream holds between
	// the sender's body and the receiver's handler (flow control). Default: 4.
	SnapshotBuffer int
	// SnapshotRate limits, in bytes per second, all the snapshot streams of
	// the network together. Default: 0, unlimited.
	SnapshotRate int64
	// Seed seeds the random source of fault injection, so that a run with the
	// same seed and the same faults draws from the same sequence. Default: 0
	// (a valid seed).
	Seed int64
}

// Default values of Config fields.
const (
	DefaultClusterID      = 1
	DefaultQueueLen       = 4096
	DefaultSnapshotBuffer = 4
)

// DefaultConfig returns the configuration used when a field is left zero.
func DefaultConfig() Config {
	return Config{
		ClusterID:      DefaultClusterID,
		QueueLen:       DefaultQueueLen,
		SnapshotBuffer: DefaultSnapshotBuffer,
	}
}

// Validate reports whether c is usable. It does not modify c.
func (c Config) Validate() error {
	var errs []error
	if c.QueueLen < 0 {
		errs = append(errs, fmt.Errorf("memtransport: QueueLen %d is negative", c.QueueLen))
	}
	if c.SnapshotBuffer < 0 {
		errs = append(errs, fmt.Errorf("memtransport: SnapshotBuffer %d is negative", c.SnapshotBuffer))
	}
	if c.SnapshotRate < 0 {
		errs = append(errs, fmt.Errorf("memtransport: SnapshotRate %d is negative", c.SnapshotRate))
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ClusterID == 0 {
		c.ClusterID = d.ClusterID
	}
	if c.QueueLen == 0 {
		c.QueueLen = d.QueueLen
	}
	if c.SnapshotBuffer == 0 {
		c.SnapshotBuffer = d.SnapshotBuffer
	}
	return c
}

// Faults describes the faults a Network injects into raft traffic (not into
// snapshot streams, which only cuts affect). The zero value injects nothing.
// Drop and duplication are decided per message; delay and reordering per
// batch. All decisions come from the network's seeded random source.
type Faults struct {
	// DropProb is the probability that a message is lost.
	DropProb float64
	// DupProb is the probability that a message that was not lost is
	// delivered twice (the copy follows the original in the same batch).
	DupProb float64
	// DelayMin and DelayMax bound the delay of each batch, drawn uniformly.
	// Without reordering, delayed batches of one link still arrive in order.
	DelayMin, DelayMax time.Duration
	// ReorderProb is the probability that a batch is held back and delivered
	// right after the next batch of the same link (or after ReorderWindow if
	// no other batch comes).
	ReorderProb float64
	// ReorderWindow is how long a held batch waits for the next one. Zero
	// means DefaultReorderWindow.
	ReorderWindow time.Duration
}

// DefaultReorderWindow is the default Faults.ReorderWindow.
const DefaultReorderWindow = 5 * time.Millisecond

// Validate reports whether f is usable. It does not modify f.
func (f Faults) Validate() error {
	var errs []error
	for _, p := range []struct {
		name string
		v    float64
	}{{"DropProb", f.DropProb}, {"DupProb", f.DupProb}, {"ReorderProb", f.ReorderProb}} {
		if !(p.v >= 0 && p.v <= 1) { // also rejects NaN
			errs = append(errs, fmt.Errorf("memtransport: %s %v not in [0, 1]", p.name, p.v))
		}
	}
	if f.DelayMin < 0 || f.DelayMax < f.DelayMin {
		errs = append(errs, fmt.Errorf("memtransport: delay range [%v, %v] invalid", f.DelayMin, f.DelayMax))
	}
	if f.ReorderWindow < 0 {
		errs = append(errs, fmt.Errorf("memtransport: ReorderWindow %v is negative", f.ReorderWindow))
	}
	return errors.Join(errs...)
}

// active reports whether f injects anything.
func (f Faults) active() bool {
	return f.DropProb > 0 || f.DupProb > 0 || f.DelayMax > 0 || f.ReorderProb > 0
}
