package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Exit codes shared by all commands (documented in `lockstep --help`).
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and found a problem (invalid policy, damaged journal)
	exitUsage   = 2 // bad flags or arguments
)

var rootCmd = &cobra.Command{
	Use:   "lockstep",
	Short: "Service-level continuous data protection",
	Long: `Lockstep journals every write to a service's volumes, places one
application-consistent marker across all of them, and restores the whole
service to a chosen point in time.

Exit codes: 0 success, 1 the command found a problem, 2 usage error.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

// errSilent marks an error whose details the command already printed.
var errSilent = errors.New("")

// exitCoder lets a command choose its process exit code.
type exitCoder interface{ ExitCode() int }

type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

// withExit wraps err so that main exits with code.
func withExit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}
