package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// metaShardID is the ID of the meta shard (storage.SystemShardBase, the
// first system shard).
const metaShardID uint64 = 1 << 63

// usageError is a command used wrongly: exit code 2, with a hint.
type usageError struct {
	msg string
	cmd *cobra.Command // the command used wrongly; nil or the root for a general hint
}

func (u *usageError) Error() string { return u.msg }

func usageErrorf(c *cobra.Command, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), cmd: c}
}

// argNames is the Args check of a command whose positional arguments are
// exactly names: a usage error says which are missing or the first extra.
func argNames(names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usageErrorf(c, "%s: missing %s", cmdPath(c), strings.Join(names[len(args):], " and "))
		}
		if len(args) > len(names) {
			return usageErrorf(c, "%s: unexpected argument %q", cmdPath(c), args[len(names)])
		}
		return nil
	}
}

// cmdPath is the path of c below the root: "add-replica", "debug dump".
func cmdPath(c *cobra.Command) string {
	return strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")
}

// synopsis is the one-line usage of c, "flotillactl [flags] add-replica
// SHARD NODE [--learner]"; a group lists its commands, "flotillactl
// [flags] debug dump"; "" for the root and help (and nil).
func synopsis(c *cobra.Command) string {
	if c == nil || !c.HasParent() || (c.Parent() == c.Root() && c.Name() == "help") {
		return ""
	}
	args := strings.TrimPrefix(c.Use, c.Name())
	if c.HasAvailableSubCommands() {
		args = " " + strings.Join(subcommandNames(c), "|")
	}
	return c.Root().Name() + " [flags] " + cmdPath(c) + args
}

// subcommandNames lists the names of the commands of group c, as help
// shows them.
func subcommandNames(c *cobra.Command) []string {
	var names []string
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return names
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

// parseNodeArg parses s, the NODE argument of c: a bad one is a usage
// error of c.
func parseNodeArg(c *cobra.Command, s string) (uint64, error) {
	id, err := parseNode(s)
	if err != nil {
		return 0, usageErrorf(c, "%s: %v", cmdPath(c), err)
	}
	return id, nil
}

// parseShardNode parses the SHARD NODE arguments of c.
func parseShardNode(c *cobra.Command, args []string) (shard, node uint64, err error) {
	if shard, err = parseShard(args[0]); err == nil {
		node, err = parseNode(args[1])
	}
	if err != nil {
		return 0, 0, usageErrorf(c, "%s: %v", cmdPath(c), err)
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
