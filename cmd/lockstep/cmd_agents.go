package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func init() {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "agents [--json]",
		Short: "List the enrolled agents and whether they answer",
		Long: `Lists the agents enrolled with the daemon. Each is probed now: ok when it
answers, lost (with why) when it does not; the markers of services with an
app on a lost agent are crash-consistent until it returns.

Exit codes: 0 listed, 1 the daemon could not be reached or asked, 2 usage
error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			as, err := c.Agents(cmd.Context())
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), as)
			}
			if len(as) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No agents: enrol one with `lockstep agent token NAME`.")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tADDRESS\tSERVICES\tENROLLED\tDETAIL")
			for _, a := range as {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, dash(a.State), a.Advertise, dash(strings.Join(a.Services, ",")),
					a.Enrolled.UTC().Format(time.RFC3339), dash(a.Detail))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}
