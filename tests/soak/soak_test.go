// Package soak runs PostgreSQL under pgbench on ext4 on a journaled volume
// served by Lockstep's iSCSI target through qemu-storage-daemon's libiscsi
// initiator (the load that hung gotgt, ADR 0002), then restores a clone at
// a timestamp taken mid-run and proves the database recovers on it.
package soak

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/journal"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/lunserver"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

var soakDuration = flag.Duration("soak.duration", 5*time.Minute, "how long pgbench runs (default 5m, also under CI=true; 60s with -short or LOCKSTEP_SOAK=short; -soak.duration 1h for the long soak)")

const (
	iqnBase   = "iqn.2026-11.io.lockstep:soak"
	volSize   = 1 << 30
	blockSize = 4096
	scale     = 10
)

// duration is the pgbench run time: the flag when given, else 60 s for a
// short run outside CI, 5 minutes otherwise (CI included).
func duration() time.Duration {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "soak.duration" })
	if !set && !testenv.InCI() && (testing.Short() || os.Getenv("LOCKSTEP_SOAK") == "short") {
		return time.Minute
	}
	return *soakDuration
}

type lockedFile struct {
	mu sync.Mutex
	f  *os.File
}

func (l *lockedFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// countLines counts the lines of text containing every one of subs.
func countLines(text string, subs ...string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(sc.Text(), s)
		}
		if all {
			n++
		}
	}
	return n
}

// qemuTrouble matches what qemu's iSCSI driver prints when a session goes
// wrong: reconnects, NOP-Out timeouts, failed commands.
var qemuTrouble = regexp.MustCompile(`(?i)reconnect|iscsi|nop|time[d ]?out|error|fail`)

// qemuProblems lists qemu-storage-daemon's log lines (past the command
// line it was started with) that report trouble.
func qemuProblems(log string) []string {
	var bad []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.HasPrefix(l, "#") && qemuTrouble.MatchString(l) {
			bad = append(bad, l)
		}
	}
	return bad
}

func TestQemuProblems(t *testing.T) {
	log := "# /usr/bin/qemu-storage-daemon --blockdev driver=iscsi,portal=x\n" +
		"qemu-storage-daemon: iSCSI: NOP timeout. Reconnecting...\n" +
		"qemu-storage-daemon: iSCSI Failure: SENSE KEY:ILLEGAL_REQUEST\n" +
		"harmless\n"
	if got := qemuProblems(log); len(got) != 2 {
		t.Fatalf("found %d problem lines, want 2: %q", len(got), got)
	}
}

// mountedUnder reports whether anything is mounted at or below dir.
func mountedUnder(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true // cannot tell: do not delete
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			return true
		}
	}
	return false
}

// workDir is a temporary directory the postgres user can reach; it is
// removed at the end unless something is still mounted in it.
func workDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lockstep-soak-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, d)
		}
		if mountedUnder(d) {
			t.Errorf("%s still has mounts; left in place", d)
			return
		}
		os.RemoveAll(d)
	})
	return d
}

// logTails logs the end of every log file the soak left in dir, so that a
// CI failure can be read after the directory is gone.
func logTails(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	more, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	for _, f := range append(logs, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("--- %s (end):\n%s", f, b)
	}
}

