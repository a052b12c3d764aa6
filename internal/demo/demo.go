// Package demo is Lockstep's first-run demonstration: a real PostgreSQL on a
// journaled volume served by Lockstep's iSCSI target, an
// application-consistent marker, a destructive mistake, and a restore of the
// service to the marker, verified row by row.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/chain"
)

// Names the demo uses.
const (
	Service = "demo-portal"
	Volume  = "demo-portal-db"
	IQN     = "iqn.2026-11.io.lockstep:demo-portal"
)

// ErrDirNotEmpty is returned when Options.Dir has content.
var ErrDirNotEmpty = errors.New("demo: working directory is not empty; give an empty or new one")

// Options configure a run; zero values take defaults.
type Options struct {
	// Dir is the working directory; it must be missing or empty. Empty
	// means a new temporary directory.
	Dir string
	// Keep leaves the temporary directory (store, logs) in place.
	Keep bool
	// Out receives the progress lines and the report (default io.Discard).
	Out io.Writer
	// VolumeSize in bytes (default 1 GiB).
	VolumeSize int64
	// RowsBefore are inserted before the marker, RowsAfter after it
	// (defaults 1000 and 250).
	RowsBefore, RowsAfter int
	// RPOTarget is the service's RPO (default 5 minutes).
	RPOTarget time.Duration
	// PostgresPort names PostgreSQL's Unix socket (default 54320).
	PostgresPort int
}

// Result is what the run found; Run returns it also on failure, filled as
// far as the run got.
type Result struct {
	Dir    string
	Marker store.Marker
	// MarkerRows and MarkerDigest describe orders at the marker.
	MarkerRows   int
	MarkerDigest string
	// RowsBeforeDamage is the row count just before the table was dropped.
	RowsBeforeDamage int
	// RestoredRows and RestoredDigest describe orders after the restore.
	RestoredRows   int
	RestoredDigest string
	Verified       bool
	// RestoreDuration runs from stopping PostgreSQL to the verified data;
	// RollDuration is the volume roll alone.
	RestoreDuration, RollDuration time.Duration
	BytesRolledBack               int64
	RPOAge                        time.Duration
	RPOTarget                     time.Duration
	RPOMet                        bool
	Segments                      int
	JournalBytes                  int64
	// Reconnects counts iSCSI reconnects qemu reported over both chains.
	Reconnects int
	Total      time.Duration
}

type run struct {
	ctx   context.Context
	opts  Options
	res   *Result
	out   io.Writer
	step  int
	start time.Time

	dir     string
	store   *store.Store
	vol     *store.Volume
	srv     *iscsi.Server
	portal  string
	chain   *chain.Chain
	pg      *chain.Postgres
	cleanup []func()
}

const steps = 21

// Run runs the demo. It returns an error unless the restored data matched
// the marker exactly. Everything it started is stopped before it returns,
// also on failure and when ctx is cancelled.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.VolumeSize == 0 {
		opts.VolumeSize = 1 << 30
	}
	if opts.RowsBefore <= 0 {
		opts.RowsBefore = 1000
	}
	if opts.RowsAfter <= 0 {
		opts.RowsAfter = 250
	}
	if opts.RPOTarget <= 0 {
		opts.RPOTarget = 5 * time.Minute
	}
	if opts.PostgresPort == 0 {
		opts.PostgresPort = 54320
	}
	r := &run{opts: opts, res: &Result{RPOTarget: opts.RPOTarget}, out: opts.Out, start: time.Now()}
	defer func() {
		r.teardown()
		r.res.Total = time.Since(r.start)
		if err != nil {
			fmt.Fprintf(r.out, "demo failed after %s; everything it started is stopped\n", round(r.res.Total))
		} else {
			fmt.Fprintf(r.out, "demo finished in %s\n", round(r.res.Total))
		}
	}()
	if err := chain.Available(); err != nil {
		return r.res, err
	}
	if err := chain.PostgresAvailable(); err != nil {
		return r.res, err
	}
	return r.res, r.main(ctx)
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// do runs one numbered step and prints its outcome and duration.
func (r *run) do(name string, fn func() (string, error)) error {
	r.step++
	if err := r.ctx.Err(); err != nil {
		return fmt.Errorf("interrupted before %s: %w", name, err)
	}
	t := time.Now()
	note, err := fn()
	d := round(time.Since(t))
	if err != nil && r.ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", err)
	}
	if err != nil {
		fmt.Fprintf(r.out, "[%2d/%d] %-44s FAILED (%s)\n", r.step, steps, name, d)
		return fmt.Errorf("%s: %w", name, err)
	}
	if note != "" {
		note = ": " + note
	}
	fmt.Fprintf(r.out, "[%2d/%d] %-44s ok %8s%s\n", r.step, steps, name, d, note)
	return nil
}

