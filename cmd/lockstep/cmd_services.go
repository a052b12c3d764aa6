package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/policies/model"
)

func init() {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List the protected services, their schedules and RPOs",
		Long: `Lists each service of the applied policy: its volumes and apps, its
marker schedule, its RPO target and the age of its newest
application-consistent marker, and whether the RPO is breached now.

Exit codes: 0 listed, 1 the daemon could not be reached or asked, 2 usage
error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			svcs, err := c.Services(cmd.Context())
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), svcs)
			}
			if len(svcs) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No services: apply a policy with `lockstep apply DIR`.")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tVOLUMES\tAPPS\tSCHEDULE\tRPO\tAGE\tSTATE\tLAST MARKER\tNEXT")
			for _, s := range svcs {
				apps := make([]string, 0, len(s.Apps))
				for _, a := range s.Apps {
					apps = append(apps, a.Name+"("+a.Plugin+")")
				}
				state := "ok"
				if s.Breached {
					state = "BREACH"
				}
				last, next := "-", "-"
				if m := s.LastMarker; m != nil {
					last = fmt.Sprintf("%s %s %s", m.ID, m.Class, m.Time.Format(time.RFC3339))
				}
				if !s.NextRun.IsZero() {
					next = s.NextRun.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, strings.Join(s.Volumes, ","), dash(strings.Join(apps, ",")),
					s.Schedule, model.FormatDuration(s.RPOTarget), ago(s.RPOAge), state, last, next)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
