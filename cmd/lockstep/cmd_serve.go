package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/daemon"
	"github.com/lockstep-io/lockstep/policies/parse"
)

func init() {
	var dataDir, policyDir, iscsiAddr string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the volumes of a data directory over iSCSI",
		Long: `Opens the data directory, creates the volumes the policy declares (if
given), and serves each volume as a LUN of its own iSCSI target on the
portal. A control socket in the data directory (mode 0600) answers
'lockstep volume' commands. Stops on SIGINT or SIGTERM.

Exit codes: 0 stopped by a signal, 1 failed to start or failed while
serving, 2 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return withExit(exitUsage, errors.New("--data DIR is required (or set LOCKSTEP_DATA)"))
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			cfg := daemon.Config{DataDir: dataDir, ISCSIAddr: iscsiAddr, Logger: logger}
			if policyDir != "" {
				res, err := parse.Load([]string{policyDir}, parse.Options{})
				if err != nil {
					return withExit(exitFailure, err)
				}
				if res.Diagnostics.HasErrors() {
					res.WriteDiagnostics(cmd.ErrOrStderr(), 100, false)
					return withExit(exitFailure, fmt.Errorf("policy %s is invalid; run `lockstep validate %s`", policyDir, policyDir))
				}
				cfg.Policy = res.Policy
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := daemon.New(ctx, cfg)
			if err != nil {
				return withExit(exitFailure, err)
			}
			defer d.Close()
			return withExit(exitFailure, d.Serve(ctx))
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", os.Getenv("LOCKSTEP_DATA"), "data directory (env LOCKSTEP_DATA)")
	cmd.Flags().StringVar(&policyDir, "policy", "", "policy directory or file declaring the services and volumes")
	cmd.Flags().StringVar(&iscsiAddr, "iscsi", "127.0.0.1:3260", "iSCSI portal address")
	rootCmd.AddCommand(cmd)
}

// controlClient finds the daemon serving dataDir.
func controlClient(dataDir string) (*daemon.Client, error) {
	if dataDir == "" {
		return nil, withExit(exitUsage, errors.New("--data DIR is required (or set LOCKSTEP_DATA)"))
	}
	return daemon.Dial(dataDir + "/control.sock")
}
