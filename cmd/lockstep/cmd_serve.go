package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/daemon"
)

func init() {
	var dataDir, policyDir, iscsiAddr, iscsiAdvertise, listen, logFormat, logLevel, rpoWebhook, journalCache string
	var foldInterval, iscsiPoll time.Duration
	var apiTLS bool
	cmd := &cobra.Command{
		Use:   "serve --data DIR [--listen ADDR] [--iscsi ADDR] [--policy DIR]",
		Short: "Run the daemon: journaled volumes over iSCSI, markers, the API",
		Long: `Runs the Lockstep daemon in one process: it opens the data directory,
serves every volume as LUN 0 of its own iSCSI target, runs each service's
markers on schedule, evaluates RPOs, and answers the HTTP API on --listen that
every other command (and Prometheus, on /metrics) talks to.

With --api-tls the API is HTTPS, with a certificate the daemon's own CA
(DATA/pki/ca.crt, also the agents' CA) issues at every start for this
machine's names and addresses; the CLI trusts that file, or the copy
LOCKSTEP_CA names on another machine (address https://HOST:PORT).

The API, /metrics included, requires the token in DATA/api.token as
"Authorization: Bearer TOKEN" (created with mode 0600 on first start, kept
while it exists; delete it and restart to rotate it; Prometheus reads it with
authorization.credentials_file). It replaces the former control socket. The daemon
writes the address it listens on to DATA/api.addr, so the CLI needs only
--data (or LOCKSTEP_DATA) on the same machine.

Without --policy the daemon serves the policy applied last (lockstep apply),
resolving its env() and file() secrets again in its own environment. With
--policy DIR it applies DIR at start exactly as 'lockstep apply DIR' would,
refusing to destroy or shrink volumes.

The journal writes past the page cache; reads of the newest
--journal-cache bytes written (all volumes together) are served from memory,
older data from the disk.

Every --fold-interval (default 10m; 0 disables) the daemon enforces each
service's retention: history beyond retention.journal is folded away except
the markers the keep_* rules select (see 'lockstep fold'), so the journal
stays bounded. Stops on SIGINT or SIGTERM, waiting for
running markers to thaw their applications.

RPO alerts (a breach with its cause, and its recovery) are events, metrics
and, with --rpo-webhook URL (env LOCKSTEP_RPO_WEBHOOK), a JSON POST to URL
holding the event and the alert. A URL that carries a token belongs in the
environment, not on the command line where ps shows it; logs and errors
name only its host.

Exit codes: 0 stopped by a signal, 1 failed to start or failed while
serving, 2 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return withExit(exitUsage, errors.New("--data DIR is required (or set LOCKSTEP_DATA)"))
			}
			logger, err := newLogger(cmd, logFormat, logLevel)
			if err != nil {
				return withExit(exitUsage, err)
			}
			cfg := daemon.Config{DataDir: dataDir, ISCSIAddr: iscsiAddr, Listen: listen, Logger: logger, FoldInterval: foldInterval, ISCSIPoll: iscsiPoll, APITLS: apiTLS}
			if iscsiAdvertise != "" {
				if _, _, err := net.SplitHostPort(iscsiAdvertise); err != nil {
					return withExit(exitUsage, fmt.Errorf("--iscsi-advertise: want HOST:PORT: %w", err))
				}
				cfg.ISCSIAdvertise = iscsiAdvertise
			}
			if rpoWebhook != "" {
				u, err := url.Parse(rpoWebhook)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return withExit(exitUsage, errors.New("--rpo-webhook: want an http:// or https:// URL"))
				}
				cfg.RPOWebhook = rpoWebhook
			}
			switch journalCache {
			case "auto":
			case "0":
				cfg.JournalCache = -1
			default:
				n, err := parseSize(journalCache)
				if err != nil {
					return withExit(exitUsage, fmt.Errorf("--journal-cache: %w (want auto, 0, or a size such as 512MiB)", err))
				}
				cfg.JournalCache = n
			}
			if iscsiPoll <= 0 {
				cfg.ISCSIPoll = -1 // Config's zero means the default
			}
			if foldInterval <= 0 {
				cfg.FoldInterval = -1 // Config's zero means the default
			}
			if policyDir != "" {
				srcs, err := readSources(policyDir)
				if err != nil {
					return withExit(exitFailure, err)
				}
				cfg.Policy = srcs
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := daemon.New(ctx, cfg)
			if err != nil {
				return withExit(exitFailure, err)
			}
			err = d.Serve(ctx)
			return withExit(exitFailure, errors.Join(err, d.Close()))
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", os.Getenv("LOCKSTEP_DATA"), "data directory (env LOCKSTEP_DATA)")
	cmd.Flags().StringVar(&policyDir, "policy", "", "apply this policy directory or file at start")
	cmd.Flags().StringVar(&iscsiAddr, "iscsi", "127.0.0.1:3260", "iSCSI portal address")
	cmd.Flags().StringVar(&iscsiAdvertise, "iscsi-advertise", "", "portal HOST:PORT that exposures and copies print (default: the --iscsi address, or this machine's first non-loopback address when that is 0.0.0.0)")
	cmd.Flags().DurationVar(&iscsiPoll, "iscsi-poll", iscsi.DefaultPollSpin, "how long an iSCSI connection at queue depth 1 polls for its next command before it sleeps (0 never polls; saves CPU, costs latency)")
	cmd.Flags().StringVar(&listen, "listen", api.DefaultAddr, "HTTP API address (token required; also serves /metrics)")
	cmd.Flags().BoolVar(&apiTLS, "api-tls", false, "serve the API over HTTPS with a certificate from the daemon's CA (DATA/pki/ca.crt; clients elsewhere set LOCKSTEP_CA to a copy)")
	cmd.Flags().DurationVar(&foldInterval, "fold-interval", daemon.DefaultFoldInterval, "how often retention folds run (0 disables them)")
	cmd.Flags().StringVar(&rpoWebhook, "rpo-webhook", os.Getenv("LOCKSTEP_RPO_WEBHOOK"), "POST every RPO breach and recovery as JSON to this URL (env LOCKSTEP_RPO_WEBHOOK; keep a URL with a token there)")
	cmd.Flags().StringVar(&journalCache, "journal-cache", "auto", "memory for the most recently written data, which reads of it are served from (auto: 1/16 of RAM, 64 MiB–4 GiB; 0: none, reads go to the disk)")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	rootCmd.AddCommand(cmd)
}

func newLogger(cmd *cobra.Command, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
