// Package demo is Lockstep's first-run demonstration, run through the same
// path as production: a daemon (store, iSCSI target, orchestrator, API) on a
// temporary directory with a demo policy; a real PostgreSQL on the policy's
// volume, attached through qemu's iSCSI initiator; markers taken through the
// API by the built-in plugins; a destructive mistake; and a restore of the
// whole service through the API, verified row by row.
//
// The daemon launches its plugins as child processes of the running
// executable (`lockstep plugin serve-builtin NAME`), so Run works from the
// lockstep binary, or from a test binary whose TestMain serves that command.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/daemon"
)

// ErrDirNotEmpty is returned when Options.Dir has content.
var ErrDirNotEmpty = errors.New("demo: working directory is not empty; give an empty or new one")

// Options configure a run; zero values take defaults.
type Options struct {
	// Dir is the working directory; it must be missing or empty. Empty
	// means a new temporary directory.
	Dir string
	// Keep leaves the temporary directory (data directory, logs) in place.
	Keep bool
	// Out receives the progress lines and the report (default io.Discard).
	Out io.Writer
	// VolumeSize in bytes (default 1 GiB).
	VolumeSize int64
	// RowsBefore are inserted before the first marker, RowsAfter between
	// the first and the second (defaults 1000 and 250).
	RowsBefore, RowsAfter int
	// PostgresPort names PostgreSQL's Unix socket (default 54320); no TCP
	// port is opened.
	PostgresPort int
}

// Result is what the run found; Run returns it also on failure, filled as
// far as the run got.
type Result struct {
	Dir string
	// Markers are the markers the demo took through the API, in order,
	// with the row count and digest of orders at each.
	Markers       []api.Marker
	MarkerRows    []int
	MarkerDigests []string
	// RowsBeforeDamage is the row count just before the table was dropped.
	RowsBeforeDamage int
	// Plan is the daemon's restore plan; Record the restore's record.
	Plan   *api.RestorePlan
	Record *api.RestoreRecord
	// RestoredRows and RestoredDigest describe orders after the restore.
	RestoredRows   int
	RestoredDigest string
	Verified       bool
	// RestoreDuration is the restore as the client saw it, from the
	// request to the final line.
	RestoreDuration time.Duration
	BytesRolledBack int64
	// RPO of the service as the daemon evaluates it at the end.
	RPOAge, RPOTarget time.Duration
	RPOMet            bool
	JournalSegments   int
	JournalBytes      int64
	// Reconnects counts iSCSI reconnects qemu reported.
	Reconnects int
	Total      time.Duration
}

const steps = 12

type run struct {
	ctx   context.Context
	opts  Options
	res   *Result
	out   io.Writer
	start time.Time

	// the step being run, for sub-lines
	outMu    sync.Mutex
	step     int
	stepName string
	header   bool

	dir     string
	paths   policyPaths
	c       *api.Client
	portal  string
	iqn     string
	chain   *chain.Chain
	pg      *chain.Postgres
	cleanup []cleanup
}

