package postgres

import (
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/plugins/builtin/exec"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

func TestSchema(t *testing.T) {
	got, err := New().ConfigSchema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Attribute{
		{Name: "dsn", Type: sdk.Sensitive, Required: true, NonEmpty: true},
		{Name: "data_directory", Type: sdk.String, Absolute: true},
		{Name: "os_user", Type: sdk.String, Default: "postgres", NonEmpty: true},
		{Name: "pg_ctl", Type: sdk.String, Absolute: true},
		{Name: "log_file", Type: sdk.String, Absolute: true},
		{Name: "host", Type: sdk.String},
	}
	if len(got.Attributes) != len(want) {
		t.Fatalf("%d attributes, want %d", len(got.Attributes), len(want))
	}
	for i, a := range got.Attributes {
		if a.Doc == "" {
			t.Errorf("%s has no doc", a.Name)
		}
		a.Doc = ""
		if !reflect.DeepEqual(a, want[i]) {
			t.Errorf("attribute %d = %+v, want %+v", i, a, want[i])
		}
	}
}

func TestPgCtlChoice(t *testing.T) {
	lib := t.TempDir()
	old := LibDir
	LibDir = lib
	t.Cleanup(func() { LibDir = old })
	for _, v := range []string{"9.6", "13", "16"} {
		os.MkdirAll(filepath.Join(lib, v, "bin"), 0o755)
		os.WriteFile(filepath.Join(lib, v, "bin", "pg_ctl"), nil, 0o755)
	}
	data := t.TempDir()
	app := sdk.App{Config: sdk.Config{"data_directory": data}}
	if p, _ := pgCtl(app); p != filepath.Join(lib, "16", "bin", "pg_ctl") {
		t.Errorf("newest: %s", p)
	}
	os.WriteFile(filepath.Join(data, "PG_VERSION"), []byte("13\n"), 0o644)
	if p, _ := pgCtl(app); p != filepath.Join(lib, "13", "bin", "pg_ctl") {
		t.Errorf("of PG_VERSION: %s", p)
	}
	app.Config["pg_ctl"] = "/nonexistent/pg_ctl"
	if _, err := pgCtl(app); err == nil {
		t.Error("a missing configured pg_ctl was accepted")
	}
}

const password = "Sup3r-s3cret-Pw"

type cluster struct {
	pg  *chain.Postgres
	dsn string // as lockstep, with its password
}

// startCluster starts a throwaway cluster in which the role lockstep logs
// in with a password (scram) over the Unix socket.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	testenv.Root(t)
	if err := chain.PostgresAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	ctx := context.Background()
	base, err := os.MkdirTemp("", "lockstep-pgplugin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755) // the postgres user must reach the data directory
	pg := &chain.Postgres{DataDir: filepath.Join(base, "data"), SockDir: filepath.Join(base, "sock"), LogFile: filepath.Join(base, "pg.log"), Port: 54341}
	if err := pg.Init(ctx); err != nil {
		t.Fatal(err)
	}
	hba := filepath.Join(pg.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hba, append([]byte("local all lockstep scram-sha-256\n"), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop(context.Background()) })
	if _, err := pg.SQL(ctx, fmt.Sprintf("CREATE ROLE lockstep LOGIN SUPERUSER PASSWORD '%s'; CREATE TABLE t (id int)", password)); err != nil {
		t.Fatal(err)
	}
	return &cluster{pg: pg, dsn: fmt.Sprintf("host=%s port=%d user=lockstep dbname=postgres password=%s", pg.SockDir, pg.Port, password)}
}

func (c *cluster) app(dsn string) sdk.App {
	return sdk.App{Service: "db", Name: "pg", Volumes: []string{"data"}, Config: sdk.Config{
		"dsn": dsn, "data_directory": c.pg.DataDir, "os_user": "postgres",
	}}
}

// lsn parses a pg_lsn.
func lsn(t *testing.T, s any) uint64 {
	t.Helper()
	str, _ := s.(string)
	hi, lo, ok := strings.Cut(str, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("lsn %q does not parse", s)
	}
	return h<<32 | l
}

func TestAgainstServer(t *testing.T) {
	c := startCluster(t)
	p := New()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	app := c.app(c.dsn)

	if diags, err := p.Validate(ctx, app); err != nil || len(diags) != 0 {
		t.Fatalf("validate: %v %+v", err, diags)
	}
	if err := p.Prepare(ctx, app); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	ev1, err := p.Freeze(ctx, app, 10*time.Second)
	if err != nil {
		t.Fatalf("freeze: %v", err)
	}
	if ev1["timeline"] != int64(1) || ev1["lsn_kind"] != "flush" || ev1["in_recovery"] != false ||
		!strings.HasPrefix(ev1["server_version"].(string), "15") || ev1["system_identifier"] == "" {
		t.Fatalf("evidence %v", ev1)
	}
	if err := p.Thaw(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := p.Thaw(ctx, app); err != nil {
		t.Fatalf("second thaw: %v", err)
	}

	// A commit acknowledged before Freeze is at or below the evidence LSN.
	out, err := c.pg.SQL(ctx, "INSERT INTO t SELECT generate_series(1, 1000); SELECT pg_current_wal_flush_lsn()")
	if err != nil {
		t.Fatal(err)
	}
	committed := lsn(t, out)
	ev2, err := p.Freeze(ctx, app, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p.Thaw(ctx, app)
	if lsn(t, ev2["lsn"]) <= lsn(t, ev1["lsn"]) || lsn(t, ev2["lsn"]) < committed {
		t.Fatalf("evidence LSN %v after %v, commit flushed at %s", ev2["lsn"], ev1["lsn"], out)
	}
	if h, err := p.Health(ctx, app); err != nil || !h.OK {
		t.Fatalf("health: %+v %v", h, err)
	}

	// A server that does not sync cannot be recovered from a cut.
	if _, err := sqls(ctx, c.pg, "ALTER SYSTEM SET fsync = off", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := p.Freeze(ctx, app, time.Second); err == nil || !strings.Contains(err.Error(), "fsync is off") {
		t.Fatalf("freeze with fsync off: %v", err)
	}
	if _, err := sqls(ctx, c.pg, "ALTER SYSTEM RESET fsync", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	// Stop, then start again with the same options (its own socket).
	if err := p.Stop(ctx, app); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if c.pg.Running() {
		t.Fatal("server still runs after stop")
	}
	if err := p.Stop(ctx, app); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	h, err := p.Health(ctx, app)
	if err != nil || h.OK {
		t.Fatalf("health while stopped: %+v %v", h, err)
	}
	_, err = p.Freeze(ctx, app, time.Second)
	if err == nil || !strings.Contains(err.Error(), "is the server running") || strings.Contains(err.Error(), password) {
		t.Fatalf("freeze while stopped: %v", err)
	}
	t.Logf("freeze while stopped: %v", err)
	if err := p.Start(ctx, app); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := p.Start(ctx, app); err != nil {
		t.Fatalf("second start: %v", err)
	}
	if h, err := p.Health(ctx, app); err != nil || !h.OK {
		t.Fatalf("health after start: %+v %v", h, err)
	}
	if n, err := c.pg.SQL(ctx, "SELECT count(*) FROM t"); err != nil || n != "1000" {
		t.Fatalf("rows after restart: %q %v", n, err)
	}
	ev3, err := p.Freeze(ctx, app, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lsn(t, ev3["lsn"]) <= lsn(t, ev2["lsn"]) {
		t.Fatalf("LSN after restart %v, before %v", ev3["lsn"], ev2["lsn"])
	}
}

// A stale postmaster.pid, as a cut taken while the server ran leaves, does
// not stop Start.
func TestStartAfterCrash(t *testing.T) {
	c := startCluster(t)
	p := New()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	app := c.app(c.dsn)
	if _, err := c.pg.SQL(ctx, "INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(c.pg.DataDir, "postmaster.pid")
	saved, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	// Crash: immediate shutdown leaves no checkpoint; put the lock file
	// back with a PID that is live but not a postgres (ours).
	if _, err := exec.Run(ctx, exec.Cmd{Argv: []string{"runuser", "-u", "postgres", "--", filepath.Join(chain.PostgresBinDir, "pg_ctl"), "-D", c.pg.DataDir, "-m", "immediate", "-w", "stop"}}); err != nil {
		t.Fatal(err)
	}
	sleeper := osexec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	lines := strings.SplitN(string(saved), "\n", 2)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"+lines[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	if u, err := user.Lookup("postgres"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		os.Chown(pidFile, uid, gid)
	}
	if err := p.Start(ctx, app); err != nil {
		t.Fatalf("start after crash: %v", err)
	}
	if n, err := c.pg.SQL(ctx, "SELECT count(*) FROM t WHERE id = 42"); err != nil || n != "1" {
		t.Fatalf("row after crash recovery: %q %v", n, err)
	}
}

func sqls(ctx context.Context, pg *chain.Postgres, stmts ...string) (string, error) {
	var out string
	for _, s := range stmts {
		var err error
		if out, err = pg.SQL(ctx, s); err != nil {
			return "", err
		}
	}
	return out, nil
}

func TestSecretsStayOut(t *testing.T) {
	c := startCluster(t)
	p := New()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const wrong = "Wr0ng-pa55word-xyz"
	for _, dsn := range []string{
		strings.Replace(c.dsn, password, wrong, 1),
		fmt.Sprintf("postgres://lockstep:%s@/postgres?host=%s&port=%d", wrong, c.pg.SockDir, c.pg.Port),
	} {
		app := c.app(dsn)
		_, err := p.Freeze(ctx, app, time.Second)
		if err == nil {
			t.Fatal("freeze with a wrong password succeeded")
		}
		if strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), "password authentication failed") {
			t.Fatalf("error %q", err)
		}
		t.Logf("wrong password: %v", err)
		if err := p.Prepare(ctx, app); err == nil || strings.Contains(err.Error(), wrong) {
			t.Fatalf("prepare: %v", err)
		}
		h, err := p.Health(ctx, app)
		if err != nil || h.OK || strings.Contains(h.Detail, wrong) {
			t.Fatalf("health: %+v %v", h, err)
		}
	}
	// A dsn that does not parse is not echoed.
	bad := "host=/x password='" + wrong
	_, err := p.Freeze(ctx, c.app(bad), time.Second)
	if err == nil || strings.Contains(err.Error(), wrong) {
		t.Fatalf("bad dsn: %v", err)
	}
	diags, _ := p.Validate(ctx, c.app(bad))
	if len(diags) != 1 || diags[0].Attribute != "dsn" || strings.Contains(diags[0].Detail, wrong) {
		t.Fatalf("validate bad dsn: %+v", diags)
	}
}
