package restore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

const childEnv = "LOCKSTEP_RESTORE_CHILD"

// killVolSize is large enough that the kill lands inside a roll.
func killVolSize() int64 {
	if raceOn {
		return 64 << 20
	}
	return 96 << 20
}

func killService(apps *fakeApp) restore.Service {
	return restore.Service{Name: "shop", Volumes: vols, Apps: []restore.App{
		{Plugin: apps, App: sdk.App{Service: "shop", Name: "db", Volumes: vols}},
	}}
}

// childRestore runs in a child process: it restores the service of dir to
// the marker named in dir/marker, announcing each roll with a file so the
// parent can kill it in the middle of one.
func childRestore(dir string) int {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	id, _ := os.ReadFile(filepath.Join(dir, "marker"))
	c := &calls{}
	apps := newFakeApp(c)
	eng := &engine{StoreEngine: restore.StoreEngine{Store: st}, calls: c, failRoll: map[string]int{},
		beforeRoll: func(name string) { os.WriteFile(filepath.Join(dir, "rolling-"+name), nil, 0o644) }}
	r, err := restore.New(restore.Config{Dir: filepath.Join(dir, "restores"), Engine: eng, Markers: restore.StoreMarkers{Store: st},
		Services: restore.ServiceMap{"shop": killService(apps)}, Parallel: 1, HealthWait: time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := r.Restore(ctx, "shop", restore.Target{Marker: string(id)}, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestResumeAfterSIGKILL kills a restoring process in the middle of a
// volume's roll, then resumes the restore from a fresh Store and checks
// every block; then undoes it.
func TestResumeAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("writes ~600 MiB")
	}
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := int(killVolSize() / bs)
	for _, name := range vols {
		v, err := st.CreateVolume(ctx, store.VolumeSpec{Name: name, Size: killVolSize(), BlockSize: bs})
		if err != nil {
			t.Fatal(err)
		}
		for b := 0; b < n; b += 256 {
			fill(t, v, "A", b, b+256)
		}
	}
	m, err := st.Mark(ctx, store.MarkSpec{Service: "shop", Class: store.ClassApp, Volumes: vols})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range vols {
		v, _ := st.Volume(name)
		for b := 0; b < n; b += 256 {
			fill(t, v, "B", b, b+256)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "marker"), []byte(m.ID), 0o644)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill a third of the way into the second volume's roll, judging by
	// how long the first (same size) took.
	deadline := time.Now().Add(2 * time.Minute)
	wait := func(name string) time.Time {
		for {
			if _, err := os.Stat(filepath.Join(dir, "rolling-"+name)); err == nil {
				return time.Now()
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child never rolled %s: %s", name, stderr.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	t0 := wait("shop-db")
	t1 := wait("shop-wal")
	time.Sleep(t1.Sub(t0) / 3)
	cmd.Process.Signal(syscall.SIGKILL)
	werr := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed (it finished first: %v, %s); make the volumes larger", werr, stderr.String())
	}

	// A fresh process: a new Store and Restorer on the same directories.
	st, err = store.Open(ctx, filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := &calls{}
	apps := newFakeApp(c)
	eng := &engine{StoreEngine: restore.StoreEngine{Store: st}, calls: c, failRoll: map[string]int{}}
	r, err := restore.New(restore.Config{Dir: filepath.Join(dir, "restores"), Engine: eng, Markers: restore.StoreMarkers{Store: st},
		Services: restore.ServiceMap{"shop": killService(apps)}, Parallel: 1, HealthWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	open, err := r.Reopen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 {
		t.Fatalf("unfinished restores after the kill: %d", len(open))
	}
	rec := open[0]
	t.Logf("after SIGKILL: %s", rec.Summary())
	if rec.State != restore.StateRunning || !rec.Fenced || rec.UndoPoint == 0 {
		t.Fatalf("record %+v", rec)
	}
	if _, ok := rec.Rolled["shop-db"]; !ok || len(rec.Rolled) != 1 {
		t.Fatalf("rolled %v, want shop-db only", rec.Rolled)
	}
	vdb, _ := st.Volume("shop-db")
	vwal, _ := st.Volume("shop-wal")
	if err := vwal.WriteAt(ctx, make([]byte, bs), 0, false); !errors.Is(err, blockdev.ErrFenced) {
		t.Fatalf("write to a half-rolled volume after reopen: %v", err)
	}
	if !holds(t, vdb, "A") {
		t.Fatal("shop-db, rolled before the kill, does not read as at the marker")
	}
	mid := gens(t, vwal, "A", "B")
	t.Logf("shop-wal as the kill left it: %s", summary(mid))
	var a, b int
	for _, g := range mid {
		switch g {
		case "A":
			a++
		case "B":
			b++
		}
	}
	if a == 0 || b == 0 || a+b != len(mid) {
		t.Fatalf("shop-wal after the kill: %s; want a mix of rolled (A) and not yet rolled (B) blocks", summary(mid))
	}

	if _, err := r.Resume(ctx, rec.ID, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range vols {
		v, _ := st.Volume(name)
		if gs := gens(t, v, "A", "B"); !holds(t, v, "A") {
			t.Fatalf("after resume %s: %s", name, summary(gs))
		}
	}
	log := c.take()
	if indexOf(log, "roll:shop-db") >= 0 || indexOf(log, "roll:shop-wal") < 0 || indexOf(log, "stop:db") < 0 || indexOf(log, "start:db") < 0 {
		t.Fatalf("resume calls %v", log)
	}
	// Undo goes back to all B, the state just before the killed restore.
	if _, err := r.Undo(ctx, "shop", nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range vols {
		v, _ := st.Volume(name)
		if gs := gens(t, v, "A", "B"); !holds(t, v, "B") {
			t.Fatalf("after undo %s: %s", name, summary(gs))
		}
	}
}
