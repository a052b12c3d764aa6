package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/servers"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

func TestSchema(t *testing.T) {
	got, err := New().ConfigSchema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Attribute{
		{Name: "dsn", Type: sdk.Sensitive, Required: true, NonEmpty: true},
		{Name: "password", Type: sdk.Secret},
		{Name: "stop", Type: sdk.StringList},
		{Name: "start", Type: sdk.StringList},
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

func appOf(m *servers.MariaDB) sdk.App {
	return sdk.App{Service: "shop", Name: "db", Config: sdk.Config{
		"dsn": m.DSN(), "stop": m.StopCommand(), "start": m.StartCommand(),
	}}
}

// writer inserts a row from a connection of its own and reports when the
// insert returned.
func writer(t *testing.T, m *servers.MariaDB, v int) <-chan error {
	t.Helper()
	db, err := sql.Open("mysql", m.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := db.ExecContext(ctx, "INSERT INTO t VALUES (?)", v)
		done <- err
	}()
	return done
}

func exec1(t *testing.T, m *servers.MariaDB, q string) {
	t.Helper()
	db, err := sql.Open("mysql", m.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func blocked(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: the write went through while frozen (err %v)", what, err)
	case <-time.After(700 * time.Millisecond):
	}
}

func released(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: write failed: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the write still blocks", what)
	}
}

func TestAgainstServer(t *testing.T) {
	m := servers.StartMariaDB(t, servers.MariaDBOptions{})
	exec1(t, m, "CREATE TABLE t (id int) ENGINE=InnoDB")
	p := New()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	app := appOf(m)

	if diags, err := p.Validate(ctx, app); err != nil || len(diags) != 0 {
		t.Fatalf("validate: %v %+v", err, diags)
	}
	if err := p.Prepare(ctx, app); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if h, err := p.Health(ctx, app); err != nil || !h.OK {
		t.Fatalf("health: %+v %v", h, err)
	}
	ev1, err := p.Freeze(ctx, app, time.Minute)
	if err != nil {
		t.Fatalf("freeze: %v", err)
	}
	t.Logf("evidence: %v", ev1)
	if ev1["binlog"] != true || !strings.HasPrefix(ev1["binlog_file"].(string), "binlog.") ||
		ev1["binlog_position"].(int64) <= 0 || !strings.Contains(ev1["server_version"].(string), "MariaDB") ||
		ev1["sync_binlog"] != int64(1) {
		t.Fatalf("evidence %v", ev1)
	}
	if _, ok := ev1["gtid_binlog_pos"].(string); !ok {
		t.Fatalf("no gtid in %v", ev1)
	}
	// A write from another connection waits for the thaw.
	done := writer(t, m, 1)
	blocked(t, done, "first freeze")
	if err := p.Thaw(ctx, app); err != nil {
		t.Fatalf("thaw: %v", err)
	}
	released(t, done, "after thaw")
	if err := p.Thaw(ctx, app); err != nil {
		t.Fatalf("second thaw: %v", err)
	}

	// The position and GTID move with the write.
	ev2, err := p.Freeze(ctx, app, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ev2["binlog_position"].(int64) <= ev1["binlog_position"].(int64) || ev2["gtid_binlog_pos"] == ev1["gtid_binlog_pos"] || ev2["gtid_binlog_pos"] == "" {
		t.Fatalf("evidence did not move: %v then %v", ev1, ev2)
	}
	// Freezing again releases the old lock and takes a new one.
	if _, err := p.Freeze(ctx, app, time.Minute); err != nil {
		t.Fatal(err)
	}
	done = writer(t, m, 2)
	blocked(t, done, "refreeze")
	p.Thaw(ctx, app)
	released(t, done, "after refreeze")

	// The lock goes when hold elapses, without a Thaw.
	if _, err := p.Freeze(ctx, app, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	done = writer(t, m, 3)
	blocked(t, done, "hold")
	released(t, done, "hold elapsed")
	p.Thaw(ctx, app)

	// Stop, start, and an application that is down.
	if err := p.Stop(ctx, app); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if m.Running() {
		t.Fatal("server runs after stop")
	}
	if err := p.Stop(ctx, app); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if h, err := p.Health(ctx, app); err != nil || h.OK {
		t.Fatalf("health while stopped: %+v %v", h, err)
	}
	_, err = p.Freeze(ctx, app, time.Second)
	if err == nil || !strings.Contains(err.Error(), "is the server running") || strings.Contains(err.Error(), m.Password) {
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
	db, _ := sql.Open("mysql", m.DSN())
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 3 {
		t.Fatalf("rows after restart: %d %v", n, err)
	}
}

// A lock request that cannot be granted in time is killed, and the server
// is left unlocked.
func TestFreezeDeadline(t *testing.T) {
	m := servers.StartMariaDB(t, servers.MariaDBOptions{})
	exec1(t, m, "CREATE TABLE t (id int) ENGINE=InnoDB")
	p := New()
	app := appOf(m)
	// A long write keeps FTWRL waiting for the global read lock.
	db, _ := sql.Open("mysql", m.DSN())
	defer db.Close()
	long := make(chan error, 1)
	go func() {
		_, err := db.Exec("INSERT INTO t SELECT SLEEP(4)")
		long <- err
	}()
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := p.Freeze(ctx, app, time.Minute)
	if err == nil {
		t.Fatal("freeze succeeded behind a long statement")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("freeze returned after %s", d)
	}
	t.Logf("freeze behind a long statement: %v", err)
	if err := <-long; err != nil {
		t.Fatalf("the long write: %v", err)
	}
	done := writer(t, m, 1)
	released(t, done, "after a failed freeze")
}

func TestBinlogOff(t *testing.T) {
	m := servers.StartMariaDB(t, servers.MariaDBOptions{NoBinlog: true})
	p := New()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	app := appOf(m)
	ev, err := p.Freeze(ctx, app, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Thaw(ctx, app)
	if ev["binlog"] != false || ev["binlog_file"] != nil {
		t.Fatalf("evidence %v", ev)
	}
	if _, ok := ev["gtid_current_pos"]; !ok {
		t.Fatalf("evidence %v", ev)
	}
}

func TestSecretsStayOut(t *testing.T) {
	m := servers.StartMariaDB(t, servers.MariaDBOptions{NoBinlog: true})
	p := New()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const wrong = "Wr0ng-pa55word-xyz"
	app := appOf(m)
	app.Config["dsn"] = strings.Replace(m.DSN(), m.Password, wrong, 1)
	check := func(err error, what string) {
		t.Helper()
		if err == nil || strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), "Access denied") {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err := p.Freeze(ctx, app, time.Second)
	check(err, "freeze")
	t.Logf("wrong password: %v", err)
	check(p.Prepare(ctx, app), "prepare")
	h, err := p.Health(ctx, app)
	if err != nil || h.OK || strings.Contains(h.Detail, wrong) {
		t.Fatalf("health: %+v %v", h, err)
	}
	// The password attribute replaces the DSN's.
	app.Config["dsn"] = fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", m.User, m.Port)
	app.Config["password"] = wrong
	_, err = p.Freeze(ctx, app, time.Second)
	check(err, "freeze with password attribute")
	app.Config["password"] = m.Password
	if _, err := p.Freeze(ctx, app, time.Second); err != nil {
		t.Fatalf("freeze with the right password attribute: %v", err)
	}
	p.Thaw(ctx, app)
	// A dsn that does not parse is not echoed.
	app.Config["dsn"] = "lockstep:" + wrong + "@tcp(127.0.0.1:1"
	_, err = p.Freeze(ctx, app, time.Second)
	if err == nil || strings.Contains(err.Error(), wrong) {
		t.Fatalf("bad dsn: %v", err)
	}
	diags, _ := p.Validate(ctx, app)
	if len(diags) != 1 || diags[0].Attribute != "dsn" || strings.Contains(diags[0].Detail, wrong) {
		t.Fatalf("validate: %+v", diags)
	}
}

func TestNoStopCommand(t *testing.T) {
	app := sdk.App{Name: "db", Config: sdk.Config{"dsn": "u@tcp(127.0.0.1:1)/"}}
	if err := New().Stop(context.Background(), app); !errors.Is(err, sdk.ErrUnsupported) {
		t.Fatalf("stop: %v", err)
	}
	if err := New().Start(context.Background(), app); !errors.Is(err, sdk.ErrUnsupported) {
		t.Fatalf("start: %v", err)
	}
}
