// Package postgres is the built-in plugin for PostgreSQL.
//
// # How a cut is made recoverable
//
// Freeze holds nothing. Lockstep takes a marker as ONE record in one journal
// shared by every volume of a service, so the cut is atomic across the data
// directory, pg_wal and any tablespace, exactly like the disk image a power
// cut leaves behind. PostgreSQL recovers such an image by crash recovery from
// its last checkpoint, which is what it is built to do; Prepare issues a
// CHECKPOINT so that the replay is short. pg_backup_start/pg_backup_stop are
// deliberately not used: they are for copies taken file by file over time,
// they force a checkpoint inside the freeze window, and the backup_label they
// return would have to be put back by the restore, a step that is easy to
// lose and that makes a restored cluster refuse to start when done wrong.
// Proven with the data directory and pg_wal on different volumes
// (tests/e2e: scheduled markers, in-place, crash-consistent and as-new
// restores all start PostgreSQL by crash recovery alone). A copy mounted
// elsewhere (restore --as-new) must have its pg_wal link pointed at the
// copy's WAL directory before it starts: the link names the original's.
//
// Crash recovery is only sound if PostgreSQL could survive a real crash:
// Freeze refuses (and the marker is then recorded as crash-consistent) when
// fsync or full_page_writes is off, since a torn 8 KiB page or WAL that never
// left the page cache cannot be repaired from the cut.
//
// # Evidence
//
// The evidence is the WAL flush LSN (pg_current_wal_flush_lsn) and the
// timeline, with the server version and system identifier. The flush LSN is
// the right bound: WAL up to it has been written and fsynced, so it was on
// the volumes before the marker was written, and every transaction whose
// commit was acknowledged before Freeze ran (with synchronous_commit on) has
// its commit record at or below it. pg_current_wal_lsn (written, maybe not
// flushed) and the insert LSN can be above what the cut holds. The cut may
// hold more than the evidence says (WAL flushed between Freeze and the
// marker): the LSN is a lower bound. On a standby the LSN is the last
// replayed one (pg_last_wal_replay_lsn) and the timeline that of the last
// checkpoint.
//
// The role of the dsn needs CHECKPOINT (superuser, or pg_checkpoint from
// PostgreSQL 15) for Prepare; Freeze and Health need only a login.
//
// # Stop and Start
//
// Stop and Start run pg_ctl as os_user on data_directory: stop -m fast, and
// start reusing the options of the previous start from postmaster.opts (what
// pg_ctl restart does), so a cluster started with -p/-k/-c options comes back
// the same way. A stale postmaster.pid left by the cut is removed first.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Name is the plugin's name in policies.
const Name = "postgres"

// Version is the plugin's version.
const Version = "0.1.0"

// DefaultOSUser owns the cluster unless the app says otherwise.
const DefaultOSUser = "postgres"

// LibDir is where Debian installs PostgreSQL's versions (LibDir/15/bin).
var LibDir = "/usr/lib/postgresql"

// Plugin is the PostgreSQL plugin. It keeps no state between calls: every
// call opens its own connection, so a restarted plugin process loses nothing.
type Plugin struct{}

var _ sdk.Plugin = Plugin{}

// New returns the PostgreSQL plugin.
func New() sdk.Plugin { return Plugin{} }

// Info implements sdk.Plugin.
func (Plugin) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: Name, Version: Version, Protocol: sdk.ProtocolVersion, Handles: []string{"postgresql 10-17"}}, nil
}

// Schema is the PostgreSQL plugin's app schema.
var Schema = sdk.Schema{
	Doc: "PostgreSQL: CHECKPOINT before the marker, then crash recovery from the atomic cut of all the service's volumes (no pg_backup_start); the evidence is the WAL flush LSN and timeline.",
	Attributes: []sdk.Attribute{
		{Name: "dsn", Type: sdk.Sensitive, Required: true, NonEmpty: true, Doc: "libpq connection string; may hold a password, so `env()` or `file()` are accepted."},
		{Name: "data_directory", Type: sdk.String, Absolute: true, Doc: "The cluster's data directory; needed for stop and start at restore."},
		{Name: "os_user", Type: sdk.String, Default: DefaultOSUser, NonEmpty: true, Doc: "The operating-system user that owns the cluster and runs pg_ctl."},
		{Name: "pg_ctl", Type: sdk.String, Absolute: true, Doc: "Path of pg_ctl; default: the one of the data directory's PG_VERSION under /usr/lib/postgresql, else the newest there."},
		{Name: "log_file", Type: sdk.String, Absolute: true, Doc: "Server log of a start by pg_ctl (`pg_ctl -l`); default `pg_ctl.log` in the data directory."},
		{Name: "host", Type: sdk.String, Doc: "Where the app runs; empty means the daemon's machine."},
	},
}

