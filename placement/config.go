package placement

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes the planner. Zero fields take the value of DefaultConfig;
// Plan copies it.
type Config struct {
	// ReplicationFactor is how many voters a user shard should have.
	// Default 3.
	ReplicationFactor int
	// MetaVoters is the most voters the meta shard gets; odd. The planner
	// keeps it at the largest odd count not above MetaVoters and the number
	// of live nodes that are not draining. Default 5.
	MetaVoters int
	// DownAfter is how long a node must have been Dead before its
	// replicas stop counting and are replaced. Default 5 minutes.
	DownAfter time.Duration
	// Tolerance is the balance band as a fraction of a node's target
	// (the mean, or its capacity-weighted share): a node is balanced
	// within ±max(Tolerance × target, MinTolerance). Default 0.05.
	Tolerance float64
	// MinTolerance is the smallest band, in replicas or leaders, so that
	// small clusters do not chase single replicas. Default 2.
	MinTolerance int
	// MaxDiskFraction is the fraction of a node's disk capacity that a new
	// replica may not push it past; a node already above it receives
	// nothing. Default 0.9.
	MaxDiskFraction float64
	// MaxOpsPerPlan bounds the operations one plan returns (reports of
	// lost quorum are not counted). Default 64.
	MaxOpsPerPlan int
	// SplitSize: a user shard holding more bytes than this is split.
	// Default 512 MiB.
	SplitSize uint64
	// SplitWriteRate: a user shard taking more writes a second than this
	// (Shard.WritesPerSecond: averaged by the source over its load window,
	// 30 s for the node's) is split. Default 2,500.
	SplitWriteRate float64
	// MergeSize and MergeWriteRate: two adjacent user shards that are both
	// below them, and together below half of SplitSize and SplitWriteRate
	// (far from a split again), are merged. Defaults SplitSize / 4 and
	// SplitWriteRate / 10.
	MergeSize      uint64
	MergeWriteRate float64
	// MergeCooldown: a shard whose range changed (a split or a merge) more
	// recently than this is not merged, so that a split is not undone by
	// the next plan. Default 10 minutes.
	MergeCooldown time.Duration
	// NoSplits and NoMerges turn those duties off.
	NoSplits, NoMerges bool
	// MaxSnapshotsPerNode bounds the replicas a node receives at once:
	// operations in flight and planned that add a replica to it (each
	// costs a snapshot). Default 2.
	MaxSnapshotsPerNode int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		ReplicationFactor:   3,
		MetaVoters:          5,
		DownAfter:           5 * time.Minute,
		Tolerance:           0.05,
		MinTolerance:        2,
		MaxDiskFraction:     0.9,
		MaxOpsPerPlan:       64,
		MaxSnapshotsPerNode: 2,
		SplitSize:           512 << 20,
		SplitWriteRate:      2500,
		MergeCooldown:       10 * time.Minute,
	}
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, f := range []struct{ p, d *int }{
		{&c.ReplicationFactor, &d.ReplicationFactor}, {&c.MetaVoters, &d.MetaVoters},
		{&c.MinTolerance, &d.MinTolerance}, {&c.MaxOpsPerPlan, &d.MaxOpsPerPlan},
		{&c.MaxSnapshotsPerNode, &d.MaxSnapshotsPerNode},
	} {
		if *f.p == 0 {
			*f.p = *f.d
		}
	}
	if c.DownAfter == 0 {
		c.DownAfter = d.DownAfter
	}
	if c.Tolerance == 0 {
		c.Tolerance = d.Tolerance
	}
	if c.MaxDiskFraction == 0 {
		c.MaxDiskFraction = d.MaxDiskFraction
	}
	if c.SplitSize == 0 {
		c.SplitSize = d.SplitSize
	}
	if c.SplitWriteRate == 0 {
		c.SplitWriteRate = d.SplitWriteRate
	}
	if c.MergeSize == 0 {
		c.MergeSize = c.SplitSize / 4
	}
	if c.MergeWriteRate == 0 {
		c.MergeWriteRate = c.SplitWriteRate / 10
	}
	if c.MergeCooldown == 0 {
		c.MergeCooldown = d.MergeCooldown
	}
	return c
}

// Validate checks c, with its zero fields taken as their defaults, without
// changing it. The error matches ErrBadConfig and lists every problem.
func (c Config) Validate() error {
	c = c.withDefaults() // a copy: the caller's config is not touched
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"ReplicationFactor", c.ReplicationFactor}, {"MetaVoters", c.MetaVoters},
		{"MinTolerance", c.MinTolerance}, {"MaxOpsPerPlan", c.MaxOpsPerPlan},
		{"MaxSnapshotsPerNode", c.MaxSnapshotsPerNode},
	} {
		if f.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d < 1", f.name, f.v))
		}
	}
	if c.MetaVoters > 0 && c.MetaVoters%2 == 0 {
		errs = append(errs, fmt.Errorf("MetaVoters %d is even: an even voter count tolerates no more failures than the odd count below it", c.MetaVoters))
	}
	if c.DownAfter < 0 {
		errs = append(errs, fmt.Errorf("DownAfter %v < 0", c.DownAfter))
	}
	if !(c.Tolerance > 0 && c.Tolerance < 1) {
		errs = append(errs, fmt.Errorf("Tolerance %v not in (0, 1)", c.Tolerance))
	}
	if c.SplitWriteRate < 0 || c.MergeWriteRate < 0 || c.MergeCooldown < 0 {
		errs = append(errs, fmt.Errorf("SplitWriteRate %v, MergeWriteRate %v or MergeCooldown %v < 0", c.SplitWriteRate, c.MergeWriteRate, c.MergeCooldown))
	}
	if c.MergeSize > c.SplitSize/2 || c.MergeWriteRate > c.SplitWriteRate/2 {
		errs = append(errs, fmt.Errorf("MergeSize %d or MergeWriteRate %v above half of SplitSize %d or SplitWriteRate %v: a merged shard would be split again",
			c.MergeSize, c.MergeWriteRate, c.SplitSize, c.SplitWriteRate))
	}
	if !(c.MaxDiskFraction > 0 && c.MaxDiskFraction <= 1) {
		errs = append(errs, fmt.Errorf("MaxDiskFraction %v not in (0, 1]", c.MaxDiskFraction))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return nil
}