// cleanup is one teardown step and what it leaves done.
type cleanup struct {
	done string
	fn   func()
}

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
	if opts.PostgresPort == 0 {
		opts.PostgresPort = 54320
	}
	r := &run{ctx: ctx, opts: opts, res: &Result{}, out: opts.Out, start: time.Now()}
	if err := chain.Available(); err != nil {
		return r.res, fmt.Errorf("demo: cannot run on this machine: %w", err)
	}
	if err := chain.PostgresAvailable(); err != nil {
		return r.res, fmt.Errorf("demo: cannot run on this machine: %w (`make demo` installs what the demo needs)", err)
	}
	defer func() {
		r.teardown(err != nil)
		r.res.Total = time.Since(r.start)
		if r.step == 0 {
			return // nothing started; the error says why
		}
		if err != nil {
			fmt.Fprintf(r.out, "demo FAILED after %s; everything it started is stopped\n", round(r.res.Total))
		} else {
			fmt.Fprintf(r.out, "demo finished in %s\n", round(r.res.Total))
		}
	}()
	return r.res, r.main()
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
	r.stepName, r.header = name, false
	if err := r.ctx.Err(); err != nil {
		return fmt.Errorf("interrupted before %s: %w", name, err)
	}
	t := time.Now()
	note, err := fn()
	d := round(time.Since(t))
	if err != nil && r.ctx.Err() != nil {
		// The step's own error is a consequence of the interruption.
		err = fmt.Errorf("interrupted (%w)", r.ctx.Err())
	}
	r.outMu.Lock()
	defer r.outMu.Unlock()
	status := "ok"
	if err != nil {
		status, note = "FAILED", ""
	}
	if note != "" {
		note = "  " + note
	}
	if r.header {
		fmt.Fprintf(r.out, "        %s %s%s\n", status, d, note)
	} else {
		fmt.Fprintf(r.out, "[%2d/%d] %-46s %-6s %7s%s\n", r.step, steps, name, status, d, note)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// sub prints a line inside the running step, after the step's header.
func (r *run) sub(format string, args ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	if !r.header {
		fmt.Fprintf(r.out, "[%2d/%d] %s\n", r.step, steps, r.stepName)
		r.header = true
	}
	fmt.Fprintf(r.out, "        "+format+"\n", args...)
}

// onCleanup registers fn to run at teardown, last registered first; done
// says what it leaves done, for the teardown line.
func (r *run) onCleanup(done string, fn func()) {
	r.cleanup = append(r.cleanup, cleanup{done: done, fn: fn})
}

func (r *run) teardown(failed bool) {
	if len(r.cleanup) == 0 {
		return
	}
	t := time.Now()
	var done []string
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i].fn()
		if r.cleanup[i].done != "" {
			done = append(done, r.cleanup[i].done)
		}
	}
	r.cleanup = nil
	switch {
	case r.dir == "":
	case r.opts.Keep || r.opts.Dir != "":
		done = append(done, "files kept in "+r.dir)
	case failed:
		done[len(done)-1] += " (run with --keep to keep its logs)"
	}
	fmt.Fprintf(r.out, "cleaned up in %s: %s\n", round(time.Since(t)), strings.Join(done, ", "))
}

func (r *run) main() error {
	fmt.Fprintf(r.out, "Lockstep demo: a real PostgreSQL on a Lockstep volume, protected, damaged and restored.\n\n")
	if err := r.prepareDir(); err != nil {
		return err
	}
	if err := r.do("start the daemon with the demo policy", r.startDaemon); err != nil {
		return err
	}
	if err := r.do("attach the volume: qemu iSCSI, FUSE, loop", r.attach); err != nil {
		return err
	}
	if err := r.do("mkfs.ext4 and mount", r.mkfs); err != nil {
		return err
	}
	if err := r.do("initdb and start PostgreSQL on the volume", r.startPostgres); err != nil {
		return err
	}
	if err := r.do(fmt.Sprintf("create table orders, insert %d rows", r.opts.RowsBefore), r.load); err != nil {
		return err
	}
	if err := r.do("marker 1 through the API", r.mark); err != nil {
		return err
	}
	if err := r.do(fmt.Sprintf("insert %d more rows", r.opts.RowsAfter), r.more); err != nil {
		return err
	}
	if err := r.do("marker 2 through the API", r.mark); err != nil {
		return err
	}
	var damagedAt time.Time
	if err := r.do("damage: DROP TABLE orders", func() (string, error) {
		damagedAt = time.Now()
		return r.damage()
	}); err != nil {
		return err
	}
	// Just before the damage: the daemon picks the newest
	// application-consistent marker at or before that time.
	req := api.RestoreRequest{At: damagedAt.UTC().Format(time.RFC3339Nano)}
	if err := r.do("plan a restore to just before the damage", func() (string, error) { return r.plan(req) }); err != nil {
		return err
	}
	if err := r.do(fmt.Sprintf("restore service %q in place", Service), func() (string, error) { return r.restore(req) }); err != nil {
		return err
	}
	if err := r.do("verify orders against marker 2", r.verify); err != nil {
		return err
	}
	r.report()
	return nil
}

