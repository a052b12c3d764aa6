// Package e2e drives the built lockstep binary against real PostgreSQL and
// MariaDB servers whose files live on Lockstep volumes, attached through the
// qemu-storage-daemon → FUSE → loop → ext4 chain.
package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/servers"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

// buildLockstep builds the binary into a temp dir; E2E_LOCKSTEP_BIN names
// a built one to test instead.
func buildLockstep(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("E2E_LOCKSTEP_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(t.TempDir(), "lockstep")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/lockstep").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// daemon is `lockstep serve` on one data directory and one iSCSI portal,
// across restarts: the chains reconnect to the same portal. Its cleanup is
// registered when it is created, before anything attaches to it, so that it
// runs after every mount and server on its volumes is gone.
type daemon struct {
	bin, data, portal, logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newDaemon(t *testing.T, bin, work string) *daemon {
	t.Helper()
	d := &daemon{bin: bin, data: filepath.Join(work, "data"), portal: freeAddr(t), logPath: filepath.Join(work, "daemon.log")}
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", tail(readFile(d.logPath), 60))
		}
	})
	return d
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs `lockstep serve` and waits until its API answers.
func (d *daemon) start(t *testing.T, args ...string) {
	t.Helper()
	os.Remove(filepath.Join(d.data, "api.addr"))
	lf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(lf, "=== serve %s\n", time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(d.bin, append([]string{"serve", "--data", d.data, "--iscsi", d.portal, "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = cleanEnv()
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); lf.Close(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(d.data, "api.addr")); err == nil {
			return
		}
		select {
		case <-done:
			t.Fatalf("serve exited at start:\n%s", tail(readFile(d.logPath), 40))
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon never came up:\n%s", tail(readFile(d.logPath), 40))
		}
	}
}

// pid is the running daemon's process id, 0 when none runs.
func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	select {
	case <-d.done:
		return 0
	default:
		return d.cmd.Process.Pid
	}
}

// kill sends SIGKILL to the daemon alone (not its plugin processes) and
// waits for it to exit.
func (d *daemon) kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon ignored SIGTERM for 60s")
	}
	if !cmd.ProcessState.Success() {
		t.Fatalf("daemon did not stop cleanly: %v\n%s", cmd.ProcessState, tail(readFile(d.logPath), 40))
	}
}

// cleanEnv is the environment without LOCKSTEP_* variables.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LOCKSTEP_") {
			env = append(env, e)
		}
	}
	return env
}

