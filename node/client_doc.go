// Package node assembles one Flotilla node: engine, transport, router,
// and the client and admin gRPC services,
// so that a database can embed a whole node in its own process. It
// assembles; the parts own their state: package node/meta owns the meta
// shard's records (cluster, nodes, ring header, one record per shard) and
// the code that writes, follows and repairs them, package node/gossip the
// discovery of nodes and their load, package node/placer the placement
// driver (package placement) in the node, packages node/splitter and
// node/merger the splits and merges of hash ranges. Nothing in this package reads or
// writes a key of the meta shard but through a node/meta Store.
//
// # The cluster (cluster*.go, records.go, admin*.go)
//
// StartCluster runs a node that finds its cluster by gossip. A bootstrap
// member creates its replicas of the initial layout (nodemeta.NewLayout)
// from their records' Spec, so that each shard's first descriptor is its
// bootstrap record, and the meta shard's leader writes the records
// (Store.Bootstrap). metaLoop follows the local copy of the meta shard with
// a nodemeta.Watcher and hands the router the ring and each shard's
// replicas; leaders come by gossip. Each shard's replicated descriptor is
// the authority on it: the nodemeta.Reconciler of the node that leads a
// shard writes its descriptor as a record, as each change applies and in a
// periodic repair pass, through the Admin service's PutShardRecords, which
// the meta shard's leader serves. Decisions that depend on where replicas
// are read the authority: RemoveNode reads the shard records
// linearizably and asks the live nodes which replicas they host.
//
// The start (progress.go, leaders.go). A bootstrap creates its initial
// replicas BootstrapBatch at a time with engine.CreateShards: one synced
// write per engine worker per batch. One CreateShard per shard cost a
// synced write each: 10,000 shards took a node 15-30 s to create, serially,
// and while the last node created its replicas the others' replicas of
// the shards it was to lead timed out and elected among themselves (its
// first campaigns' votes went to replicas that did not exist yet, and a
// vote for an unknown fresh shard is dropped), so leaders ended 132 / 4,910
// / 4,959. A start's elections are won by whichever replica times out
// first: once every shard it hosts is led, each node hands the leaderships
// it holds to their designated nodes (shard ID mod voters, the first
// candidate's rule), so leaders start even; ClusterConfig.NoLeaderHandBack
// turns it off. Until every shard is led the node logs its progress every
// ProgressInterval, /readyz says what it waits for and the
// flotilla_shards_leaderless gauge counts the replicas that know no leader.
//
// Placement (placement.go, admin_placement.go). Every node runs a
// node/placer.Placer, whose driver steps while the node leads the meta
// shard (ClusterConfig.NoPlacement turns it off); the steps of its
// operations reach each shard's leader as Admin ReplicaStep requests,
// served here on the engine's fenced, explicit joint changes.
// staleReplicaLoop destroys a replica that its shard removed while it could
// not hear of it, on the word of the shard's record.
//
// Splits (admin_split.go). The Admin Split request runs on the shard's
// leader, through package node/splitter: the child's ID from the meta
// shard's allocator (AllocateShardID, on the meta shard's leader), the
// engine's split, and both halves' records written in one batch (the
// reconcilers write them too). The routers follow through their watchers,
// which keep the ring before the split until the records tile the hash
// space again.
//
// Merges (admin_merge.go). The Admin Merge request runs on the left
// shard's leader, through package node/merger: freeze the right neighbour
// on its leader, wait until each of its nodes has it frozen (MergeStep
// WAIT_FROZEN, sent to each), merge, and the widened record, which
// retires the merged shard's (package node/meta). A merge that fails after
// the freeze is abandoned (the left shard's generation bumped, the right
// shard thawed). staleReplicaLoop also runs the merger's Recovery, which
// settles the shards led here that have stayed frozen for too long.
//
// Backups (admin_backup.go, prepare.go). The Admin Backup request streams
// this node's replica of a shard as engine.BackupShard reads it (not
// forwarded: package node/backup, the client, picks the replica).
// PrepareBootstrap prepares a data directory that bootstraps a new cluster
// alone from the bootstrap parameters it is given (a restore gives the
// backup's ring and fills the store first), so that StartCluster takes the
// bootstrap path above, with neither --join nor --bootstrap-expect.
//
// The cluster state's loops (metaLoop, leaderLoop, reportLoop, loadLoop,
// staleReplicaLoop, placementLoop, writeBootstrapRecords) and the
// reconciler run from StartCluster to Close. syncMeta, which owns the watcher, is serialized by a mutex of its
// own, so that handlers may call it; clusterState.mu guards the node
// records and the liveness view. Handlers forward a request that must run
// on a shard's leader (the meta shard's, for Join, RemoveNode and
// PutShardRecords) to it, at most three hops.
//
// # The client service (client_*.go)
//
// ClientService implements nodepb.KVServer, the service applications call
// (usually through package client). It owns no state of its own beyond its
// configuration: it routes every request with the node's router.Router to a
// shard, runs it on the node's engine (Propose for writes; for reads as
// GetRequest.mode says: ReadLeader by default, which is ReadLease on a node
// in lease mode and Read otherwise, Read or ReadLease when asked,
// ReadOnReplica for replica reads, ReadLocal for stale reads) and turns the engine's
// errors into gRPC statuses carrying a nodepb.Error detail:
//
//	engine / router error            code                reason
//	*engine.NotLeaderError           Unavailable         NOT_LEADER (leader hint: node, address, term)
//	shard not hosted here            Unavailable         NOT_LEADER (hint from the router)
//	*engine.KeyNotInShardError       FailedPrecondition  KEY_NOT_IN_SHARD (shard, its generation and range now)
//	*engine.StaleGenerationError     FailedPrecondition  STALE_GENERATION (shard, its generation and range now)
//	*engine.ShardMergingError        Unavailable         SHARD_MERGING (frozen for a merge: not applied, retry)
//	empty / too large key or value   InvalidArgument     EMPTY_KEY, KEY_TOO_LARGE, VALUE_TOO_LARGE
//	engine.ErrProposalTooLarge       InvalidArgument     TOO_LARGE
//	unknown shard (Scan by ID)       NotFound            SHARD_NOT_FOUND
//	engine.ErrProposalDropped        Unavailable         PROPOSAL_DROPPED (not applied: retry)
//	engine.ErrClosed                 Unavailable         CLOSED
//	engine.ErrSessionNotFound        FailedPrecondition  SESSION_NOT_FOUND (not applied: register, retry)
//	engine.ErrDuplicateRequest       AlreadyExists       DUPLICATE_REQUEST (applied before; never retried)
//	no ring yet                      Unavailable         NO_RING
//	ctx deadline / cancel            DeadlineExceeded / Canceled   DEADLINE (a write may have applied)
//
// Error.not_applied is set when a write certainly did not apply, so that a
// client may retry even a compare-and-swap.
//
// A write that carries a nodepb.Session (client_session.go) is proposed with
// engine.ProposeSession: it applies exactly once however often the client
// retries it with the same session and sequence number, and every retry
// returns the first application's result. A write without one is proposed
// as is (engine.Propose).
//
// A request routed with a ring that a split or a merge has made stale is
// refused by the shard (KeyNotInShard, ShardMerging, or no replica here
// any more; nothing applied); the service then polls the meta shard and,
// if the key's shard changed, runs the request there once more
// (client_reroute.go), else returns the refusal.
//
// The key-value HTTP API (http_kv.go), GET, PUT and DELETE /v1/kv/{key} on
// the node's HTTP endpoint, runs each request on the service as the
// GetRequest, PutRequest or DeleteRequest it stands for, and follows a
// NOT_LEADER that names another node (nothing applied) to that node's KV
// service, at most three hops; its errors are the service's statuses as
// JSON with an HTTP status.
//
// The router is the caller's: it keeps the ring and replicas up to date (the
// meta shard, gossip). StartLeaderFeed adds the engine's leader-change
// events to it, so that NotLeader hints and Routes answers carry the
// leaders this node sees.
//
// # Concurrency model
//
// gRPC calls the handlers concurrently; they share only the engine and the
// router, both safe for concurrent use, and never block without a context:
// every handler runs under the caller's deadline, bounded by
// ClientServiceConfig.MaxRequestTimeout. A Batch runs its operations in
// goroutines of its own, at most BatchConcurrency engine calls at once,
// operations on the same key one after the other in request order; it
// returns when all have finished. StartLeaderFeed starts one goroutine per
// call, which ends with its context, with the engine, or with Close. The
// service never panics on malformed input: every field is checked, nil
// messages read as empty ones.
package node