// prepareDir makes the working directory and its layout:
//
//	data/     the daemon's data directory (store, catalog, API token)
//	mnt/      the volume's ext4 mount point; PostgreSQL's data in mnt/pgdata
//	chain/    qemu-storage-daemon's FUSE export and log
//	run/      PostgreSQL's Unix socket
//	fsfreeze/ the fsfreeze plugin's record of what it unmounted
//	logs/     daemon.log, postgresql.log
func (r *run) prepareDir() error {
	if r.opts.Dir == "" {
		d, err := os.MkdirTemp("", "lockstep-demo-")
		if err != nil {
			return err
		}
		r.dir = d
	} else {
		d, err := filepath.Abs(r.opts.Dir)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if ents, err := os.ReadDir(d); err != nil {
			return err
		} else if len(ents) > 0 {
			return fmt.Errorf("%w: %q", ErrDirNotEmpty, d)
		}
		r.dir = d
	}
	r.res.Dir = r.dir
	if r.opts.Dir == "" && !r.opts.Keep {
		d := r.dir
		r.onCleanup(d+" removed", func() {
			// Never remove through a file system still mounted.
			for _, mp := range []string{filepath.Join(d, "mnt"), chain.ExportFile(filepath.Join(d, "chain"))} {
				if chain.Mounted(mp) {
					fmt.Fprintf(r.out, "warning: %s is still mounted; %s left in place\n", mp, d)
					return
				}
			}
			os.RemoveAll(d)
		})
	}
	// The postgres user must reach its socket and data directories.
	if err := os.Chmod(r.dir, 0o755); err != nil {
		return err
	}
	for _, sub := range []string{"logs", "run", "mnt", "fsfreeze"} {
		if err := os.MkdirAll(filepath.Join(r.dir, sub), 0o755); err != nil {
			return err
		}
	}
	r.paths = policyPaths{
		Size:       r.opts.VolumeSize,
		ChainDir:   filepath.Join(r.dir, "chain"),
		MountPoint: filepath.Join(r.dir, "mnt"),
		StateDir:   filepath.Join(r.dir, "fsfreeze"),
		SockDir:    filepath.Join(r.dir, "run"),
		Port:       r.opts.PostgresPort,
		DataDir:    filepath.Join(r.dir, "mnt", "pgdata"),
		LogFile:    filepath.Join(r.dir, "logs", "postgresql.log"),
	}
	where := "removed at the end"
	if r.opts.Keep || r.opts.Dir != "" {
		where = "kept at the end"
	}
	fmt.Fprintf(r.out, "Working directory %s (%s).\n\n", r.dir, where)
	return nil
}

func (r *run) startDaemon() (string, error) {
	text, err := renderPolicy(r.paths)
	if err != nil {
		return "", err
	}
	if _, err := checkPolicy(text); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(r.dir, PolicyFile), []byte(text), 0o644); err != nil {
		return "", err
	}
	lf, err := os.Create(filepath.Join(r.dir, "logs", "daemon.log"))
	if err != nil {
		return "", err
	}
	dataDir := filepath.Join(r.dir, "data")
	// The daemon lives on its own context: on Ctrl-C it must outlive
	// PostgreSQL and the mount, which write to its volume as they stop.
	dctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(dctx, daemon.Config{
		DataDir:   dataDir,
		Policy:    policySources(text),
		ISCSIAddr: "127.0.0.1:0",
		Listen:    "127.0.0.1:0",
		Logger:    slog.New(slog.NewTextHandler(lf, nil)),
	})
	if err != nil {
		cancel()
		lf.Close()
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve(dctx) }()
	r.onCleanup("daemon stopped", func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(r.out, "warning: daemon: %v\n", err)
			}
		case <-time.After(time.Minute):
			fmt.Fprintf(r.out, "warning: the daemon did not stop within a minute\n")
		}
		if err := d.Close(); err != nil {
			fmt.Fprintf(r.out, "warning: closing the daemon: %v\n", err)
		}
		lf.Close()
	})
	// Find the daemon as every CLI command does: the address and token
	// files of its data directory.
	c, err := r.locate(dataDir, done)
	if err != nil {
		return "", err
	}
	r.c = c
	vols, err := c.Volumes(r.ctx)
	if err != nil {
		return "", err
	}
	for _, v := range vols {
		if v.Name == StoreVolume {
			r.iqn = v.IQN
		}
	}
	if r.iqn == "" {
		return "", fmt.Errorf("the daemon serves no volume %q", StoreVolume)
	}
	st, err := c.Status(r.ctx)
	if err != nil {
		return "", err
	}
	r.portal = st.Portal
	return fmt.Sprintf("volume %s (%s) as %s at %s", StoreVolume, size(r.opts.VolumeSize), r.iqn, r.portal), nil
}

