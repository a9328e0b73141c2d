package main

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// runCmd runs flotillactl in-process with args.
func runCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestParseShard(t *testing.T) {
	good := map[string]uint64{
		"meta":                 1 << 63,
		"META":                 1 << 63,
		"7":                    7,
		"1":                    1,
		"9223372036854775808":  1 << 63,
		"18446744073709551615": ^uint64(0),
	}
	for in, want := range good {
		if got, err := parseShard(in); err != nil || got != want {
			t.Errorf("parseShard(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "abc", "-1", "7x", "0x7", "18446744073709551616", "metadata"} {
		if got, err := parseShard(in); err == nil {
			t.Errorf("parseShard(%q) = %d, want an error", in, got)
		} else if !strings.Contains(err.Error(), `"meta"`) {
			t.Errorf("parseShard(%q): error %q does not say what is expected", in, err)
		}
	}
}

func TestParseNode(t *testing.T) {
	if got, err := parseNode("42"); err != nil || got != 42 {
		t.Errorf("parseNode(42) = %d, %v", got, err)
	}
	for _, in := range []string{"", "0", "meta", "-3", "4.5"} {
		if _, err := parseNode(in); err == nil {
			t.Errorf("parseNode(%q) succeeded, want an error", in)
		}
	}
}

func TestShardName(t *testing.T) {
	if got := shardName(1 << 63); got != "meta" {
		t.Errorf("shardName(1<<63) = %q", got)
	}
	if got := shardName(7); got != "7" {
		t.Errorf("shardName(7) = %q", got)
	}
}

// parsed is what a command was given, as parseOnly saw it.
type parsed struct {
	cmd  *cobra.Command // its flags are set
	env  *env
	args []string // positional
	code int      // exit code
}

// parseOnly runs flotillactl on args with the RunE of the command at path
// replaced by one that only records what it was given.
func parseOnly(t *testing.T, path string, args ...string) parsed {
	t.Helper()
	var stderr bytes.Buffer
	p := parsed{env: &env{stdout: io.Discard, stderr: &stderr}}
	root := newRoot(p.env)
	c, rest, err := root.Find(strings.Fields(path))
	if err != nil || len(rest) > 0 || c == root {
		t.Fatalf("no command %q: %v", path, err)
	}
	c.RunE = func(c *cobra.Command, args []string) error {
		p.cmd, p.args = c, args
		return nil
	}
	if p.code = p.env.execute(root, args); p.code != exitOK {
		t.Logf("%q: %s", args, stderr.String())
	}
	return p
}

// TestFlagPositions: flags before, between and after the positional
// arguments, with one dash or two; "--" ends them.
func TestFlagPositions(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		pos     []string
		learner bool
	}{
		{[]string{"add-replica", "7", "4"}, []string{"7", "4"}, false},
		{[]string{"add-replica", "7", "4", "--learner"}, []string{"7", "4"}, true},
		{[]string{"add-replica", "7", "--learner", "4"}, []string{"7", "4"}, true},
		{[]string{"add-replica", "--learner", "7", "4"}, []string{"7", "4"}, true},
		{[]string{"add-replica", "--learner=false", "7", "4"}, []string{"7", "4"}, false},
		{[]string{"add-replica", "-learner=false", "7", "4"}, []string{"7", "4"}, false},
		{[]string{"-endpoints", "a:1", "add-replica", "-learner", "7", "4"}, []string{"7", "4"}, true},
		{[]string{"add-replica", "7", "--", "4"}, []string{"7", "4"}, false},
	} {
		p := parseOnly(t, "add-replica", tc.args...)
		if p.code != exitOK || !slices.Equal(p.args, tc.pos) {
			t.Errorf("%q: exit %d, arguments %q; want %q", tc.args, p.code, p.args, tc.pos)
			continue
		}
		if learner, err := p.cmd.Flags().GetBool("learner"); err != nil || learner != tc.learner {
			t.Errorf("%q: --learner %v (%v), want %v", tc.args, learner, err, tc.learner)
		}
	}
}

func TestDashDashEndsFlags(t *testing.T) {
	args := []string{"put", "--", "-output", "--learner"}
	if p := parseOnly(t, "put", args...); p.code != exitOK || !slices.Equal(p.args, args[2:]) || p.env.output != "table" {
		t.Errorf("%q: exit %d, arguments %q, output %q", args, p.code, p.args, p.env.output)
	}
}

// TestGlobalFlags: the global flags and their defaults, before the command
// and after it, with one dash or two.
func TestGlobalFlags(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		endpoints string
		output    string
		timeout   time.Duration
	}{
		{[]string{"status"}, defaultEndpoints, "table", 10 * time.Second},
		{[]string{"--endpoints", "a:1,b:2", "--output", "json", "--timeout", "3s", "status"}, "a:1,b:2", "json", 3 * time.Second},
		{[]string{"status", "--endpoints=a:1", "--output=json", "--timeout=250ms"}, "a:1", "json", 250 * time.Millisecond},
		{[]string{"-endpoints", "a:1", "status", "-output=json", "-timeout", "1m"}, "a:1", "json", time.Minute},
	} {
		p := parseOnly(t, "status", tc.args...)
		if p.code != exitOK || p.env.endpoints != tc.endpoints || p.env.output != tc.output || p.env.timeout != tc.timeout {
			t.Errorf("%q: exit %d, endpoints %q, output %q, timeout %v; want %q, %q, %v",
				tc.args, p.code, p.env.endpoints, p.env.output, p.env.timeout, tc.endpoints, tc.output, tc.timeout)
		}
	}
}

