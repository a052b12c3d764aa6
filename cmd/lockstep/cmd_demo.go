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
		Long: `Run Lockstep's first-run demo on this machine, through the same path as
production. It starts a daemon on a temporary directory with a demo policy
(service "demo": one 1 GiB volume, the fsfreeze and postgres built-in plugins,
a marker every minute, RPO 5 minutes), attaches the volume through
qemu-storage-daemon's iSCSI initiator, FUSE and a loop device, formats it ext4
and runs a real PostgreSQL on it. It inserts rows and takes two
application-consistent markers through the API (CHECKPOINT, fsfreeze, the WAL
position as evidence), drops the table, asks the daemon for a restore plan to
just before the damage and restores the service in place (stop PostgreSQL,
unmount, roll the volume back, mount, start, health checks), then checks that
the table holds exactly the rows of the marker and prints the service's RPO
status.

It needs root, qemu-storage-daemon with the iSCSI driver, FUSE, loop devices
and PostgreSQL 15 (scripts/deps/demo.txt; ` + "`make demo`" + ` installs them). It never
touches the distribution's PostgreSQL cluster, and its daemon listens on
loopback ports of its own. Everything it starts is stopped, also on failure
and Ctrl-C; the working directory is removed unless --keep or --dir.

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
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary working directory (data directory, policy, logs)")
	rootCmd.AddCommand(cmd)
}
