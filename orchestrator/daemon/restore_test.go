package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
)

const (
	dbIQN  = "iqn.2026-11.io.lockstep:shop.db"
	walIQN = "iqn.2026-11.io.lockstep:shop.wal"
)

// restoreHCL is a service of two volumes and two exec apps, web depending
// on db; every stop, start and health appends to LOG. web's start fails
// while FLAG is missing.
func restoreHCL(log, flag string) string {
	sh := func(s string) string { return `["/bin/sh", "-c", "` + s + `"]` }
	return `service "shop" {
  volume "db" {
    size        = "16MiB"
    target_name = "` + dbIQN + `"
  }
  volume "wal" {
    size        = "8MiB"
    target_name = "` + walIQN + `"
  }
  app "exec" "web" {
    depends_on = ["db"]
    volumes    = ["db"]
    freeze     = ["/bin/true"]
    thaw       = ["/bin/true"]
    stop       = ` + sh("echo stop-web >> "+log) + `
    start      = ` + sh("[ -e "+flag+" ] || exit 7; echo start-web >> "+log) + `
    health     = ` + sh("echo health-web >> "+log) + `
  }
  app "exec" "db" {
    volumes = ["db", "wal"]
    freeze  = ["/bin/true"]
    thaw    = ["/bin/true"]
    stop    = ` + sh("echo stop-db >> "+log) + `
    start   = ` + sh("echo start-db >> "+log) + `
    health  = ` + sh("echo health-db >> "+log) + `
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

func mustIO(t *testing.T, portal, iqn, cmd string, flags ...string) {
	t.Helper()
	if out, err := qemuIO(t, portal, iqn, cmd, flags...); err != nil {
		t.Fatalf("qemu-io %s on %s: %v\n%s", cmd, iqn, err, out)
	}
}

func logLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := strings.Fields(string(b))
	os.Remove(path)
	return out
}

// The whole restore story through the API, against a real initiator:
// plan (nothing changes), in place to a marker (apps stopped in reverse
// dependency order, the target refuses I/O while volumes roll, data back,
// apps started in order and checked), undo, as-new, single volume, a
// failure part-way that a restarted daemon reports and that resumes, and a
// client that goes away without stopping the restore.
func TestRestoreThroughDaemon(t *testing.T) {
	testenv.LookPath(t, "qemu-io")
	work := t.TempDir()
	logf, flag := filepath.Join(work, "log"), filepath.Join(work, "flag")
	os.WriteFile(flag, nil, 0o600)
	d := startDaemon(t, "", policy(restoreHCL(logf, flag)))
	ctx := context.Background()
	portal := d.Portal()
	if out, err := qemuIO(t, portal, dbIQN, "write -P 0xaa 0 1M"); err != nil {
		if strings.Contains(out, "Unknown protocol") {
			testenv.Unavailable(t, "qemu's iscsi driver (qemu-block-extra): %s", out)
		}
		t.Fatalf("write: %v\n%s", err, out)
	}
	mustIO(t, portal, walIQN, "write -P 0xa1 0 512k")
	m, err := d.c.Mark(ctx, "shop")
	if err != nil || m.Class != catalog.ClassApp {
		t.Fatalf("mark: %v %+v", err, m)
	}
	mustIO(t, portal, dbIQN, "write -P 0xbb 0 1M")
	mustIO(t, portal, walIQN, "write -P 0xb1 0 512k")
	logLines(t, logf)

	// Plan: the marker, its distance, bytes per volume, the app order.
	p, err := d.c.RestorePlan(ctx, "shop", api.RestoreRequest{At: time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		t.Fatal(err)
	}
	if p.Marker == nil || p.Marker.ID != m.ID || p.Distance <= 0 || len(p.Volumes) != 2 || p.Volumes[0].Bytes != 1<<20 || p.Volumes[1].Bytes != 512<<10 ||
		!slices.Equal(p.Stop, []string{"web", "db"}) || !slices.Equal(p.Start, []string{"db", "web"}) {
		t.Fatalf("plan: %+v", p)
	}
	mustIO(t, portal, dbIQN, "read -P 0xbb 0 1M")
	if got := logLines(t, logf); len(got) != 0 {
		t.Fatalf("plan touched apps: %v", got)
	}
	if _, err := d.c.RestorePlan(ctx, "nope", api.RestoreRequest{Marker: m.ID}); !api.NotFound(err) {
		t.Fatalf("plan of an unknown service: %v", err)
	}

	// In place: while fenced, the target refuses I/O.
	var mu sync.Mutex
	var fenceErr error
	var fenceOut string
	onFence := func(e restore.Event) {
		if e.Step == "fence" && e.Outcome == restore.OK {
			out, err := qemuIO(t, portal, dbIQN, "read 0 4k")
			mu.Lock()
			fenceOut, fenceErr = out, err
			mu.Unlock()
		}
	}
	d.rs.onEvent.Store(&onFence)
	var steps []string
	res, err := d.c.Restore(ctx, "shop", api.RestoreRequest{Marker: m.ID}, func(p api.RestoreProgress) {
		mu.Lock()
		defer mu.Unlock()
		if p.Done {
			steps = append(steps, strings.TrimSpace(p.Step+" "+p.Object))
		}
	})
	d.rs.onEvent.Store(nil)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fenceErr == nil {
		t.Fatalf("a fenced volume answered a read:\n%s", fenceOut)
	}
	t.Logf("read while fenced: %v", fenceErr)
	rec := res.Record
	if rec.State != restore.StateDone || len(rec.Rolled) != 2 || !slices.Equal(rec.Healthy, []string{"db", "web"}) || rec.UndoPoint == 0 {
		t.Fatalf("record: %+v", rec)
	}
	wantSteps := []string{"stop web", "stop db", "fence", "undo-point"}
	if !slices.Equal(steps[:4], wantSteps) || !slices.Contains(steps, "roll shop/db") || !slices.Contains(steps, "roll shop/wal") ||
		!slices.Equal(steps[len(steps)-5:], []string{"unfence", "start db", "start web", "health db", "health web"}) {
		t.Fatalf("progress: %v", steps)
	}
	if got := logLines(t, logf); !slices.Equal(got, []string{"stop-web", "stop-db", "start-db", "start-web", "health-db", "health-web"}) {
		t.Fatalf("apps ran as %v", got)
	}
	mustIO(t, portal, dbIQN, "read -P 0xaa 0 1M")
	mustIO(t, portal, walIQN, "read -P 0xa1 0 512k")
	es, err := d.c.Events(ctx, "shop", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if e.Type == EventRestore && strings.Contains(e.Message, rec.ID) {
			n++
		}
	}
	if n != len(rec.Steps) {
		t.Fatalf("%d restore events for %d steps: %+v", n, len(rec.Steps), es)
	}

	// Undo, followed by a client that goes away after the first line: the
	// undo runs to its end anyway.
	cctx, cancel := context.WithCancel(ctx)
	_, err = d.c.Undo(cctx, "shop", func(api.RestoreProgress) { cancel() })
	if err == nil {
		t.Fatal("undo followed to its end after the client went away")
	}
	var undo *restore.Record
	for i := 0; ; i++ {
		recs, err := d.c.Restores(ctx, "shop")
		if err != nil {
			t.Fatal(err)
		}
		if last := recs[len(recs)-1]; last.Kind == restore.KindUndo && last.Finished() {
			undo = &last
			break
		}
		if i > 200 {
			t.Fatalf("undo never finished: %+v", recs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if undo.State != restore.StateDone || undo.Undoes != rec.ID {
		t.Fatalf("undo: %+v", undo)
	}
	mustIO(t, portal, dbIQN, "read -P 0xbb 0 1M")
	mustIO(t, portal, walIQN, "read -P 0xb1 0 512k")
	if r, err := d.c.RestoreRecord(ctx, rec.ID); err != nil || r.State != restore.StateUndone {
		t.Fatalf("undone record: %v %+v", err, r)
	}
	logLines(t, logf)

	// As new: new targets with the marker's data; the service untouched.
	res, err = d.c.Restore(ctx, "shop", api.RestoreRequest{Marker: m.ID, AsNew: "-old"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.AsNew == nil || len(res.AsNew.Volumes) != 2 || res.AsNew.Volumes[0].Name != "shop/db-old" || res.AsNew.Volumes[0].IQN != IQNPrefix+"shop.db-old" {
		t.Fatalf("as new: %+v", res.AsNew)
	}
	mustIO(t, portal, res.AsNew.Volumes[0].IQN, "read -P 0xaa 0 1M")
	mustIO(t, portal, res.AsNew.Volumes[1].IQN, "read -P 0xa1 0 512k")
	mustIO(t, portal, dbIQN, "read -P 0xbb 0 1M")
	if got := logLines(t, logf); len(got) != 0 {
		t.Fatalf("as-new touched apps: %v", got)
	}
	if exps, _ := d.c.Exposures(ctx); len(exps) != 2 {
		t.Fatalf("as-new volumes are not exposures: %+v", exps)
	}
	for _, v := range res.AsNew.Volumes {
		if err := d.c.Unexpose(ctx, api.UnexposeRequest{IQN: v.IQN}); err != nil {
			t.Fatal(err)
		}
	}

	// One volume: only db rolls, only the apps on it stop.
	res, err = d.c.Restore(ctx, "shop", api.RestoreRequest{Marker: m.ID, Volume: "db"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Record.Kind != restore.KindVolume || len(res.Record.Warnings) == 0 || !slices.Equal(res.Record.Volumes, []string{"shop/db"}) {
		t.Fatalf("volume restore: %+v", res.Record)
	}
	mustIO(t, portal, dbIQN, "read -P 0xaa 0 1M")
	mustIO(t, portal, walIQN, "read -P 0xb1 0 512k")
	if _, err := d.c.Undo(ctx, "shop", nil); err != nil {
		t.Fatal(err)
	}
	mustIO(t, portal, dbIQN, "read -P 0xbb 0 1M")
	logLines(t, logf)

	// A failure part-way: web does not start. The record says what is
	// rolled and stopped; a restarted daemon reports it; resume ends it.
	os.Remove(flag)
	res, err = d.c.Restore(ctx, "shop", api.RestoreRequest{Marker: m.ID}, nil)
	if err == nil || res.Record == nil || !strings.Contains(err.Error(), "--resume "+res.Record.ID) || !strings.Contains(err.Error(), "--undo") {
		t.Fatalf("failing restore: %v %+v", err, res.Record)
	}
	failed := res.Record
	if failed.State != restore.StateFailed || len(failed.Rolled) != 2 || !slices.Equal(failed.Stopped, []string{"web"}) {
		t.Fatalf("failed record: %+v", failed)
	}
	if _, err := d.c.Restore(ctx, "shop", api.RestoreRequest{Marker: m.ID}, nil); err == nil || !strings.Contains(err.Error(), "unfinished") {
		t.Fatalf("a second restore over an unfinished one: %v", err)
	}
	d.stop()
	d = startDaemon(t, d.dir, nil)
	es, err = d.c.Events(ctx, "shop", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(es, func(e api.Event) bool {
		return e.Type == EventRestoreUnfinished && strings.Contains(e.Message, "lockstep restore --resume "+failed.ID)
	}); i < 0 {
		t.Fatalf("no unfinished-restore event at start: %+v", es)
	}
	os.WriteFile(flag, nil, 0o600)
	logLines(t, logf)
	res, err = d.c.Resume(ctx, failed.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Record.State != restore.StateDone || len(res.Record.Stopped) != 0 {
		t.Fatalf("resumed: %+v", res.Record)
	}
	// Every volume was rolled and unfenced: resume starts and checks.
	if got := logLines(t, logf); !slices.Equal(got, []string{"start-db", "start-web", "health-db", "health-web"}) {
		t.Fatalf("apps on resume ran as %v", got)
	}
	mustIO(t, d.Portal(), dbIQN, "read -P 0xaa 0 1M")
	mustIO(t, d.Portal(), walIQN, "read -P 0xa1 0 512k")
	if _, err := d.c.Resume(ctx, "r-nope", nil); !api.NotFound(err) {
		t.Fatalf("resume of an unknown restore: %v", err)
	}
}

func TestDependencyOrder(t *testing.T) {
	pol, diags := parseSources(t.TempDir(), policy(restoreHCL("/tmp/x", "/tmp/y")))
	if pol == nil {
		t.Fatal(diags)
	}
	var names []string
	for _, a := range dependencyOrder(pol.Service("shop").Apps) {
		names = append(names, a.Name)
	}
	if !slices.Equal(names, []string{"db", "web"}) {
		t.Fatalf("order %v", names)
	}
}

// A daemon that died while a restore had its volumes fenced starts with
// them fenced again (the target refuses I/O), says so, and resume ends it.
func TestRestoreReopenFences(t *testing.T) {
	testenv.LookPath(t, "qemu-io")
	work := t.TempDir()
	logf, flag := filepath.Join(work, "log"), filepath.Join(work, "flag")
	os.WriteFile(flag, nil, 0o600)
	d := startDaemon(t, "", policy(restoreHCL(logf, flag)))
	ctx := context.Background()
	if out, err := qemuIO(t, d.Portal(), dbIQN, "write -P 0xaa 0 1M"); err != nil {
		if strings.Contains(out, "Unknown protocol") {
			testenv.Unavailable(t, "qemu's iscsi driver (qemu-block-extra): %s", out)
		}
		t.Fatalf("write: %v\n%s", err, out)
	}
	m, err := d.c.Mark(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	mustIO(t, d.Portal(), dbIQN, "write -P 0xbb 0 1M")
	d.stop()

	// The record as a run leaves it when its process dies mid-roll.
	now := time.Now().UTC()
	id := "r-" + now.Format("20060102T150405") + "-00000000"
	rec := restore.Record{ID: id, Kind: restore.KindService, Service: "shop", Target: m.Time.UnixNano(),
		Volumes: []string{"shop/db", "shop/wal"}, Apps: []string{"db", "web"}, Stopped: []string{"web", "db"},
		Fenced: true, UndoPoint: now.UnixNano(), State: restore.StateRunning, Created: now, Updated: now}
	if err := os.WriteFile(filepath.Join(d.dir, RestoreDir, id+".json"), mustJSON(rec), 0o640); err != nil {
		t.Fatal(err)
	}
	d = startDaemon(t, d.dir, nil)
	if out, err := qemuIO(t, d.Portal(), dbIQN, "read 0 4k"); err == nil {
		t.Fatalf("a volume of an unfinished restore answers after a restart:\n%s", out)
	}
	es, err := d.c.Events(ctx, "shop", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(es, func(e api.Event) bool { return e.Type == EventRestoreUnfinished && strings.Contains(e.Message, id) }) {
		t.Fatalf("no unfinished-restore event: %+v", es)
	}
	logLines(t, logf)
	res, err := d.c.Resume(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Record.State != restore.StateDone || res.Record.Fenced {
		t.Fatalf("resumed: %+v", res.Record)
	}
	if got := logLines(t, logf); !slices.Equal(got, []string{"stop-web", "stop-db", "start-db", "start-web", "health-db", "health-web"}) {
		t.Fatalf("apps on resume ran as %v", got)
	}
	mustIO(t, d.Portal(), dbIQN, "read -P 0xaa 0 1M")
}