func (r *run) onCleanup(fn func()) { r.cleanup = append(r.cleanup, fn) }

func (r *run) teardown() {
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i]()
	}
	r.cleanup = nil
}

func (r *run) main(ctx context.Context) error {
	r.ctx = ctx
	if err := r.do("prepare working directory", r.prepareDir); err != nil {
		return err
	}
	if err := r.do(fmt.Sprintf("open store, create %s volume", size(r.opts.VolumeSize)), func() (string, error) { return r.openStore(ctx) }); err != nil {
		return err
	}
	if err := r.do("serve volume over iSCSI on loopback", r.serve); err != nil {
		return err
	}
	// Whichever chain is attached goes after PostgreSQL stopped (cleanups
	// run last-in first-out).
	r.onCleanup(func() {
		if r.chain != nil {
			if err := r.chain.Stop(); err != nil {
				fmt.Fprintf(r.out, "warning: tearing the chain down: %v\n", err)
			}
		}
	})
	if err := r.do("attach LUN (qemu-storage-daemon, FUSE, loop)", func() (string, error) { return r.attach(ctx) }); err != nil {
		return err
	}
	if err := r.do("mkfs.ext4", func() (string, error) { return "", r.chain.Mkfs(ctx) }); err != nil {
		return err
	}
	if err := r.do("mount", func() (string, error) { return r.mount(ctx) }); err != nil {
		return err
	}
	r.pg = &chain.Postgres{
		DataDir: filepath.Join(r.dir, "mnt", "pgdata"),
		SockDir: filepath.Join(r.dir, "run"),
		LogFile: filepath.Join(r.dir, "logs", "postgresql.log"),
		Port:    r.opts.PostgresPort,
	}
	r.onCleanup(func() {
		if err := r.pg.Stop(context.Background()); err != nil {
			fmt.Fprintf(r.out, "warning: stopping PostgreSQL: %v\n", err)
		}
	})
	if err := r.do("initdb on the volume", func() (string, error) { return "", r.pg.Init(ctx) }); err != nil {
		return err
	}
	if err := r.do("start PostgreSQL", func() (string, error) { return "", r.pg.Start(ctx) }); err != nil {
		return err
	}
	if err := r.do(fmt.Sprintf("create orders, insert %d rows", r.opts.RowsBefore), func() (string, error) { return r.load(ctx) }); err != nil {
		return err
	}
	if err := r.do("app-consistent marker (checkpoint, freeze)", func() (string, error) { return r.mark(ctx) }); err != nil {
		return err
	}
	if err := r.do(fmt.Sprintf("insert %d more rows", r.opts.RowsAfter), func() (string, error) { return r.more(ctx) }); err != nil {
		return err
	}
	if err := r.do("damage: DROP TABLE orders", func() (string, error) { return r.damage(ctx) }); err != nil {
		return err
	}
	restoreStart := time.Now()
	if err := r.do("restore: stop PostgreSQL", func() (string, error) { return "", r.pg.Stop(ctx) }); err != nil {
		return err
	}
	if err := r.do("restore: unmount", func() (string, error) { return "", r.chain.Unmount(ctx) }); err != nil {
		return err
	}
	if err := r.do("restore: detach the host from the volume", func() (string, error) { return r.detach() }); err != nil {
		return err
	}
	if err := r.do("restore: fence, roll volume to marker, unfence", func() (string, error) { return r.roll(ctx) }); err != nil {
		return err
	}
	if err := r.do("restore: attach LUN again", func() (string, error) { return r.attach(ctx) }); err != nil {
		return err
	}
	if err := r.do("restore: mount", func() (string, error) { return r.mount(ctx) }); err != nil {
		return err
	}
	if err := r.do("restore: start PostgreSQL (recovers)", func() (string, error) { return "", r.pg.Start(ctx) }); err != nil {
		return err
	}
	if err := r.do("verify orders against the marker", func() (string, error) { return r.verify(ctx) }); err != nil {
		return err
	}
	r.res.RestoreDuration = time.Since(restoreStart)
	if err := r.do("stop PostgreSQL, unmount, detach", func() (string, error) { return r.shutdown(ctx) }); err != nil {
		return err
	}
	r.report()
	return nil
}

