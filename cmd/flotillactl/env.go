package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// env holds the settings and the output streams of one run: the flags of
// the command tree (newRoot) are bound to its fields.
type env struct {
	stdout, stderr io.Writer
	endpoints      string
	output         string
	timeout        time.Duration
	stale          bool   // get: also accepted before the command
	dataDir        string // debug dump: also accepted before the command
}

// execute runs the command tree root, built by newRoot(e), on args
// (without the program name) and returns the exit code.
func (e *env) execute(root *cobra.Command, args []string) int {
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	// Never nil: cobra would parse os.Args instead.
	root.SetArgs(longFlagsWithOneDash(root, args))
	return e.fail(root.Execute())
}

// check validates the global flags for command c.
func (e *env) check(c *cobra.Command) error {
	if e.output != "table" && e.output != "json" {
		return usageErrorf(c, "--output must be table or json, not %q", e.output)
	}
	if e.timeout <= 0 {
		return usageErrorf(c, "--timeout must be positive, not %v", e.timeout)
	}
	if len(e.endpointList()) == 0 {
		return usageErrorf(c, "--endpoints names no address")
	}
	return nil
}

// endpointList returns the addresses of --endpoints, without blanks.
func (e *env) endpointList() []string {
	var eps []string
	for _, a := range strings.Split(e.endpoints, ",") {
		if a = strings.TrimSpace(a); a != "" {
			eps = append(eps, a)
		}
	}
	return eps
}

// context returns the context of a command: it ends after --timeout.
func (e *env) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.timeout)
}

// fail reports err (if any) on stderr and returns the exit code.
func (e *env) fail(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(e.stderr, "flotillactl: %s\n", ue.msg)
		if s := synopsis(ue.cmd); s != "" {
			fmt.Fprintf(e.stderr, "usage: %s (see flotillactl help %s)\n", s, cmdPath(ue.cmd))
		} else {
			fmt.Fprintln(e.stderr, "run flotillactl help for the commands and flags")
		}
		return exitUsage
	}
	fmt.Fprintf(e.stderr, "flotillactl: %s\n", e.describe(err))
	return exitFailure
}

// emit writes v as one JSON document, or calls table with an aligning
// writer, as --output asks.
func (e *env) emit(v any, table func(w io.Writer)) error {
	if e.output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tableWriter(e.stdout)
	table(tw)
	return tw.Flush()
}

// tableWriter aligns the columns of a table written to w.
func tableWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// emitText writes v as one JSON document, or text as it is (plus a
// newline), as --output asks.
func (e *env) emitText(v any, text string) error {
	return e.emit(v, func(io.Writer) { fmt.Fprintln(e.stdout, text) })
}