// TestPreCommandFlags: the flags of get and debug dump are also accepted
// before the command, as they always were.
func TestPreCommandFlags(t *testing.T) {
	for _, args := range [][]string{{"--stale", "get", "k"}, {"get", "k", "--stale"}, {"-stale", "get", "k"}} {
		if p := parseOnly(t, "get", args...); p.code != exitOK || !p.env.stale || !slices.Equal(p.args, []string{"k"}) {
			t.Errorf("%q: exit %d, stale %v, arguments %q", args, p.code, p.env.stale, p.args)
		}
	}
	if p := parseOnly(t, "get", "get", "k"); p.code != exitOK || p.env.stale {
		t.Errorf("get k: exit %d, stale %v", p.code, p.env.stale)
	}
	for _, args := range [][]string{{"--data-dir", "/d", "debug", "dump"}, {"debug", "--data-dir", "/d", "dump"}, {"debug", "dump", "--data-dir=/d"}} {
		if p := parseOnly(t, "debug dump", args...); p.code != exitOK || p.env.dataDir != "/d" {
			t.Errorf("%q: exit %d, data dir %q", args, p.code, p.env.dataDir)
		}
	}
}

// TestUsageErrors: wrong arguments exit with 2 and a hint, before any
// connection is tried (the endpoint is unreachable on purpose).
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"transfer-leader", "abc", "3"}, `SHARD must be a shard ID (a positive number) or "meta", not "abc"`},
		{[]string{"transfer-leader", "0", "3"}, `SHARD must be`},
		{[]string{"transfer-leader", "7"}, "transfer-leader: missing NODE"},
		{[]string{"transfer-leader"}, "transfer-leader: missing SHARD and NODE"},
		{[]string{"transfer-leader", "meta", "x"}, `NODE must be a node ID (a positive number), not "x"`},
		{[]string{"add-replica", "1", "2", "3"}, `add-replica: unexpected argument "3"`},
		{[]string{"add-replica", "1", "2", "--voter"}, "flag provided but not defined: -voter"},
		{[]string{"remove-replica", "1", "2", "--learner"}, "flag provided but not defined: -learner"},
		{[]string{"status", "extra"}, `status: unexpected argument "extra"`},
		{[]string{"--output", "yaml", "status"}, `--output must be table or json, not "yaml"`},
		{[]string{"shards", "--output", "xml"}, `--output must be table or json, not "xml"`},
		{[]string{"--timeout", "0s", "shards"}, "--timeout must be positive"},
		{[]string{"--endpoints", " , ", "shards"}, "--endpoints names no address"},
		{[]string{"--bogus", "status"}, "flag provided but not defined: -bogus"},
		{[]string{"put", "k"}, "put: missing VALUE"},
		{[]string{"get"}, "get: missing KEY"},
		{[]string{"debug", "dump"}, "debug dump needs --data-dir"},
		{[]string{"debug", "load", "--data-dir", "/nonexistent"}, `debug: unknown subcommand "load"`},
		// Unknown commands.
		{[]string{"stauts"}, `unknown command "stauts" (did you mean status?)`},
		{[]string{"help", "frobnicate"}, `help: unknown command "frobnicate"`},
		{[]string{"help", "debug", "load"}, `help: unknown command "debug load"`},
		{[]string{"debug"}, "debug: no subcommand given"},
		// Wrong argument counts.
		{[]string{"remove-node"}, "remove-node: missing NODE"},
		{[]string{"remove-node", "1", "2"}, `remove-node: unexpected argument "2"`},
		{[]string{"del", "k", "--", "--stale"}, `del: unexpected argument "--stale"`},
		{[]string{"debug", "dump", "extra", "--data-dir", "/nonexistent"}, `debug dump: unexpected argument "extra"`},
		// Bad numbers and values.
		{[]string{"transfer-leader", "18446744073709551616", "2"}, `transfer-leader: SHARD must be a shard ID (a positive number) or "meta", not "18446744073709551616"`},
		{[]string{"remove-node", "x"}, `remove-node: NODE must be a node ID (a positive number), not "x"`},
		{[]string{"remove-replica", "7", "-3"}, "remove-replica: flag provided but not defined: -3"},
		{[]string{"status", "--timeout", "abc"}, `status: invalid argument "abc" for "--timeout" flag: time: invalid duration "abc"`},
		{[]string{"status", "--timeout", "-1s"}, "--timeout must be positive, not -1s"},
		{[]string{"status", "--timeout"}, "status: flag needs an argument: --timeout"},
		// Flags of other commands, with one dash or two.
		{[]string{"add-replica", "1", "2", "-voter"}, "add-replica: flag provided but not defined: -voter"},
		{[]string{"status", "--stale"}, "status: flag provided but not defined: -stale"},
		{[]string{"--stale", "status"}, "status: flag provided but not defined: -stale"},
		{[]string{"get", "k", "-data-dir", "/d"}, "get: flag provided but not defined: -data-dir"},
		// Placement.
		{[]string{"plan", "extra"}, `plan: unexpected argument "extra"`},
		{[]string{"moves", "7"}, `moves: unexpected argument "7"`},
		{[]string{"decommission"}, "decommission: missing NODE"},
		{[]string{"decommission", "x"}, `decommission: NODE must be a node ID (a positive number), not "x"`},
		{[]string{"decommission", "1", "2"}, `decommission: unexpected argument "2"`},
		{[]string{"recommission", "0"}, `recommission: NODE must be a node ID (a positive number), not "0"`},
		{[]string{"recommission"}, "recommission: missing NODE"},
		{[]string{"placement"}, "placement: no subcommand given"},
		{[]string{"placement", "paus"}, `placement: unknown subcommand "paus" (did you mean pause?)`},
		{[]string{"placement", "pause", "now"}, `placement pause: unexpected argument "now"`},
		{[]string{"placement", "status", "--learner"}, "placement status: flag provided but not defined: -learner"},
		// Recovery.
		{[]string{"recover"}, "recover: no subcommand given"},
		{[]string{"recover", "apply", "--shard", "x", "--yes"}, `recover apply: --shard: SHARD must be a shard ID (a positive number) or "meta", not "x"`},
		{[]string{"recover", "plan", "--shard", "0"}, `recover plan: --shard: SHARD must be`},
		{[]string{"recover", "plan", "7"}, `recover plan: unexpected argument "7"`},
		{[]string{"recover", "plan", "--yes"}, "recover plan: flag provided but not defined: -yes"},
	} {
		args := append([]string{"--endpoints", "127.0.0.1:1", "--timeout", "1s"}, tc.args...)
		stdout, stderr, code := runCmd(t, args...)
		if code != exitUsage {
			t.Errorf("%q: exit code %d, want %d (stderr %q)", tc.args, code, exitUsage, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "flotillactl: ") || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%q: stderr %q, want a line with %q and a one-line hint", tc.args, stderr, tc.want)
		}
		if stdout != "" {
			t.Errorf("%q: stdout %q, want nothing", tc.args, stdout)
		}
	}
}

