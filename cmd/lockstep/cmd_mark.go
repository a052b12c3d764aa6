package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
)

func init() {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "mark SERVICE",
		Short: "Take a consistency marker of a service now",
		Long: `Runs the marker protocol for SERVICE now (waiting for a scheduled one that
is running): prepare and freeze every app, one marker record in every volume
journal, thaw, record. Prints the marker: id, time, class, the freeze window,
and each app's evidence and timings. A marker is crash-consistent, with the
reason, when an app could not be quiesced.

Exit codes: 0 a marker was taken (app- or crash-consistent), 1 no marker was
taken (skipped after a quiesce failure, fence failed, unknown service, daemon
not reachable), 2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			m, err := c.Mark(cmd.Context(), args[0])
			if err != nil {
				return withExit(exitFailure, fmt.Errorf("mark %q: %w", args[0], err))
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), m); err != nil {
					return err
				}
			} else {
				printMarker(cmd.OutOrStdout(), m)
			}
			if m.Class == catalog.ClassSkipped {
				return withExit(exitFailure, errSilent)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}

func printMarker(w io.Writer, m api.Marker) {
	fmt.Fprintf(w, "marker:        %s\n", m.ID)
	fmt.Fprintf(w, "service:       %s\n", m.Service)
	fmt.Fprintf(w, "time:          %s (sequence %d)\n", m.Time.Format(time.RFC3339Nano), m.Seq)
	fmt.Fprintf(w, "class:         %s\n", m.Class)
	if m.Reason != "" {
		fmt.Fprintf(w, "reason:        %s\n", m.Reason)
	}
	fmt.Fprintf(w, "volumes:       %s\n", strings.Join(m.Volumes, ", "))
	if m.FreezeStart.IsZero() {
		fmt.Fprintln(w, "freeze window: none (no app was frozen)")
	} else {
		fmt.Fprintf(w, "freeze window: %s (%s .. %s)\n", ago(m.FreezeWindow), m.FreezeStart.Format(time.RFC3339Nano), m.FreezeEnd.Format(time.RFC3339Nano))
	}
	fmt.Fprintf(w, "duration:      %s\n", ago(m.Duration))
	for _, a := range m.Apps {
		fmt.Fprintf(w, "app %s (%s): froze=%v thawed=%v prepare=%s freeze=%s thaw=%s\n", a.App, a.Plugin, a.Froze, a.Thawed, ago(a.Prepare), ago(a.Freeze), ago(a.Thaw))
		if a.Error != "" {
			fmt.Fprintf(w, "  error:    %s\n", a.Error)
		}
		if len(a.Evidence) > 0 {
			fmt.Fprintf(w, "  evidence: %s\n", a.Evidence)
		}
	}
}
