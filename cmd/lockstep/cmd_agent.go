package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/agent"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/daemon"
)

// DefaultAgentDir is where an agent keeps its key, certificates and
// plugins unless --dir says otherwise.
const DefaultAgentDir = "/var/lib/lockstep-agent"

func init() {
	ac := &cobra.Command{
		Use:   "agent",
		Short: "Run plugins on a protected host for the daemon (token, enroll, serve, remove)",
		Long: `An agent runs on a protected host and hosts the plugins that need local
access there (fsfreeze, mail, stop and start); apps name it with
host = "NAME". The daemon drives it over mutual TLS with certificates its own
CA issues at enrolment:

  on the daemon's machine:  lockstep agent token web01
  on web01:                 lockstep agent enroll --daemon ADDR --name web01 \
                              --token TOKEN --ca-fingerprint FP --advertise web01:7461
                            lockstep agent serve
  list and revoke:          lockstep agents; lockstep agent remove web01`,
	}
	ac.AddCommand(agentTokenCmd(), agentEnrollCmd(), agentServeCmd(), agentRemoveCmd())
	rootCmd.AddCommand(ac)
}

func agentTokenCmd() *cobra.Command {
	var ttl time.Duration
	var replace, asJSON bool
	cmd := &cobra.Command{
		Use:   "token NAME [--ttl 1h] [--replace]",
		Short: "Make a single-use enrolment token for the agent NAME",
		Long: `Asks the daemon for a single-use enrolment token for the agent NAME, valid
for --ttl, and prints it with the fingerprint of the daemon's CA. Carry both
to the host and run 'lockstep agent enroll' there; the token's secret never
crosses the network (the request is signed with it). An agent of the same
name is replaced only with --replace (its old certificate is then revoked).

Exit codes: 0 printed, 1 the daemon refused or could not be reached,
2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := agent.CheckName(args[0]); err != nil {
				return withExit(exitUsage, err)
			}
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			t, err := c.AgentToken(cmd.Context(), api.AgentTokenRequest{Name: args[0], TTL: ttl, Replace: replace})
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), t)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "token:          %s\n", t.Token)
			fmt.Fprintf(w, "ca fingerprint: %s\n", t.CAFingerprint)
			fmt.Fprintf(w, "expires:        %s (single use)\n\n", t.Expires.UTC().Format(time.RFC3339))
			fmt.Fprintf(w, "On %s, run:\n  LOCKSTEP_AGENT_TOKEN=%s lockstep agent enroll --daemon %s --name %s \\\n    --ca-fingerprint %s --advertise %s:7461\n",
				t.Name, t.Token, c.Addr(), t.Name, t.CAFingerprint, t.Name)
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", agent.DefaultTokenTTL, "how long the token is valid")
	cmd.Flags().BoolVar(&replace, "replace", false, "let the token re-enrol an agent of the same name, revoking its certificate")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(cmd.Flags())
	return cmd
}

func agentEnrollCmd() *cobra.Command {
	var cfg agent.EnrollConfig
	cmd := &cobra.Command{
		Use:   "enroll --daemon ADDR --name NAME --token TOKEN --ca-fingerprint FP [--advertise HOST:PORT] [--dir DIR]",
		Short: "Enrol this host with the daemon",
		Long: `Enrols this host as the agent NAME: makes its private key here (it never
leaves the host), sends a certificate request signed with the token to the
daemon's API at --daemon, refuses the answer unless the daemon's CA has the
fingerprint --ca-fingerprint, and stores the key (0600), the certificate and
the CA in --dir. --advertise is the address the daemon dials to reach this
agent. The token may come from $LOCKSTEP_AGENT_TOKEN, which keeps it out of
the process list.

Exit codes: 0 enrolled, 1 refused (token, fingerprint) or the daemon could
not be reached, 2 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Token == "" {
				cfg.Token = os.Getenv("LOCKSTEP_AGENT_TOKEN")
			}
			var missing []string
			for flag, v := range map[string]string{"--daemon": cfg.Daemon, "--name": cfg.Name, "--token": cfg.Token, "--ca-fingerprint": cfg.CAFingerprint} {
				if v == "" {
					missing = append(missing, flag)
				}
			}
			if len(missing) > 0 {
				return withExit(exitUsage, fmt.Errorf("%s required (see `lockstep agent token`)", strings.Join(missing, ", ")))
			}
			if cfg.Advertise == "" {
				cfg.Advertise = net.JoinHostPort(cfg.Name, "7461")
			}
			c, err := agent.Enroll(cmd.Context(), cfg)
			if err != nil {
				return withExit(exitFailure, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled agent %s (certificate serial %s) in %s; the daemon dials it at %s\nstart it with: lockstep agent serve --dir %s\n",
				c.Name, c.Serial, cfg.Dir, c.Advertise, cfg.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Daemon, "daemon", "", "the daemon's API address host:port")
	f.StringVar(&cfg.Name, "name", "", "this host's name, as apps name it (host = \"NAME\")")
	f.StringVar(&cfg.Token, "token", "", "enrolment token from `lockstep agent token` (or $LOCKSTEP_AGENT_TOKEN)")
	f.StringVar(&cfg.CAFingerprint, "ca-fingerprint", "", "the CA fingerprint printed with the token")
	f.StringVar(&cfg.Advertise, "advertise", "", "host:port the daemon dials (default NAME:7461)")
	f.StringVar(&cfg.Dir, "dir", DefaultAgentDir, "the agent's directory")
	return cmd
}

func agentServeCmd() *cobra.Command {
	var dir, listen, logFormat, logLevel string
	cmd := &cobra.Command{
		Use:   "serve [--dir DIR] [--listen ADDR]",
		Short: "Serve the daemon: run its plugin calls on this host",
		Long: `Serves the daemon over mutual TLS: only a client certificate of the daemon,
signed by the CA of enrolment, is accepted. Each call names a plugin: a
built-in one, or one installed in DIR/plugins
('lockstep plugin install --plugin-dir DIR/plugins'), which runs in a
process of its own with the SDK's watchdog. When the daemon's connection
closes, every app it froze here is thawed; a freeze never outlives its hold.
--listen defaults to all addresses on the port of the advertised address.
Stops on SIGINT or SIGTERM, thawing what is frozen.

Exit codes: 0 stopped by a signal, 1 failed to start or while serving,
2 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd, logFormat, logLevel)
			if err != nil {
				return withExit(exitUsage, err)
			}
			s, err := agent.NewServer(agent.ServerConfig{Dir: dir, Version: daemon.Version, Logger: logger})
			if err != nil {
				return withExit(exitFailure, err)
			}
			if listen == "" {
				listen = agent.DefaultListen
				if c, err := agent.LoadConfig(dir); err == nil {
					if _, port, err := net.SplitHostPort(c.Advertise); err == nil {
						listen = ":" + port
					}
				}
			}
			l, err := agent.Listen(listen)
			if err != nil {
				return withExit(exitFailure, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return withExit(exitFailure, s.Serve(ctx, l))
		},
	}
	cmd.Flags().StringVar(&dir, "dir", DefaultAgentDir, "the agent's directory (see `lockstep agent enroll`)")
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on (default: the advertised port on all addresses)")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func agentRemoveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Forget an agent and revoke its certificate",
		Long: `Makes the daemon forget the agent NAME and revoke its certificate: the
daemon refuses that certificate from then on, and the markers of apps on
NAME are crash-consistent until an agent is enrolled there again.

Exit codes: 0 removed, 1 no such agent or the daemon could not be reached,
2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			a, err := c.RemoveAgent(cmd.Context(), args[0])
			if err != nil {
				return withExit(exitFailure, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed agent %s; certificate serial %s revoked\n", a.Name, a.Serial)
			if len(a.Services) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "markers of %s are crash-consistent until an agent is enrolled as %s again\n", strings.Join(a.Services, ", "), a.Name)
			}
			return nil
		},
	}
	addClientFlags(cmd.Flags())
	return cmd
}