func (r *run) prepareDir() (string, error) {
	if r.opts.Dir == "" {
		d, err := os.MkdirTemp("", "lockstep-demo-")
		if err != nil {
			return "", err
		}
		r.dir = d
		if !r.opts.Keep {
			r.onCleanup(func() { os.RemoveAll(d) })
		}
	} else {
		d, err := filepath.Abs(r.opts.Dir)
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
		if ents, err := os.ReadDir(d); err != nil {
			return "", err
		} else if len(ents) > 0 {
			return "", fmt.Errorf("%w: %q", ErrDirNotEmpty, d)
		}
		r.dir = d
	}
	r.res.Dir = r.dir
	// The postgres user must reach its socket and data directories.
	if err := os.Chmod(r.dir, 0o755); err != nil {
		return "", err
	}
	for _, sub := range []string{"logs", "run", "mnt"} {
		if err := os.MkdirAll(filepath.Join(r.dir, sub), 0o755); err != nil {
			return "", err
		}
	}
	return r.dir, nil
}

func (r *run) openStore(ctx context.Context) (string, error) {
	s, err := store.Open(ctx, filepath.Join(r.dir, "store"), store.Options{})
	if err != nil {
		return "", err
	}
	r.store = s
	r.onCleanup(func() { s.Close() })
	v, err := s.CreateVolume(ctx, store.VolumeSpec{Name: Volume, Size: r.opts.VolumeSize, BlockSize: 4096})
	if err != nil {
		return "", err
	}
	r.vol = v
	return fmt.Sprintf("volume %q for service %q", Volume, Service), nil
}

