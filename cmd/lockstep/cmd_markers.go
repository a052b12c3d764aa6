package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func init() {
	var asJSON bool
	var since string
	cmd := &cobra.Command{
		Use:   "markers SERVICE [--since DURATION|TIME]",
		Short: "List a service's markers",
		Long: `Lists the markers of SERVICE, oldest first: id, time, class (app, crash or
skipped), what triggered it, the freeze window, the whole duration, and why a
marker is not application-consistent. --since keeps markers at or after a
time (RFC 3339) or within a duration back from now (24h). --json adds every
app's evidence and timings.

Exit codes: 0 listed, 1 no such service or the daemon could not be reached,
2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			at, err := parseSinceFlag(since)
			if err != nil {
				return withExit(exitUsage, err)
			}
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			ms, err := c.Markers(cmd.Context(), args[0], at)
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ms)
			}
			if len(ms) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "No markers of service %q yet; take one with `lockstep mark %s`.\n", args[0], args[0])
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tCLASS\tTRIGGER\tSTATE\tFREEZE\tDURATION\tREASON")
			for _, m := range ms {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Time.Format(time.RFC3339Nano), m.Class, m.Trigger, dash(m.State),
					ago(m.FreezeWindow), ago(m.Duration), dash(m.Reason))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&since, "since", "", "only markers at or after this time: 24h (that long ago), -2d, \"yesterday 14:00\", RFC 3339")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}
