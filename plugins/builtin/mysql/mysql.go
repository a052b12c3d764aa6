// Package mysql is the built-in plugin for MariaDB and MySQL.
//
// Freeze takes FLUSH TABLES WITH READ LOCK on a connection of its own and
// keeps that connection open until Thaw (UNLOCK TABLES, then close): the
// global read lock lives exactly as long as its session, so closing the
// connection is also what releases it when anything goes wrong. With the
// lock held no transaction commits, so the binlog position and GTID state
// read under it are those of the cut.
//
// The evidence is the binlog file and position (SHOW MASTER STATUS; empty
// and "binlog": false when log-bin is off), the GTID state (MariaDB:
// gtid_binlog_pos and gtid_current_pos; MySQL: gtid_executed), the server
// version and the durability settings: the position is in the cut only if
// the binlog was synced (sync_binlog = 1), and committed InnoDB rows only
// with innodb_flush_log_at_trx_commit = 1.
//
// A lock request that waits past the caller's deadline (FTWRL waits for
// running statements, and every writer queues behind it) is killed from a
// second connection, so the database does not stay blocked.
//
// Stop and Start run the configured `stop` and `start` commands (argv, no
// shell); Start then waits until the server answers.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/lockstep-io/lockstep/plugins/builtin/exec"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Name is the plugin's name in policies.
const Name = "mysql"

// Version is the plugin's version.
const Version = "0.1.0"

const (
	// cleanupTimeout bounds UNLOCK TABLES and KILL QUERY on paths that run
	// after the caller's deadline.
	cleanupTimeout = 10 * time.Second
	// commandTimeout bounds stop and start when the caller set no deadline.
	commandTimeout = 5 * time.Minute
)

// Plugin is the MariaDB/MySQL plugin. It remembers the connection holding
// each frozen app's lock.
type Plugin struct {
	mu     sync.Mutex
	frozen map[string]*lock // by service/app
}

var _ sdk.Plugin = (*Plugin)(nil)

// New returns the MariaDB/MySQL plugin.
func New() sdk.Plugin { return &Plugin{frozen: map[string]*lock{}} }

// lock is a held global read lock.
type lock struct {
	db    *sql.DB // dedicated to this lock
	conn  *sql.Conn
	timer *time.Timer
}

// release unlocks and closes the lock's connection. Closing alone would
// release the lock; UNLOCK TABLES first makes the release immediate and
// reports a broken connection.
func (l *lock) release(ctx context.Context) error {
	if l.timer != nil {
		l.timer.Stop()
	}
	_, err := l.conn.ExecContext(ctx, "UNLOCK TABLES")
	l.conn.Close()
	l.db.Close()
	return err
}

// Info implements sdk.Plugin.
func (*Plugin) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: Name, Version: Version, Protocol: sdk.ProtocolVersion, Handles: []string{"mariadb 10.3-11", "mysql 5.7-8"}}, nil
}

// Schema is the MariaDB/MySQL plugin's app schema.
var Schema = sdk.Schema{
	Doc: "MySQL and MariaDB: FLUSH TABLES WITH READ LOCK held on a connection of its own around the marker; the evidence is the binlog position and GTID state.",
	Attributes: []sdk.Attribute{
		{Name: "dsn", Type: sdk.Sensitive, Required: true, NonEmpty: true, Doc: "Go MySQL DSN (`user@tcp(host:3306)/`); the user needs RELOAD (and BINLOG MONITOR or REPLICATION CLIENT for the binlog position)."},
		{Name: "password", Type: sdk.Secret, Doc: "The password of the DSN's user; replaces one in the DSN."},
		{Name: "stop", Type: sdk.StringList, Doc: "Command that stops the server, for restore (`[\"systemctl\", \"stop\", \"mariadb\"]`); it must succeed when the server is stopped."},
		{Name: "start", Type: sdk.StringList, Doc: "Command that starts the server after a restore; the plugin then waits until the server answers."},
		{Name: "host", Type: sdk.String, Doc: "Where the app runs; empty means the daemon's machine."},
	},
}

// ConfigSchema implements sdk.Plugin.
func (*Plugin) ConfigSchema(context.Context) (sdk.Schema, error) { return Schema, nil }

// Validate implements sdk.Plugin. It does not connect.
func (*Plugin) Validate(_ context.Context, app sdk.App) (sdk.Diagnostics, error) {
	var diags sdk.Diagnostics
	if _, err := mysql.ParseDSN(app.Config.String("dsn")); err != nil {
		diags = append(diags, sdk.Diagnostic{Attribute: "dsn", Summary: "dsn does not parse", Detail: "The dsn is not a Go MySQL DSN such as `user@tcp(127.0.0.1:3306)/` (its text is not shown: it may hold a password)."})
	}
	for _, attr := range []string{"stop", "start"} {
		if argv := app.Config.Strings(attr); len(argv) > 0 && argv[0] == "" {
			diags = append(diags, sdk.Diagnostic{Attribute: attr, Summary: "empty program", Detail: attr + "'s first element must name a program."})
		}
	}
	return diags, nil
}

