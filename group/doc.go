// Package group is one shard's raft group on one node: a raft.RawNode with
// PreVote and CheckQuorum (unless Config.DisableCheckQuorum), the proposals
// waiting for their entries to apply (matched by proposal ID, never by
// index alone), the linearizable reads waiting on ReadIndex or on a known
// index (a lease read), the book of the leader's lease (lease.go; the
// engine decides what it rests on), conf changes (ConfChangeV2: learners and joint
// consensus) and leader transfer. raft's IDs are replica IDs (Config.
// ReplicaID), never node IDs; Config.NodeOf names a replica's node for the
// leader hints of NotLeaderError.
//
// No waiter is left behind: a conf change raft would drop (another pending,
// or a joint configuration) is refused up front with
// ErrConfChangeInProgress, and one raft drops all the same (it replaces it
// with an empty entry) completes with that error at the next Ready, since
// every accepted proposal must appear among that Ready's entries. A
// proposal whose outcome this replica cannot know completes with an
// *AmbiguousError, never as dropped.
//
// A Group has no goroutines and is not safe for concurrent use: the engine
// worker that owns the shard drives it (Step, Tick, Ready, and Advance or,
// in raft's asynchronous storage mode, the local append and apply
// responses) and does all I/O. A shard that never writes allocates nothing
// here: the proposal map is created on the first proposal (and kept, empty,
// once a shard writes), the read list on the first read.
//
// Entry format: a normal entry proposed through a Group carries
// [version 1][proposal ID u64][command]; an empty entry is the leader's
// no-op. A conf change carries the proposal ID in the first 8 bytes of its
// Context, then the engine's description of the change (the replica IDs it
// adds and their nodes).
package group
