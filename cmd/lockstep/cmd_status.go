package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/api"
)

func init() {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon: its policy, journal, services and alerts",
		Long: `Asks the running daemon for its state: the applied policy, the journal's
size and reach, how many services and volumes it protects, and how many
services are breaching their RPO now.

Exit codes: 0 the daemon answered, 1 it could not be reached or asked,
2 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			s, err := c.Status(cmd.Context())
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "daemon:       %s (version %s), up since %s\n", s.Listen, s.Version, s.Started.Format(time.RFC3339))
			fmt.Fprintf(w, "data:         %s\n", s.DataDir)
			fmt.Fprintf(w, "iscsi portal: %s\n", s.Portal)
			if s.Policy != nil {
				fmt.Fprintf(w, "policy:       version %d applied %s (sha256 %.12s)\n", s.Policy.Version, s.Policy.Time.Format(time.RFC3339), s.Policy.Hash)
			} else {
				fmt.Fprintln(w, "policy:       none applied (run `lockstep apply DIR`)")
			}
			fmt.Fprintf(w, "services:     %d, volumes: %d, exposures: %d\n", s.Services, s.Volumes, s.Exposures)
			fmt.Fprintf(w, "journal:      %s in %d segment(s), last sequence %d\n", api.FormatBytes(s.Journal.Bytes), s.Journal.Segments, s.Journal.LastSeq)
			if !s.Journal.Oldest.IsZero() {
				fmt.Fprintf(w, "window:       %s .. %s\n", s.Journal.Oldest.Format(time.RFC3339), s.Journal.Newest.Format(time.RFC3339))
			}
			if s.OpenAlerts > 0 {
				fmt.Fprintf(w, "RPO:          %d service(s) in breach (see `lockstep services`)\n", s.OpenAlerts)
			} else {
				fmt.Fprintln(w, "RPO:          every service within its target")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}

// ago prints a duration for humans: whole seconds, or milliseconds when short.
func ago(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