// locate waits for the daemon's address file and returns a client that
// reached it.
func (r *run) locate(dataDir string, served chan error) (*api.Client, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Until Serve wrote the address file, Locate would fall back to
		// the default address, where another daemon may listen.
		_, err := os.Stat(filepath.Join(dataDir, api.AddrFile))
		if err == nil {
			var c *api.Client
			if c, err = api.Locate("", "", dataDir); err == nil {
				if _, err = c.Status(r.ctx); err == nil {
					return c, nil
				}
			}
		}
		select {
		case serr := <-served:
			served <- serr
			return nil, fmt.Errorf("the daemon stopped serving: %v", serr)
		case <-r.ctx.Done():
			return nil, r.ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the daemon's API did not answer: %w", err)
		}
	}
}

func (r *run) attach() (string, error) {
	// The chain goes after PostgreSQL stopped (cleanups run last-in
	// first-out), before the daemon.
	r.onCleanup("file system unmounted, loop device and qemu-storage-daemon gone", func() {
		if r.chain == nil {
			return
		}
		if err := r.chain.Stop(); err != nil {
			fmt.Fprintf(r.out, "warning: tearing the chain down: %v\n", err)
		}
		r.res.Reconnects = r.chain.Reconnects()
	})
	c, err := chain.Start(r.ctx, chain.Config{Portal: r.portal, IQN: r.iqn, WorkDir: r.paths.ChainDir, BlockSize: 4096})
	if err != nil {
		return "", err
	}
	r.chain = c
	return c.Device(), nil
}

func (r *run) mkfs() (string, error) {
	if err := r.chain.Mkfs(r.ctx); err != nil {
		return "", err
	}
	if err := r.chain.Mount(r.ctx, r.paths.MountPoint); err != nil {
		return "", err
	}
	return r.paths.MountPoint, nil
}

func (r *run) startPostgres() (string, error) {
	r.pg = &chain.Postgres{DataDir: r.paths.DataDir, SockDir: r.paths.SockDir, LogFile: r.paths.LogFile, Port: r.paths.Port}
	r.onCleanup("PostgreSQL stopped", func() {
		if err := r.pg.Stop(context.Background()); err != nil {
			fmt.Fprintf(r.out, "warning: stopping PostgreSQL: %v\n", err)
		}
	})
	if err := r.pg.Init(r.ctx); err != nil {
		return "", err
	}
	if err := r.pg.Start(r.ctx); err != nil {
		return "", err
	}
	v, err := r.pg.SQL(r.ctx, "SHOW server_version")
	if err != nil {
		return "", err
	}
	return "PostgreSQL " + v + ", data in " + r.paths.DataDir, nil
}

func (r *run) load() (string, error) {
	_, err := r.pg.SQL(r.ctx, fmt.Sprintf(`CREATE TABLE orders (
  id       serial PRIMARY KEY,
  customer text NOT NULL,
  amount   numeric(10,2) NOT NULL
);
INSERT INTO orders (customer, amount)
  SELECT 'customer-' || (g %% 97), round((g * 7.31)::numeric %% 1000, 2) FROM generate_series(1, %d) g;`, r.opts.RowsBefore))
	if err != nil {
		return "", err
	}
	n, _, err := r.digest()
	return fmt.Sprintf("%d rows", n), err
}

