// Command lockstep is the single binary of Lockstep: daemon, CLI and built-in
// plugins. Each subcommand lives in a file of its own (cmd_*.go).
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	if err := rootCmd.Execute(); err != nil {
		var ec exitCoder
		code := 1
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(os.Stderr, "lockstep:", err)
		}
		os.Exit(code)
	}
}
