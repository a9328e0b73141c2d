// Package placer runs Flotilla's placement driver (package placement) in
// a node: it owns the three adapters the driver needs and the driver's
// life in the node.
//
//   - Source (source.go) builds the driver's placement.State from what the
//     node knows: the shard and node records of its local copy of the meta
//     shard (the authority on replicas, roles and draining), the meta
//     shard's own descriptor from the engine (this node leads it when the
//     driver runs), liveness and load from gossip, and leaders from the
//     router. The meta shard's records follow a shard's descriptor a moment
//     after a change applies (the reconciler of its leader writes them), so
//     the Source overlays the descriptors that the actuator's steps
//     returned when they are newer (by conf index): the driver decides its
//     next step from what its last step did, not from a record that lags.
//     It keeps its own clock of when it saw each node die (started afresh
//     when a node's state changes, and when this node starts leading): a
//     node dead for DownAfter is repaired around. A node whose gossip
//     metadata does not decode, or that gossip does not list, is not live.
//   - Actuator (actuator.go) sends each step to the shard's leader as an
//     Admin ReplicaStep request through this node's own Admin service,
//     which forwards it (package node implements the step on the leader,
//     on the engine's explicit joint changes fenced by replica ID).
//   - IntentStore (intents.go) keeps the driver's intents in the meta
//     shard (package node/meta's intent records), in a JSON form of its own
//     with explicit field names and kind names, so that renaming a field of
//     package placement cannot change what the next leader reads back.
//
// A Placer runs the driver on every node; the driver steps only while this
// node leads the meta shard (placement.DriverConfig.IsLeader) and hands
// the operations in flight to the next leader through their intents. The
// Admin service's Placement request (plan, moves, pause, resume, status) is
// answered by the Placer of the meta shard's leader.
package placer
