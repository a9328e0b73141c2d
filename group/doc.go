// Package group is one shard's raft group on one node: a raft.RawNode with
// PreVote and CheckQuorum, the proposals waiting for their entries to apply
// (matched by proposal ID, never by index alone), the linearizable reads
// waiting on ReadIndex, conf changes (ConfChangeV2: learners and joint
// consensus) and leader transfer.
//
// A Group has no goroutines and is not safe for concurrent use: the engine
// worker that owns the shard drives it (Step, Tick, Ready, Advance) and does
// all I/O. Nothing here allocates for a shard that is idle: the proposal map
// and the read list are created on first use and dropped when empty.
//
// Entry format: a normal entry proposed through a Group carries
// [version 1][proposal ID u64][command]; an empty entry is the leader's
// no-op. A conf change carries the proposal ID in its Context.
package group
