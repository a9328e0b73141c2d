package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// longFlagsWithOneDash returns args with "-name" and "-name=value" written
// "--name" and "--name=value" where name is a long flag of the tree root:
// flotillactl parsed its flags with the standard library's flag package,
// which takes one dash or two, and scripts may use either. Shorthands (-h)
// and what follows "--" are left as they are. The result is never nil.
func longFlagsWithOneDash(root *cobra.Command, args []string) []string {
	long := map[string]bool{"help": true} // cobra adds --help when it runs
	var collect func(c *cobra.Command)
	collect = func(c *cobra.Command) {
		add := func(f *pflag.Flag) { long[f.Name] = true }
		c.Flags().VisitAll(add)
		c.PersistentFlags().VisitAll(add)
		for _, sub := range c.Commands() {
			collect(sub)
		}
	}
	collect(root)
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			if name, _, _ := strings.Cut(a[1:], "="); long[name] {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}
