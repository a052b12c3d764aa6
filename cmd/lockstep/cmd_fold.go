package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/api"
)

func init() {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fold [SERVICE]",
		Short: "Enforce retention now: fold history beyond each service's journal window",
		Long: `Runs one retention fold now, as the daemon does every --fold-interval (default
10m): each service's volumes are folded by its retention block. Every write
inside retention.journal stays restorable; beyond it only the markers the
keep_* rules select, the points of live exposures and clones, and the undo
point of the service's last in-place restore (for the window plus 7 days)
stay readable. Journal segments no volume needs any more are deleted, and the
markers that went are set to expired in the catalog (lockstep markers, lockstep
events). A service being restored, or with an unfinished restore, is skipped
until the restore is resumed or undone.

Without SERVICE every service is folded, then the volumes of no service:
clones (volume expose --writable, restore --as-new) are folded through now,
since their own history is not protected, and any other volume keeps the
default 72h window. 'lockstep plan' shows which markers the next fold lets
go.

Prints per service: where the window now starts, markers kept beyond it and
expired, segments removed and bytes freed.

Exit codes: 0 folded (or nothing to fold), 1 a fold failed or was skipped,
the service is unknown or the daemon is not reachable, 2 usage error.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			svc := ""
			if len(args) == 1 {
				svc = args[0]
			}
			res, err := c.Fold(cmd.Context(), svc)
			if err != nil {
				return withExit(exitFailure, fmt.Errorf("fold: %w", err))
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else {
				printFold(cmd.OutOrStdout(), res)
			}
			for _, sf := range append(res.Services, derefFold(res.Unprotected)...) {
				if sf.Error != "" || sf.Skipped != "" {
					return withExit(exitFailure, errSilent)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}

func derefFold(sf *api.ServiceFold) []api.ServiceFold {
	if sf == nil {
		return nil
	}
	return []api.ServiceFold{*sf}
}

func printFold(w io.Writer, res api.FoldResult) {
	for _, sf := range append(res.Services, derefFold(res.Unprotected)...) {
		name := "service " + sf.Service
		if sf.Service == "" {
			name = "volumes of no service (" + strings.Join(sf.Volumes, ", ") + ")"
		}
		switch {
		case sf.Error != "":
			fmt.Fprintf(w, "%s: fold failed: %s\n", name, sf.Error)
			continue
		case sf.Skipped != "":
			fmt.Fprintf(w, "%s: skipped: %s\n", name, sf.Skipped)
			continue
		}
		fmt.Fprintf(w, "%s:\n", name)
		if !sf.WindowStart.IsZero() {
			fmt.Fprintf(w, "  window now starts at %s\n", sf.WindowStart.Format(time.RFC3339))
		}
		if len(sf.Kept) > 0 {
			fmt.Fprintf(w, "  markers kept beyond it: %s\n", strings.Join(sf.Kept, ", "))
		}
		if !sf.UndoPoint.IsZero() {
			fmt.Fprintf(w, "  undo point kept: %s\n", sf.UndoPoint.Format(time.RFC3339Nano))
		}
		fmt.Fprintf(w, "  markers expired: %d", len(sf.MarkersExpired))
		if len(sf.MarkersExpired) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(sf.MarkersExpired, ", "))
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "  segments removed: %d\n", sf.SegmentsRemoved)
		fmt.Fprintf(w, "  bytes freed: %s\n", api.FormatBytes(sf.BytesFreed))
	}
	fmt.Fprintf(w, "journal: %s after the fold (%s freed)\n", api.FormatBytes(res.JournalBytes), api.FormatBytes(res.BytesFreed))
}
