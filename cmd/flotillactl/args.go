package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// metaShardID is the ID of the meta shard (storage.SystemShardBase, the
// first system shard).
const metaShardID uint64 = 1 << 63

// usageError is a command used wrongly: exit code 2, with a hint.
type usageError struct {
	msg      string
	synopsis string // the command's usage line, or "" for a general hint
}

func (u *usageError) Error() string { return u.msg }

func usageErrorf(synopsis, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), synopsis: synopsis}
}

// flags returns the FlagSet of command c; it accepts the global flags too.
func (e *env) flags(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.globalFlags(fs)
	return fs
}

// parse parses the arguments of command c with fs, allowing flags before,
// between and after the positional arguments ("--" ends the flags), and
// checks that the positional arguments are exactly those named.
func (e *env) parse(c *command, fs *flag.FlagSet, args []string, names ...string) ([]string, error) {
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, err
	}
	if err != nil {
		return nil, usageErrorf(c.synopsis(), "%s: %v", c.name, err)
	}
	if len(pos) < len(names) {
		return nil, usageErrorf(c.synopsis(), "%s: missing %s", c.name, strings.Join(names[len(pos):], " and "))
	}
	if len(pos) > len(names) {
		return nil, usageErrorf(c.synopsis(), "%s: unexpected argument %q", c.name, pos[len(names)])
	}
	if err := e.check(); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			ue.synopsis = c.synopsis()
		}
		return nil, err
	}
	return pos, nil
}

// parseInterspersed parses args with fs and returns the positional
// arguments, which may come between flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil // everything after "--" is positional
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseShard parses a SHARD argument: a shard ID, or "meta".
func parseShard(s string) (uint64, error) {
	if strings.EqualFold(s, "meta") {
		return metaShardID, nil
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("SHARD must be a shard ID (a positive number) or \"meta\", not %q", s)
	}
	return id, nil
}

// parseNode parses a NODE argument: a node ID.
func parseNode(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("NODE must be a node ID (a positive number), not %q", s)
	}
	return id, nil
}

// parseShardNode parses the SHARD NODE arguments of c.
func parseShardNode(c *command, pos []string) (shard, node uint64, err error) {
	if shard, err = parseShard(pos[0]); err == nil {
		node, err = parseNode(pos[1])
	}
	if err != nil {
		return 0, 0, usageErrorf(c.synopsis(), "%s: %v", c.name, err)
	}
	return shard, node, nil
}

// shardName is how a shard ID is shown: "meta" for the meta shard.
func shardName(id uint64) string {
	if id == metaShardID {
		return "meta"
	}
	return strconv.FormatUint(id, 10)
}

// nodeName is how a node ID that may be unknown (0) is shown.
func nodeName(id uint64) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatUint(id, 10)
}
