// Package merger runs the merge of a shard with its right neighbour in the
// ring on the node that leads the left shard, for the node's Admin Merge
// request, and settles merges left unfinished. Package engine merges
// (merge.go: freeze the right shard, wait until every replica of it is
// frozen durably, merge on the left shard's leader; abandon by bumping
// the left shard's generation, then thawing the right shard; no data
// moves), package node/meta keeps the records (a merged shard's record is
// retired by the write of the left shard's widened record); this package
// decides and sequences. The node reaches the shards' leaders and the
// right shard's nodes for it (the Cluster interface: the Admin MergeStep
// request, forwarded to the shard's leader).
//
// # A merge
//
//  1. The left shard L's applied descriptor, on its leader (this node),
//     and its right neighbour R (the shard of the hash after L's last, by
//     this node's ring), whose replica here gives R's descriptor: a system
//     shard, a last shard (no neighbour), a neighbour that does not start
//     where L ends (the ring lags), an expected generation that is not
//     L's, a shard frozen already, a joint configuration, or replicas not
//     on the same nodes in the same roles (R has no replica here, say) are
//     refused with a *RefusalError before anything changes.
//  2. Freeze R on its leader, against R's and L's generations: a stale
//     generation (R changed) is refused there, and nothing changed. From
//     here on every failure abandons the merge (step 6).
//  3. R's frozen record in the meta shard, before the merge can apply:
//     the write of L's widened record retires R's record only if it finds
//     R's frozen one (package node/meta, # Merges).
//  4. WaitFrozen on every node of R's frozen descriptor, concurrently,
//     within Config.WaitTimeout: a replica that has not applied the freeze
//     when the others are destroyed could never catch up.
//  5. Engine.Merge on L, here; then L's widened record, which retires R's.
//     A failure to write it is only logged: L's reconciler writes the same
//     record, and retires R the same way.
//  6. Abandon (settle): bump L's generation on its leader, so that no merge
//     command planned against it can apply any more, wherever it is in
//     flight; then thaw R. If the bump finds L's range over R's first hash
//     at a later generation, the merge applied after all (an unknown
//     outcome that was a success) and Merge reports it. If the bump fails
//     and L has a tombstone in the meta shard (L was merged into its own
//     left neighbour meanwhile, its replicas destroyed), no bump can get
//     through and none is needed: L's log is gone, and with it any merge
//     command of R; R is thawed at once (the Cluster's MergedAway). A merge
//     that could not be settled (no leader for L, say: without a
//     tombstone, L is not gone) leaves R frozen: Merge returns an
//     *AbandonedError that says so, and the recovery settles it later.
//
// Abandoning always bumps L first while L exists, even when this node
// never proposed the merge command: another node may run the same merge
// concurrently (two operators), and its merge command must not apply on
// replicas of L where R is still frozen while others have thawed it.
//
// # Recovery
//
// A node that runs a merge may fail between the freeze and the merge:
// R stays frozen and serves nothing. Recovery, run on every node every few
// seconds, settles each shard led there that has stayed frozen for longer
// than Config.FrozenTimeout (well above the time a merge takes): step 6,
// which either finds it merged or abandons it, bumping L or, if L was
// merged away, not (Settled.LeftGone). It never finishes a merge:
// abandoning is always safe, and the operator (or a policy) merges again.
//
// # Concurrency
//
// A Merger holds no mutable state: Merge may run concurrently, for one
// shard or many; two merges of one shard race at the shards, where the
// second fails. A Recovery belongs to one goroutine.
package merger
