package main

import (
	"errors"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lockstep-io/lockstep/orchestrator/api"
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

// clientFlags locate the daemon for every command that talks to its API.
type clientFlags struct{ addr, data string }

// addClientFlags declares --addr and --data on fs.
func addClientFlags(fs *pflag.FlagSet) *clientFlags {
	f := &clientFlags{}
	fs.StringVar(&f.addr, "addr", os.Getenv("LOCKSTEP_ADDR"), "daemon API address host:port (env LOCKSTEP_ADDR; default: the address the daemon wrote to DATA/api.addr, else "+api.DefaultAddr+")")
	fs.StringVar(&f.data, "data", os.Getenv("LOCKSTEP_DATA"), "the daemon's data directory, for its token (env LOCKSTEP_DATA, default "+api.DefaultDataDir+"; LOCKSTEP_TOKEN overrides the token)")
	return f
}

// clientOf is the API client of a command declared with addClientFlags.
func clientOf(cmd *cobra.Command) (*api.Client, error) {
	f := &clientFlags{}
	if fl := cmd.Flags().Lookup("addr"); fl != nil {
		f.addr = fl.Value.String()
	}
	if fl := cmd.Flags().Lookup("data"); fl != nil {
		f.data = fl.Value.String()
	}
	return f.client()
}

// client is the API client the flags and LOCKSTEP_TOKEN name.
func (f *clientFlags) client() (*api.Client, error) {
	c, err := api.Locate(f.addr, os.Getenv("LOCKSTEP_TOKEN"), f.data)
	if err != nil {
		return nil, withExit(exitFailure, err)
	}
	return c, nil
}
