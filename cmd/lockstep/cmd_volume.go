package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/api"
)

func init() {
	var asJSON bool
	vc := &cobra.Command{Use: "volume", Short: "List volumes and present them at past points in time"}
	cf := addClientFlags(vc.PersistentFlags())
	vc.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the volumes, their targets and journal windows",
		Long: `Lists the volumes of the daemon's data directory with their targets and
journal windows, and the live point-in-time exposures.

Exit codes: 0 listed, 1 the daemon could not be asked, 2 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			vols, err := c.Volumes(cmd.Context())
			if err != nil {
				return withExit(exitFailure, err)
			}
			exps, err := c.Exposures(cmd.Context())
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"volumes": vols, "exposures": exps})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VOLUME\tSIZE\tBLOCK\tWINDOW FROM\tTARGET")
			for _, v := range vols {
				fmt.Fprintf(tw, "%s\t%d MiB\t%d\t%s\t%s\n", v.Name, v.Size>>20, v.BlockSize, time.Unix(0, v.FoldThrough).UTC().Format(time.RFC3339), v.IQN)
			}
			tw.Flush()
			for _, e := range exps {
				fmt.Fprintf(cmd.OutOrStdout(), "exposed: %s at %s writable=%v -> %s lun %d\n", e.Volume, e.At.Format(time.RFC3339Nano), e.Writable, e.IQN, e.LUN)
			}
			return nil
		},
	}

	var at, marker string
	var writable bool
	expose := &cobra.Command{
		Use:   "expose VOLUME --at TIME|MARKER [--writable]",
		Short: "Present a volume as it was at a point in time as a new iSCSI LUN",
		Long: `Presents VOLUME (service/volume) as it was at TIME (RFC 3339, relative like
-15m or "15m ago", "yesterday 14:00" in the local time zone) or at a marker
(--at m-…, or --marker ID), as LUN 0 of a new target, and prints the target's
IQN and portal. Read-only by default; --writable presents a copy-on-write
clone whose writes never touch the original's journal. Nothing is copied, so
this takes the same time whatever the volume's size.

Exit codes: 0 exposed, 1 the daemon refused (point outside the journal
window, unknown volume or marker) or could not be reached, 2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if at != "" && marker != "" {
				return withExit(exitUsage, errors.New("give --at or --marker, not both"))
			}
			pointAt, pointMarker, err := resolvePoint(at, time.Now())
			if err != nil {
				return withExit(exitUsage, err)
			}
			if marker != "" {
				pointMarker = marker
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			e, err := c.Expose(cmd.Context(), api.ExposeRequest{Volume: args[0], At: pointAt, Marker: pointMarker, Writable: writable})
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), e)
			}
			mode := "read-only"
			if e.Writable {
				mode = "writable clone " + e.Clone
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s at %s (%s)\niqn:    %s\nlun:    %d\nportal: %s\n", e.Volume, e.At.Format(time.RFC3339Nano), mode, e.IQN, e.LUN, e.Portal)
			return nil
		},
	}
	expose.Flags().StringVar(&at, "at", "", "point: a marker id (m-…), a time (RFC 3339, -15m, \"yesterday 14:00\") or Unix nanoseconds")
	expose.Flags().StringVar(&marker, "marker", "", "marker id (the same as --at ID)")
	expose.Flags().BoolVar(&writable, "writable", false, "present a writable copy-on-write clone")

	var keep bool
	unexpose := &cobra.Command{
		Use:   "unexpose IQN",
		Short: "Remove an exposed point-in-time LUN",
		Long: `Removes the target of an exposure, closing its sessions. A writable
exposure's clone is deleted with it unless --keep is given.

Exit codes: 0 removed, 1 no such exposure or the daemon could not be
reached, 2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.Unexpose(cmd.Context(), api.UnexposeRequest{IQN: args[0], Keep: keep}); err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]string{"removed": args[0]})
			}
			fmt.Fprintln(cmd.OutOrStdout(), "removed", args[0])
			return nil
		},
	}
	unexpose.Flags().BoolVar(&keep, "keep", false, "keep a writable exposure's clone volume")
	vc.AddCommand(list, expose, unexpose, newVolumeRestoreCmd(&asJSON))
	rootCmd.AddCommand(vc)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
