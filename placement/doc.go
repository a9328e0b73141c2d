// Package placement decides where replicas and leaderships go: which shard
// gets a new replica on which node, which replica leaves, which voter
// should lead. It never executes anything. Plan is a pure function of a
// snapshot of the cluster (State), a Config and the operations already in
// flight; it returns operations (Op), each with a reason for people. The
// Driver runs on the meta shard's leader: it reads the snapshot from a
// Source, calls Plan, and executes the operations step by step through an
// Actuator, recording the intent of each move in an IntentStore; the node
// implements the three interfaces (actuator.go; package node/placer). The
// package imports nothing of Flotilla's: it has its own
// vocabulary of nodes, shards, replicas and roles, which mirrors the
// storage package's descriptors and the meta shard's records.
//
// # Concurrency
//
// Plan: none. It starts no goroutine, holds no state between calls, reads no
// clock (State.Now is the time) and does not change its arguments. It may
// be called from any goroutine. The same input gives the same plan,
// whatever the order of the nodes, shards, replicas and operations in it:
// everything is walked in ID order, and ties are broken by ID.
//
// # Duties
//
// In priority order, as the issue lists them; a shard gets at most one
// operation at a time, so each duty gets the shards the earlier ones left
// alone:
//
//  1. Repair (kind Repair). A node that has been Dead for DownAfter (5
//     minutes), or is Removed, is gone: its replicas stop counting. A shard
//     with fewer countable voters than the replication factor gets a new
//     one on the best live node, and gives up one gone voter in the same
//     joint change ("node 4 dead for 6m12s; shard 17 has 2 of 3
//     replicas"); a gone voter the shard can spare is removed; so are a
//     learner left by an interrupted move and a voter beyond the replication
//     factor. The best node is live, not draining, holds no voter of the
//     shard, has a free snapshot slot and room on its disk for the shard
//     (below MaxDiskFraction, 90%, after receiving it), and among those
//     holds a learner of the shard already (promoted, no snapshot), then
//     has the fewest replicas for its disk capacity, then the emptiest
//     disk, then the lowest ID. The meta shard comes first, then the shards
//     with the thinnest margin of live voters over their quorum. A shard
//     left joint with nothing in flight gets a LeaveJoint; a shard whose
//     live voters are no quorum is reported (kind QuorumLost: nothing can
//     commit, so nothing can fix it here). A dead meta voter is replaced
//     here too (kind MetaVoter), by promoting a learner where one is live:
//     losing the meta shard stops every duty.
//  2. Decommission. First the leaderships on draining nodes go to the
//     voter on a live, non-draining node that leads the fewest shards (kind
//     TransferLeader). Then each replica on a draining node: a learner is
//     removed; a voter the shard can spare is removed; any other voter
//     moves to the best node (kind Decommission). A voter that no node could
//     ever take (every live, non-draining node holds a voter of the shard)
//     is removed if the shard keeps a quorum: draining a node of a 3-node
//     cluster leaves shards of replication factor 3 with 2 voters, until
//     nodes join. A single voter moves with its leadership. CanDecommission
//     refuses only an unknown or removed node, and the last live node that
//     does not drain.
//  3. Replica balance (kind RebalanceReplica): replica counts of user
//     shards on live, non-draining nodes converge on each node's share of
//     their total, within ±max(Tolerance × share, MinTolerance), that is
//     ±5%, at least ±2. Shares follow disk capacity when every such node
//     reports one and they differ; no share exceeds one replica per shard,
//     and a node above MaxDiskFraction keeps at most what it has. A move
//     takes the smallest, coldest shard first, and a replica that does not
//     lead before one that does (its leadership then goes to the new
//     voter).
//  4. Leader balance (kind TransferLeader): leaderships of user shards on
//     live, non-draining nodes converge on their mean, with the same band,
//     by transfers to voters. When every shard an over-loaded node leads
//     has its voters on nodes at or above the mean and some node is below
//     its band, a leadership goes through a middle node (two transfers; the
//     middle's count does not change). Not while more user shards than
//     the band have no known leader (a start's elections and leader
//     hand-back): the counts would be of part of the shards.
//  5. Meta shard growth (kind MetaVoter): voters up to the largest odd
//     count not above MetaVoters (5) and the live, non-draining nodes,
//     added two at a time in one joint change, so that the count is never
//     even.
//  6. Splits and merges (ranges.go): a user shard above SplitSize (512
//     MiB) or SplitWriteRate (2,500 writes/s over the source's load
//     window) is split (kind Split), after the decommission moves and
//     before the balance; two adjacent shards both below MergeSize and
//     MergeWriteRate, together below half the split thresholds, and whose
//     ranges have not changed for MergeCooldown (10 minutes) are merged
//     (kind Merge), last: if their replicas are not on the same nodes, a
//     replica of the right one moves first (a move of kind Merge). No data
//     moves for either; the hysteresis and the cool-down keep a merge from
//     undoing a split and back.
//
// Within a plan, leadership transfers come right after the repairs, before
// any replica move: decommission's first, then the leader balance's. They
// are cheap (no snapshot) and spread the load at once, after a bootstrap or
// a restart; repairs still come first.
//
// # Safety
//
//   - A shard gets at most one operation, and none while an operation in
//     flight works on it.
//   - A configuration change keeps a quorum of live voters in the old
//     configuration and in the new one (the joint state needs both); a
//     shard without that quorum gets no change at all. Suspect, Unknown and
//     recently dead nodes are not live: a change waits for them or for
//     DownAfter.
//   - A joint shard gets nothing but LeaveJoint, and only with nothing in
//     flight.
//   - Nothing goes to a node that is not Live, drains, is removed, holds a
//     voter of the shard, would pass MaxDiskFraction, or has
//     MaxSnapshotsPerNode replicas incoming (in flight and planned).
//   - At most MaxOpsPerPlan operations (QuorumLost reports not counted).
//   - Operations in flight count as done: a replica they add counts on its
//     node and holds its snapshot slot, the shard is busy.
//
// # The rule of balance
//
// Each node has a target (its share) and a band, ±max(Tolerance × target,
// MinTolerance). One replica or leadership moves from node s to node t only
// if s is above its band and t below its target, or s above its target and
// t below its band. So a node receives only while below its target and
// gives only while above it: a receipt leaves it less than one unit above
// its target, a gift less than one below. A node that received from
// another can then never give back to it: it would have to be above its
// band, or the other below its band. So no move is ever undone while the
// targets hold, and every move lowers the sum of squared deviations (the
// two nodes were more than one unit apart), so balancing ends, with every
// node within its band unless the placement itself forbids a move (no
// shard on s can go to t). Targets change only when the cluster does: a
// node joins, dies or drains, a shard loses or gains a leader by election,
// a repair adds a replica. A move of a leader's replica hands its
// leadership over, and the leader balance may then undo an earlier
// transfer; the property tests check that this never happens more often
// than such handovers, and that replica moves are never undone.
//
// # How it compares
//
// CockroachDB's allocator runs in a replicate queue on every store, range
// by range, for the ranges it holds the lease of. It classifies a range by
// what it lacks (add a missing replica, replace a dead or decommissioning
// one, remove a dead one or an extra one, or consider a rebalance), in
// priority order; it adds the replacement before it removes a dead replica,
// removes nothing from a range whose live replicas are below quorum, and
// considers a store dead after five minutes. It rebalances on range counts: a store is
// overfull or underfull when it is more than max(5% of the mean, 2 ranges)
// away from the mean, and candidates are ranked by constraints, locality
// diversity, disk fullness (no new replica on a store past 95% of its disk,
// no rebalance onto one past 92.5%) and whether the move converges both
// stores on the mean; leases balance separately with their own threshold.
// Since every store decides for itself, it picks at random among the best
// candidates, so that stores do not all pile onto the same target. A
// receiving store accepts a bounded number of snapshots and rejects the
// rest, and the sender rolls its learner back. Moves are learner, snapshot,
// one joint change, leave; a leaseholder being moved hands its lease to the
// incoming replica.
//
// TiKV's placement driver (PD) is central, like this package: checkers
// repair (a down peer after 30 minutes, an offline store) and schedulers
// balance (regions, leaders, hot regions). Its balance is on scores: a
// region score counts the bytes a store holds, weighted up as its disk
// fills, a leader score counts leaders; a region moves only if, after the
// move, the source still scores above the target with a margin of
// tolerant-size-ratio times the average region size. Operators (step lists:
// add learner, promote, transfer leader, remove peer, enter and leave
// joint) in flight are counted in the scores as their influence, so the
// next decision sees them as done; schedule limits and per-store limits
// bound what runs at once.
//
// Taken from them: repair before balance, with dead meaning five minutes
// down (CockroachDB's figure; PD's 30 minutes leaves a shard with one
// replica less for long); the replacement caught up before the dead
// replica leaves; no removal from a shard without a live quorum; the
// tolerance max(5% of the target, 2), from CockroachDB's range count
// balance; counting operations in flight as done, from PD's operator
// influence; a move as one operation whose steps the driver runs, from PD's
// operators and both systems' joint changes; the leadership of a moved
// leader handed to the incoming voter, from CockroachDB; odd voter counts.
//
// Chosen differently, and why:
//
//   - One central, deterministic planner (like PD, unlike CockroachDB's
//     per-store queues), with no randomness: one snapshot sees every shard,
//     so nothing piles up for lack of coordination, and a plan can be shown
//     as it will run (flotillactl plan), replayed in tests and explained.
//   - Counts, not bytes or load: shards are hash ranges of a uniform hash,
//     so their sizes are close and a replica count stands for bytes; sizes
//     serve the disk limit and pick the cheapest shard to move. Balancing
//     on write rate (PD's hot regions, CockroachDB's load-based rebalancing)
//     is left for later.
//   - The rule of balance above instead of a convergence score or a score
//     margin: it is stated so that "no move is ever undone" can be proved
//     and is checked by property tests, where a pairwise "the move
//     improves" allows a node to receive from another and later give back
//     to it when other moves happened in between.
//   - Snapshot slots are counted when planning (MaxSnapshotsPerNode)
//     rather than refused by the receiver: a refused snapshot costs a
//     learner added and rolled back, and a fresh replica ID.
//   - Decommission completes even when fewer nodes than the replication
//     factor remain, by removing replicas no node can take (CockroachDB
//     keeps at least three and the decommission waits): the operator asked
//     for it, and CanDecommission still refuses the last node.
//   - A gone voter with no replacement is kept, not removed: removing it
//     would not make the shard more available, and the node may come back.
//
// # What the driver must do
//
// The planner assumes a driver that: builds State from the meta shard (the
// authority on shards, their replicas and roles, and node records, removed
// ones included) and gossip (liveness, disk, write rate, leaders), with a
// Since for every dead node (it must keep its own clock of when it saw a
// node die, and start it again after a meta leader change rather than
// guess); passes every operation it has started and not finished, those
// recovered from intents recorded in the meta shard included, on every
// call; executes each operation as its doc says (a fresh replica ID from
// the shard's NextReplicaID for a learner, the snapshot, one joint change,
// leadership handed to the first node of Add when Remove leads, leaving the
// joint state, deleting the old replica's data), finishes or rolls back an
// operation interrupted by a crash, re-reads the shard before each step and
// drops an operation whose Remove replica is gone or whose target stopped
// being live; enforces the rate limits that are about time (moves per
// minute, snapshot bytes per second); reports QuorumLost without acting;
// and counts and logs every operation by kind with its reason.
//
// Package node/placer is that driver's home in a node: it builds State
// from the local copy of the meta shard, gossip and the router, runs each
// step on the shard's leader through the Admin service, and keeps intents
// in the meta shard. Not enforced yet: the snapshot bytes-per-second
// limit (snapshots are counted per node instead, MaxSnapshotsPerNode).
//
// Not done here: placing new shards (splits keep their replicas), split
// and merge policy, load-based balancing, locality constraints. Leaderships
// go to voters only, so where the voters are can stop the leader balance
// short: a node above its band whose shards have their other voters only
// on nodes at or above the mean, with no middle node to go through, stays
// there until replica moves change the placement. The property tests check
// that the balance stops only when the rule allows no transfer, and count
// how often it stops out of band: 1 of 2,000 random clusters with a
// replication factor above 1, by 1.2 leaderships. With replication factor
// 1 a node leads exactly what it holds, so leader counts follow replica
// counts (and disk capacity).
package placement
