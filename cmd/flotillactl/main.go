// Command flotillactl is Flotilla's admin and client tool.
//
//	flotillactl [--endpoints ADDR,...] [--output table|json] [--timeout D] COMMAND [ARGS]
//
// Cluster administration (the nodes' Admin gRPC service; the first endpoint
// that answers serves the request, forwarding it where it must run):
//
//	flotillactl status                          the cluster ID, the meta shard's leader, and per node
//	                                            its state (live/suspect/dead/removed/unknown),
//	                                            addresses, replicas and leaderships, draining
//	flotillactl shards                          per shard: hash range, leader, term, commit and
//	                                            applied index, replicas (node ID/replica ID) with
//	                                            their roles, quiesced;
//	                                            then the nodes that did not answer
//	flotillactl transfer-leader SHARD NODE      move SHARD's leadership to NODE (one of its voters)
//	flotillactl add-replica SHARD NODE [--learner]
//	                                            add a replica on NODE: a learner, promoted to voter
//	                                            once caught up unless --learner is given
//	flotillactl remove-replica SHARD NODE       remove NODE's replica of SHARD
//	flotillactl remove-node NODE                remove a stopped node that holds no replica from
//	                                            the cluster; its ID is never used again
//
// SHARD is a shard ID or "meta" (the meta shard, ID 9223372036854775808);
// NODE is a node ID.
//
// Placement (the driver on the meta shard's leader; the node that answers
// forwards the request there):
//
//	flotillactl plan                            the operations the planner would start now, with
//	                                            their reasons (a dry run)
//	flotillactl moves                           the operations in flight, then the last ones done:
//	                                            step or outcome, start, duration, error
//	flotillactl decommission NODE               drain NODE: its leaderships and replicas move off
//	flotillactl recommission NODE               undo decommission
//	flotillactl placement pause|resume|status   stop or restart the driver starting operations;
//	                                            its state, counters by kind and spreads
//
// Hash ranges (on the shards' leaders; the node that answers forwards there):
//
//	flotillactl split SHARD [--at HASH] [--generation N]
//	                                            split SHARD's range: it keeps [start, HASH-1], a
//	                                            new shard gets [HASH, last] on the same replicas;
//	                                            HASH in hex, default the median hash of its rows
//
// Keys and values (through the client package, routed to the keys' leaders):
//
//	flotillactl put KEY VALUE
//	flotillactl get KEY [--stale]               --stale reads any replica (possibly stale)
//	flotillactl del KEY
//
// Offline inspection of a stopped node's store:
//
//	flotillactl debug dump --data-dir DIR       DIR is a node's data directory (as given to
//	                                            flotilla start: its identity file is printed,
//	                                            then DIR/store is dumped) or a store directory
//
// Flags may come before the command or anywhere after it ("--" ends them):
//
//	--endpoints ADDR,...  client addresses of some nodes (default 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003)
//	--output table|json   aligned columns, or one JSON document on stdout (default table)
//	--timeout D           time allowed for the command (default 10s)
//
// "flotillactl help" (or --help) lists the commands; "flotillactl help
// COMMAND" (or "flotillactl COMMAND --help") shows one, with its flags.
// Errors are reported on stderr as "flotillactl: ..."; the exit code is 1
// when a command fails and 2 when it is used wrongly (with a usage hint).
//
// The commands are github.com/spf13/cobra commands: root.go builds the
// tree from one constructor per group of commands (admin.go,
// placement.go, split.go, kv.go, debug.go).
package main

import (
	"io"
	"os"
)

const defaultEndpoints = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs flotillactl with args (without the program name) and returns
// the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	return e.execute(newRoot(e), args)
}
