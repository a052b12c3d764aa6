// Command lockstep is the single binary of Lockstep: daemon, CLI and built-in
// plugins. Each subcommand lives in a file of its own (cmd_*.go).
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	markUsageErrors(rootCmd)
	if err := rootCmd.Execute(); err != nil {
		var ec exitCoder
		code := exitFailure
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		} else if strings.HasPrefix(err.Error(), "unknown command") {
			code = exitUsage
		}
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(os.Stderr, "lockstep:", err)
		}
		os.Exit(code)
	}
}

// markUsageErrors makes bad arguments and flags exit with exitUsage on every
// command, whatever validator the command declared.
func markUsageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withExit(exitUsage, err) })
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error { return withExit(exitUsage, args(cmd, a)) }
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}
