package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// conn is a connection of one call, with what it takes to keep the
// password out of its errors.
type conn struct {
	*pgx.Conn
	app     string
	secrets []string
}

// connect opens a connection to app's server. Errors never hold the dsn or
// its password: pgx redacts on a best-effort basis only, so a parse error
// is replaced by a fixed text and every other error has the password
// removed.
func connect(ctx context.Context, app sdk.App) (*conn, error) {
	cfg, err := pgx.ParseConfig(app.Config.String("dsn"))
	if err != nil {
		return nil, fmt.Errorf("postgres: app %q: dsn does not parse (its text is not shown: it may hold a password)", app.Name)
	}
	c := &conn{app: app.Name, secrets: []string{cfg.Password}}
	pc, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		hint := " (is the server running, and is the dsn right?)"
		if errors.As(err, &pgErr) {
			hint = "" // the server answered: its message says why
		}
		return nil, c.wrap("connect"+hint, err)
	}
	c.Conn = pc
	return c, nil
}

func (c *conn) close() {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	c.Close(ctx)
}

// wrap names the app and the step, and removes the password from err.
func (c *conn) wrap(step string, err error) error {
	return redact(fmt.Sprintf("postgres: app %q: %s", c.app, step), err, c.secrets...)
}

// redactedError is an error whose text had secrets removed. It unwraps only
// to the context's errors, never to the original (whose text has them).
type redactedError struct {
	msg  string
	kind error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.kind }

func redact(prefix string, err error, secrets ...string) error {
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
