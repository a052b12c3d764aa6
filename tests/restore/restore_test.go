package restore_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
)

// TestPlanChangesNothing: the plan names the marker, its evidence, the
// bytes per volume and the stop/start order, and touches nothing.
func TestPlanChangesNothing(t *testing.T) {
	f := newFixture(t)
	m1, _, afterB := f.history()
	f.calls.take()
	p, err := f.r.Plan(context.Background(), "shop", restore.Target{Time: afterB})
	if err != nil {
		t.Fatal(err)
	}
	if p.Marker == nil || p.Marker.ID != m1.ID || p.Target != m1.TS || !strings.Contains(string(p.Marker.Evidence), "lsn") {
		t.Fatalf("plan chose %+v, want app marker %s (the crash marker m2 is newer but not app-consistent)", p.Marker, m1.ID)
	}
	if p.Distance != time.Duration(afterB.UnixNano()-m1.TS) || p.Distance <= 0 {
		t.Fatalf("distance %v", p.Distance)
	}
	// B over blocks 0-127 and C over 64-191 changed blocks 0-191.
	for _, v := range p.Volumes {
		if v.Bytes != 192*bs {
			t.Fatalf("volume %s: %d bytes to roll back, want %d", v.Name, v.Bytes, 192*bs)
		}
	}
	if got := strings.Join(p.Stop, ","); got != "web,cms,db" {
		t.Fatalf("stop order %s", got)
	}
	if got := strings.Join(p.Start, ","); got != "db,cms,web" {
		t.Fatalf("start order %s", got)
	}
	if p.Estimate <= 0 || p.Bytes != 3*192*bs {
		t.Fatalf("plan %+v", p)
	}
	if c := f.calls.take(); len(c) != 0 {
		t.Fatalf("plan called %v", c)
	}
	var text strings.Builder
	p.WriteText(&text)
	t.Logf("plan:\n%s", text.String())
	for _, s := range []string{m1.ID, `"lsn":"0/1"`, "shop-wal", "768.0 KiB", "web, cms, db", "earlier"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("plan text lacks %q", s)
		}
	}
	f.want("after plan", atNow)

	// Crash-consistent: the exact time.
	p, err = f.r.Plan(context.Background(), "shop", restore.Target{Time: afterB, CrashConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Marker != nil || p.Target != afterB.UnixNano() || p.Distance != 0 {
		t.Fatalf("crash-consistent plan %+v", p)
	}
	// Before any marker: refused, naming the way out.
	_, err = f.r.Plan(context.Background(), "shop", restore.Target{Time: time.Unix(0, m1.TS-1)})
	if !errors.Is(err, restore.ErrNoMarker) || !strings.Contains(err.Error(), "--crash-consistent") {
		t.Fatalf("plan before the first marker: %v", err)
	}
}

// TestRestoreInPlaceOrderAndUndo checks the order of every step, the fence
// during the roll, the content, the events, and undo.
func TestRestoreInPlaceOrderAndUndo(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	f.calls.take()
	var prog []restore.Progress
	rec, err := f.r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, func(p restore.Progress) { prog = append(prog, p) })
	if err != nil {
		t.Fatal(err)
	}
	log := f.calls.take()
	t.Logf("calls: %v", log)
	want := []string{"stop:web", "stop:cms", "stop:db",
		"fence=true:shop-db", "fence=true:shop-wal", "fence=true:shop-files",
		"roll:shop-db", "roll:shop-wal", "roll:shop-files",
		"fence=false:shop-db", "fence=false:shop-wal", "fence=false:shop-files",
		"start:db", "start:cms", "start:web", "health:db", "health:cms", "health:web"}
	if strings.Join(log, " ") != strings.Join(want, " ") {
		t.Fatalf("calls\n got %v\nwant %v", log, want)
	}
	if f.eng.unfencedWrites != 0 {
		t.Fatalf("%d host writes got through during a roll", f.eng.unfencedWrites)
	}
	f.want("after restore to m1", atM1)
	if rec.State != restore.StateDone || len(rec.Rolled) != 3 || rec.UndoPoint == 0 || len(rec.Stopped) != 0 || len(rec.Healthy) != 3 {
		t.Fatalf("record %+v", rec)
	}
	for _, n := range vols {
		if rec.Rolled[n].Bytes != 192*bs {
			t.Fatalf("rolled %s: %+v", n, rec.Rolled[n])
		}
	}
	if len(prog) == 0 || !prog[len(prog)-1].Done {
		t.Fatalf("progress %+v", prog)
	}
	// Every step is an event with an outcome and a duration.
	steps := map[string]int{}
	for _, e := range f.evs.all {
		if e.Restore != rec.ID || e.Outcome != restore.OK {
			t.Fatalf("event %+v", e)
		}
		steps[e.Step]++
	}
	if steps["stop"] != 3 || steps["roll"] != 3 || steps["start"] != 3 || steps["health"] != 3 || steps["fence"] != 1 || steps["unfence"] != 1 {
		t.Fatalf("events per step %v", steps)
	}
	// The record is durable: another restorer reads it.
	if got, err := f.newRestorer(f.st).Record(rec.ID); err != nil || got.State != restore.StateDone {
		t.Fatalf("record from disk: %+v %v", got, err)
	}

	// The service runs on: write X on the first blocks, then undo: back to
	// just before the restore (the writes after it are gone too).
	fill(t, f.vol("shop-db"), "X", 0, 1)
	u, err := f.r.Undo(context.Background(), "shop", nil)
	if err != nil {
		t.Fatal(err)
	}
	f.want("after undo", atNow)
	log = f.calls.take()
	if indexOf(log, "stop:db") < indexOf(log, "stop:web") || indexOf(log, "start:db") > indexOf(log, "start:web") || indexOf(log, "roll:shop-db") < indexOf(log, "stop:db") {
		t.Fatalf("undo calls %v", log)
	}
	if u.Kind != restore.KindUndo || u.Undoes != rec.ID || u.State != restore.StateDone {
		t.Fatalf("undo record %+v", u)
	}
	if old, _ := f.r.Record(rec.ID); old.State != restore.StateUndone || old.UndoneBy != u.ID {
		t.Fatalf("restore record after undo %+v", old)
	}
	if _, err := f.r.Undo(context.Background(), "shop", nil); !errors.Is(err, restore.ErrNothingTo) {
		t.Fatalf("second undo: %v", err)
	}
}

