// Package servers starts real application servers (from their Debian
// packages) for tests: throwaway instances in temp dirs on loopback, cleaned
// up with the test.
package servers

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the "mysql" driver
)

// MariaDB is a throwaway MariaDB server: data directory, socket and logs in
// a temp dir, TCP on 127.0.0.1 only, running as root. It is started detached
// (its own session) by StartCommand, the way an init system would, so that a
// plugin's stop and start commands can drive it too.
type MariaDB struct {
	Dir          string // holds everything
	DataDir      string
	Socket       string
	Port         int
	DefaultsFile string // the my.cnf every command uses
	PIDFile      string
	ErrorLog     string
	// User and Password name a test user with every privilege, reachable
	// over TCP.
	User, Password string
	// Binlog tells whether the server writes a binary log.
	Binlog bool
	bin    string // mariadbd
}

// MariaDBOptions changes how StartMariaDB sets the server up.
type MariaDBOptions struct {
	NoBinlog bool // leave log-bin off
}

// mariadbBin finds a program of the mariadb-server package.
func mariadbBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (install mariadb-server)", name)
}

// StartMariaDB initialises a data directory, starts the server and creates
// the test user. Outside CI it skips t when MariaDB is not installed or t
// does not run as root. Everything is stopped and removed in t.Cleanup.
func StartMariaDB(t testing.TB, opts MariaDBOptions) *MariaDB {
	t.Helper()
	return startMariaDB(t, MariaDBAtOptions{NoBinlog: opts.NoBinlog})
}

// mariadbFreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func mariadbFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DSN is the go-sql-driver DSN of the test user over TCP, with its password.
func (m *MariaDB) DSN() string {
	return fmt.Sprintf("%s:%s@tcp(127.0.0.1:%d)/lockstep_test", m.User, m.Password, m.Port)
}

// RootDSN is root over the socket (no password).
func (m *MariaDB) RootDSN() string { return fmt.Sprintf("root@unix(%s)/", m.Socket) }

// StartCommand starts the server detached, in its own session with its
// output in ErrorLog, and returns at once.
func (m *MariaDB) StartCommand() []string {
	return []string{"/bin/sh", "-c", `exec setsid -f "$1" --defaults-file="$2" </dev/null >>"$3" 2>&1`,
		"start-mariadb", m.bin, m.DefaultsFile, m.ErrorLog}
}

// StopCommand shuts the server down and waits for it; it succeeds when the
// server is not running.
func (m *MariaDB) StopCommand() []string {
	return []string{"/bin/sh", "-c", `pid=$(cat "$1" 2>/dev/null) || exit 0
kill "$pid" 2>/dev/null || exit 0
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done`, "stop-mariadb", m.PIDFile}
}

// Start starts the server (StartCommand) and waits until it answers.
func (m *MariaDB) Start(ctx context.Context) error {
	if m.Running() {
		return nil
	}
	argv := m.StartCommand()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mariadb: start: %w: %s", err, stderr.String())
	}
	return m.WaitReady(ctx)
}

// WaitReady waits until the server answers a ping over its socket.
func (m *MariaDB) WaitReady(ctx context.Context) error {
	db, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = db.PingContext(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mariadb: not ready: %w; error log: %s", err, m.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop shuts the server down (SIGTERM, a clean shutdown) and waits for it
// to exit; after the context's deadline it is killed.
func (m *MariaDB) Stop(ctx context.Context) error {
	pid := m.pid()
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("mariadb: stop: %w", err)
	}
	for mariadbAlive(pid) {
		select {
		case <-ctx.Done():
			syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("mariadb: did not stop, killed: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Running reports whether the server process lives.
func (m *MariaDB) Running() bool { return m.pid() != 0 }

func (m *MariaDB) pid() int {
	b, err := os.ReadFile(m.PIDFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !mariadbAlive(pid) {
		return 0
	}
	return pid
}

// mariadbAlive reports whether pid is a process that has not exited.
func mariadbAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func (m *MariaDB) logTail() string {
	b, err := os.ReadFile(m.ErrorLog)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, " | ")
}
