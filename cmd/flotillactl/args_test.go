package main

import (
	"bytes"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
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

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		pos     []string
		learner bool
	}{
		{[]string{"7", "4"}, []string{"7", "4"}, false},
		{[]string{"7", "4", "--learner"}, []string{"7", "4"}, true},
		{[]string{"7", "--learner", "4"}, []string{"7", "4"}, true},
		{[]string{"--learner", "7", "4"}, []string{"7", "4"}, true},
		{[]string{"-learner=false", "7", "4"}, []string{"7", "4"}, false},
		{[]string{"7", "--", "--learner", "-x"}, []string{"7", "--learner", "-x"}, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		learner := fs.Bool("learner", false, "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.pos) || *learner != tc.learner {
			t.Errorf("parseInterspersed(%q) = %q, learner %v, %v; want %q, learner %v", tc.args, pos, *learner, err, tc.pos, tc.learner)
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
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		stdout, stderr, code := runCmd(t, args...)
		if code != exitOK || stderr != "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
		for _, c := range commands {
			if !strings.Contains(stdout, c.name) {
				t.Errorf("%q: help lacks command %s:\n%s", args, c.name, stdout)
			}
		}
	}
	stdout, _, code := runCmd(t, "add-replica", "--help")
	if code != exitOK || !strings.Contains(stdout, "add-replica SHARD NODE [--learner]") {
		t.Errorf("add-replica --help: exit %d, stdout %q", code, stdout)
	}
}