func TestUsageHintNamesTheCommand(t *testing.T) {
	_, stderr, _ := runCmd(t, "add-replica", "x", "4")
	if !strings.Contains(stderr, "usage: flotillactl [flags] add-replica SHARD NODE [--learner]") {
		t.Errorf("stderr %q lacks the command's usage", stderr)
	}
	for _, tc := range []struct {
		args []string
		hint string
	}{
		{[]string{"add-replica", "x", "4"}, "usage: flotillactl [flags] add-replica SHARD NODE [--learner] (see flotillactl help add-replica)"},
		{[]string{"debug", "dump"}, "usage: flotillactl [flags] debug dump --data-dir DIR (see flotillactl help debug dump)"},
		{[]string{"debug", "load"}, "usage: flotillactl [flags] debug dump (see flotillactl help debug)"},
		{[]string{"placement", "stop"}, "usage: flotillactl [flags] placement pause|resume|status (see flotillactl help placement)"},
		{[]string{"decommission", "x"}, "usage: flotillactl [flags] decommission NODE (see flotillactl help decommission)"},
		{[]string{"frobnicate"}, "run flotillactl help for the commands and flags"},
		{[]string{"help", "frobnicate"}, "run flotillactl help for the commands and flags"},
		{[]string{"--output", "yaml", "help"}, "run flotillactl help for the commands and flags"},
	} {
		_, stderr, code := runCmd(t, tc.args...)
		if lines := strings.Split(stderr, "\n"); code != exitUsage || len(lines) != 3 || lines[1] != tc.hint {
			t.Errorf("%q: exit %d, stderr %q; want the hint %q", tc.args, code, stderr, tc.hint)
		}
	}
}