// open returns a handle on app's server and the secrets to keep out of
// errors. The driver's DSN errors are not passed on: they may quote it.
func open(app sdk.App) (*sql.DB, []string, error) {
	cfg, err := mysql.ParseDSN(app.Config.String("dsn"))
	if err != nil {
		return nil, nil, fmt.Errorf("mysql: app %q: dsn does not parse (its text is not shown: it may hold a password)", app.Name)
	}
	if pw := app.Config.String("password"); pw != "" {
		cfg.Passwd = pw
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("mysql: app %q: dsn is not usable (its text is not shown: it may hold a password)", app.Name)
	}
	return sql.OpenDB(conn), []string{cfg.Passwd}, nil
}

// connect opens a connection of its own to app's server.
func connect(ctx context.Context, app sdk.App) (*sql.DB, *sql.Conn, []string, error) {
	db, secrets, err := open(app)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		hint := " (is the server running, and is the dsn right?)"
		var myErr *mysql.MySQLError
		if errors.As(err, &myErr) {
			hint = "" // the server answered: its message says why
		}
		return nil, nil, nil, redact(fmt.Sprintf("mysql: app %q: connect%s", app.Name, hint), err, secrets)
	}
	return db, c, secrets, nil
}

// Prepare implements sdk.Plugin: it checks that the server answers, so a
// wrong password or a stopped server shows before the freeze window.
func (*Plugin) Prepare(ctx context.Context, app sdk.App) error {
	db, c, secrets, err := connect(ctx, app)
	if err != nil {
		return err
	}
	defer db.Close()
	defer c.Close()
	if err := c.PingContext(ctx); err != nil {
		return redact(fmt.Sprintf("mysql: app %q: ping", app.Name), err, secrets)
	}
	return nil
}

func key(app sdk.App) string { return app.Service + "/" + app.Name }

// Freeze implements sdk.Plugin. The lock is released by Thaw, or when hold
// has elapsed (the SDK's watchdog does that too; this timer is the plugin's
// own guard).
func (p *Plugin) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (sdk.Evidence, error) {
	// A lock still held from an earlier freeze is released first.
	if err := p.Thaw(ctx, app); err != nil {
		return nil, err
	}
	db, c, secrets, err := connect(ctx, app)
	if err != nil {
		return nil, err
	}
	fail := func(step string, err error) (sdk.Evidence, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		(&lock{db: db, conn: c}).release(cctx)
		return nil, redact(fmt.Sprintf("mysql: app %q: %s", app.Name, step), err, secrets)
	}
	var id int64
	if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		return fail("connection id", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		// The server gives up waiting for metadata locks by itself too.
		secs := max(1, int(time.Until(dl)/time.Second))
		if _, err := c.ExecContext(ctx, fmt.Sprintf("SET SESSION lock_wait_timeout = %d", secs)); err != nil {
			return fail("set lock_wait_timeout", err)
		}
	}
	if _, err := c.ExecContext(ctx, "FLUSH TABLES WITH READ LOCK"); err != nil {
		if ctx.Err() != nil {
			killQuery(db, id)
		}
		return fail("flush tables with read lock", err)
	}
	ev, err := evidence(ctx, c)
	if err != nil {
		return fail("read evidence", err)
	}
	l := &lock{db: db, conn: c}
	p.mu.Lock()
	if hold > 0 {
		l.timer = time.AfterFunc(hold, func() { p.expire(key(app), l) })
	}
	p.frozen[key(app)] = l
	p.mu.Unlock()
	return ev, nil
}

// expire releases l if it is still app k's lock.
func (p *Plugin) expire(k string, l *lock) {
	p.mu.Lock()
	if p.frozen[k] != l {
		p.mu.Unlock()
		return
	}
	delete(p.frozen, k)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	l.release(ctx)
}

// killQuery stops a statement that waits for a lock, from another
// connection: the waiting one may not notice its client went away.
func killQuery(db *sql.DB, id int64) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	db.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", id))
}

// evidence reads the binlog position, GTID state, version and durability
// settings on the locked connection.
func evidence(ctx context.Context, c *sql.Conn) (sdk.Evidence, error) {
	var version string
	var logBin int64
	var syncBinlog, flushAtCommit sql.NullInt64
	err := c.QueryRowContext(ctx, "SELECT @@version, @@log_bin, @@sync_binlog, @@innodb_flush_log_at_trx_commit").
		Scan(&version, &logBin, &syncBinlog, &flushAtCommit)
	if err != nil {
		return nil, err
	}
	ev := sdk.Evidence{"server_version": version, "binlog": logBin == 1}
	if syncBinlog.Valid {
		ev["sync_binlog"] = syncBinlog.Int64
	}
	if flushAtCommit.Valid {
		ev["innodb_flush_log_at_trx_commit"] = flushAtCommit.Int64
	}
	if logBin == 1 {
		file, pos, err := binlogPosition(ctx, c)
		if err != nil {
			return nil, err
		}
		ev["binlog_file"], ev["binlog_position"] = file, pos
	}
	if strings.Contains(strings.ToLower(version), "mariadb") {
		var binlogPos, currentPos string
		if err := c.QueryRowContext(ctx, "SELECT @@global.gtid_binlog_pos, @@global.gtid_current_pos").Scan(&binlogPos, &currentPos); err != nil {
			return nil, err
		}
		ev["gtid_binlog_pos"], ev["gtid_current_pos"] = binlogPos, currentPos
	} else {
		var executed string
		if err := c.QueryRowContext(ctx, "SELECT @@global.gtid_executed").Scan(&executed); err != nil {
			return nil, err
		}
		ev["gtid_executed"] = executed
	}
	return ev, nil
}

