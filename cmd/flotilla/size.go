package main

import (
	"fmt"
	"strconv"
	"strings"
)

// defaultSnapshotRate is --snapshot-rate's default: what a rebalance may
// take of a node's disk and network bandwidth.
const defaultSnapshotRate = 64 << 20

// byteSize is a flag of bytes, given plain or with a binary unit (KiB,
// MiB, GiB, TiB).
type byteSize uint64

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}}

func (b *byteSize) String() string {
	for _, u := range sizeUnits {
		if v := uint64(*b); v != 0 && v%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", v>>u.shift, u.suffix)
		}
	}
	return strconv.FormatUint(uint64(*b), 10)
}

func (b *byteSize) Set(s string) error {
	shift := uint(0)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, shift = n, u.shift
			break
		}
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || v > (^uint64(0))>>shift {
		return fmt.Errorf("%q is not a size: bytes, or a whole number of KiB, MiB, GiB or TiB", s)
	}
	*b = byteSize(v << shift)
	return nil
}