func TestHelp(t *testing.T) {
	commands := newRoot(&env{}).Commands()
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"-help"}} {
		stdout, stderr, code := runCmd(t, args...)
		if code != exitOK || stderr != "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
		for _, c := range commands {
			if !strings.Contains(stdout, "\n  "+c.Name()+" ") {
				t.Errorf("%q: help lacks command %s:\n%s", args, c.Name(), stdout)
			}
		}
	}
	stdout, _, code := runCmd(t, "add-replica", "--help")
	if code != exitOK || !strings.Contains(stdout, "add-replica SHARD NODE [--learner]") {
		t.Errorf("add-replica --help: exit %d, stdout %q", code, stdout)
	}
	for _, args := range [][]string{{"help", "add-replica"}, {"add-replica", "-h"}, {"add-replica", "7", "--help"}} {
		out, stderr, code := runCmd(t, args...)
		if code != exitOK || stderr != "" || out != stdout || !strings.Contains(out, "--learner") || !strings.Contains(out, "--endpoints") {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s\nwant that of add-replica --help", args, code, stderr, out)
		}
	}
	stdout, _, code = runCmd(t, "help", "debug", "dump")
	if code != exitOK || !strings.Contains(stdout, "flotillactl debug dump --data-dir DIR") {
		t.Errorf("help debug dump: exit %d, stdout %q", code, stdout)
	}
	// The root and the groups only run to report a missing or unknown
	// command: their usage shows no line of their own.
	for _, args := range [][]string{{"help"}, {"help", "debug"}} {
		stdout, _, _ := runCmd(t, args...)
		path := strings.Join(append([]string{"flotillactl"}, args[1:]...), " ")
		if !strings.Contains(stdout, "Usage:\n  "+path+" [command]\n\n") {
			t.Errorf("%q: usage is not %q alone:\n%s", args, path+" [command]", stdout)
		}
	}
}