// TestCrashConsistentExactTime restores to a time between two writes.
func TestCrashConsistentExactTime(t *testing.T) {
	f := newFixture(t)
	_, _, afterB := f.history()
	rec, err := f.r.Restore(context.Background(), "shop", restore.Target{Time: afterB, CrashConsistent: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Marker != nil || rec.Target != afterB.UnixNano() {
		t.Fatalf("record %+v", rec)
	}
	f.want("after crash-consistent restore", atAfterB)
}

// TestFailurePartWayResume: a roll fails on the second volume. The record
// and the error say which volumes were rolled and which apps are stopped;
// the volumes stay fenced; Resume finishes.
func TestFailurePartWayResume(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	f.eng.failRoll["shop-wal"] = 1
	f.calls.take()
	rec, err := f.r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, nil)
	var re *restore.Error
	if !errors.As(err, &re) {
		t.Fatalf("restore: %v, want *restore.Error", err)
	}
	t.Logf("error: %v", err)
	for _, s := range []string{"roll", "shop-wal", "volumes rolled [shop-db]", "not rolled [shop-wal shop-files]", "apps stopped [web cms db]", "--resume " + rec.ID, "--undo", "fenced"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q", s)
		}
	}
	disk, err2 := f.r.Record(rec.ID)
	if err2 != nil {
		t.Fatal(err2)
	}
	if disk.State != restore.StateFailed || len(disk.Rolled) != 1 || !disk.Fenced || len(disk.Stopped) != 3 {
		t.Fatalf("record on disk %+v", disk)
	}
	if err := f.vol("shop-files").WriteAt(context.Background(), make([]byte, bs), 0, false); !errors.Is(err, blockdev.ErrFenced) {
		t.Fatalf("write after failed roll: %v, want fenced", err)
	}
	for _, a := range []string{"db", "cms", "web"} {
		if f.apps.isUp(a) {
			t.Fatalf("app %s runs after the failed restore", a)
		}
	}
	// A new restore is refused while this one is unfinished.
	if _, err := f.r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, nil); !errors.Is(err, restore.ErrInProgress) {
		t.Fatalf("second restore: %v", err)
	}
	f.calls.take()
	rec, err = f.r.Resume(context.Background(), rec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := f.calls.take()
	t.Logf("resume calls: %v", log)
	if indexOf(log, "roll:shop-db") >= 0 || indexOf(log, "roll:shop-wal") < 0 || indexOf(log, "roll:shop-files") < 0 {
		t.Fatalf("resume rolled %v; shop-db was rolled already", log)
	}
	f.want("after resume", atM1)
	if rec.State != restore.StateDone {
		t.Fatalf("record %+v", rec)
	}
	// Undo after a resumed restore returns to before the first attempt.
	if _, err := f.r.Undo(context.Background(), "shop", nil); err != nil {
		t.Fatal(err)
	}
	f.want("after undo", atNow)
}

