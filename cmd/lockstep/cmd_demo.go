package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/internal/demo"
)

func init() {
	var dir string
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Protect and restore a real PostgreSQL end to end (needs root)",
		Long: `Run Lockstep's first-run demo on this machine: a 1 GiB journaled volume
served by Lockstep's iSCSI target, attached through qemu-storage-daemon, FUSE
and a loop device, formatted ext4 and carrying a real PostgreSQL. The demo
inserts rows, takes an application-consistent marker (CHECKPOINT, fsfreeze,
marker with the WAL position as evidence), inserts more rows, drops the
table, restores the volume to the marker and checks that PostgreSQL comes
back with exactly the rows committed before the marker.

It needs root, qemu-storage-daemon with the iSCSI driver, FUSE, loop devices
and PostgreSQL 15 (scripts/deps/demo.txt). It never touches the
distribution's PostgreSQL cluster. Everything it starts is stopped, also on
failure and Ctrl-C; the working directory is removed unless --keep or --dir.

Exit codes: 0 the restored data was verified, 1 the demo failed, 2 usage
error (including a --dir that is not empty).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := demo.Run(ctx, demo.Options{Dir: dir, Keep: keep, Out: cmd.OutOrStdout()})
			if errors.Is(err, demo.ErrDirNotEmpty) {
				return withExit(exitUsage, err)
			}
			if err != nil {
				return withExit(exitFailure, err)
			}
			if !res.Verified {
				return withExit(exitFailure, fmt.Errorf("demo: restored data not verified"))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "working directory (empty or new; default a temporary directory)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary working directory (store and logs)")
	rootCmd.AddCommand(cmd)
}
