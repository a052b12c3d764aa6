package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sys/unix"
)

// The ioctls of fsfreeze(8).
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// TestDatabasesMarkersAndKill is the end-to-end proof of the orchestrator
// with real databases: scheduled markers of a service with PostgreSQL,
// MariaDB and fsfreeze on three Lockstep volumes are application-consistent
// and carry each database's evidence and the freeze window; a SIGKILL of the
// daemon in the middle of a freeze leaves the plugins' watchdogs to thaw
// everything within the hold; the daemon restarts on the same data and takes
// application-consistent markers again.
func TestDatabasesMarkersAndKill(t *testing.T) {
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if _, err := s.pg.SQL(ctx, `CREATE TABLE orders (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
INSERT INTO orders (id) SELECT g FROM generate_series(1, 100) g`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE TABLE payments (order_id bigint PRIMARY KEY) ENGINE=InnoDB",
		"INSERT INTO payments (order_id) VALUES (1), (2), (3)",
	} {
		if _, err := s.myDB.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// quiesce_timeout 8s: the hold each plugin gets is twice that.
	const quiesce, hold = "8s", 16 * time.Second
	applied := time.Now()
	s.applyApps(t, "2s", quiesce)

	// Scheduled markers are application-consistent, with evidence.
	m := s.d.waitMarker(t, service, applied, 30*time.Second, func(m marker) bool { return m.Trigger == "schedule" })
	checkAppMarker(t, m)
	out := s.d.must(t, "markers", service)
	if !strings.Contains(out, m.ID) || !strings.Contains(out, "app") {
		t.Fatalf("markers lacks %s:\n%s", m.ID, out)
	}
	t.Logf("scheduled marker %s: freeze window %s, pg lsn %v, mariadb %v:%v gtid %v", m.ID, m.FreezeEnd.Sub(m.FreezeStart),
		m.evidence("pg")["lsn"], m.evidence("mariadb")["binlog_file"], m.evidence("mariadb")["binlog_position"], m.evidence("mariadb")["gtid_binlog_pos"])

	// Kill the daemon while everything is frozen: the gate app is frozen
	// last, and while gate/slow exists its freeze sleeps.
	before := s.d.markers(t, service)
	plugins := childPIDs(s.d.pid())
	if len(plugins) < 4 {
		t.Fatalf("want the daemon's 4 plugin processes, found %v", plugins)
	}
	slowSince := time.Now()
	if err := os.WriteFile(filepath.Join(s.gateDir, "slow"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitGate(t, s.gateDir, slowSince, 20*time.Second)
	// Frozen: MariaDB refuses a write and every file system is frozen.
	if err := myProbe(ctx, s.my.RootDSN()); !isLockWaitTimeout(err) {
		t.Fatalf("a write under the marker's freeze: %v, want a lock wait timeout (FLUSH TABLES WITH READ LOCK held)", err)
	}
	for _, v := range volumes {
		if frozen, err := isFrozen(s.mounts[v]); err != nil || !frozen {
			t.Fatalf("%s during the freeze: frozen %v, %v", s.mounts[v], frozen, err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.gateDir, "in-freeze")); err != nil {
		t.Fatalf("the freeze ended before the kill; make gateSleep longer: %v", err)
	}
	os.Remove(filepath.Join(s.gateDir, "slow"))
	s.d.kill()
	killed := time.Now()
	t.Logf("daemon killed %s into the gate's freeze", killed.Sub(slowSince).Round(time.Millisecond))

	// The daemon is also the storage: thawing ext4 writes its superblock
	// and MariaDB's commits need their disk, so it is restarted at once on
	// the same data and portal. It knows nothing of the killed freeze: what
	// thaws the databases and file systems are the old plugin processes'
	// watchdogs, within the hold.
	s.d.start(t, "--policy", s.policyDir)
	restarted := time.Now()
	t.Logf("daemon restarted %s after the kill", restarted.Sub(killed).Round(time.Millisecond))
	// Every wait below gives up at the hold.
	wctx, wcancel := context.WithDeadline(ctx, killed.Add(hold))
	defer wcancel()
	for _, v := range volumes {
		for {
			frozen, err := isFrozen(s.mounts[v])
			if err != nil {
				t.Fatal(err)
			}
			if !frozen {
				break
			}
			if wctx.Err() != nil {
				t.Fatalf("%s still frozen %s after the daemon was killed in the middle of a freeze: the fsfreeze plugin's watchdog did not thaw it", s.mounts[v], time.Since(killed).Round(time.Millisecond))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for {
		actx, acancel := context.WithTimeout(wctx, 3*time.Second)
		err := myProbe(actx, s.my.RootDSN())
		acancel()
		if err == nil {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("MariaDB refuses writes %s after the daemon was killed in the middle of a freeze: %v", time.Since(killed).Round(time.Millisecond), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("MariaDB takes writes %s after the kill", time.Since(killed).Round(time.Millisecond))
	if err := s.pgExec(wctx, "INSERT INTO orders (id) VALUES (1000001)"); err != nil {
		t.Fatalf("PostgreSQL after the kill: %v", err)
	}
	if _, err := s.myDB.ExecContext(wctx, "INSERT INTO payments (order_id) VALUES (1000001)"); err != nil {
		t.Fatalf("MariaDB after the kill: %v", err)
	}
	for _, v := range volumes {
		if err := syncedWrite(filepath.Join(s.mounts[v], "after-kill")); err != nil {
			t.Fatalf("%s after the kill: %v", v, err)
		}
	}
	if d := time.Since(killed); d > hold {
		t.Fatalf("databases and file systems took writes only %s after the kill, past the hold of %s", d, hold)
	}
	t.Logf("both databases and all file systems took durable writes %s after the kill", time.Since(killed).Round(time.Millisecond))
	if got := readFile(filepath.Join(s.gateDir, "thaws")); got == "" {
		t.Fatal("the gate app was never thawed")
	}
	// The old plugin processes thawed and left when their host died.
	for deadline := time.Now().Add(hold); ; {
		left := alivePIDs(plugins)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin processes of the killed daemon still run: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The restarted daemon takes application-consistent markers again.
	m2 := s.d.waitMarker(t, service, restarted, 40*time.Second, func(m marker) bool { return m.Trigger == "schedule" && m.Class == "app" })
	checkAppMarker(t, m2)
	if lsn1, lsn2 := parseLSN(t, m.evidence("pg")["lsn"]), parseLSN(t, m2.evidence("pg")["lsn"]); lsn2 <= lsn1 {
		t.Fatalf("LSN did not advance across the restart: %x then %x", lsn1, lsn2)
	}
	var events []struct {
		Type string    `json:"type"`
		Time time.Time `json:"time"`
	}
	if err := json.Unmarshal([]byte(s.d.must(t, "events", "--json")), &events); err != nil {
		t.Fatal(err)
	}
	starts := 0
	for _, e := range events {
		if e.Type == "daemon_start" {
			starts++
		}
	}
	if starts < 2 {
		t.Fatalf("events: %d daemon_start, want 2: %+v", starts, events)
	}
	// The catalog kept every marker recorded before the kill, and nothing
	// of the killed attempt is left half-recorded.
	after := map[string]marker{}
	for _, mk := range s.d.markers(t, service) {
		if mk.Class != "app" && mk.Class != "crash" {
			t.Fatalf("marker %s of class %q", mk.ID, mk.Class)
		}
		after[mk.ID] = mk
	}
	for _, mk := range before {
		if a, ok := after[mk.ID]; !ok || a.Class != mk.Class || !a.Time.Equal(mk.Time) {
			t.Fatalf("marker %s (%s) recorded before the kill is gone or changed after the restart: %+v", mk.ID, mk.Class, a)
		}
	}
}

// checkAppMarker checks an application-consistent marker of the stack's
// service: every app froze and thawed, each database gave its evidence, and
// the freeze window is recorded.
func checkAppMarker(t *testing.T, m marker) {
	t.Helper()
	b, _ := json.MarshalIndent(m, "", "  ")
	if m.Class != "app" {
		t.Fatalf("marker is %s (%s), want app:\n%s", m.Class, m.Reason, b)
	}
	if len(m.Volumes) != 3 {
		t.Fatalf("marker covers %v, want the 3 volumes", m.Volumes)
	}
	if m.FreezeStart.IsZero() || !m.FreezeEnd.After(m.FreezeStart) {
		t.Fatalf("no freeze window recorded:\n%s", b)
	}
	if len(m.Apps) != 4 {
		t.Fatalf("marker has %d app results, want 4:\n%s", len(m.Apps), b)
	}
	for _, a := range m.Apps {
		if !a.Froze || !a.Thawed || a.Error != "" {
			t.Fatalf("app %s: froze %v thawed %v error %q", a.App, a.Froze, a.Thawed, a.Error)
		}
	}
	pg := m.evidence("pg")
	if lsn, _ := pg["lsn"].(string); !strings.Contains(lsn, "/") {
		t.Fatalf("postgres evidence without an LSN: %v", pg)
	}
	if tl, _ := pg["timeline"].(float64); tl < 1 {
		t.Fatalf("postgres evidence without a timeline: %v", pg)
	}
	my := m.evidence("mariadb")
	if f, _ := my["binlog_file"].(string); !strings.HasPrefix(f, "binlog.") {
		t.Fatalf("mariadb evidence without a binlog file: %v", my)
	}
	if p, _ := my["binlog_position"].(float64); p <= 0 {
		t.Fatalf("mariadb evidence without a binlog position: %v", my)
	}
	if g, _ := my["gtid_binlog_pos"].(string); !strings.HasPrefix(g, "0-1-") {
		t.Fatalf("mariadb evidence without GTID state: %v", my)
	}
	if s, _ := my["sync_binlog"].(float64); s != 1 {
		t.Fatalf("mariadb evidence: sync_binlog %v", my["sync_binlog"])
	}
	fs := m.evidence("fs")
	if mps, _ := fs["mountpoints"].([]any); len(mps) != 3 {
		t.Fatalf("fsfreeze evidence: %v", fs)
	}
}

// parseLSN turns "16/B374D848" into a number.
func parseLSN(t *testing.T, v any) uint64 {
	t.Helper()
	s, _ := v.(string)
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("LSN %q", s)
	}
	return h<<32 | l
}

// waitGate waits until the gate app's freeze started after since.
func waitGate(t *testing.T, dir string, since time.Time, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join(dir, "in-freeze"))
		if err == nil {
			if f, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err == nil && f > float64(since.UnixNano())/1e9 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the gate app's freeze did not start within %s", within)
}

// myProbe writes a row to InnoDB (and the binary log) as root; blocked by
// a global read lock it gives up after a second.
func myProbe(ctx context.Context, rootDSN string) error {
	db, err := sql.Open("mysql", rootDSN+"lockstep_test")
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "SET SESSION lock_wait_timeout = 1"); err != nil {
		return err
	}
	_, err = c.ExecContext(ctx, "INSERT INTO payments (order_id) VALUES (999999999) ON DUPLICATE KEY UPDATE order_id = order_id")
	return err
}

func isLockWaitTimeout(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1205
}

// isFrozen reports whether the file system at mp is frozen: FIFREEZE on a
// frozen one fails with EBUSY. One that was not frozen is thawed at once.
func isFrozen(mp string) (bool, error) {
	fd, err := unix.Open(mp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	err = unix.IoctlSetInt(fd, fiFreeze, 0)
	if errors.Is(err, unix.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("FIFREEZE %s: %w", mp, err)
	}
	return false, unix.IoctlSetInt(fd, fiThaw, 0)
}

// syncedWrite writes a file and fsyncs it.
func syncedWrite(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(time.Now().String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// childPIDs lists the children of pid (of any of its threads).
func childPIDs(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
		if err != nil {
			continue
		}
		// The fields after the parenthesised name: state, ppid, ...
		i := strings.LastIndexByte(string(b), ')')
		if f := strings.Fields(string(b[i+1:])); i >= 0 && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// alivePIDs returns the processes of pids that have not exited.
func alivePIDs(pids []int) []int {
	var out []int
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X' {
			out = append(out, p)
		}
	}
	return out
}