// TestStartFailureResume: an app fails to start; Resume starts the apps
// without rolling again.
func TestStartFailureResume(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	f.apps.failStart["cms"] = 1
	rec, err := f.r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, nil)
	if err == nil || !strings.Contains(err.Error(), "start") || !strings.Contains(err.Error(), "apps stopped [web cms]") {
		t.Fatalf("restore: %v", err)
	}
	f.calls.take()
	if _, err := f.r.Resume(context.Background(), rec.ID, nil); err != nil {
		t.Fatal(err)
	}
	log := f.calls.take()
	for _, c := range log {
		if strings.HasPrefix(c, "roll") || strings.HasPrefix(c, "stop") {
			t.Fatalf("resume after a failed start did %v", log)
		}
	}
	if !f.apps.isUp("web") || !f.apps.isUp("cms") {
		t.Fatal("apps not started")
	}
	f.want("after resume", atM1)
}

// TestUndoFailedRestore: a restore that failed after rolling one volume is
// undone: every volume returns to just before it.
func TestUndoFailedRestore(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	f.eng.failRoll["shop-files"] = 1
	if _, err := f.r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, nil); err == nil {
		t.Fatal("restore did not fail")
	}
	if _, err := f.r.Undo(context.Background(), "shop", nil); err != nil {
		t.Fatal(err)
	}
	f.want("after undo of a failed restore", atNow)
	for _, a := range []string{"db", "cms", "web"} {
		if !f.apps.isUp(a) {
			t.Fatalf("app %s not started by the undo", a)
		}
	}
	// And a fresh restore is allowed again.
	if _, err := f.r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, nil); err != nil {
		t.Fatal(err)
	}
	f.want("after second restore", atM1)
}

// TestStopFailure: an app that cannot stop ends the restore before any
// fence or roll.
func TestStopFailure(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	f.apps.failStop["db"] = 1
	f.calls.take()
	_, err := f.r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, nil)
	if err == nil || !strings.Contains(err.Error(), `stop "db"`) {
		t.Fatalf("restore: %v", err)
	}
	for _, c := range f.calls.take() {
		if strings.HasPrefix(c, "fence") || strings.HasPrefix(c, "roll") {
			t.Fatalf("fenced or rolled after a failed stop: %s", c)
		}
	}
	f.want("after failed stop", atNow)
	// Undo of a restore that rolled nothing starts the apps again.
	if _, err := f.r.Undo(context.Background(), "shop", nil); err != nil {
		t.Fatal(err)
	}
	if !f.apps.isUp("web") || !f.apps.isUp("cms") {
		t.Fatal("apps not started")
	}
	f.want("after undo", atNow)
}