// runAs runs a command as user and returns its combined output.
func runAs(ctx context.Context, user string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "runuser", append([]string{"-u", user, "--"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startPostgres starts pg; a cluster recovering a lot of WAL may outlast
// pg_ctl's wait, so a start error is forgiven if the server answers later.
func startPostgres(ctx context.Context, t *testing.T, pg *chain.Postgres) {
	t.Helper()
	t.Cleanup(func() {
		if pg.Running() {
			pg.Stop(context.Background())
		}
	})
	err := pg.Start(ctx)
	if err == nil {
		return
	}
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline) && pg.Running(); time.Sleep(2 * time.Second) {
		if _, qerr := pg.SQL(ctx, "SELECT 1"); qerr == nil {
			t.Logf("pg_ctl gave up waiting (%v) but the server came up", err)
			return
		}
	}
	t.Fatalf("starting PostgreSQL: %v", err)
}

// e2fsck runs e2fsck with args on dev and returns its exit code.
func e2fsck(ctx context.Context, t *testing.T, dev string, args ...string) (int, string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "e2fsck", append(args, dev)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("e2fsck %v: %v", args, err)
	return -1, ""
}

func clusterState(ctx context.Context, t *testing.T, dataDir string) string {
	t.Helper()
	out, err := runAs(ctx, "postgres", filepath.Join(chain.PostgresBinDir, "pg_controldata"), "-D", dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == "Database cluster state" {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no cluster state in pg_controldata output:\n%s", out)
	return ""
}

func amcheck(ctx context.Context, t *testing.T, pg *chain.Postgres) {
	t.Helper()
	out, err := runAs(ctx, "postgres", filepath.Join(chain.PostgresBinDir, "pg_amcheck"), "-h", pg.SockDir, "-p", strconv.Itoa(pg.Port),
		"--install-missing", "--heapallindexed", "-d", "postgres")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("pg_amcheck found problems (%v):\n%s", err, out)
	}
}

func historyRows(ctx context.Context, t *testing.T, pg *chain.Postgres) int {
	t.Helper()
	out, err := pg.SQL(ctx, "SELECT count(*) FROM pgbench_history")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("pgbench_history count %q: %v", out, err)
	}
	return n
}

func TestSoakPostgres(t *testing.T) {
	testenv.Root(t)
	if err := chain.Available(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if err := chain.PostgresAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	for _, b := range []string{"pgbench", "pg_amcheck", "pg_controldata"} {
		if _, err := os.Stat(filepath.Join(chain.PostgresBinDir, b)); err != nil {
			testenv.Unavailable(t, "%s missing (install postgresql): %v", b, err)
		}
	}
	testenv.LookPath(t, "e2fsck")
	dur := duration()
	ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Minute)
	defer cancel()
	work := workDir(t)

	// The journaled volume, served in-process.
	s, err := store.Open(ctx, filepath.Join(work, "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	storeOpen := true
	t.Cleanup(func() {
		if storeOpen {
			s.Close()
		}
	})
	vol, err := s.CreateVolume(ctx, store.VolumeSpec{Name: "soak", Size: volSize, BlockSize: blockSize})
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(work, "target.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	ls := lunserver.Start(t, &lockedFile{f: lf})
	ls.Add(t, iqnBase, vol)
	targetLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	// Chain, ext4, PostgreSQL, pgbench.
	c := ls.Attach(ctx, t, iqnBase, filepath.Join(work, "chain"), blockSize)
	if err := c.Mkfs(ctx); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(work, "mnt")
	if err := c.Mount(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	pg := &chain.Postgres{DataDir: filepath.Join(mnt, "pgdata"), SockDir: filepath.Join(work, "sock"), LogFile: filepath.Join(work, "pg.log"), Port: 54331}
	if err := pg.Init(ctx); err != nil {
		t.Fatal(err)
	}
	startPostgres(ctx, t, pg)
	pgbench := func(args ...string) string {
		t.Helper()
		start := time.Now()
		out, err := runAs(ctx, "postgres", append([]string{filepath.Join(chain.PostgresBinDir, "pgbench"), "-h", pg.SockDir, "-p", strconv.Itoa(pg.Port)}, append(args, "postgres")...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pgbench %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Second))
		return out
	}
	pgbench("-i", "-s", strconv.Itoa(scale), "-q")

	var mid int64
	midTaken := make(chan struct{})
	go func() {
		defer close(midTaken)
		select {
		case <-time.After(dur / 2):
			mid = time.Now().UnixNano()
		case <-ctx.Done():
		}
	}()
	out := pgbench("-c", "4", "-j", "2", "-T", strconv.Itoa(int(dur.Seconds())))
	<-midTaken
	if mid == 0 {
		t.Fatal("no mid-run timestamp taken")
	}
	t.Logf("pgbench run:\n%s", out)
	if !regexp.MustCompile(`(?m)^number of failed transactions: 0\b`).MatchString(out) {
		t.Fatalf("pgbench reported failed transactions:\n%s", out)
	}
	if m := regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`).FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Fatalf("pgbench processed no transactions:\n%s", out)
	}

	amcheck(ctx, t, pg)
	// pgbench_history gains one row per transaction: the clone, taken
	// half-way, must hold some of them but not all.
	endHistory := historyRows(ctx, t, pg)
	if err := pg.Stop(ctx); err != nil {
		t.Fatalf("stopping PostgreSQL: %v", err)
	}
	if st := clusterState(ctx, t, pg.DataDir); st != "shut down" {
		t.Fatalf("cluster state after stop is %q, want \"shut down\"", st)
	}
	if err := c.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
	if code, out := e2fsck(ctx, t, c.Device(), "-fn"); code != 0 {
		t.Fatalf("e2fsck -fn after the soak exited %d:\n%s", code, out)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("stopping the chain: %v", err)
	}
	if bad := qemuProblems(c.Log()); len(bad) > 0 || c.Reconnects() != 0 {
		t.Fatalf("qemu-storage-daemon reported session trouble:\n%s", strings.Join(bad, "\n"))
	}
	// The target saw one session, never reinstated, never dropped.
	tl := targetLog()
	if n := countLines(tl, `msg="iscsi session started"`, "target="+iqnBase+" "); n != 1 {
		t.Errorf("%d sessions to %s during the soak, want 1 (a reconnect):\n%s", n, iqnBase, tl)
	}
	if n := countLines(tl, "level=WARN") + countLines(tl, "level=ERROR") + countLines(tl, "reinstated"); n != 0 {
		t.Errorf("target logged %d warnings, errors or reinstatements:\n%s", n, tl)
	}

	// A writable clone at the mid-run timestamp: a crash-consistent image
	// that ext4 and PostgreSQL must recover by themselves.
	clone, err := s.Clone(ctx, "soak", mid, "soak-mid")
	if err != nil {
		t.Fatal(err)
	}
	cloneIQN := iqnBase + "-clone"
	ls.Add(t, cloneIQN, clone)
	c2 := ls.Attach(ctx, t, cloneIQN, filepath.Join(work, "chain-clone"), blockSize)
	if code, out := e2fsck(ctx, t, c2.Device(), "-p"); code > 1 {
		t.Fatalf("e2fsck -p (journal recovery) on the clone exited %d:\n%s", code, out)
	} else {
		t.Logf("e2fsck -p on the clone: exit %d %s", code, strings.TrimSpace(out))
	}
	if code, out := e2fsck(ctx, t, c2.Device(), "-fn"); code != 0 {
		t.Fatalf("e2fsck -fn on the recovered clone exited %d:\n%s", code, out)
	}
	mnt2 := filepath.Join(work, "mnt-clone")
	if err := c2.Mount(ctx, mnt2); err != nil {
		t.Fatal(err)
	}
	pg2 := &chain.Postgres{DataDir: filepath.Join(mnt2, "pgdata"), SockDir: filepath.Join(work, "sock-clone"), LogFile: filepath.Join(work, "pg-clone.log"), Port: 54332}
	if st := clusterState(ctx, t, pg2.DataDir); st != "in production" {
		t.Errorf("clone's cluster state is %q, want \"in production\" (a mid-run image)", st)
	}
	startPostgres(ctx, t, pg2)
	got, err := pg2.SQL(ctx, "SELECT count(*) FROM pgbench_accounts")
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(scale * 100000); got != want {
		t.Fatalf("clone: pgbench_accounts has %s rows, want %s", got, want)
	}
	if h := historyRows(ctx, t, pg2); h <= 0 || h >= endHistory {
		t.Errorf("clone at the mid-run timestamp has %d pgbench_history rows; the run ended with %d", h, endHistory)
	} else {
		t.Logf("clone holds %d of the run's %d transactions", h, endHistory)
	}
	if b, err := os.ReadFile(pg2.LogFile); err == nil {
		if !strings.Contains(string(b), "not properly shut down") {
			t.Errorf("the clone's PostgreSQL did not run crash recovery:\n%s", b)
		}
	}
	amcheck(ctx, t, pg2)
	if err := pg2.Stop(ctx); err != nil {
		t.Fatalf("stopping PostgreSQL on the clone: %v", err)
	}
	if err := c2.Stop(); err != nil {
		t.Fatalf("stopping the clone's chain: %v", err)
	}
	if bad := qemuProblems(c2.Log()); len(bad) > 0 {
		t.Errorf("qemu-storage-daemon (clone) reported session trouble:\n%s", strings.Join(bad, "\n"))
	}

	// The journal that carried all of it verifies clean.
	if err := ls.Close(); err != nil {
		t.Errorf("target: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	storeOpen = false
	rep, err := journal.Verify(ctx, nil, filepath.Join(work, "data", "wal"))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("journal damaged: %+v", rep.Damage)
	}
	t.Logf("journal: %d segments, %d records", rep.Segments, rep.Records)
}
