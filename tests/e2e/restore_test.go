package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockstep-io/lockstep/internal/syncbuf"
)

// TestRestoreTwoDatabases restores a service of PostgreSQL and MariaDB on
// three volumes (the logs of both on their own) in place to one scheduled
// marker, taken while a writer kept a cross-database invariant: order i is
// committed in PostgreSQL and acknowledged before payment i is written to
// MariaDB. After the restore both databases start, every payment has its
// order, at most the one order in flight lacks its payment, and the rows
// written after the marker are gone.
func TestRestoreTwoDatabases(t *testing.T) { restoreTwoDatabases(t, false) }

// TestRestoreTwoDatabasesCrashConsistent restores the same service to an
// arbitrary instant while the writer runs (--crash-consistent): both
// databases recover by themselves, every payment acknowledged before the
// instant is there with its order, and no payment lacks its order.
func TestRestoreTwoDatabasesCrashConsistent(t *testing.T) { restoreTwoDatabases(t, true) }

func restoreTwoDatabases(t *testing.T, crash bool) {
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := startShop(t, ctx, s)
	// A scheduled marker taken while the writer runs, with writes on both
	// sides of it.
	m := w.scheduledMarker(t, s)
	// The crash-consistent target: an instant in the middle of the writes,
	// with the payments acknowledged before it.
	w.waitMore(t, 25)
	ackedBeforeCut := w.acked.Load()
	cut := time.Now()
	w.waitMore(t, 25)
	written := w.stop(t)
	if crash {
		restoreCrash(t, ctx, s, cut, ackedBeforeCut, written)
		return
	}
	t.Logf("writer acknowledged %d order/payment pairs; restoring to %s (%s), pg lsn %v, mariadb gtid %v", written, m.ID,
		m.Time.Format(time.RFC3339Nano), m.evidence("pg")["lsn"], m.evidence("mariadb")["gtid_binlog_pos"])

	// The plan changes nothing and names the marker.
	if out := s.d.must(t, "restore", service, "--to", m.ID, "--plan"); !strings.Contains(out, m.ID) {
		t.Fatalf("restore --plan does not name %s:\n%s", m.ID, out)
	}
	s.myDB.SetMaxIdleConns(0) // MariaDB is about to go away
	started := time.Now()
	out := s.d.mustStdout(t, "restore", service, "--to", m.ID, "--yes", "--json")
	var rec struct {
		State   string   `json:"state"`
		Error   string   `json:"error"`
		Healthy []string `json:"healthy"`
		Rolled  map[string]struct {
			Bytes int64 `json:"bytes"`
		} `json:"rolled"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("restore --json: %v\n%s", err, out)
	}
	if rec.Error != "" || len(rec.Rolled) != 3 {
		t.Fatalf("restore: state %q error %q rolled %v\n%s", rec.State, rec.Error, rec.Rolled, out)
	}
	t.Logf("restored in %s: state %s, healthy %v", time.Since(started).Round(time.Millisecond), rec.State, rec.Healthy)

	// Both databases are up again and hold the marker's cut.
	checkCut(t, ctx, s.dbs(), written)
	// MariaDB's binary log ends exactly where the marker's evidence says:
	// nothing committed under the read lock, everything before it kept.
	var gtid string
	if err := s.myDB.QueryRowContext(ctx, "SELECT @@global.gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	if want, _ := m.evidence("mariadb")["gtid_binlog_pos"].(string); gtid != want {
		t.Fatalf("restored MariaDB at GTID %q, the marker's evidence says %q", gtid, want)
	}
	takesWrites(t, ctx, s.dbs())
}

// TestRestoreKilledAndResumed kills the daemon (SIGKILL) in the middle of
// an in-place restore of the two-database service: every volume rolled,
// every application stopped, the file systems unmounted, the gate app's
// start holding. The restarted daemon names the unfinished restore, and
// `restore --resume` finishes it: both databases start and hold the
// marker's cut. `restore --undo` then brings back the later rows.
func TestRestoreKilledAndResumed(t *testing.T) {
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := startShop(t, ctx, s)
	m := w.scheduledMarker(t, s)
	w.waitMore(t, 25)
	written := w.stop(t)

	slow := filepath.Join(s.gateDir, "slow-start")
	if err := os.WriteFile(slow, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(slow) })
	s.myDB.SetMaxIdleConns(0) // MariaDB is about to go away
	cli := exec.Command(s.d.bin, "restore", service, "--to", m.ID, "--yes", "--data="+s.d.data)
	cli.Env = cleanEnv()
	var cliOut syncbuf.Buffer
	cli.Stdout, cli.Stderr = &cliOut, &cliOut
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Process.Kill(); cli.Wait() })
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(s.gateDir, "in-start")); err == nil {
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("the restore never reached the applications' start:\n%s", cliOut.String())
		}
	}
	s.d.kill()
	if err := cli.Wait(); err == nil {
		t.Fatalf("the CLI says the restore ended although its daemon was killed:\n%s", cliOut.String())
	}
	os.Remove(slow)
	s.d.start(t)
	var rs []struct{ ID, State string }
	if err := json.Unmarshal([]byte(s.d.mustStdout(t, "restores", service, "--json")), &rs); err != nil || len(rs) == 0 {
		t.Fatalf("restores: %v %+v", err, rs)
	}
	last := rs[len(rs)-1]
	if last.State == "done" {
		t.Fatalf("restore %s is done although its daemon was killed before the apps started", last.ID)
	}
	if log := readFile(s.d.logPath); !strings.Contains(log, "lockstep restore --resume "+last.ID) {
		t.Fatalf("the restarted daemon does not name the unfinished restore %s", last.ID)
	}
	if out := s.d.must(t, "restore", "--resume", last.ID); !strings.Contains(out, ": done;") {
		t.Fatalf("restore --resume %s:\n%s", last.ID, out)
	}
	checkCut(t, ctx, s.dbs(), written)
	takesWrites(t, ctx, s.dbs())

	// --undo returns the service to just before the restore: every pair
	// the writer had, and not the write made after the restore.
	s.myDB.SetMaxIdleConns(0)
	s.d.must(t, "restore", service, "--undo", "--yes")
	o, p := s.dbs().ids(t, ctx)
	if slices.Contains(o, takesWritesID) || slices.Contains(p, takesWritesID) || !contiguous(o) || !contiguous(p) ||
		int64(len(p)) < written || len(o) < len(p) {
		t.Fatalf("after --undo: orders %s, payments %s; the writer had %d", span(o), span(p), written)
	}
	t.Logf("after --undo: orders %s, payments %s (the writer had %d)", span(o), span(p), written)
}

// shopWriter keeps the cross-database invariant while it runs: order i is
// committed in PostgreSQL and acknowledged before payment i is written to
// MariaDB.
type shopWriter struct {
	acked  atomic.Int64 // pairs acknowledged
	since  time.Time
	cancel context.CancelFunc
	done   chan error
}

// scheduledMarker waits for the first scheduled application-consistent
// marker taken while w runs, so that writes lie on both sides of it.
func (w *shopWriter) scheduledMarker(t *testing.T, s *stack) marker {
	t.Helper()
	return s.d.waitMarker(t, service, w.since.Add(time.Second), 40*time.Second, func(m marker) bool {
		return m.Trigger == "schedule" && m.Class == "app"
	})
}

// startShop creates the tables, applies the apps (a marker every 2 s) and
// starts the writer.
func startShop(t *testing.T, ctx context.Context, s *stack) *shopWriter {
	t.Helper()
	if err := s.pgExec(ctx, "CREATE TABLE orders (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.myDB.ExecContext(ctx, "CREATE TABLE payments (order_id bigint PRIMARY KEY, at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	s.applyApps(t, "2s", "8s")
	w := &shopWriter{done: make(chan error, 1), since: time.Now()}
	wctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	go func() {
		w.done <- func() error {
			pg, err := pgx.Connect(wctx, s.pgDSN())
			if err != nil {
				return err
			}
			defer pg.Close(context.Background())
			for i := int64(1); ; i++ {
				if wctx.Err() != nil {
					return nil
				}
				if _, err := pg.Exec(wctx, "INSERT INTO orders (id) VALUES ($1)", i); err != nil {
					return ignoreCancel(wctx, fmt.Errorf("order %d: %w", i, err))
				}
				if _, err := s.myDB.ExecContext(wctx, "INSERT INTO payments (order_id) VALUES (?)", i); err != nil {
					return ignoreCancel(wctx, fmt.Errorf("payment %d: %w", i, err))
				}
				w.acked.Store(i)
			}
		}()
	}()
	return w
}

// waitMore waits until n more pairs are acknowledged; the writer stopping
// fails the test.
func (w *shopWriter) waitMore(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for from := w.acked.Load(); w.acked.Load() < from+n; {
		select {
		case err := <-w.done:
			t.Fatalf("writer stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("writer made %d of %d pairs in a minute", w.acked.Load()-from, n)
		}
	}
}

// stop stops the writer and returns the number of pairs acknowledged.
func (w *shopWriter) stop(t *testing.T) int64 {
	t.Helper()
	w.cancel()
	if err := <-w.done; err != nil {
		t.Fatalf("writer: %v", err)
	}
	return w.acked.Load()
}

// restoreCrash restores the service to the exact instant cut.
func restoreCrash(t *testing.T, ctx context.Context, s *stack, cut time.Time, ackedBefore, written int64) {
	t.Helper()
	at := cut.UTC().Format(time.RFC3339Nano)
	t.Logf("writer acknowledged %d pairs, %d before %s; restoring there crash-consistently", written, ackedBefore, at)
	s.myDB.SetMaxIdleConns(0)
	out := s.d.mustStdout(t, "restore", service, "--to", at, "--crash-consistent", "--yes", "--json")
	var rec struct {
		Error  string         `json:"error"`
		Rolled map[string]any `json:"rolled"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || rec.Error != "" || len(rec.Rolled) != 3 {
		t.Fatalf("restore --crash-consistent: %v %q\n%s", err, rec.Error, out)
	}
	_, payments := checkCut(t, ctx, s.dbs(), written)
	if int64(len(payments)) < ackedBefore {
		t.Fatalf("%d payments after a restore to an instant before which %d were acknowledged", len(payments), ackedBefore)
	}
	takesWrites(t, ctx, s.dbs())
}

// checkCut reads both tables after a restore and checks the invariant:
// a prefix of the writer's history, every payment with its order, fewer
// rows than were written.
func checkCut(t *testing.T, ctx context.Context, d dbs, written int64) (orders, payments []int64) {
	t.Helper()
	orders, payments = d.ids(t, ctx)
	t.Logf("after the restore: %d orders, %d payments (the writer had %d)", len(orders), len(payments), written)
	if len(payments) == 0 || int64(len(orders)) >= written {
		t.Fatalf("restore did not go back to the marker: %d orders, %d payments, %d written", len(orders), len(payments), written)
	}
	have := map[int64]bool{}
	for _, id := range orders {
		have[id] = true
	}
	for _, id := range payments {
		if !have[id] {
			t.Fatalf("payment %d without its order after the restore (orders 1..%d)", id, len(orders))
		}
	}
	if !contiguous(orders) || !contiguous(payments) || len(orders)-len(payments) > 1 || len(orders) < len(payments) {
		t.Fatalf("restored cut is not a prefix of the writer's history: orders %s, payments %s", span(orders), span(payments))
	}
	return orders, payments
}

// takesWrites checks that both databases accept writes after a restore.
func takesWrites(t *testing.T, ctx context.Context, d dbs) {
	t.Helper()
	if err := pgExec(ctx, d.pgDSN, "INSERT INTO orders (id) VALUES ($1)", takesWritesID); err != nil {
		t.Fatalf("PostgreSQL after the restore: %v", err)
	}
	if _, err := d.my.ExecContext(ctx, "INSERT INTO payments (order_id) VALUES (?)", takesWritesID); err != nil {
		t.Fatalf("MariaDB after the restore: %v", err)
	}
}

// takesWritesID is the pair takesWrites writes, far above the writer's.
const takesWritesID = 999999

// dbs are the two databases of one copy of the service.
type dbs struct {
	pgDSN string
	my    *sql.DB
}

func (s *stack) dbs() dbs { return dbs{pgDSN: s.pgDSN(), my: s.myDB} }

// ids reads the order ids from PostgreSQL and the payment ids from MariaDB,
// both sorted.
func (d dbs) ids(t *testing.T, ctx context.Context) (orders, payments []int64) {
	t.Helper()
	c, err := pgx.Connect(ctx, d.pgDSN)
	if err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, "SELECT id FROM orders ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	if orders, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		t.Fatal(err)
	}
	myRows, err := d.my.QueryContext(ctx, "SELECT order_id FROM payments ORDER BY order_id")
	if err != nil {
		t.Fatalf("MariaDB: %v", err)
	}
	defer myRows.Close()
	for myRows.Next() {
		var id int64
		if err := myRows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		payments = append(payments, id)
	}
	if err := myRows.Err(); err != nil {
		t.Fatal(err)
	}
	return orders, payments
}

func ignoreCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// contiguous reports whether ids (sorted) are 1..len(ids).
func contiguous(ids []int64) bool {
	if !sort.SliceIsSorted(ids, func(i, j int) bool { return ids[i] < ids[j] }) {
		return false
	}
	for i, id := range ids {
		if id != int64(i+1) {
			return false
		}
	}
	return true
}

func span(ids []int64) string {
	if len(ids) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d rows, %d..%d", len(ids), ids[0], ids[len(ids)-1])
}