func (r *run) serve() (string, error) {
	lf, err := os.Create(filepath.Join(r.dir, "logs", "iscsi.log"))
	if err != nil {
		return "", err
	}
	r.onCleanup(func() { lf.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	r.portal = l.Addr().String()
	srv := iscsi.NewServer(iscsi.ServerConfig{Portal: r.portal, Logger: slog.New(slog.NewTextHandler(lf, nil))})
	if err := srv.AddTarget(iscsi.TargetConfig{IQN: IQN, LUNs: []iscsi.LUNConfig{{ID: 0, Device: r.vol}}}); err != nil {
		l.Close()
		return "", err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(context.Background(), l)
	}()
	r.srv = srv
	r.onCleanup(func() {
		srv.Close()
		<-done
	})
	return IQN + " at " + r.portal, nil
}

func (r *run) attach(ctx context.Context) (string, error) {
	c, err := chain.Start(ctx, chain.Config{Portal: r.portal, IQN: IQN, WorkDir: filepath.Join(r.dir, "chain"), BlockSize: 4096})
	if err != nil {
		return "", err
	}
	r.chain = c
	return c.Device(), nil
}

func (r *run) mount(ctx context.Context) (string, error) {
	mp := filepath.Join(r.dir, "mnt")
	return mp, r.chain.Mount(ctx, mp)
}

func (r *run) load(ctx context.Context) (string, error) {
	_, err := r.pg.SQL(ctx, fmt.Sprintf(`CREATE TABLE orders (
  id       serial PRIMARY KEY,
  customer text NOT NULL,
  amount   numeric(10,2) NOT NULL
);
INSERT INTO orders (customer, amount)
  SELECT 'customer-' || (g %% 97), round((g * 7.31)::numeric %% 1000, 2) FROM generate_series(1, %d) g;`, r.opts.RowsBefore))
	if err != nil {
		return "", err
	}
	n, _, err := r.digest(ctx)
	return fmt.Sprintf("%d rows", n), err
}

// digest is the row count and a hash over every row of orders.
func (r *run) digest(ctx context.Context) (int, string, error) {
	out, err := r.pg.SQL(ctx, `SELECT count(*) || '|' || coalesce(md5(string_agg(id || ':' || customer || ':' || amount, ',' ORDER BY id)), '') FROM orders`)
	if err != nil {
		return 0, "", err
	}
	cnt, sum, ok := strings.Cut(out, "|")
	n, cerr := strconv.Atoi(cnt)
	if !ok || cerr != nil {
		return 0, "", fmt.Errorf("unexpected digest output %q", out)
	}
	return n, sum, nil
}

// Evidence is what the PostgreSQL side of the marker records.
type Evidence struct {
	PostgresLSN string `json:"postgres_lsn"`
	Rows        int    `json:"rows"`
}

// QuiesceLimit bounds how long the file system stays frozen for a marker.
const QuiesceLimit = 10 * time.Second

func (r *run) mark(ctx context.Context) (string, error) {
	n, sum, err := r.digest(ctx)
	if err != nil {
		return "", err
	}
	m, ev, err := quiesceAndMark(ctx, r.pg, r.chain, n, func(ctx context.Context, ev []byte) (*store.Marker, error) {
		return r.store.Mark(ctx, store.MarkSpec{Service: Service, Class: store.ClassApp, Volumes: []string{Volume}, Evidence: ev})
	})
	if err != nil {
		return "", err
	}
	r.res.Marker, r.res.MarkerRows, r.res.MarkerDigest = *m, n, sum
	return fmt.Sprintf("%s, lsn %s, %d rows", m.ID, ev.PostgresLSN, n), nil
}

// quiesceAndMark is the marker protocol for one PostgreSQL on one file
// system: prepare (CHECKPOINT, so the freeze is short and recovery from the
// image replays little WAL), freeze (fsfreeze, which also flushes the file
// system down to the volume), mark, and thaw, which happens whatever failed.
// The freeze lasts at most QuiesceLimit.
func quiesceAndMark(ctx context.Context, pg *chain.Postgres, c *chain.Chain, rows int, mark func(ctx context.Context, evidence []byte) (*store.Marker, error)) (*store.Marker, Evidence, error) {
	if err := pg.Checkpoint(ctx); err != nil {
		return nil, Evidence{}, err
	}
	lsn, err := pg.CurrentWALLSN(ctx)
	if err != nil {
		return nil, Evidence{}, err
	}
	ev := Evidence{PostgresLSN: lsn, Rows: rows}
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, ev, err
	}
	qctx, cancel := context.WithTimeout(ctx, QuiesceLimit)
	defer cancel()
	if err := c.Freeze(qctx); err != nil {
		// A freeze that failed half-way may still hold writers.
		c.Thaw(ctx)
		return nil, ev, err
	}
	m, merr := mark(qctx, raw)
	if terr := c.Thaw(ctx); terr != nil {
		return nil, ev, errors.Join(merr, fmt.Errorf("thaw: %w", terr))
	}
	if merr != nil {
		return nil, ev, fmt.Errorf("marker: %w", merr)
	}
	return m, ev, nil
}

func (r *run) more(ctx context.Context) (string, error) {
	_, err := r.pg.SQL(ctx, fmt.Sprintf(`INSERT INTO orders (customer, amount)
  SELECT 'late-customer-' || g, g FROM generate_series(1, %d) g`, r.opts.RowsAfter))
	if err != nil {
		return "", err
	}
	n, _, err := r.digest(ctx)
	r.res.RowsBeforeDamage = n
	if err == nil && n != r.res.MarkerRows+r.opts.RowsAfter {
		err = fmt.Errorf("orders has %d rows, want %d", n, r.res.MarkerRows+r.opts.RowsAfter)
	}
	return fmt.Sprintf("%d rows now", n), err
}

func (r *run) damage(ctx context.Context) (string, error) {
	if _, err := r.pg.SQL(ctx, "DROP TABLE orders"); err != nil {
		return "", err
	}
	out, err := r.pg.SQL(ctx, "SELECT coalesce(to_regclass('orders')::text, 'gone')")
	if err != nil {
		return "", err
	}
	if out != "gone" {
		return "", fmt.Errorf("orders still exists after DROP (%q)", out)
	}
	return "table orders is gone", nil
}

func (r *run) detach() (string, error) {
	c := r.chain
	if err := c.Stop(); err != nil {
		return "", err
	}
	r.res.Reconnects += c.Reconnects()
	return "qemu logged out of the target", nil
}

func (r *run) roll(ctx context.Context) (string, error) {
	t := time.Now()
	r.vol.SetFenced(true)
	n, err := r.vol.RollTo(ctx, r.res.Marker.TS)
	r.vol.SetFenced(false)
	r.res.RollDuration = time.Since(t)
	r.res.BytesRolledBack = n
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s rewritten", mib(n)), nil
}

func (r *run) verify(ctx context.Context) (string, error) {
	n, sum, err := r.digest(ctx)
	if err != nil {
		return "", err
	}
	r.res.RestoredRows, r.res.RestoredDigest = n, sum
	if n != r.res.MarkerRows || sum != r.res.MarkerDigest {
		return "", fmt.Errorf("orders has %d rows (digest %s), the marker had %d rows (digest %s)", n, sum, r.res.MarkerRows, r.res.MarkerDigest)
	}
	r.res.Verified = true
	return fmt.Sprintf("%d rows, digest %s matches", n, sum[:12]), nil
}

func (r *run) shutdown(ctx context.Context) (string, error) {
	if err := r.pg.Stop(ctx); err != nil {
		return "", err
	}
	if err := r.chain.Unmount(ctx); err != nil {
		return "", err
	}
	c := r.chain
	if err := c.Stop(); err != nil {
		return "", err
	}
	r.res.Reconnects += c.Reconnects()
	return "", nil
}

func size(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (r *run) report() {
	res := r.res
	var newest *store.Marker
	for _, m := range r.store.Markers(Service) {
		if m.Class == store.ClassApp {
			newest = &m
		}
	}
	if newest != nil {
		res.RPOAge = time.Since(time.Unix(0, newest.TS))
		res.RPOMet = res.RPOAge <= res.RPOTarget
	}
	for _, s := range r.store.Journal().Segments() {
		res.Segments++
		res.JournalBytes += s.Size
	}
	status := "BREACHED"
	if res.RPOMet {
		status = "met"
	}
	m := res.Marker
	w := r.out
	fmt.Fprintf(w, "\nLockstep demo report (service %q)\n", Service)
	fmt.Fprintf(w, "  marker      %s at %s, class %s\n", m.ID, time.Unix(0, m.TS).UTC().Format(time.RFC3339Nano), m.Class)
	fmt.Fprintf(w, "  evidence    %s\n", m.Evidence)
	fmt.Fprintf(w, "  restore     %s from stopping PostgreSQL to verified data; volume roll %s, %s rolled back\n",
		round(res.RestoreDuration), round(res.RollDuration), mib(res.BytesRolledBack))
	fmt.Fprintf(w, "  verified    orders has %d rows as at the marker (it had %d before the damage); row digest matches\n", res.RestoredRows, res.RowsBeforeDamage)
	fmt.Fprintf(w, "  RPO         newest app-consistent marker is %s old, target %s: %s\n", round(res.RPOAge), res.RPOTarget, status)
	fmt.Fprintf(w, "  journal     %d segments, %s\n", res.Segments, mib(res.JournalBytes))
	fmt.Fprintf(w, "  iSCSI       %d initiator reconnects\n", res.Reconnects)
	if r.opts.Keep || r.opts.Dir != "" {
		fmt.Fprintf(w, "  files       %s (store, logs)\n", r.dir)
	}
}
