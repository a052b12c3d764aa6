package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// PostgresBinDir is where Debian's postgresql package installs the server.
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// Postgres is a throwaway PostgreSQL cluster run as the postgres OS user,
// reachable only through a Unix socket in its own directory, so it never
// meets the distribution's cluster.
type Postgres struct {
	// DataDir is the cluster's data directory (PGDATA).
	DataDir string
	// WALDir, when set, holds the write-ahead log apart from DataDir
	// (initdb --waldir: DataDir/pg_wal is a symbolic link to it).
	WALDir string
	// SockDir holds the server's Unix socket.
	SockDir string
	// LogFile receives the server's log.
	LogFile string
	// Port names the socket (.s.PGSQL.PORT); no TCP port is opened.
	Port int
	// BinDir holds initdb, pg_ctl and psql (default PostgresBinDir).
	BinDir string
	// User is the OS user the server runs as (default "postgres").
	User string
}

func (p *Postgres) bin(name string) string {
	d := p.BinDir
	if d == "" {
		d = PostgresBinDir
	}
	return filepath.Join(d, name)
}

func (p *Postgres) user() string {
	if p.User == "" {
		return "postgres"
	}
	return p.User
}

// asUser runs a command as the cluster's OS user.
func (p *Postgres) asUser(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "runuser", append([]string{"-u", p.user(), "--"}, args...)...)
}

// chown gives path to the cluster's OS user.
func (p *Postgres) chown(path string) error {
	u, err := user.Lookup(p.user())
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// prepare creates dir owned by the OS user with mode.
func (p *Postgres) prepare(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := p.chown(dir); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// Init creates a new cluster in DataDir (initdb), which must be empty or
// missing. Every ancestor of DataDir and SockDir must be searchable by the
// postgres user.
func (p *Postgres) Init(ctx context.Context) error {
	if p.Port == 0 {
		return errors.New("postgres: no port")
	}
	if err := p.prepare(p.DataDir, 0o700); err != nil {
		return err
	}
	args := []string{p.bin("initdb"), "-D", p.DataDir, "-A", "trust", "-E", "UTF8", "--locale=C", "-N"}
	if p.WALDir != "" {
		if err := p.prepare(p.WALDir, 0o700); err != nil {
			return err
		}
		args = append(args, "--waldir", p.WALDir)
	}
	// -N skips initdb's file-by-file fsync; one syncfs of each file system
	// does the same at once, so that a crash image taken right after Init
	// never holds an empty PG_VERSION or catalog file.
	if _, err := p.asUser(ctx, args...); err != nil {
		return err
	}
	if p.WALDir != "" {
		if err := syncFS(p.WALDir); err != nil {
			return err
		}
	}
	return syncFS(p.DataDir)
}

// LinkWAL points DataDir/pg_wal at WALDir. A data directory whose WAL lives
// on another volume names it by absolute path, so a copy of both volumes
// mounted elsewhere (a restore --as-new) would otherwise write into the
// original's WAL.
func (p *Postgres) LinkWAL() error {
	if p.WALDir == "" {
		return errors.New("postgres: LinkWAL without a WAL directory")
	}
	link := filepath.Join(p.DataDir, "pg_wal")
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("postgres: %s is not a symbolic link: %v", link, err)
	}
	tmp := link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(p.WALDir, tmp); err != nil {
		return fmt.Errorf("postgres: link WAL: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("postgres: link WAL: %w", err)
	}
	return nil
}

// syncFS flushes the whole file system holding dir (syncfs(2)).
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("postgres: sync %s: %w", dir, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("postgres: sync %s: %w", dir, err)
	}
	return nil
}

// Start starts the server and waits until it accepts connections. A cluster
// that was not shut down cleanly recovers first.
func (p *Postgres) Start(ctx context.Context) error {
	if err := p.prepare(p.SockDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.LogFile), 0o755); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	f, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	f.Close()
	if err := p.chown(p.LogFile); err != nil {
		return err
	}
	if err := p.removeStalePID(); err != nil {
		return err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=''", p.Port, p.SockDir)
	if _, err := p.asUser(ctx, p.bin("pg_ctl"), "-D", p.DataDir, "-l", p.LogFile, "-w", "-t", "120", "-o", opts, "start"); err != nil {
		return fmt.Errorf("%w; server log: %s", err, p.logTail())
	}
	return nil
}

// Stop shuts the server down (fast mode: no new sessions, open
// transactions rolled back, a shutdown checkpoint). If pg_ctl fails, the
// postmaster is killed so that the file system can be unmounted.
func (p *Postgres) Stop(ctx context.Context) error {
	pid := p.postmasterPID()
	if pid == 0 {
		return nil
	}
	_, err := p.asUser(ctx, p.bin("pg_ctl"), "-D", p.DataDir, "-m", "fast", "-w", "-t", "60", "stop")
	if err == nil {
		return nil
	}
	if syscall.Kill(pid, syscall.SIGQUIT) == nil {
		for range 50 {
			if !alive(pid) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return err
}

// DSN is the libpq DSN of database postgres as the postgres user, over
// the server's socket.
func (p *Postgres) DSN() string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", p.SockDir, p.Port)
}

// Running reports whether a postmaster runs for DataDir.
func (p *Postgres) Running() bool { return p.postmasterPID() != 0 }

func (p *Postgres) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(p.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 || !alive(pid) {
		return 0
	}
	return pid
}

// removeStalePID removes a postmaster.pid whose process is gone. A data
// directory restored from a marker taken while the server ran holds one, and
// the old postmaster may linger as a zombie that PostgreSQL's own check
// takes for a live server.
func (p *Postgres) removeStalePID() error {
	name := filepath.Join(p.DataDir, "postmaster.pid")
	if _, err := os.Stat(name); err != nil {
		return nil
	}
	if p.postmasterPID() != 0 {
		return nil // a live server: let pg_ctl report it
	}
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("postgres: remove stale lock file: %w", err)
	}
	return nil
}

// alive reports whether pid is a process that has not exited (zombies have).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// SQL runs statements with psql in database postgres, stopping at the first
// error, and returns the unaligned, tuples-only output without the final
// newline.
func (p *Postgres) SQL(ctx context.Context, sql string) (string, error) {
	out, err := p.asUser(ctx, p.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", p.SockDir, "-p", strconv.Itoa(p.Port), "-d", "postgres", "-c", sql)
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	return strings.TrimRight(out, "\n"), nil
}

// Checkpoint forces a checkpoint, so a following freeze is short and
// recovery from the frozen image replays little WAL.
func (p *Postgres) Checkpoint(ctx context.Context) error {
	_, err := p.SQL(ctx, "CHECKPOINT")
	return err
}

// CurrentWALLSN is pg_current_wal_lsn().
func (p *Postgres) CurrentWALLSN(ctx context.Context) (string, error) {
	return p.SQL(ctx, "SELECT pg_current_wal_lsn()")
}

func (p *Postgres) logTail() string {
	b, err := os.ReadFile(p.LogFile)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, " | ")
}

// PostgresAvailable reports why a throwaway cluster cannot run here, or nil.
func PostgresAvailable() error {
	for _, b := range []string{"initdb", "pg_ctl", "psql"} {
		if _, err := os.Stat(filepath.Join(PostgresBinDir, b)); err != nil {
			return fmt.Errorf("postgres: %s missing (install postgresql): %w", b, err)
		}
	}
	if _, err := user.Lookup("postgres"); err != nil {
		return fmt.Errorf("postgres: no postgres OS user: %w", err)
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}
