package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func init() {
	var asJSON bool
	var since, service string
	cmd := &cobra.Command{
		Use:   "events [--service NAME] [--since DURATION|TIME]",
		Short: "List what happened: markers, failed quiesces, RPO breaches, applies",
		Long: `Lists the daemon's events, oldest first (at most the newest 1000): markers
taken, quiesce and thaw failures, missed schedules, RPO breaches and
recoveries, policy applies, daemon starts and downtimes.

Exit codes: 0 listed, 1 the daemon could not be reached or asked, 2 usage
error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			at, err := parseSinceFlag(since)
			if err != nil {
				return withExit(exitUsage, err)
			}
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			es, err := c.Events(cmd.Context(), service, at)
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), es)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tSEVERITY\tTYPE\tSERVICE\tMESSAGE")
			for _, e := range es {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Severity, e.Type, dash(e.Service), e.Message)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&since, "since", "", "only events at or after this time: 24h (that long ago), -2d, \"yesterday 14:00\", RFC 3339")
	cmd.Flags().StringVar(&service, "service", "", "only events of this service")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}