// digest is the row count and a hash over every row of orders.
func (r *run) digest() (int, string, error) {
	out, err := r.pg.SQL(r.ctx, `SELECT count(*) || '|' || coalesce(md5(string_agg(id || ':' || customer || ':' || amount, ',' ORDER BY id)), '') FROM orders`)
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

// mark takes a marker through the API, as `lockstep mark demo` does: the
// daemon runs the marker protocol with the built-in plugins (CHECKPOINT,
// fsfreeze, one journal record, thaw) and records the evidence.
func (r *run) mark() (string, error) {
	n, sum, err := r.digest()
	if err != nil {
		return "", err
	}
	m, err := r.c.Mark(r.ctx, Service)
	if err != nil {
		return "", err
	}
	if m.Class != "app" {
		return "", fmt.Errorf("marker %s is %s-consistent, not application-consistent: %s", m.ID, m.Class, m.Reason)
	}
	r.res.Markers = append(r.res.Markers, m)
	r.res.MarkerRows = append(r.res.MarkerRows, n)
	r.res.MarkerDigests = append(r.res.MarkerDigests, sum)
	return fmt.Sprintf("%s, app-consistent, %s, frozen %s, %d rows", m.ID, lsnText(m.Apps), round(m.FreezeWindow), n), nil
}

// lsnText is the PostgreSQL evidence of a marker's app results.
func lsnText(apps []catalog.AppResult) string {
	for _, a := range apps {
		if a.Plugin == "postgres" {
			return "PostgreSQL " + evidenceLSN(a.Evidence)
		}
	}
	return "no PostgreSQL evidence"
}

// evidenceLSN reads the postgres plugin's evidence: WAL LSN and timeline.
func evidenceLSN(raw json.RawMessage) string {
	var ev struct {
		LSN      string `json:"lsn"`
		Timeline int64  `json:"timeline"`
	}
	if json.Unmarshal(raw, &ev) != nil || ev.LSN == "" {
		return "evidence " + string(raw)
	}
	return fmt.Sprintf("WAL LSN %s (timeline %d)", ev.LSN, ev.Timeline)
}

func (r *run) more() (string, error) {
	_, err := r.pg.SQL(r.ctx, fmt.Sprintf(`INSERT INTO orders (customer, amount)
  SELECT 'late-customer-' || g, g FROM generate_series(1, %d) g`, r.opts.RowsAfter))
	if err != nil {
		return "", err
	}
	n, _, err := r.digest()
	if err == nil && n != r.opts.RowsBefore+r.opts.RowsAfter {
		err = fmt.Errorf("orders has %d rows, want %d", n, r.opts.RowsBefore+r.opts.RowsAfter)
	}
	return fmt.Sprintf("%d rows now", n), err
}

func (r *run) damage() (string, error) {
	n, _, err := r.digest()
	if err != nil {
		return "", err
	}
	r.res.RowsBeforeDamage = n
	if _, err := r.pg.SQL(r.ctx, "DROP TABLE orders"); err != nil {
		return "", err
	}
	out, err := r.pg.SQL(r.ctx, "SELECT coalesce(to_regclass('orders')::text, 'gone')")
	if err != nil {
		return "", err
	}
	if out != "gone" {
		return "", fmt.Errorf("orders still exists after DROP (%q)", out)
	}
	return fmt.Sprintf("table orders and its %d rows are gone", n), nil
}

func (r *run) plan(req api.RestoreRequest) (string, error) {
	p, err := r.c.RestorePlan(r.ctx, Service, req)
	if err != nil {
		return "", err
	}
	r.res.Plan = &p
	if p.Marker == nil {
		return "", errors.New("the plan chose no marker")
	}
	want := r.res.Markers[len(r.res.Markers)-1]
	if p.Marker.ID != want.ID {
		return "", fmt.Errorf("the plan chose marker %s, the newest marker before the damage is %s", p.Marker.ID, want.ID)
	}
	r.sub("marker    %s at %s, %s-consistent, %s before the damage", p.Marker.ID, p.TargetTime.Format("15:04:05.000"), p.Marker.Class, round(p.Distance))
	r.sub("evidence  %s", planEvidence(p.Marker.Evidence))
	for _, v := range p.Volumes {
		r.sub("volume    %s: %s changed since the marker so far (stopping writes more)", v.Name, mib(v.Bytes))
	}
	r.sub("stop      %s, then start %s", strings.Join(p.Stop, ", "), strings.Join(p.Start, ", "))
	return "estimate " + p.Estimate.Round(time.Second).String() + "; nothing changed yet", nil
}

// planEvidence shows the postgres app's part of a plan's evidence, which is
// keyed by app.
func planEvidence(raw json.RawMessage) string {
	var byApp map[string]json.RawMessage
	if json.Unmarshal(raw, &byApp) == nil {
		if ev, ok := byApp[AppDB]; ok {
			return "PostgreSQL " + evidenceLSN(ev)
		}
	}
	return string(raw)
}

func (r *run) restore(req api.RestoreRequest) (string, error) {
	// A restore runs in the daemon whatever its client does; on Ctrl-C
	// the demo lets it finish (seconds) before tearing everything down.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 3*time.Minute)
	defer cancel()
	stop := context.AfterFunc(r.ctx, func() {
		r.sub("interrupted: the restore runs to its end (seconds) before everything is cleaned up")
	})
	defer stop()
	began := map[string]time.Duration{}
	t := time.Now()
	res, err := r.c.Restore(rctx, Service, req, func(p api.RestoreProgress) {
		key := p.Step + " " + p.Object
		if !p.Done {
			began[key] = p.Elapsed
			return
		}
		what := p.Step
		if p.Object != "" {
			what += " " + p.Object
		}
		detail := stepDetail[p.Step+" "+p.Object]
		if p.Step == "roll" {
			detail = mib(p.Bytes) + " of blocks put back from the journal"
		}
		r.sub("%-16s %-6s %7s  %s", what, p.Outcome, round(p.Elapsed-began[key]), detail)
	})
	r.res.RestoreDuration = time.Since(t)
	if res.Record != nil {
		r.res.Record = res.Record
		for _, v := range res.Record.Rolled {
			r.res.BytesRolledBack += v.Bytes
		}
	}
	if err != nil {
		return "", err
	}
	if r.ctx.Err() != nil {
		return "", r.ctx.Err()
	}
	if res.Record == nil {
		return "", errors.New("the daemon returned no restore record")
	}
	return fmt.Sprintf("restore %s, %s rolled back", res.Record.ID, mib(r.res.BytesRolledBack)), nil
}

// stepDetail says what each restore step does to the demo's service.
var stepDetail = map[string]string{
	"stop " + AppDB:          "PostgreSQL: pg_ctl stop -m fast",
	"stop " + AppFS:          "ext4: unmount",
	"stop " + AppInitiator:   "nothing to stop: the chain stays attached",
	"fence ":                 "the target refuses I/O to the volume",
	"undo-point ":            "the time before the roll, kept: the restore can be undone",
	"unfence ":               "the target serves the volume again",
	"start " + AppInitiator:  "drop the FUSE export file's cached pages (dd iflag=nocache)",
	"start " + AppFS:         "ext4: drop the device's cached blocks (BLKFLSBUF), mount",
	"start " + AppDB:         "PostgreSQL: pg_ctl start, recovery from the marker's image",
	"health " + AppInitiator: "the FUSE export is there",
	"health " + AppFS:        "ext4 mounted and writable",
	"health " + AppDB:        "PostgreSQL answers queries",
}

func (r *run) verify() (string, error) {
	n, sum, err := r.digest()
	if err != nil {
		return "", fmt.Errorf("orders is not back: %w", err)
	}
	r.res.RestoredRows, r.res.RestoredDigest = n, sum
	i := len(r.res.Markers) - 1
	if n != r.res.MarkerRows[i] || sum != r.res.MarkerDigests[i] {
		return "", fmt.Errorf("orders has %d rows (digest %s), marker 2 had %d rows (digest %s)", n, sum, r.res.MarkerRows[i], r.res.MarkerDigests[i])
	}
	r.res.Verified = true
	return fmt.Sprintf("%d rows, digest %s… matches", n, sum[:12]), nil
}

func size(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// dur writes a duration for people: "5m", "2.5s", "40s".
func dur(d time.Duration) string {
	switch {
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d >= 10*time.Second:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// report prints the summary, from the daemon's API as `lockstep status`
// and `lockstep services` show it.
func (r *run) report() {
	res, w := r.res, r.out
	ctx := r.ctx
	fmt.Fprintf(w, "\nSummary\n")
	if p := res.Plan; p != nil && p.Marker != nil {
		fmt.Fprintf(w, "  restore      service %q back to marker 2, %s at %s, in %s; %s of blocks rolled back\n",
			Service, p.Marker.ID, planEvidence(p.Marker.Evidence), round(res.RestoreDuration), mib(res.BytesRolledBack))
	}
	fmt.Fprintf(w, "  data         the dropped table is back: %d rows, identical to marker 2 by row digest (marker 1 had %d)\n", res.RestoredRows, res.MarkerRows[0])
	fmt.Fprintf(w, "  host caches  dropped before mounting, so nothing stale was read: the FUSE export's pages (app %q) and the loop device's blocks (app %q)\n", AppInitiator, AppFS)
	if svcs, err := r.c.Services(ctx); err == nil {
		for _, s := range svcs {
			if s.Name != Service {
				continue
			}
			res.RPOAge, res.RPOTarget, res.RPOMet = s.RPOAge, s.RPOTarget, !s.Breached
			state := "met"
			if s.Breached {
				state = "BREACHED"
			}
			fmt.Fprintf(w, "  RPO          target %s, newest app-consistent marker %s old: %s; markers %s", dur(s.RPOTarget), dur(s.RPOAge), state, s.Schedule)
			if !s.NextRun.IsZero() {
				fmt.Fprintf(w, ", next in %s", dur(time.Until(s.NextRun)))
			}
			fmt.Fprintln(w)
		}
	} else {
		fmt.Fprintf(w, "  RPO          not available: %v\n", err)
	}
	if ms, err := r.c.Markers(ctx, Service, time.Time{}); err == nil {
		fmt.Fprintf(w, "  markers      %s\n", markerCounts(ms))
	}
	if st, err := r.c.Status(ctx); err == nil {
		res.JournalSegments, res.JournalBytes = st.Journal.Segments, st.Journal.Bytes
		fmt.Fprintf(w, "  journal      %s in %d segment(s): every write since the volume was created\n", mib(st.Journal.Bytes), st.Journal.Segments)
	}
	fmt.Fprintln(w)
}

// markerCounts says how many markers of each class and trigger there are:
// "2 app-consistent on demand, 1 skipped scheduled".
func markerCounts(ms []api.Marker) string {
	count := map[string]int{}
	for _, m := range ms {
		count[m.Class+" "+m.Trigger]++
	}
	var parts []string
	for _, class := range []string{"app", "crash", "skipped"} {
		for _, trigger := range []string{"manual", "schedule"} {
			n := count[class+" "+trigger]
			if n == 0 {
				continue
			}
			c, t := class+"-consistent", "on demand"
			if class == "skipped" {
				c = class
			}
			if trigger == "schedule" {
				t = "scheduled"
			}
			parts = append(parts, fmt.Sprintf("%d %s %s", n, c, t))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	out := strings.Join(parts, ", ")
	if count["skipped schedule"]+count["skipped manual"] > 0 {
		// The scheduler runs from the start; the policy skips a marker
		// whose quiesce fails rather than record a crash-consistent one.
		out += " (skipped: PostgreSQL was not running yet, or was stopped for the restore)"
	}
	return out
}