// ConfigSchema implements sdk.Plugin.
func (Plugin) ConfigSchema(context.Context) (sdk.Schema, error) { return Schema, nil }

// Validate implements sdk.Plugin. It does not connect: the server may be
// down while a policy is checked.
func (Plugin) Validate(_ context.Context, app sdk.App) (sdk.Diagnostics, error) {
	var diags sdk.Diagnostics
	if _, err := pgx.ParseConfig(app.Config.String("dsn")); err != nil {
		diags = append(diags, sdk.Diagnostic{Attribute: "dsn", Summary: "dsn does not parse", Detail: "The dsn is not a libpq connection string (its text is not shown: it may hold a password)."})
	}
	if u := osUser(app); u != "" {
		if _, err := user.Lookup(u); err != nil {
			diags = append(diags, sdk.Diagnostic{Attribute: "os_user", Summary: "no such user", Detail: fmt.Sprintf("os_user %q: %v.", u, err)})
		}
	}
	if d := app.Config.String("data_directory"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "PG_VERSION")); err != nil {
			diags = append(diags, sdk.Diagnostic{Attribute: "data_directory", Summary: "not a data directory", Detail: fmt.Sprintf("%q has no PG_VERSION: %v.", d, err)})
		}
		if _, err := pgCtl(app); err != nil {
			diags = append(diags, sdk.Diagnostic{Attribute: "pg_ctl", Summary: "pg_ctl not found", Detail: err.Error()})
		}
	}
	return diags, nil
}

// Prepare implements sdk.Plugin: a CHECKPOINT, so that recovery from the
// cut replays little WAL.
func (Plugin) Prepare(ctx context.Context, app sdk.App) error {
	c, err := connect(ctx, app)
	if err != nil {
		return err
	}
	defer c.close()
	if _, err := c.Exec(ctx, "CHECKPOINT"); err != nil {
		return c.wrap("checkpoint", err)
	}
	return nil
}

// Freeze implements sdk.Plugin. It holds nothing (see the package doc); it
// checks that a crash-consistent cut is recoverable and returns the LSN.
func (Plugin) Freeze(ctx context.Context, app sdk.App, _ time.Duration) (sdk.Evidence, error) {
	c, err := connect(ctx, app)
	if err != nil {
		return nil, err
	}
	defer c.close()
	var (
		inRecovery                      bool
		version, fsync, fpw, syncCommit string
		versionNum, sysID               int64
	)
	err = c.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('server_version'),
		current_setting('server_version_num')::bigint, current_setting('fsync'),
		current_setting('full_page_writes'), current_setting('synchronous_commit'),
		(SELECT system_identifier FROM pg_control_system())`).
		Scan(&inRecovery, &version, &versionNum, &fsync, &fpw, &syncCommit, &sysID)
	if err != nil {
		return nil, c.wrap("read settings", err)
	}
	if fsync != "on" || fpw != "on" {
		return nil, fmt.Errorf("postgres: app %q: fsync is %s and full_page_writes is %s: a cut of the volumes is not recoverable unless both are on", app.Name, fsync, fpw)
	}
	ev := sdk.Evidence{
		"server_version":     version,
		"server_version_num": versionNum,
		"system_identifier":  strconv.FormatUint(uint64(sysID), 10),
		"in_recovery":        inRecovery,
		// With synchronous_commit off, a commit is acknowledged before its
		// WAL is flushed and may be above the LSN.
		"synchronous_commit": syncCommit,
	}
	var lsn string
	var timeline int64
	if inRecovery {
		var replay *string
		err = c.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn()::text, (SELECT timeline_id FROM pg_control_checkpoint())::bigint`).Scan(&replay, &timeline)
		if err != nil {
			return nil, c.wrap("read replay position", err)
		}
		if replay == nil {
			return nil, fmt.Errorf("postgres: app %q: standby has replayed no WAL yet", app.Name)
		}
		lsn = *replay
		ev["lsn_kind"] = "replay"
	} else {
		var walFile string
		err = c.QueryRow(ctx, `SELECT l::text, pg_walfile_name(l) FROM pg_current_wal_flush_lsn() AS l`).Scan(&lsn, &walFile)
		if err != nil {
			return nil, c.wrap("read WAL position", err)
		}
		// The first 8 hex digits of a WAL file name are its timeline.
		if len(walFile) != 24 {
			return nil, fmt.Errorf("postgres: app %q: unexpected WAL file name %q", app.Name, walFile)
		}
		tl, err := strconv.ParseInt(walFile[:8], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("postgres: app %q: unexpected WAL file name %q", app.Name, walFile)
		}
		timeline = tl
		ev["lsn_kind"] = "flush"
		ev["wal_file"] = walFile
	}
	ev["lsn"] = lsn
	ev["timeline"] = timeline
	return ev, nil
}

