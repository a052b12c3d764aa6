package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/api"
)

func init() {
	var asJSON, allowDestroy bool
	cmd := &cobra.Command{
		Use:   "apply DIR [--allow-destroy]",
		Short: "Apply a policy to the running daemon, atomically",
		Long: `Applies the policy files of DIR (or a single file) to the running daemon:
it creates volumes, changes targets, hands the schedules, RPOs and retention
to the orchestrator and records the policy, all or nothing: if any step fails,
the steps before it are undone and nothing has changed. The plan it carries
out is printed first (see 'lockstep plan').

Apply refuses, changing nothing, when the policy is invalid (an RPO shorter
than the schedule can meet is invalid), when a volume would shrink or change
its block size, or when a volume would be destroyed without --allow-destroy.
Destroyed volumes lose their whole journal history; they go last, once the
new policy is recorded.

Exit codes: 0 applied (or nothing to change), 1 refused, failed (nothing
changed) or the daemon could not be reached, 2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcs, err := readSources(args[0])
			if err != nil {
				return withExit(exitFailure, err)
			}
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			res, err := c.Apply(cmd.Context(), api.PlanRequest{Sources: srcs, AllowDestroy: allowDestroy})
			if err != nil {
				var re *api.RemoteError
				if errors.As(err, &re) {
					return withExit(exitFailure, fmt.Errorf("policy %s: %w", args[0], err))
				}
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			printPlan(cmd.OutOrStdout(), cmd.ErrOrStderr(), &res.Plan)
			fmt.Fprintf(cmd.OutOrStdout(), "Applied: policy version %d (sha256 %.12s) at %s.\n", res.Policy.Version, res.Policy.Hash, res.Policy.Time.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().BoolVar(&allowDestroy, "allow-destroy", false, "allow destroying volumes the policy no longer declares")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}
