package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// commandGroup is a group of commands as help lists them. Each group's
// commands come from one constructor, in a file of their own, that binds
// their flags to the env of the run.
type commandGroup struct {
	id, title string
	commands  func(*env) []*cobra.Command
}

// commandGroups are flotillactl's commands. A new command goes into the
// list its group's constructor returns; a new group is one more line here.
func commandGroups() []commandGroup {
	return []commandGroup{
		{"admin", "Cluster administration (the nodes' Admin gRPC service):", adminCommands},
		{"placement", "Placement (the driver on the meta shard's leader):", placementCommands},
		{"ranges", "Hash ranges (on the shards' leaders):", rangeCommands},
		{"recover", "Recovery from the loss of a majority (a running cluster):", recoverCommands},
		{"kv", "Keys and values (routed to the keys' leaders):", kvCommands},
		{"backup", "Backups (restore with flotilla restore):", backupCommands},
		{"debug", "Offline inspection:", debugCommands},
	}
}

// newRoot builds the command tree of flotillactl, its flags bound to e.
func newRoot(e *env) *cobra.Command {
	root := asGroup(&cobra.Command{
		Use:   "flotillactl",
		Short: "Flotilla's admin and client tool",
		Long: `flotillactl administers a Flotilla cluster through its nodes' Admin gRPC
service (the first endpoint that answers serves a request, forwarding it
where it must run), reads and writes keys through the client package, and
inspects a stopped node's store offline.

SHARD is a shard ID or "meta" (the meta shard); NODE is a node ID.
Flags may come before the command or anywhere after it; "--" ends them.
Errors are reported on stderr; the exit code is 1 when a command fails and
2 when it is used wrongly.`,
		SilenceErrors:     true, // e.fail reports them
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		// The only hook of the tree: cobra runs the nearest one, so a
		// command must not set a PersistentPreRun(E) of its own.
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if err := refuseHiddenFlags(c); err != nil {
				return err
			}
			return e.check(c)
		},
	})
	pf := root.PersistentFlags()
	pf.StringVar(&e.endpoints, "endpoints", defaultEndpoints, "client addresses of some nodes (`ADDR,...`)")
	pf.StringVar(&e.output, "output", "table", "output format, `table|json`: aligned columns, or one JSON document on stdout")
	pf.DurationVar(&e.timeout, "timeout", 10*time.Second, "time allowed for the command (an answer of NOT_LEADER, the shard's leadership moving under a change, is asked again within it)")
	// The flags of get and debug dump are also accepted before the command
	// ("flotillactl --stale get k"), as they always were. Declared hidden
	// here, they let cobra find the command behind them; the commands that
	// own them declare them again, bound to the same field of e; any other
	// command refuses them (refuseHiddenFlags).
	pf.BoolVar(&e.stale, "stale", false, "")
	pf.StringVar(&e.dataDir, "data-dir", "", "")
	pf.Lookup("stale").Hidden = true
	pf.Lookup("data-dir").Hidden = true
	root.SetFlagErrorFunc(flagError)
	root.SetHelpCommand(helpCommand())
	// Root and groups run only to report a missing or unknown command:
	// their usage shows "flotillactl [command]", not a line of their own.
	usage := root.UsageTemplate()
	root.SetUsageTemplate(strings.Replace(usage, "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	for _, g := range commandGroups() {
		root.AddGroup(&cobra.Group{ID: g.id, Title: g.title})
		for _, c := range g.commands(e) {
			c.GroupID = g.id
			root.AddCommand(c)
		}
	}
	return root
}

// asGroup makes c a command that only holds others: given no command or
// an unknown one, it fails with a usage error (cobra would print help and
// exit 0).
func asGroup(c *cobra.Command) *cobra.Command {
	c.Args = noCommand
	c.RunE = noCommand
	c.SuggestionsMinimumDistance = 2
	return c
}

// noCommand is the error of group c run with args: no command, or an
// unknown one.
func noCommand(c *cobra.Command, args []string) error {
	what, prefix := "command", ""
	if c.HasParent() {
		what, prefix = "subcommand", cmdPath(c)+": "
	}
	if len(args) == 0 {
		return usageErrorf(c, "%sno %s given", prefix, what)
	}
	hint := ""
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		hint = fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	return usageErrorf(c, "%sunknown %s %q%s", prefix, what, args[0], hint)
}

// helpCommand is "help [COMMAND]": cobra's own, but an unknown command is
// a usage error.
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]",
		Short: "list the commands, or show one with its flags",
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usageErrorf(c.Root(), "help: unknown command %q", strings.Join(args, " "))
			}
			target.InitDefaultHelpFlag() // listed among its flags
			return target.Help()
		},
	}
}

// flagError turns an error of the flag parser into a usage error of c; an
// unknown flag is reported in the words flotillactl has always used.
func flagError(c *cobra.Command, err error) error {
	var ne *pflag.NotExistError
	if errors.As(err, &ne) {
		name := ne.GetSpecifiedShortnames()
		if name == "" {
			name = ne.GetSpecifiedName()
		}
		err = fmt.Errorf("flag provided but not defined: -%s", name)
	}
	if !c.HasParent() {
		return usageErrorf(c, "%v", err)
	}
	return usageErrorf(c, "%s: %v", cmdPath(c), err)
}

// refuseHiddenFlags fails if c was given a hidden flag of the root: the
// flag of another command, accepted before that command only.
func refuseHiddenFlags(c *cobra.Command) error {
	var err error
	c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden && f.Changed && err == nil {
			err = flagError(c, fmt.Errorf("flag provided but not defined: -%s", f.Name))
		}
	})
	return err
}