// TestAsNewWhileOriginalChanges: clones of every volume at the marker,
// made while a writer keeps changing the originals.
func TestAsNewWhileOriginalChanges(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	f.calls.take()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			for _, n := range vols {
				v := f.vol(n)
				b := 200 + i%56
				if err := v.WriteAt(context.Background(), block(n, "X", b), int64(b)*bs, false); err != nil {
					t.Error(err)
					return
				}
				writes.Add(1)
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	res, err := f.r.RestoreAsNew(context.Background(), "shop", restore.Target{Marker: m1.ID}, "-test")
	time.Sleep(20 * time.Millisecond)
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if c := f.calls.take(); len(c) != 0 {
		t.Fatalf("as-new touched the service: %v", c)
	}
	if len(res.Volumes) != 3 {
		t.Fatalf("clones %+v", res.Volumes)
	}
	for _, c := range res.Volumes {
		if c.Name != c.Source+"-test" {
			t.Fatalf("clone %+v", c)
		}
		cv := f.vol(c.Name)
		buf := make([]byte, volSize)
		want := make([]byte, volSize)
		if err := cv.ReadAt(context.Background(), buf, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.vol(c.Source).ReadAtTime(context.Background(), want, 0, m1.TS); err != nil {
			t.Fatal(err)
		}
		if string(buf) != string(want) || string(buf[:bs]) != string(block(c.Source, "A", 0)) {
			t.Fatalf("clone %s does not read as %s at the marker", c.Name, c.Source)
		}
		// Writing to the clone leaves the original alone.
		if err := cv.WriteAt(context.Background(), block(c.Source, "Z", 0), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if writes.Load() == 0 {
		t.Fatal("the writer wrote nothing")
	}
	for _, n := range vols {
		gs := gens(t, f.vol(n), "A", "B", "C", "X")
		if gs[0] != "B" || gs[100] != "C" {
			t.Fatalf("original %s changed by as-new: %s", n, summary(gs))
		}
		x := 0
		for _, g := range gs[200:] {
			if g == "X" {
				x++
			}
		}
		if x == 0 {
			t.Fatalf("original %s lost the writer's writes: %s", n, summary(gs))
		}
	}
	// A clash deletes what was made.
	if _, err := f.st.CreateVolume(context.Background(), store.VolumeSpec{Name: "shop-files-2", Size: volSize, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.RestoreAsNew(context.Background(), "shop", restore.Target{Marker: m1.ID}, "-2"); err == nil {
		t.Fatal("as-new over an existing name succeeded")
	}
	for _, n := range []string{"shop-db-2", "shop-wal-2"} {
		if _, err := f.st.Volume(n); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("clone %s left behind after a failed as-new: %v", n, err)
		}
	}
}

// TestSingleVolume restores one volume, stops only the apps on it, and
// warns.
func TestSingleVolume(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	f.calls.take()
	rec, err := f.r.RestoreVolume(context.Background(), "shop", "shop-files", restore.Target{Marker: m1.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := f.calls.take()
	if strings.Join(log, " ") != "stop:cms fence=true:shop-files roll:shop-files fence=false:shop-files start:cms health:cms" {
		t.Fatalf("calls %v", log)
	}
	if len(rec.Warnings) != 1 || !strings.Contains(rec.Warnings[0], "no longer consistent") || rec.Kind != restore.KindVolume {
		t.Fatalf("record %+v", rec)
	}
	if !holds(t, f.vol("shop-files"), "A") {
		t.Fatal("shop-files not restored")
	}
	gs := gens(t, f.vol("shop-db"), "A", "B", "C")
	if gs[0] != "B" || gs[100] != "C" {
		t.Fatalf("shop-db changed: %s", summary(gs))
	}
	if _, err := f.r.Undo(context.Background(), "shop", nil); err != nil {
		t.Fatal(err)
	}
	f.want("after undo", atNow)
}

// TestReopenFences: a process that starts with an unfinished restore that
// was rolling fences its volumes again.
func TestReopenFences(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	f.eng.failRoll["shop-wal"] = 1
	rec, _ := f.r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, nil)
	for _, n := range vols {
		f.vol(n).SetFenced(false) // as after a restart
	}
	open, err := f.newRestorer(f.st).Reopen(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0].ID != rec.ID {
		t.Fatalf("unfinished %+v", open)
	}
	if err := f.vol("shop-db").WriteAt(context.Background(), make([]byte, bs), 0, false); !errors.Is(err, blockdev.ErrFenced) {
		t.Fatalf("write after reopen: %v", err)
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(childRestore(dir))
	}
	os.Exit(m.Run())
}

// TestParallelRoll rolls the three volumes at once, with progress, and
// checks the content and that every roll still ran fenced.
func TestParallelRoll(t *testing.T) {
	f := newFixture(t)
	m1, _, _ := f.history()
	r, err := restore.New(restore.Config{Dir: f.dir + "/restores-par", Engine: f.eng, Markers: restore.StoreMarkers{Store: f.st},
		Services: restore.ServiceMap{"shop": f.svc}, Parallel: 3, HealthWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var rolls, n int
	rec, err := r.Restore(context.Background(), "shop", restore.Target{Marker: m1.ID}, func(p restore.Progress) {
		n++
		if p.Step == "roll" && !p.Done {
			rolls++
			if p.Bytes != 192*bs {
				t.Errorf("progress for roll of %s: %d bytes", p.Object, p.Bytes)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if rolls != 3 || n == 0 || len(rec.Rolled) != 3 || f.eng.unfencedWrites != 0 {
		t.Fatalf("rolls %d, progress calls %d, record %+v, unfenced writes %d", rolls, n, rec, f.eng.unfencedWrites)
	}
	f.want("after parallel restore", atM1)
}
