package restore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

const pgIQN = "iqn.2026-11.io.lockstep:restore-test"

// pgApp is a small sdk.Plugin over chain.Postgres, standing in for the
// built-in PostgreSQL plugin: Stop stops the server, unmounts and detaches
// the host from the volume (so no stale page cache survives the roll);
// Start attaches, mounts and starts (PostgreSQL recovers if it must).
type pgApp struct {
	fakeApp
	pg      *chain.Postgres
	portal  string
	workDir string
	mnt     string

	mu sync.Mutex
	c  *chain.Chain
}

func (a *pgApp) Stop(ctx context.Context, _ sdk.App) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c == nil {
		return nil
	}
	if err := a.pg.Stop(ctx); err != nil {
		return err
	}
	if err := a.c.Unmount(ctx); err != nil {
		return err
	}
	err := a.c.Stop()
	a.c = nil
	return err
}

func (a *pgApp) Start(ctx context.Context, _ sdk.App) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c == nil {
		c, err := chain.Start(ctx, chain.Config{Portal: a.portal, IQN: pgIQN, WorkDir: a.workDir, BlockSize: 4096})
		if err != nil {
			return err
		}
		a.c = c
		if err := c.Mount(ctx, a.mnt); err != nil {
			return err
		}
	}
	if a.pg.Running() {
		return nil
	}
	return a.pg.Start(ctx)
}

func (a *pgApp) Health(ctx context.Context, _ sdk.App) (sdk.Health, error) {
	out, err := a.pg.SQL(ctx, "SELECT count(*) FROM t")
	if err != nil {
		return sdk.Health{Detail: err.Error()}, nil
	}
	return sdk.Health{OK: true, Detail: out + " rows"}, nil
}

func (a *pgApp) chain() *chain.Chain {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.c
}

// pgRig is PostgreSQL on a Lockstep volume over the real chain.
type pgRig struct {
	t   *testing.T
	dir string
	st  *store.Store
	vol *store.Volume
	app *pgApp
	r   *restore.Restorer
}

