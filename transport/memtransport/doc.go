// Package memtransport is an in-process engine.Transport with fault injection,
// for the in-process test cluster (internal/testcluster) and the single-process
// demo. It models the gRPC transport of package transport closely enough that
// the engine cannot tell them apart, and adds what a test needs: lost,
// duplicated, delayed and reordered messages, cut links, crashed nodes.
//
// # Model
//
// A Network connects Endpoints, one per node ID: (*Network).Endpoint(nodeID)
// returns that node's transport. An endpoint is usable once the engine has
// called Start with its Handler. Closing an endpoint (Endpoint.Close, or
// Network.Stop) is a crash of the node: what it had queued or delayed is lost,
// messages in flight to it are dropped, its snapshot streams fail; a later
// Network.Endpoint call for the same node ID returns a new endpoint, the
// restarted node. Batches are bound to the incarnation that was up when they
// left the queue, so nothing sent to a crashed node reaches its successor.
//
// Raft traffic follows the design of the real transport (package transport): each
// endpoint keeps one bounded queue per destination node (Config.QueueLen
// messages) and one sender goroutine per destination, which drains everything
// queued into ONE engine.Batch and hands it to the destination's
// Handler.HandleBatch. Send never blocks: it fails with engine.ErrQueueFull
// when the messages do not fit (none of them is queued), with
// engine.ErrUnknownPeer when the destination has no started, open endpoint,
// and with engine.ErrTransportClosed after Close. Endpoint.Stats counts
// messages and bytes per destination.
//
// # Faults
//
// Faults (SetFaults) apply to every link: drop and duplication are decided per
// message, delay and reordering per batch, by a math/rand source seeded with
// Config.Seed, so that a run is reproducible in distribution (exactly, when a
// single link carries the traffic). Delays are realised with the sender's
// timer: the sender keeps draining while batches wait, and without reordering
// a link still delivers its batches in order. A reordered batch is held back
// and delivered right after the next batch of its link (or after
// Faults.ReorderWindow if none comes).
//
// Cuts model a network partition: Cut(from, to) cuts one direction,
// Partition(groupA, groupB) both directions between two groups, Isolate(node)
// a node from every other node; Heal removes every cut and fault. A cut link
// drops messages silently, when they leave the queue and again when a delayed
// batch comes due, and the sending endpoint's Handler.PeerUnreachable(to) is
// called once per cut episode (until the link is healed). A destination found
// down is reported the same way, once until a delivery succeeds again.
//
// Snapshots are streamed, never held whole: SendSnapshot copies each chunk of
// the sender's body (valid only until its next Next) into a channel of
// Config.SnapshotBuffer chunks, and the destination's Handler.HandleSnapshot
// reads them from its own goroutine; buffers are recycled once the receiver
// asks for the next chunk. A cut in either direction fails the stream at the
// start or between two chunks (ErrLinkCut), as do the sender's ctx and a
// crash of either node; the receiver's body then returns the error. Random
// faults do not apply to snapshots. Config.SnapshotRate limits the throughput
// of all streams together.
//
// # Concurrency
//
// Every method of Network and Endpoint is safe for concurrent use, and faults
// and cuts may change while traffic flows; they take effect for the next
// batch. The goroutines are: one sender per (endpoint, destination) pair,
// started by the first Send to that destination and stopped by Close; and one
// goroutine per snapshot stream running the destination's HandleSnapshot,
// which SendSnapshot waits for. Handler methods are called from these
// goroutines, concurrently (one HandleBatch at a time per sending node), and
// never with a lock of this package held; they must not block for long and
// must not close their own endpoint. HandleSnapshot must return once its body
// or ctx fails. Endpoint.Close returns when its senders have stopped and no
// call into its handler is in progress; Network.Close closes every endpoint,
// after which no goroutine of this package is left.
//
// State: the Network's mutex guards the endpoints, faults, cuts and random
// source; an endpoint's mutex guards its handler, queues map and streams; a
// queue's mutex guards the queued messages. Delayed batches belong to their
// sender goroutine.
package memtransport