// binlogPosition reads File and Position of SHOW MASTER STATUS (SHOW
// BINARY LOG STATUS on MySQL 8.4, which dropped the old name).
func binlogPosition(ctx context.Context, c *sql.Conn) (string, int64, error) {
	rows, err := c.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		var myErr *mysql.MySQLError
		if !errors.As(err, &myErr) || myErr.Number != 1064 { // not a syntax error
			return "", 0, err
		}
		if rows, err = c.QueryContext(ctx, "SHOW BINARY LOG STATUS"); err != nil {
			return "", 0, err
		}
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", 0, err
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return "", 0, err
		}
		return "", 0, errors.New("log_bin is on but SHOW MASTER STATUS returned no row (does the user have BINLOG MONITOR?)")
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return "", 0, err
	}
	var file string
	var pos int64
	for i, col := range cols {
		switch strings.ToLower(col) {
		case "file":
			file = vals[i].String
		case "position":
			if _, err := fmt.Sscan(vals[i].String, &pos); err != nil {
				return "", 0, fmt.Errorf("binlog position %q: %w", vals[i].String, err)
			}
		}
	}
	return file, pos, rows.Err()
}

// Thaw implements sdk.Plugin: UNLOCK TABLES and close the lock's
// connection. Thawing an app this process did not freeze succeeds: a lock
// dies with its connection, so no other process can hold one of ours.
func (p *Plugin) Thaw(ctx context.Context, app sdk.App) error {
	p.mu.Lock()
	l := p.frozen[key(app)]
	delete(p.frozen, key(app))
	p.mu.Unlock()
	if l == nil {
		return nil
	}
	// An UNLOCK TABLES that fails is no failure: the connection is closed
	// either way, and that releases the lock.
	l.release(ctx)
	return nil
}

// Health implements sdk.Plugin: the server answers a query. A server that
// cannot be reached is unhealthy, not an error.
func (*Plugin) Health(ctx context.Context, app sdk.App) (sdk.Health, error) {
	db, c, secrets, err := connect(ctx, app)
	if err != nil {
		return sdk.Health{OK: false, Detail: err.Error()}, nil
	}
	defer db.Close()
	defer c.Close()
	var version string
	if err := c.QueryRowContext(ctx, "SELECT @@version").Scan(&version); err != nil {
		return sdk.Health{OK: false, Detail: redact(fmt.Sprintf("mysql: app %q: query", app.Name), err, secrets).Error()}, nil
	}
	return sdk.Health{OK: true, Detail: "answers queries (" + version + ")"}, nil
}

// Stop implements sdk.Plugin: it releases a held lock and runs the stop
// command. Without one it is sdk.ErrUnsupported.
func (p *Plugin) Stop(ctx context.Context, app sdk.App) error {
	argv := app.Config.Strings("stop")
	if len(argv) == 0 {
		return fmt.Errorf("mysql: app %q has no stop command: %w", app.Name, sdk.ErrUnsupported)
	}
	p.Thaw(ctx, app)
	if _, err := exec.Run(ctx, exec.Cmd{Argv: argv, Timeout: timeout(ctx)}); err != nil {
		return fmt.Errorf("mysql: app %q: stop: %w", app.Name, err)
	}
	return nil
}

// Start implements sdk.Plugin: it runs the start command unless the server
// answers already, then waits until it answers. Without a start command it
// is sdk.ErrUnsupported.
func (p *Plugin) Start(ctx context.Context, app sdk.App) error {
	argv := app.Config.Strings("start")
	if len(argv) == 0 {
		return fmt.Errorf("mysql: app %q has no start command: %w", app.Name, sdk.ErrUnsupported)
	}
	if h, _ := p.Health(ctx, app); h.OK {
		return nil
	}
	if _, err := exec.Run(ctx, exec.Cmd{Argv: argv, Timeout: timeout(ctx)}); err != nil {
		return fmt.Errorf("mysql: app %q: start: %w", app.Name, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	for {
		h, _ := p.Health(ctx, app)
		if h.OK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mysql: app %q: started, but the server does not answer: %s", app.Name, h.Detail)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// timeout is commandTimeout unless the context has a deadline of its own.
func timeout(ctx context.Context) time.Duration {
	if _, ok := ctx.Deadline(); ok {
		return 0
	}
	return commandTimeout
}

// redactedError is an error whose text had secrets removed. It unwraps only
// to the context's errors, never to the original.
type redactedError struct {
	msg  string
	kind error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.kind }

func redact(prefix string, err error, secrets []string) error {
	msg := prefix + ": " + err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	e := &redactedError{msg: msg}
	for _, k := range []error{context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, k) {
			e.kind = k
		}
	}
	return e
}
