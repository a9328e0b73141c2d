// Package engine hosts the shards of one node: thousands of raft groups on a
// fixed pool of worker goroutines, one shared Pebble store (package storage)
// and one transport, batched across shards at every stage.
//
// # A shard's life
//
// Identity. raft sees replica IDs, never node IDs: a replica is (node ID,
// replica ID), the shard's descriptor (storage.Descriptor) maps one to the
// other, and a replica ID is never reused within a shard (the descriptor's
// NextReplicaID). Messages carry replica IDs and travel to the node the
// descriptor names; a message for a replica ID the local replica is not
// (a removed incarnation) is dropped and counted (Stats.StaleDropped).
//
// Creation. CreateShard writes the replica's initial state (descriptor with
// replica IDs 1, 2, ... in the spec's member order, ConfState, HardState at
// storage.InitialIndex) with one synced write, on every node of its initial
// configuration; one voter, chosen by shard ID, campaigns at once. A node
// added later by ChangeReplicas (confchange.go) gets a fresh replica ID and
// its replica from the leader: its first MsgApp or heartbeat creates an
// empty replica with that ID, which the leader then catches up with a
// snapshot. A removed replica leaves a tombstone: no replica of the shard
// with a lower ID is created here again by any message, while a node added
// back under its fresh ID is.
//
// Workers. A shard belongs to the worker its ID hashes to, for its whole
// life; only that worker touches its raft.RawNode (package group) and its
// storage.Log. Everything else reaches the worker through its inbox: incoming
// messages, proposals, reads, ticks and closures. A worker cycle takes the
// whole inbox (first the append responses of passes whose batch became
// durable), steps it into the shards, then makes one pass over every shard
// that has a Ready (ready.go):
//
//  1. snapshots accepted by raft are ingested (atomically with the shard's
//     new raft state);
//  2. log entries, HardStates, the state machine's writes for the committed
//     entries and the applied indexes of all those shards go into ONE Pebble
//     batch, applied at once (visible) and synced by Pebble's commit
//     pipeline, which lets the batches of every worker share one fsync;
//  3. messages that do not wait for durability go out, one Send per
//     destination node (heartbeats into the node's coalescer instead, see
//     package heartbeat); proposals and reads the pass completed are
//     answered, leader-change events publish;
//  4. the worker goes on: the append responses (a replica's own
//     acknowledgement, a follower's MsgAppResp, a vote) come back through
//     the inbox once the worker's syncer has seen the batch durable.
//
// A shard with more work goes in the next pass, after the worker has taken
// its inbox again, so that it batches with what arrived.
//
// A worker in a long cycle (tens of thousands of awake shards) yields its
// processor every millisecond or so (worker.yield): the goroutines that
// carry messages between nodes otherwise wait on the scheduler's global run
// queue for seconds, and live peers are suspected down. The shards of
// Config.PriorityShards (a node's meta shard) have a worker of their own,
// whose cycles stay short whatever the other shards do, and their messages
// go ahead of the queue.
//
// Durability. raft runs in its asynchronous storage mode (AsyncStorageWrites):
// a message that depends on a write (an acknowledgement, a vote, a leader
// counting its own append) is delivered only after the batch that holds the
// write is durable, and raft hands out for applying only entries durable on
// this node. No worker waits for an fsync. Applying writes the data and the
// applied index in the same batch as the log, so a restart neither
// re-applies nor skips an entry; a pass that holds neither entries nor a
// vote or term change does not sync. Config.SyncInWorker restores the
// synchronous path (raft's Ready/Advance, the worker committing and syncing
// each pass itself), the baseline of benchmarks.
//
// Proposals carry an ID (package group) matched at apply; a proposal whose
// index was taken by another leader's entry fails with ErrProposalDropped,
// which is safe to retry. A proposal whose fate this replica cannot know (a
// snapshot covered its index, the replica was removed or closed after it
// was appended) fails with an *AmbiguousError (ErrAmbiguous): it may have
// applied, and is retried safely only through a client session. Reads use
// ReadIndex with a fresh context on every attempt; once the read index is
// applied, the caller's goroutine answers the query from the store. Read
// runs on the leader; ReadOnReplica on any replica: a follower's ReadIndex
// goes to its leader (raft forwards it), which confirms its leadership with
// a quorum and answers the index, and the follower answers once it has
// applied it. ReadLocal answers from the replica as it is (stale reads).
//
// Leases (lease.go). In ReadModeLease, ReadLease lets a leader answer
// without the quorum round while it holds a lease: until start +
// ElectionTicks×TickInterval − MaxClockDrift by its monotonic clock, where
// start is taken before a ReadIndex of its own that a quorum confirmed, and
// provided its commit index holds an entry of its term. raft's own lease is
// not used: it rests on CheckQuorum's promise that a follower which heard
// from its leader within an election timeout does not vote, and the engine
// breaks that promise (leadership transfers campaign by force, ForgetLeader
// and restarts leave a follower leaderless and ready to vote, quiesced
// replicas do not tick). The engine keeps the promise itself instead, in
// time rather than ticks: a replica neither grants nor asks for a vote
// within an election timeout of stepping a leader's message or of being
// opened (the vote gate). A transfer's forced campaign still passes, so a
// leader that starts a transfer keeps no lease for the rest of its term; a
// conf change applied ends the lease too. The clock assumption: monotonic
// clocks whose rates differ so little that over an election timeout two
// nodes' clocks drift apart by less than MaxClockDrift (scheduling delays
// between reading the clock and acting included), and every node in lease
// mode with the same ElectionTicks and TickInterval. The price: a shard
// whose leader died elects an election timeout after it last heard from
// it at the earliest, not a few ticks after it is suspected down.
//
// Exactly-once writes (session.go). ProposeSession wraps a command of the
// state machine in a client session envelope (session ID, sequence number,
// acknowledgement watermark, the leader's clock). At apply the engine keeps
// the result of each request the client may still retry in the shard's
// session records, in the same batch as the command's writes: a retry gets
// its first result back without the state machine seeing the command again,
// on whichever replica leads, across restarts and snapshots. Idle sessions
// are deleted by an expiry command that the leader proposes (Config.
// SessionTTL), so that every replica deletes the same ones.
//
// Backups (backup.go). BackupShard takes ReadOnReplica's barrier, then,
// on the shard's worker between two passes, the applied index with a
// Pebble snapshot of the shard's sessions and data, which the caller reads
// on its own goroutine.
//
// Idle shards (quiesce.go). A leader whose shard is idle quiesces it; its
// followers follow; quiesced shards are not ticked and send nothing. The
// per-tick coalesced heartbeat message between nodes doubles as liveness: the
// quiesced shards of a leader not heard from wake up and elect. It goes
// ahead of the raft traffic queued for its peer when the transport allows
// (PrioritySender), so that no backlog delays it into a false suspicion.
//
// A node's start (start.go). The replicas New reopens start quiesced, with
// no leader; each shard's designated voter (DesignatedVoter, the voter
// that campaigned at the shard's creation) campaigns, a bounded number a
// tick, once a quorum of the shard's voters' nodes has been heard from;
// what is still leaderless after a few election timeouts without progress
// wakes and elects on raft's timeouts.
//
// Membership (confchange.go). Changes are checked against the descriptor
// and refused with typed errors before they are proposed, refused up front
// when raft would drop them (ErrConfChangeInProgress), and applied with the
// new descriptor in the same batch. A change may be fenced by the replica
// ID it expects (a replica replaced since is not touched), and a joint
// change may be left explicitly (ChangeRequest.Explicit, then LeaveJoint),
// so that the placement driver hands a demoted leader's leadership to an
// incoming voter before the joint state ends. A replica removed while it
// could not hear of its removal is destroyed on the word of its shard's
// record (DestroyStaleReplica). Each change publishes a
// DescriptorEvent (WatchDescriptors), from which the node keeps the meta
// shard's records current.
//
// Splits (split.go). Split proposes a split command on the parent's
// leader; at apply, on every replica alike, the parent's range is narrowed
// and a child shard is created over the rest on the same replicas, with its
// data in place (user data is ordered by hash, not by shard) and the
// parent's client sessions copied; the parent's leader campaigns for the
// child at once. What a split writes does not depend on the shard's size.
// A crash between the parent's batch and the child's creation is finished
// at the next start from a split marker.
//
// Merges (merge.go). The right shard is frozen (it applies and serves
// nothing more), each of its replicas waits until the freeze is durable,
// then the left shard applies a merge that widens its range over the right
// one's, folds its client sessions in, and destroys the node's replica of
// the right shard without its data; a replica of the left shard whose
// node's right replica has not frozen yet holds its entries until it has.
//
// Removal. A conf change that removes this node's replica destroys it after
// the pass: its range is released, then its keys are deleted and a
// tombstone is left; waiters fail with ErrShardRemoved (ambiguous for
// proposals already appended). Liveness: only silence for an election
// timeout (or PeerDown, from gossip) makes the followers of a node forget
// it as their leader; a failed stream (PeerUnreachable) only makes the
// leaders here probe it.
//
// Recovery (recover.go). A shard whose voters are mostly gone for good is
// recovered on one surviving replica, while the engine runs, by
// ForceSoleVoter: on its worker the replica is closed, rewritten into the
// only voter of its shard by the offline recovery's storage rewrite
// (storage.Store.ForceSoleVoter: fresh replica ID, tombstone below it,
// whole log committed) in one synced batch, and reopened; alone, it elects
// itself. It is refused (*LiveQuorumError) while the replica leads, knows
// a live leader, or its voters not suspected down are a quorum.
//
// # Concurrency
//
// Engine methods are safe for concurrent use. The transport calls Handler
// methods concurrently; they only queue work. Close stops the tick loop and
// the workers, fails every waiter with ErrClosed, waits for readers of the
// store and closes it.
package engine
