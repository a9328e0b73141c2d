// Package gossip gives Flotilla nodes cluster discovery, failure detection
// and a cheap epidemic channel for shard leader changes, on top of
// github.com/hashicorp/memberlist (SWIM).
//
// # Membership
//
// Every node runs one memberlist instance named after its decimal node ID.
// What a node advertises about itself (addresses, cluster ID, bootstrap
// parameters, and its load: replicas, leaders, disk used and capacity,
// write rate) is a Meta, carried as memberlist node metadata and therefore
// limited to memberlist.MetaMaxSize (512) bytes once encoded. The encoding
// (meta.go) is a version byte followed, from version 2 on, by tagged fields
// (tag, length, payload), so that nodes of different versions read each
// other during a rolling upgrade: a field an older peer does not send is
// zero, a field a newer peer sends under a tag this version does not know
// is skipped (unless the newer peer marks it mandatory), and any version
// from 2 up is read that way. A new field therefore takes a new tag, not a
// new version. Version 1, the fixed layout of nodes before the load fields,
// is still decoded. Within what it knows the decoder is strict and rejects
// anything malformed with ErrMalformedMeta instead of guessing.
//
// A member whose metadata does not decode is not dropped: it is listed
// with its State and its node ID only, flagged with the decode error
// (Member.MetaErr, Member.Usable reports false), counted in
// Stats.MetaInvalid and logged when it turns bad. Nothing it advertises
// is known, so it must not be given work; the flag clears when it
// advertises metadata that decodes.
//
// The package keeps its own member table, fed by memberlist's EventDelegate
// (join, update, leave), because memberlist's public API does not expose a
// node's state: Node.State is never filled in (memberlist's internal
// nodeState shadows it), and Members() lists alive and suspect nodes alike.
// The table's State therefore comes from these sources:
//
//   - Alive: the node joined, or announced new metadata, or answered one of
//     our probes.
//   - Suspect: our own memberlist probe of the node failed ("Suspect X has
//     failed, no acks received", which memberlist only reports through its
//     logger; the logger is bridged to log/slog and that one line is also
//     interpreted). A later successful probe, an alive/update event or the
//     final verdict clears it. Suspicion that other nodes gossip to us is not
//     observable through memberlist's API and is not reflected.
//   - Dead or Left: memberlist declared the node gone (NotifyLeave). A
//     graceful Leave first re-advertises the node's metadata with a "leaving"
//     flag and waits for that broadcast, so the others can tell a departure
//     (Left) from a failure (Dead).
//
// Dead and left members stay listed (so callers can tell "gone" from "never
// seen") until they come back or Config.DeadRetention passes. Name
// conflicts reported by memberlist's ConflictDelegate (the same node ID
// claimed from another address), and a live node ID re-appearing with a
// different Meta.Instance, are recorded and listed by Conflicts.
//
// # Leader gossip
//
// BroadcastLeaders queues shard leader changes in a pending map keyed by
// shard: a newer term replaces an older one, an equal term replaces the
// previous entry (last wins), an older term is dropped. A flusher goroutine,
// at most once per LeaderFlushInterval, packs pending updates into as few
// messages of at most ~1200 bytes as possible (type byte, version byte,
// uvarint count, uvarint triples) and hands each to a
// memberlist.TransmitLimitedQueue that memberlist drains through
// Delegate.GetBroadcasts, piggybacking the messages on its own gossip and
// probe packets. Leader messages never invalidate each other.
//
// Two refinements keep the channel reliable and bounded:
//
//   - Receivers re-gossip what was new to them. memberlist retransmits a
//     broadcast only RetransmitMult*ceil(log10(N+1)) times in total, which
//     reaches every node only if receivers pass it on (memberlist's own
//     alive/suspect/dead messages spread that way). Every node keeps, per
//     shard, the greatest (Term, Leader) it has seen and accepts, delivers
//     and re-gossips an update only if it is greater: values only grow, so
//     the exchange converges and cannot loop, however many times a message
//     is retransmitted or echoed back. (Within one raft term the leader is
//     unique, so the order on Leader only decides between "unknown" (0) and
//     the leader; a same-term step-down to 0 is not propagated, the next
//     election's higher term is.)
//   - At most one packet's worth (the message size limit) of leader messages
//     is in the broadcast queue at a time; the rest waits in the pending map,
//     where newer updates keep replacing older ones. The in-flight message is
//     then included in the packet to every gossip target, instead of
//     different messages going to different targets, so in clusters of up
//     to GossipNodes+1 nodes every node gets every message directly. The
//     throughput is the same either way (one packet per target per gossip
//     round), and the broadcast queue cannot grow without bound while the
//     node has no peers.
//
// Updates are delivered to Config.OnLeaders from a single goroutine, in
// batches; updates that arrive while a batch is being processed are
// coalesced per shard into the next batch. There is no anti-entropy: a node
// that joins learns only the changes gossiped after it joined.
//
// # Concurrency
//
// A Gossip is safe for concurrent use. memberlist invokes the delegates with
// its own locks held, so the delegates never call back into memberlist and
// user callbacks (OnChange, OnLeaders) run on goroutines of this package.
package gossip