func newPGRig(t *testing.T) *pgRig {
	if err := chain.Available(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if err := chain.PostgresAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lockstep-restore-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user reaches its dirs
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vol, err := st.CreateVolume(ctx, store.VolumeSpec{Name: "pg-data", Size: 512 << 20, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf, _ := os.Create(filepath.Join(dir, "iscsi.log"))
	srv := iscsi.NewServer(iscsi.ServerConfig{Portal: l.Addr().String(), Logger: slog.New(slog.NewTextHandler(lf, nil))})
	if err := srv.AddTarget(iscsi.TargetConfig{IQN: pgIQN, LUNs: []iscsi.LUNConfig{{ID: 0, Device: vol}}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(context.Background(), l) }()
	t.Cleanup(func() { srv.Close(); <-done; lf.Close() })

	app := &pgApp{portal: l.Addr().String(), workDir: filepath.Join(dir, "chain"), mnt: filepath.Join(dir, "mnt"),
		pg: &chain.Postgres{DataDir: filepath.Join(dir, "mnt", "pgdata"), SockDir: filepath.Join(dir, "run"), LogFile: filepath.Join(dir, "pg.log"), Port: 54391}}
	t.Cleanup(func() {
		if c := app.chain(); c != nil {
			app.pg.Stop(context.Background())
			c.Stop()
		}
	})
	c, err := chain.Start(ctx, chain.Config{Portal: app.portal, IQN: pgIQN, WorkDir: app.workDir, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	app.c = c
	if err := c.Mkfs(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Mount(ctx, app.mnt); err != nil {
		t.Fatal(err)
	}
	if err := app.pg.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := app.pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := app.pg.SQL(ctx, `CREATE TABLE t (seq bigint PRIMARY KEY, lsn pg_lsn NOT NULL DEFAULT pg_current_wal_insert_lsn(), at timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	svc := restore.Service{Name: "pg", Volumes: []string{"pg-data"}, Apps: []restore.App{{Plugin: app, App: sdk.App{Service: "pg", Name: "postgres", Volumes: []string{"pg-data"}}}}}
	r, err := restore.New(restore.Config{Dir: filepath.Join(dir, "restores"), Engine: restore.StoreEngine{Store: st}, Markers: restore.StoreMarkers{Store: st},
		Services: restore.ServiceMap{"pg": svc}, HealthWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &pgRig{t: t, dir: dir, st: st, vol: vol, app: app, r: r}
}

func (g *pgRig) connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", g.app.pg.SockDir, g.app.pg.Port))
}

// writer inserts rows 1, 2, 3, ... one at a time (autocommit) and records
// when each INSERT was issued and when its commit was acknowledged.
type writer struct {
	mu     sync.Mutex
	issued []time.Time // issued[i] is row i+1
	acked  []time.Time // zero when not acknowledged
	err    error
	stop   chan struct{}
	done   chan struct{}
}

func (g *pgRig) startWriter(from int) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	w.issued = make([]time.Time, from-1)
	w.acked = make([]time.Time, from-1)
	conn, err := g.connect(context.Background())
	if err != nil {
		g.t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		defer conn.Close(context.Background())
		for seq := from; ; seq++ {
			select {
			case <-w.stop:
				return
			default:
			}
			w.mu.Lock()
			w.issued = append(w.issued, time.Now())
			w.acked = append(w.acked, time.Time{})
			w.mu.Unlock()
			if _, err := conn.Exec(context.Background(), "INSERT INTO t (seq) VALUES ($1)", seq); err != nil {
				w.mu.Lock()
				w.err = fmt.Errorf("insert %d: %w", seq, err)
				w.mu.Unlock()
				return
			}
			w.mu.Lock()
			w.acked[seq-1] = time.Now()
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) halt(t *testing.T) {
	close(w.stop)
	<-w.done
	if w.err != nil {
		t.Fatal(w.err)
	}
}

// lastAckedBefore is the highest row acknowledged before at; with one
// sequential writer every lower row was acknowledged earlier still.
func (w *writer) lastAckedBefore(at time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for i, a := range w.acked {
		if !a.IsZero() && a.Before(at) {
			n = i + 1
		}
	}
	return n
}

// firstIssuedAfter is the lowest row whose INSERT was issued after at.
func (w *writer) firstIssuedAfter(at time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, is := range w.issued {
		if is.After(at) {
			return i + 1
		}
	}
	return len(w.issued) + 1
}

type pgMark struct {
	m              *store.Marker
	called, marked time.Time
	flushLSN       string
}

// mark is the marker protocol for one PostgreSQL on one file system:
// CHECKPOINT, fsfreeze (flushes the file system down to the volume), the
// flush LSN read while frozen (the evidence), Mark, thaw whatever happened.
func (g *pgRig) mark(ctx context.Context, probe *pgx.Conn) pgMark {
	t := g.t
	if err := g.app.pg.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	c := g.app.chain()
	if err := c.Freeze(ctx); err != nil {
		c.Thaw(ctx)
		t.Fatal(err)
	}
	var pm pgMark
	func() {
		defer func() {
			if err := c.Thaw(ctx); err != nil {
				t.Fatal(err)
			}
		}()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := probe.QueryRow(qctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&pm.flushLSN); err != nil {
			t.Fatalf("flush lsn while frozen: %v", err)
		}
		ev, _ := json.Marshal(map[string]any{"postgres": map[string]string{"flush_lsn": pm.flushLSN}})
		pm.called = time.Now()
		m, err := g.st.Mark(ctx, store.MarkSpec{Service: "pg", Class: store.ClassApp, Volumes: []string{"pg-data"}, Evidence: ev})
		pm.marked = time.Now()
		if err != nil {
			t.Fatal(err)
		}
		pm.m = m
	}()
	return pm
}

// table is what the table holds: row count, lowest and highest seq, and
// the highest insert LSN.
type table struct {
	n, min, max int
	maxLSN      string
}

func (g *pgRig) table(ctx context.Context) table {
	out, err := g.app.pg.SQL(ctx, "SELECT count(*) || '|' || coalesce(min(seq),0) || '|' || coalesce(max(seq),0) || '|' || coalesce(max(lsn)::text,'0/0') FROM t")
	if err != nil {
		g.t.Fatal(err)
	}
	f := strings.Split(out, "|")
	if len(f) != 4 {
		g.t.Fatalf("table summary %q", out)
	}
	var tb table
	tb.n, _ = strconv.Atoi(f[0])
	tb.min, _ = strconv.Atoi(f[1])
	tb.max, _ = strconv.Atoi(f[2])
	tb.maxLSN = f[3]
	return tb
}

// prefix fails unless the table holds exactly rows 1..max.
func (g *pgRig) prefix(desc string, tb table) {
	if tb.n != tb.max || (tb.n > 0 && tb.min != 1) {
		g.t.Fatalf("%s: table holds %d rows from %d to %d: not a prefix of the insert order", desc, tb.n, tb.min, tb.max)
	}
}

func parseLSN(s string) uint64 {
	hi, lo, _ := strings.Cut(s, "/")
	h, _ := strconv.ParseUint(hi, 16, 32)
	l, _ := strconv.ParseUint(lo, 16, 32)
	return h<<32 | l
}

// TestPostgresRestoreToMarker: a writer inserts rows continuously while
// markers are taken; the service is restored in place to the middle
// marker, PostgreSQL starts, and the table holds exactly a prefix of the
// rows, bounded on both sides by the marker; Undo brings the later rows
// back. Then a crash-consistent restore to an arbitrary instant: PostgreSQL
// recovers by itself and the table is bounded by that instant.
func TestPostgresRestoreToMarker(t *testing.T) {
	g := newPGRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	probe, err := g.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := g.startWriter(1)
	var marks []pgMark
	for range 3 {
		time.Sleep(800 * time.Millisecond)
		marks = append(marks, g.mark(ctx, probe))
	}
	time.Sleep(800 * time.Millisecond)
	probe.Close(ctx)
	w.halt(t)
	before := g.table(ctx)
	g.prefix("before the restore", before)
	total := w.lastAckedBefore(time.Now())
	if before.max < total {
		t.Fatalf("table has %d rows, %d were acknowledged", before.max, total)
	}
	mid := marks[1]
	lo, hi := w.lastAckedBefore(mid.called), w.firstIssuedAfter(mid.marked)
	t.Logf("rows: %d acknowledged in all; middle marker %s: rows <= %d acknowledged before Mark was called, rows >= %d issued after it returned; flush LSN %s",
		total, mid.m.ID, lo, hi, mid.flushLSN)
	if lo < 10 || hi > total {
		t.Fatalf("the writer did too little around the marker (lo %d, hi %d, total %d)", lo, hi, total)
	}

	plan, err := g.r.Plan(ctx, "pg", restore.Target{Marker: mid.m.ID})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan: marker %s evidence %s, %d bytes to roll back, estimate %s", plan.Marker.ID, plan.Marker.Evidence, plan.Bytes, plan.Estimate)
	if plan.Bytes <= 0 || !strings.Contains(string(plan.Marker.Evidence), mid.flushLSN) {
		t.Fatalf("plan %+v", plan)
	}
	start := time.Now()
	rec, err := g.r.Restore(ctx, "pg", restore.Target{Marker: mid.m.ID}, nil)
	if err != nil {
		t.Fatalf("%v\nserver log: %s", err, tail(g.app.pg.LogFile))
	}
	t.Logf("restore took %s: %+v", time.Since(start).Round(time.Millisecond), rec.Rolled)
	got := g.table(ctx)
	g.prefix("after the restore", got)
	// Every row acknowledged before the marker is there; no row whose
	// INSERT was issued after the marker returned is. A row in flight
	// across the marker may be either (its commit may or may not have
	// reached the volume before the freeze), so that is the strongest
	// true statement; and no row present was inserted after the flush LSN
	// recorded while frozen.
	if got.max < lo || got.max >= hi {
		t.Fatalf("restored table ends at row %d; want >= %d (acknowledged before the marker) and < %d (issued after it)", got.max, lo, hi)
	}
	if parseLSN(got.maxLSN) > parseLSN(mid.flushLSN) {
		t.Fatalf("restored row inserted at LSN %s, after the marker's flush LSN %s", got.maxLSN, mid.flushLSN)
	}
	t.Logf("after restore: rows 1..%d (in flight across the marker: %d..%d)", got.max, lo+1, hi-1)

	if _, err := g.r.Undo(ctx, "pg", nil); err != nil {
		t.Fatalf("%v\nserver log: %s", err, tail(g.app.pg.LogFile))
	}
	undone := g.table(ctx)
	g.prefix("after undo", undone)
	if undone.max != before.max {
		t.Fatalf("after undo the table ends at row %d, before the restore it ended at %d", undone.max, before.max)
	}

	// Crash-consistent: more rows, then an instant in the middle of them.
	w2 := g.startWriter(undone.max + 1)
	time.Sleep(1500 * time.Millisecond)
	at := time.Now()
	time.Sleep(1500 * time.Millisecond)
	w2.halt(t)
	lo2, hi2 := w2.lastAckedBefore(at), w2.firstIssuedAfter(at)
	logBefore, _ := os.ReadFile(g.app.pg.LogFile)
	if _, err := g.r.Restore(ctx, "pg", restore.Target{Time: at, CrashConsistent: true}, nil); err != nil {
		t.Fatalf("%v\nserver log: %s", err, tail(g.app.pg.LogFile))
	}
	cc := g.table(ctx)
	g.prefix("after the crash-consistent restore", cc)
	if cc.max < lo2 || cc.max >= hi2 || lo2 <= undone.max {
		t.Fatalf("crash-consistent restore to %s: table ends at row %d; want >= %d (acknowledged before) and < %d (issued after)", at.Format(time.RFC3339Nano), cc.max, lo2, hi2)
	}
	log, _ := os.ReadFile(g.app.pg.LogFile)
	if !strings.Contains(string(log[len(logBefore):]), "not properly shut down") {
		t.Errorf("server log does not show crash recovery after the crash-consistent restore")
	}
	t.Logf("crash-consistent: rows 1..%d (acknowledged before the instant: %d, issued after: from %d)", cc.max, lo2, hi2)
}

func tail(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return errors.Unwrap(err).Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}
