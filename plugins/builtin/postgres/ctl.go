package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/plugins/builtin/exec"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

const (
	closeTimeout = 5 * time.Second
	// ctlTimeout bounds pg_ctl when the caller set no deadline.
	ctlTimeout = 5 * time.Minute
)

// pgctl runs pg_ctl for one cluster as its OS user.
type pgctl struct {
	app     string
	path    string
	dataDir string
	user    string
}

func controller(app sdk.App) (*pgctl, error) {
	dir := app.Config.String("data_directory")
	if dir == "" {
		return nil, fmt.Errorf("postgres: app %q: %w: %w", app.Name, errNoDataDir, sdk.ErrUnsupported)
	}
	path, err := pgCtl(app)
	if err != nil {
		return nil, fmt.Errorf("postgres: app %q: %w", app.Name, err)
	}
	return &pgctl{app: app.Name, path: path, dataDir: dir, user: osUser(app)}, nil
}

// argv runs pg_ctl directly when the daemon is the cluster's user, and
// through runuser when it is root (pg_ctl refuses to run as root).
func (p *pgctl) argv(args ...string) ([]string, error) {
	me, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	cmd := append([]string{p.path, "-D", p.dataDir}, args...)
	switch {
	case me.Username == p.user:
		return cmd, nil
	case os.Geteuid() == 0:
		return append([]string{"runuser", "-u", p.user, "--"}, cmd...), nil
	default:
		return nil, fmt.Errorf("postgres: app %q: pg_ctl must run as %q, and the daemon runs as %q, not root", p.app, p.user, me.Username)
	}
}

// waitSeconds is pg_ctl's -t: what is left of the context's deadline.
func waitSeconds(ctx context.Context) string {
	d := ctlTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl) - time.Second
	}
	return strconv.Itoa(max(1, int(d/time.Second)))
}

func (p *pgctl) run(ctx context.Context, verb string, args ...string) error {
	argv, err := p.argv(append([]string{verb, "-w", "-t", waitSeconds(ctx)}, args...)...)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ctlTimeout)
		defer cancel()
	}
	if res, err := exec.Run(ctx, exec.Cmd{Argv: argv}); err != nil {
		out := strings.TrimSpace(string(res.Stdout))
		if out != "" {
			return fmt.Errorf("postgres: app %q: pg_ctl %s: %w; output: %s", p.app, verb, err, exec.Truncate(out, 1024))
		}
		return fmt.Errorf("postgres: app %q: pg_ctl %s: %w", p.app, verb, err)
	}
	return nil
}

// running asks pg_ctl status: 0 is running, 3 is not running, anything
// else (4: no data directory) is an error.
func (p *pgctl) running(ctx context.Context) (bool, error) {
	argv, err := p.argv("status")
	if err != nil {
		return false, err
	}
	res, err := exec.Run(ctx, exec.Cmd{Argv: argv, Timeout: 30 * time.Second})
	switch res.ExitStatus {
	case 0:
		return true, nil
	case 3:
		return false, nil
	}
	return false, fmt.Errorf("postgres: app %q: pg_ctl status: %w", p.app, err)
}

// removeStalePID removes a postmaster.pid whose process is not a live
// postgres. A data directory restored from a marker taken while the server
// ran holds one, and its PID may since belong to another process, which
// would make the server refuse to start.
func (p *pgctl) removeStalePID() error {
	name := filepath.Join(p.dataDir, "postmaster.pid")
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("postgres: app %q: %w", p.app, err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pid > 0 && isPostgres(pid) {
		return nil // a live server: pg_ctl will say so
	}
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("postgres: app %q: remove stale lock file: %w", p.app, err)
	}
	return nil
}

// isPostgres reports whether pid is a live (not zombie) postgres process.
func isPostgres(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	open, close := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
	if open < 0 || close < open || close+2 >= len(b) {
		return false
	}
	state := b[close+2]
	return string(b[open+1:close]) == "postgres" && state != 'Z' && state != 'X'
}
