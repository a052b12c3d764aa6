package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi"
)

func init() {
	iscsiCmd := &cobra.Command{
		Use:    "iscsi",
		Short:  "iSCSI target tools for manual and tool-driven testing",
		Hidden: true,
	}
	var portal, iqn, file, size string
	var blockSize int
	var readOnly, debug bool
	serveFile := &cobra.Command{
		Use:   "serve-file",
		Short: "Serve a plain file as LUN 0 of one iSCSI target until interrupted",
		Long: `Serve a plain file as LUN 0 of one iSCSI target until interrupted.
The file is created or extended to --size. Flush and FUA writes fsync it.

Exit codes: 0 after an interrupt, 1 if serving failed, 2 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := parseSize(size)
			if err != nil {
				return withExit(exitUsage, fmt.Errorf("--size: %w", err))
			}
			if iqn == "" || file == "" {
				return withExit(exitUsage, fmt.Errorf("--iqn and --file are required"))
			}
			dev, err := blockdev.OpenFile(file, n, blockSize, readOnly)
			if err != nil {
				return withExit(exitFailure, err)
			}
			defer dev.Close()
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			srv := iscsi.NewServer(iscsi.ServerConfig{Portal: portal, Logger: log})
			if err := srv.AddTarget(iscsi.TargetConfig{IQN: iqn, LUNs: []iscsi.LUNConfig{{ID: 0, Device: dev}}}); err != nil {
				return withExit(exitUsage, err)
			}
			l, err := net.Listen("tcp", portal)
			if err != nil {
				return withExit(exitFailure, fmt.Errorf("listen on %q: %w", portal, err))
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log.Info("serving", "portal", l.Addr().String(), "iqn", iqn, "file", file, "size", n, "block_size", blockSize)
			err = srv.Serve(ctx, l)
			srv.Close()
			if err != nil {
				return withExit(exitFailure, err)
			}
			return nil
		},
	}
	serveFile.Flags().StringVar(&portal, "portal", "127.0.0.1:3260", "address to listen on and advertise")
	serveFile.Flags().StringVar(&iqn, "iqn", "", "target name (iqn.…)")
	serveFile.Flags().StringVar(&file, "file", "", "backing file")
	serveFile.Flags().StringVar(&size, "size", "1GiB", "device size (bytes, or with KiB/MiB/GiB/TiB)")
	serveFile.Flags().IntVar(&blockSize, "block-size", 512, "logical block size: 512 or 4096")
	serveFile.Flags().BoolVar(&readOnly, "read-only", false, "refuse writes")
	serveFile.Flags().BoolVar(&debug, "debug", false, "log every failed command")
	iscsiCmd.AddCommand(serveFile)
	rootCmd.AddCommand(iscsiCmd)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if strings.HasSuffix(s, u.suffix) {
			mult, s = u.m, strings.TrimSuffix(s, u.suffix)
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}
