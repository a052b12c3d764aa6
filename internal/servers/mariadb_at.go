package servers

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/testenv"
)

// MariaDBAtOptions places a throwaway server's files on file systems the
// caller owns, such as ext4 on Lockstep volumes.
type MariaDBAtOptions struct {
	// DataDir is the data directory; it must be missing or empty.
	DataDir string
	// LogDir, when set, holds the binary log and the InnoDB redo log apart
	// from the data directory; it must be missing or empty.
	LogDir   string
	NoBinlog bool // leave log-bin off

	// Existing starts a server on directories that already hold one, such
	// as a clone of another server's volumes: nothing is installed and no
	// account is made; User and Password name one that exists in it.
	Existing       bool
	User, Password string
	// LogDirWas is where LogDir was when the data was written. The binary
	// log index names its files by absolute path, so a clone mounted
	// elsewhere would open the original's files; the index is rewritten.
	LogDirWas string
}

// StartMariaDBAt is StartMariaDB with the data directory (and the logs)
// where opts says. The socket, configuration, PID file and error log stay in
// a temp dir of their own. The server is stopped in t.Cleanup, so file
// systems holding its directories must be torn down by cleanups registered
// before this call (they run after it).
func StartMariaDBAt(t testing.TB, opts MariaDBAtOptions) *MariaDB {
	t.Helper()
	if opts.DataDir == "" {
		t.Fatal("servers: StartMariaDBAt needs a data directory")
	}
	return startMariaDB(t, opts)
}

// startMariaDB is StartMariaDBAt, with the data directory in the server's
// temp dir when opts names none.
func startMariaDB(t testing.TB, opts MariaDBAtOptions) *MariaDB {
	t.Helper()
	testenv.Root(t)
	bin, err := mariadbBin("mariadbd")
	if err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	// A short path: the socket's must fit in sun_path.
	dir, err := os.MkdirTemp("", "lsmdb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port, err := mariadbFreePort()
	if err != nil {
		t.Fatal(err)
	}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(dir, "data")
	}
	m := &MariaDB{
		Dir: dir, DataDir: opts.DataDir, Socket: filepath.Join(dir, "mysqld.sock"),
		Port: port, DefaultsFile: filepath.Join(dir, "my.cnf"), PIDFile: filepath.Join(dir, "mariadbd.pid"),
		ErrorLog: filepath.Join(dir, "error.log"), User: "lockstep", Password: "Lst-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		Binlog: !opts.NoBinlog, bin: bin,
	}
	if opts.Existing {
		if opts.User == "" || opts.Password == "" {
			t.Fatal("servers: StartMariaDBAt on an existing data directory needs its account")
		}
		m.User, m.Password = opts.User, opts.Password
	}
	for _, d := range []string{opts.DataDir, opts.LogDir} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeConfigAt(m, opts.LogDir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if opts.Existing {
		if err := relocateBinlogIndex(m, opts.LogDirWas, opts.LogDir); err != nil {
			t.Fatal(err)
		}
		stopAtCleanup(t, m)
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return m
	}
	installDB, err := mariadbBin("mariadb-install-db")
	if err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	out, err := exec.CommandContext(ctx, installDB, "--defaults-file="+m.DefaultsFile, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db", "--datadir="+m.DataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v: %s", err, out)
	}
	stopAtCleanup(t, m)
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	root, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, q := range []string{
		fmt.Sprintf("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'", m.User, m.Password),
		fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'127.0.0.1'", m.User),
		"CREATE DATABASE lockstep_test",
	} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			t.Fatalf("mariadb setup: %v", err)
		}
	}
	return m
}

// writeConfigAt writes the my.cnf of m, with the binary log and the redo
// log in logDir when it is set. Every commit is durable (binlog and redo
// synced), which a marker of the volumes relies on.
func writeConfigAt(m *MariaDB, logDir string) error {
	cnf := fmt.Sprintf(`[mariadbd]
datadir=%s
socket=%s
port=%d
bind-address=127.0.0.1
pid-file=%s
log-error=%s
user=root
skip-name-resolve
server-id=1
innodb_buffer_pool_size=32M
innodb_log_file_size=16M
innodb_flush_log_at_trx_commit=1
`, m.DataDir, m.Socket, m.Port, m.PIDFile, m.ErrorLog)
	binlogDir := m.DataDir
	if logDir != "" {
		cnf += "innodb_log_group_home_dir=" + logDir + "\n"
		binlogDir = logDir
	}
	if m.Binlog {
		cnf += "log-bin=" + filepath.Join(binlogDir, "binlog") + "\nsync_binlog=1\n"
	}
	cnf += fmt.Sprintf("[client]\nsocket=%s\nport=%d\n", m.Socket, m.Port)
	return os.WriteFile(m.DefaultsFile, []byte(cnf), 0o644)
}

func stopAtCleanup(t testing.TB, m *MariaDB) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Errorf("stop mariadb: %v", err)
		}
	})
}

// relocateBinlogIndex points the binary log index of m at to where it named
// files under was.
func relocateBinlogIndex(m *MariaDB, was, to string) error {
	if !m.Binlog || was == "" || was == to {
		return nil
	}
	dir := m.DataDir
	if to != "" {
		dir = to
	}
	name := filepath.Join(dir, "binlog.index")
	b, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("servers: binlog index of the copy: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if rest, ok := strings.CutPrefix(l, strings.TrimSuffix(was, "/")+"/"); ok {
			lines[i] = filepath.Join(dir, rest)
		}
	}
	if err := os.WriteFile(name, []byte(strings.Join(lines, "\n")), 0o660); err != nil {
		return fmt.Errorf("servers: binlog index of the copy: %w", err)
	}
	return nil
}
