// Command flotillactl is Flotilla's admin and client tool.
//
//	flotillactl [--endpoints ADDR,...] [--output table|json] [--timeout D] COMMAND [ARGS]
//
// Cluster administration (the nodes' Admin gRPC service; the first endpoint
// that answers serves the request, forwarding it where it must run):
//
//	flotillactl status                          the cluster ID, the meta shard's leader, and per node
//	                                            its state (live/suspect/dead/removed/unknown),
//	                                            addresses, replicas and leaderships
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
// Flags may come before the command or anywhere after it:
//
//	--endpoints ADDR,...  client addresses of some nodes (default 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003)
//	--output table|json   aligned columns, or one JSON document on stdout (default table)
//	--timeout D           time allowed for the command (default 10s)
//
// "flotillactl help" (or --help) lists the commands; "flotillactl COMMAND
// --help" shows one. Errors are reported on stderr as "flotillactl: ...";
// the exit code is 1 when a command fails and 2 when it is used wrongly
// (with a usage hint).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
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

// command is one subcommand of flotillactl.
type command struct {
	name  string
	usage string // the arguments after the name
	help  string
	run   func(e *env, c *command, args []string) error
}

var commands = []*command{
	{"status", "", "the cluster's nodes, their state and load", cmdStatus},
	{"shards", "", "every shard: range, leader, raft state, replicas", cmdShards},
	{"transfer-leader", "SHARD NODE", "move a shard's leadership to one of its voters", cmdTransferLeader},
	{"add-replica", "SHARD NODE [--learner]", "add a replica of a shard on a node", cmdAddReplica},
	{"remove-replica", "SHARD NODE", "remove a node's replica of a shard", cmdRemoveReplica},
	{"remove-node", "NODE", "remove a stopped node that holds no replica (its ID is never reused)", cmdRemoveNode},
	{"put", "KEY VALUE", "set a key", cmdPut},
	{"get", "KEY [--stale]", "read a key", cmdGet},
	{"del", "KEY", "delete a key", cmdDel},
	{"debug", "dump --data-dir DIR", "dump a stopped node's store (offline)", cmdDebug},
}

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// synopsis is the one-line usage of c.
func (c *command) synopsis() string {
	return strings.TrimSpace("flotillactl [flags] " + c.name + " " + c.usage)
}

// run runs flotillactl with args (without the program name) and returns
// the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, endpoints: defaultEndpoints, output: "table", timeout: 10 * time.Second}
	fs := flag.NewFlagSet("flotillactl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.globalFlags(fs)
	fs.BoolVar(&e.stale, "stale", false, "get: read any replica (possibly stale)")
	fs.StringVar(&e.dataDir, "data-dir", "", "debug dump: the data directory of a stopped node")
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		e.usage(stdout)
		return exitOK
	case err != nil:
		return e.fail(usageErrorf("", "%v", err))
	case fs.NArg() == 0:
		return e.fail(usageErrorf("", "no command given"))
	}
	if err := e.check(); err != nil {
		return e.fail(err)
	}
	name := fs.Arg(0)
	if name == "help" {
		e.usage(stdout)
		return exitOK
	}
	c := findCommand(name)
	if c == nil {
		return e.fail(usageErrorf("", "unknown command %q", name))
	}
	err = c.run(e, c, fs.Args()[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "usage: %s\n  %s\n", c.synopsis(), c.help)
		return exitOK
	}
	return e.fail(err)
}

// globalFlags registers the flags that every command accepts, bound to e
// (their defaults are e's current values).
func (e *env) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&e.endpoints, "endpoints", e.endpoints, "client addresses of cluster nodes, comma-separated")
	fs.StringVar(&e.output, "output", e.output, "output format: table or json")
	fs.DurationVar(&e.timeout, "timeout", e.timeout, "time allowed for the command")
}

// usage prints the list of commands.
func (e *env) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: flotillactl [--endpoints ADDR,...] [--output table|json] [--timeout D] COMMAND [ARGS]")
	fmt.Fprintln(w, "\ncommands:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(c.name+" "+c.usage), c.help)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nSHARD is a shard ID or \"meta\"; NODE is a node ID.")
	fmt.Fprintf(w, "flags (before the command or after it):\n")
	fmt.Fprintf(w, "  --endpoints ADDR,...  client addresses of some nodes (default %s)\n", defaultEndpoints)
	fmt.Fprintln(w, "  --output table|json   output format (default table)")
	fmt.Fprintln(w, "  --timeout D           time allowed for the command (default 10s)")
}
