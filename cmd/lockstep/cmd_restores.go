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
		Use:   "restores [SERVICE | ID]",
		Short: "List in-place restores, or show one",
		Long: `Lists the in-place restores (whole service, single volume, undo) of every
service or of SERVICE, oldest first: id, kind, state, target, when, how long,
and what an unfinished one left rolled and stopped. With a restore ID
(r-...) shows that restore's record, every step included with --json.

Exit codes: 0 listed, 1 no such restore or the daemon could not be reached,
2 usage error.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(args) == 1 && strings.HasPrefix(args[0], "r-") {
				rec, err := c.RestoreRecord(cmd.Context(), args[0])
				if err != nil {
					return withExit(exitFailure, err)
				}
				if asJSON {
					return printJSON(w, rec)
				}
				if err := rec.WriteText(w); err != nil {
					return err
				}
				for _, s := range rec.Steps {
					line := fmt.Sprintf("  step       %-10s %-24s %-8s %s", s.Step, s.Object, s.Outcome, s.Duration.Round(time.Millisecond))
					if s.Error != "" {
						line += "  " + s.Error
					}
					fmt.Fprintln(w, line)
				}
				return nil
			}
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			recs, err := c.Restores(cmd.Context(), service)
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(w, recs)
			}
			if len(recs) == 0 {
				fmt.Fprintln(w, "No restores yet.")
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tSERVICE\tSTATE\tTARGET\tCREATED\tTOOK\tNOTE")
			for _, r := range recs {
				target := time.Unix(0, r.Target).UTC().Format(time.RFC3339Nano)
				if r.Marker != nil {
					target = r.Marker.ID
				}
				note := ""
				switch {
				case r.UndoneBy != "":
					note = "undone by " + r.UndoneBy
				case r.Undoes != "":
					note = "undoes " + r.Undoes
				}
				if !r.Finished() && r.UndoneBy == "" {
					note = fmt.Sprintf("rolled %d/%d, stopped %s: lockstep restore --resume %s", len(r.Rolled), len(r.Volumes), listOrNone(r.Stopped), r.ID)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Kind, r.Service, r.State, target,
					r.Created.UTC().Format(time.RFC3339), r.Duration.Round(time.Millisecond), dash(note))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}