// Thaw implements sdk.Plugin: Freeze holds nothing, so there is nothing to
// release.
func (Plugin) Thaw(context.Context, sdk.App) error { return nil }

// Health implements sdk.Plugin: the server answers a query. A server that
// cannot be reached is unhealthy, not an error.
func (Plugin) Health(ctx context.Context, app sdk.App) (sdk.Health, error) {
	c, err := connect(ctx, app)
	if err != nil {
		return sdk.Health{OK: false, Detail: err.Error()}, nil
	}
	defer c.close()
	var inRecovery bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return sdk.Health{OK: false, Detail: c.wrap("query", err).Error()}, nil
	}
	role := "primary"
	if inRecovery {
		role = "standby"
	}
	return sdk.Health{OK: true, Detail: fmt.Sprintf("answers queries (%s, PostgreSQL %s)", role, c.PgConn().ParameterStatus("server_version"))}, nil
}

// Stop implements sdk.Plugin: pg_ctl stop -m fast, waiting for the
// shutdown checkpoint.
func (Plugin) Stop(ctx context.Context, app sdk.App) error {
	ctl, err := controller(app)
	if err != nil {
		return err
	}
	// pg_ctl trusts the lock file's PID: a stale one would get another
	// process signalled.
	if err := ctl.removeStalePID(); err != nil {
		return err
	}
	running, err := ctl.running(ctx)
	if err != nil || !running {
		return err
	}
	return ctl.run(ctx, "stop", "-m", "fast")
}

// Start implements sdk.Plugin: pg_ctl start with the options of the last
// start, waiting until the server accepts connections (after crash
// recovery, when the data directory was restored from a marker).
func (Plugin) Start(ctx context.Context, app sdk.App) error {
	ctl, err := controller(app)
	if err != nil {
		return err
	}
	if err := ctl.removeStalePID(); err != nil {
		return err
	}
	running, err := ctl.running(ctx)
	if err != nil || running {
		return err
	}
	logFile := app.Config.String("log_file")
	if logFile == "" {
		logFile = filepath.Join(ctl.dataDir, "pg_ctl.log")
	}
	// restart on a stopped server starts it with postmaster.opts, which
	// the server writes at every start.
	verb := "start"
	if _, err := os.Stat(filepath.Join(ctl.dataDir, "postmaster.opts")); err == nil {
		verb = "restart"
	}
	return ctl.run(ctx, verb, "-l", logFile)
}

func osUser(app sdk.App) string {
	if u := app.Config.String("os_user"); u != "" {
		return u
	}
	return DefaultOSUser
}

// pgCtl returns the configured pg_ctl, or the one of the data directory's
// major version, or the newest installed.
func pgCtl(app sdk.App) (string, error) {
	if p := app.Config.String("pg_ctl"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("postgres: pg_ctl: %w", err)
		}
		return p, nil
	}
	if b, err := os.ReadFile(filepath.Join(app.Config.String("data_directory"), "PG_VERSION")); err == nil {
		p := filepath.Join(LibDir, strings.TrimSpace(string(b)), "bin", "pg_ctl")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	found, _ := filepath.Glob(filepath.Join(LibDir, "*", "bin", "pg_ctl"))
	if len(found) == 0 {
		return "", fmt.Errorf("postgres: no pg_ctl under %s/*/bin: set pg_ctl", LibDir)
	}
	version := func(p string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
		return v
	}
	sort.Slice(found, func(i, j int) bool { return version(found[i]) > version(found[j]) })
	return found[0], nil
}

var errNoDataDir = errors.New("data_directory is not set")