// cli runs a command of the binary against the daemon and returns its
// combined output and exit code.
func (d *daemon) cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, append(args, "--data="+d.data)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("lockstep %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// must runs a command that has to exit 0.
func (d *daemon) must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := d.cli(t, args...)
	if code != 0 {
		t.Fatalf("lockstep %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// mustStdout runs a command that has to exit 0 and returns its standard
// output alone (progress goes to standard error).
func (d *daemon) mustStdout(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, append(args, "--data="+d.data)...)
	cmd.Env = cleanEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lockstep %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// marker is what `lockstep markers --json` prints for one marker.
type marker struct {
	ID          string    `json:"id"`
	Time        time.Time `json:"time"`
	Class       string    `json:"class"`
	Trigger     string    `json:"trigger"`
	Reason      string    `json:"reason"`
	Volumes     []string  `json:"volumes"`
	FreezeStart time.Time `json:"freeze_start"`
	FreezeEnd   time.Time `json:"freeze_end"`
	Apps        []struct {
		App      string          `json:"app"`
		Plugin   string          `json:"plugin"`
		Froze    bool            `json:"froze"`
		Thawed   bool            `json:"thawed"`
		Error    string          `json:"error"`
		Evidence json.RawMessage `json:"evidence"`
	} `json:"apps"`
}

// evidence decodes the evidence of app, nil when it has none.
func (m marker) evidence(app string) map[string]any {
	for _, a := range m.Apps {
		if a.App == app && len(a.Evidence) > 0 {
			var ev map[string]any
			if json.Unmarshal(a.Evidence, &ev) == nil {
				return ev
			}
		}
	}
	return nil
}

func (d *daemon) markers(t *testing.T, service string) []marker {
	t.Helper()
	var ms []marker
	out := d.must(t, "markers", service, "--json")
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("markers --json: %v\n%s", err, out)
	}
	return ms
}

// waitMarker polls until a marker after since satisfies ok, and returns it.
func (d *daemon) waitMarker(t *testing.T, service string, since time.Time, within time.Duration, ok func(marker) bool) marker {
	t.Helper()
	deadline := time.Now().Add(within)
	var last []marker
	for time.Now().Before(deadline) {
		last = d.markers(t, service)
		for _, m := range last {
			if m.Time.After(since) && ok(m) {
				return m
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	t.Fatalf("no matching marker of %q after %s within %s; markers:\n%s\ndaemon log:\n%s", service, since.Format(time.RFC3339Nano), within, tail(string(b), 80), tail(readFile(d.logPath), 40))
	return marker{}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The stack: one service, three volumes, each attached through the chain
// and mounted: PostgreSQL's data directory on the first, MariaDB's on the
// second, and the logs of both on the third (PostgreSQL's WAL, MariaDB's
// binary and redo logs), so every marker must cut data and logs of each
// database on different volumes at one instant.
const (
	service   = "shop"
	iqnPrefix = "iqn.2026-11.io.lockstep:" + service + "."
	volPG     = "pgdata"
	volMyData = "mariadb-data"
	volLogs   = "logs"
)

var volumes = []string{volPG, volMyData, volLogs}

type stack struct {
	bin, work string
	d         *daemon
	chains    map[string]*chain.Chain
	mounts    map[string]string // volume → mount point
	pg        *chain.Postgres
	my        *servers.MariaDB
	myDB      *sql.DB // the test user over TCP, database lockstep_test
	gateDir   string  // the gate app's files (see appsPolicy)
	policyDir string  // the full policy
}

// requireStack marks the test unavailable when a component is missing.
func requireStack(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("real databases on attached volumes: not in -short")
	}
	testenv.Root(t)
	if err := chain.Available(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if err := chain.PostgresAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if _, err := exec.LookPath("mariadbd"); err != nil {
		if _, err := os.Stat("/usr/sbin/mariadbd"); err != nil {
			testenv.Unavailable(t, "mariadbd not found (install mariadb-server)")
		}
	}
}

// volumesPolicy is the service without apps: it creates the volumes that
// the file systems and servers are then set up on (fsfreeze must only ever
// see mounted file systems).
func volumesPolicy() string {
	return `service "` + service + `" {
  volume "` + volPG + `" {
    size       = "384MiB"
    block_size = 4096
  }
  volume "` + volMyData + `" {
    size       = "256MiB"
    block_size = 4096
  }
  volume "` + volLogs + `" {
    size       = "256MiB"
    block_size = 4096
  }
  consistency {
    every = "1h"
  }
  rpo {
    journal = "2h"
  }
}
`
}

// writePolicy writes text as the only policy file of a new directory.
func writePolicy(t *testing.T, dir, text string, files map[string]string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, service+".lockstep.hcl"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// newStack builds the binary, starts the daemon with the volumes, attaches
// and mounts them, and starts PostgreSQL and MariaDB on them. The apps are
// not applied yet: see applyApps.
func newStack(t *testing.T) *stack {
	t.Helper()
	requireStack(t)
	s := &stack{bin: buildLockstep(t), chains: map[string]*chain.Chain{}, mounts: map[string]string{}}
	// A short path the postgres user can reach (t.TempDir's parents are 0700).
	work, err := os.MkdirTemp("", "lse2e-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(work, 0o755)
	t.Cleanup(func() { os.RemoveAll(work) }) // runs last: after every unmount
	s.work = work
	s.d = newDaemon(t, s.bin, work)
	s.d.start(t, "--policy", writePolicy(t, filepath.Join(work, "policy-volumes"), volumesPolicy(), nil))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, v := range volumes {
		c, err := chain.Start(ctx, chain.Config{Portal: s.d.portal, IQN: iqnPrefix + v, WorkDir: filepath.Join(work, "chain-"+v), BlockSize: 4096})
		if err != nil {
			t.Fatalf("attach %s: %v", v, err)
		}
		mp := filepath.Join(work, "mnt", v)
		t.Cleanup(func() {
			// A freeze left behind by a failed test would hang the unmount.
			exec.Command("fsfreeze", "-u", mp).Run()
			if err := c.Stop(); err != nil {
				t.Errorf("chain of %s: %v", v, err)
			}
		})
		s.chains[v] = c
		if err := c.Mkfs(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Mount(ctx, mp); err != nil {
			t.Fatal(err)
		}
		s.mounts[v] = mp
	}

	s.pg = &chain.Postgres{
		DataDir: filepath.Join(s.mounts[volPG], "pgdata"),
		WALDir:  filepath.Join(s.mounts[volLogs], "pgwal"),
		SockDir: filepath.Join(work, "pgrun"),
		LogFile: filepath.Join(work, "postgresql.log"),
		Port:    pgPort(t),
	}
	if err := s.pg.Init(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.pg.Stop(context.Background()); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	})
	if err := s.pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s.my = servers.StartMariaDBAt(t, servers.MariaDBAtOptions{
		DataDir: filepath.Join(s.mounts[volMyData], "mysql"),
		LogDir:  filepath.Join(s.mounts[volLogs], "mariadb"),
	})
	// Runs first: a freeze a failed test left behind would hang the
	// servers' shutdown.
	t.Cleanup(func() {
		for _, mp := range s.mounts {
			exec.Command("fsfreeze", "-u", mp).Run()
		}
	})
	s.myDB, err = sql.Open("mysql", s.my.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.myDB.Close() })
	s.gateDir = filepath.Join(work, "gate")
	if err := os.MkdirAll(s.gateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// pgDSN is the libpq DSN of the stack's PostgreSQL.
func (s *stack) pgDSN() string { return s.pg.DSN() }

// pgExec runs one statement over a connection of its own; unlike psql it
// gives up when ctx ends, also against a server stuck on a frozen disk.
func (s *stack) pgExec(ctx context.Context, sql string, args ...any) error {
	return pgExec(ctx, s.pgDSN(), sql, args...)
}

func pgExec(ctx context.Context, dsn, sql string, args ...any) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql, args...)
	return err
}

// pgPort picks a port number for PostgreSQL's socket name; no TCP port is
// opened, but a free one keeps clear of any other cluster's socket.
func pgPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// appsPolicy is the service with its apps:
//
//   - fs (fsfreeze) freezes the three file systems;
//   - pg (postgres) and mariadb (mysql) depend on fs, so they are frozen
//     before it (CHECKPOINT; FLUSH TABLES WITH READ LOCK) and thawed after;
//   - gate (exec), which fs depends on, is frozen last, when everything else
//     is held: its freeze records that moment in gateDir/in-freeze and, while
//     gateDir/slow exists, sleeps, so a test can act inside the freeze;
//     at a restore it starts first and drops the chains' export caches,
//     after waiting while gateDir/slow-start exists (it writes
//     gateDir/in-start first), so a test can act between the roll and
//     the applications' start.
func (s *stack) appsPolicy(every, quiesce string) string {
	mps := `"` + s.mounts[volPG] + `", "` + s.mounts[volMyData] + `", "` + s.mounts[volLogs] + `"`
	freeze := fmt.Sprintf(`date +%%s.%%N > %[1]s/in-freeze; if [ -e %[1]s/slow ]; then sleep %[2]s; fi; echo '{\"gate\": \"held\"}'`, s.gateDir, gateSleep)
	thaw := fmt.Sprintf(`rm -f %[1]s/in-freeze; echo thawed >> %[1]s/thaws`, s.gateDir)
	myStart, myStop := hclList(s.my.StartCommand()), hclList(s.my.StopCommand())
	// The gate starts first after a restore's roll: it drops the page cache
	// of each chain's FUSE export, which BLKFLSBUF on the loop device does
	// not reach (see internal/chain/cache.go), before fs mounts again.
	var drops []string
	for _, v := range []string{volPG, volMyData, volLogs} {
		drops = append(drops, strings.Join(chain.DropExportCacheCommand(filepath.Join(s.work, "chain-"+v)), " "))
	}
	dropCaches := fmt.Sprintf(`touch %[1]s/in-start; while [ -e %[1]s/slow-start ]; do sleep 0.1; done; `, s.gateDir) + strings.Join(drops, " && ")
	return fmt.Sprintf(`service %[1]q {
  volume %[2]q {
    size       = "384MiB"
    block_size = 4096
  }
  volume %[3]q {
    size       = "256MiB"
    block_size = 4096
  }
  volume %[4]q {
    size       = "256MiB"
    block_size = 4096
  }

  app "fsfreeze" "fs" {
    volumes     = [%[2]q, %[3]q, %[4]q]
    mountpoints     = [%[5]s]
    state_directory = %[18]q
    depends_on      = ["gate"]
  }

  app "postgres" "pg" {
    volumes        = [%[2]q, %[4]q]
    depends_on     = ["fs"]
    dsn            = "host=%[6]s port=%[7]d user=postgres dbname=postgres sslmode=disable"
    data_directory = %[8]q
    os_user        = "postgres"
    log_file       = %[9]q
  }

  app "mysql" "mariadb" {
    volumes    = [%[3]q, %[4]q]
    depends_on = ["fs"]
    dsn        = "%[10]s@tcp(127.0.0.1:%[11]d)/"
    password   = file("mariadb.password")
    stop       = %[12]s
    start      = %[13]s
  }

  app "exec" "gate" {
    freeze  = ["/bin/sh", "-c", %[14]q]
    thaw    = ["/bin/sh", "-c", %[15]q]
    stop    = ["/bin/true"]
    start   = ["/bin/sh", "-c", %[19]q]
    timeout = "30s"
  }

  consistency {
    every           = %[16]q
    quiesce_timeout = %[17]q
  }
  rpo {
    journal = "2h"
  }
}
`, service, volPG, volMyData, volLogs, mps,
		s.pg.SockDir, s.pg.Port, s.pg.DataDir, s.pg.LogFile,
		s.my.User, s.my.Port, myStop, myStart,
		freeze, thaw, every, quiesce, filepath.Join(s.work, "fsfreeze-state"), dropCaches)
}

// gateSleep is how long the gate's freeze sleeps while gateDir/slow exists.
const gateSleep = "5"

func hclList(argv []string) string {
	b, _ := json.Marshal(argv) // a JSON string list is an HCL list
	return string(b)
}

// applyApps writes the full policy and applies it to the running daemon.
func (s *stack) applyApps(t *testing.T, every, quiesce string) {
	t.Helper()
	s.policyDir = writePolicy(t, filepath.Join(s.work, "policy"), s.appsPolicy(every, quiesce),
		map[string]string{"mariadb.password": s.my.Password + "\n"})
	s.d.must(t, "apply", s.policyDir)
}
