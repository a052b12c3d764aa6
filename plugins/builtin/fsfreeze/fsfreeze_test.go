package fsfreeze

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

func TestSchema(t *testing.T) {
	got, err := New().ConfigSchema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Attribute{
		{Name: "mountpoints", Type: sdk.StringList, Required: true, NonEmpty: true, Absolute: true},
		{Name: "state_directory", Type: sdk.String, Absolute: true},
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

func TestParseMountinfo(t *testing.T) {
	m, ok := parseMountinfo(`36 35 7:3 / /mnt/my\040data rw,noatime shared:1 master:2 - ext4 /dev/loop3 rw,errors=remount-ro`)
	want := mount{Dev: "7:3", Mountpoint: "/mnt/my data", Options: "rw,noatime", FSType: "ext4", Source: "/dev/loop3", Super: "rw,errors=remount-ro"}
	if !ok || m != want {
		t.Fatalf("got %+v", m)
	}
	if _, ok := parseMountinfo("garbage"); ok {
		t.Fatal("garbage parsed")
	}
	flags, data := mountArgs(record{Options: "rw,nosuid,noatime", Super: "rw,seclabel,errors=remount-ro,data=ordered"})
	if flags != unix.MS_NOSUID|unix.MS_NOATIME || data != "errors=remount-ro,data=ordered" {
		t.Fatalf("flags %x data %q", flags, data)
	}
}

// loopFS is an ext4 file system in an image file on a loop device.
type loopFS struct {
	img, dev, mnt string
}

// mkfs makes an ext4 image holding files.
func mkfs(t *testing.T, img string, files map[string]string) {
	t.Helper()
	src := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
}

func newLoopFS(t *testing.T, files map[string]string) *loopFS {
	t.Helper()
	testenv.Root(t)
	testenv.LookPath(t, "losetup")
	testenv.LookPath(t, "mkfs.ext4")
	dir := t.TempDir()
	l := &loopFS{img: filepath.Join(dir, "fs.img"), mnt: filepath.Join(dir, "mnt")}
	mkfs(t, l.img, files)
	out, err := exec.Command("losetup", "--find", "--show", l.img).Output()
	if err != nil {
		testenv.Unavailable(t, "losetup: %v", err)
	}
	l.dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", l.dev).Run() })
	if err := os.Mkdir(l.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(l.dev, l.mnt, "ext4", 0, ""); err != nil {
		testenv.Unavailable(t, "mount %s: %v", l.dev, err)
	}
	t.Cleanup(func() {
		thaw(l.mnt)
		unix.Unmount(l.mnt, 0)
	})
	return l
}

func appFor(t *testing.T, mps ...string) sdk.App {
	return sdk.App{Service: "files", Name: "fs", Config: sdk.Config{
		"mountpoints": mps, "state_directory": filepath.Join(t.TempDir(), "state"),
	}}
}

// writeAsync writes and fsyncs a file, reporting when done.
func writeAsync(path string) <-chan error {
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(path)
		if err == nil {
			_, err = f.WriteString("written")
			if err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		done <- err
	}()
	return done
}

func TestFreezeThaw(t *testing.T) {
	a := newLoopFS(t, nil)
	b := newLoopFS(t, nil)
	p := New()
	ctx := context.Background()
	app := appFor(t, a.mnt, b.mnt)
	if diags, err := p.Validate(ctx, app); err != nil || len(diags) != 0 {
		t.Fatalf("validate: %v %+v", err, diags)
	}
	if err := p.Prepare(ctx, app); err != nil {
		t.Fatal(err)
	}
	if h, err := p.Health(ctx, app); err != nil || !h.OK {
		t.Fatalf("health: %+v %v", h, err)
	}
	ev, err := p.Freeze(ctx, app, time.Minute)
	if err != nil {
		t.Fatalf("freeze: %v", err)
	}
	list := ev["mountpoints"].([]any)
	if len(list) != 2 || list[0].(map[string]any)["device"] != a.dev || list[1].(map[string]any)["fstype"] != "ext4" {
		t.Fatalf("evidence %v", ev)
	}
	wa, wb := writeAsync(filepath.Join(a.mnt, "x")), writeAsync(filepath.Join(b.mnt, "x"))
	for _, w := range []<-chan error{wa, wb} {
		select {
		case err := <-w:
			t.Fatalf("a write went through while frozen (err %v)", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	if h, _ := p.Health(ctx, app); h.OK {
		t.Fatal("healthy while frozen")
	}
	if err := p.Thaw(ctx, app); err != nil {
		t.Fatalf("thaw: %v", err)
	}
	for _, w := range []<-chan error{wa, wb} {
		select {
		case err := <-w:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the write still blocks after thaw")
		}
	}
	if err := p.Thaw(ctx, app); err != nil {
		t.Fatalf("second thaw: %v", err)
	}
	if h, err := p.Health(ctx, app); err != nil || !h.OK {
		t.Fatalf("health after thaw: %+v %v", h, err)
	}

	// A new plugin process thaws what an old one froze.
	if _, err := p.Freeze(ctx, app, time.Minute); err != nil {
		t.Fatal(err)
	}
	w := writeAsync(filepath.Join(a.mnt, "y"))
	if err := New().Thaw(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := <-w; err != nil {
		t.Fatal(err)
	}

	// hold elapsing thaws by itself.
	if _, err := p.Freeze(ctx, app, 800*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	w = writeAsync(filepath.Join(b.mnt, "z"))
	select {
	case err := <-w:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hold elapsed, still frozen")
	}
	p.Thaw(ctx, app)
}

// When one mount point cannot be frozen, those frozen before it are thawed.
func TestFreezeFailureThawsOthers(t *testing.T) {
	a := newLoopFS(t, nil)
	b := newLoopFS(t, nil)
	ctx := context.Background()
	// b is frozen already (by "another tool"): FIFREEZE says EBUSY.
	if err := ioctlPath(b.mnt, fiFreeze); err != nil {
		t.Fatal(err)
	}
	p := New()
	app := appFor(t, a.mnt, b.mnt)
	_, err := p.Freeze(ctx, app, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "already frozen") {
		t.Fatalf("freeze: %v", err)
	}
	w := writeAsync(filepath.Join(a.mnt, "x"))
	select {
	case err := <-w:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stays frozen after the failed freeze")
	}
	thaw(b.mnt)

	// A directory that is not a mount point is refused.
	plain := appFor(t, a.mnt, t.TempDir())
	if _, err := p.Freeze(ctx, plain, time.Minute); err == nil || !strings.Contains(err.Error(), "not a mount point") {
		t.Fatalf("freeze of a plain directory: %v", err)
	}
}

// A freeze that outlasts the deadline fails, and what it froze is thawed
// when FIFREEZE returns.
func TestFreezeDeadline(t *testing.T) {
	a := newLoopFS(t, nil)
	b := newLoopFS(t, nil)
	orig := freezeFS
	freezeFS = func(mp string) error {
		if mp == b.mnt {
			time.Sleep(time.Second) // a slow sync of dirty data
		}
		return orig(mp)
	}
	t.Cleanup(func() { freezeFS = orig })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := New().Freeze(ctx, appFor(t, a.mnt, b.mnt), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("freeze: %v", err)
	}
	for _, mnt := range []string{a.mnt, b.mnt} {
		select {
		case err := <-writeAsync(filepath.Join(mnt, "x")):
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s stays frozen after a freeze past its deadline", mnt)
		}
	}
}

func TestStopStart(t *testing.T) {
	a := newLoopFS(t, map[string]string{"v": "one"})
	ctx := context.Background()
	app := appFor(t, a.mnt)
	var mu sync.Mutex
	var flushed []string
	orig := flushBuffers
	flushBuffers = func(dev string) error {
		mu.Lock()
		flushed = append(flushed, dev)
		mu.Unlock()
		return orig(dev)
	}
	t.Cleanup(func() { flushBuffers = orig })

	if err := New().Stop(ctx, app); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.mnt, "v")); err == nil {
		t.Fatal("still mounted after stop")
	}
	if h, _ := New().Health(ctx, app); h.OK {
		t.Fatal("healthy while stopped")
	}
	if err := New().Stop(ctx, app); err != nil {
		t.Fatalf("second stop: %v", err)
	}

	// The restore: the volume under the device is rolled back (here:
	// replaced by another image) while something holds the device open
	// with all its blocks cached. Start must not mount stale blocks.
	held, err := os.Open(a.dev)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := io.Copy(io.Discard, held); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.img")
	mkfs(t, other, map[string]string{"v": "two"})
	replaceImage(t, a.img, other)

	// A new plugin process starts what the old one stopped.
	if err := New().Start(ctx, app); err != nil {
		t.Fatalf("start: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(a.mnt, "v")); err != nil || string(got) != "two" {
		t.Fatalf("after start, v = %q, %v; want the rolled-back volume's \"two\"", got, err)
	}
	if len(flushed) != 1 || flushed[0] != a.dev {
		t.Fatalf("BLKFLSBUF on %v, want [%s]", flushed, a.dev)
	}
	if err := New().Start(ctx, app); err != nil {
		t.Fatalf("second start: %v", err)
	}
	if h, err := New().Health(ctx, app); err != nil || !h.OK {
		t.Fatalf("health after start: %+v %v", h, err)
	}

	// Data written before a stop is there after the start.
	if err := os.WriteFile(filepath.Join(a.mnt, "w"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := New().Stop(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := New().Start(ctx, app); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(a.mnt, "w")); err != nil || string(got) != "kept" {
		t.Fatalf("w = %q, %v", got, err)
	}
}

// BLKFLSBUF drops blocks the host cached of a device whose content
// changed underneath (as a rollback changes it): a buffered read before it
// returns the stale block, after it the new one. (Mounting ext4 happens to
// drop the cache by itself when it changes the block size, so Start's flush
// is tested here, on the device, rather than through a mount.)
func TestFlushBuffersDropsStaleBlocks(t *testing.T) {
	testenv.Root(t)
	testenv.LookPath(t, "losetup")
	img := filepath.Join(t.TempDir(), "dev.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		testenv.Unavailable(t, "losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	held, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	const off = 512 << 10
	read := func() string {
		b := make([]byte, 3)
		if _, err := held.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); got != "\x00\x00\x00" {
		t.Fatalf("before: %q", got)
	}
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("new"), off); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	if got := read(); got != "\x00\x00\x00" {
		t.Fatalf("the host cached nothing (read %q): the test cannot tell", got)
	}
	if err := flushBuffers(dev); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "new" {
		t.Fatalf("after BLKFLSBUF: %q, want \"new\"", got)
	}
}

// replaceImage overwrites dst's bytes with src's, in place, the way a
// rollback changes a volume under its device.
func replaceImage(t *testing.T, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestStartWithoutRecord(t *testing.T) {
	testenv.Root(t)
	app := appFor(t, t.TempDir())
	if err := New().Start(context.Background(), app); err == nil || !strings.Contains(err.Error(), "no record") {
		t.Fatalf("start: %v", err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	app := sdk.App{Name: "fs", Config: sdk.Config{
		"mountpoints":     []string{dir, dir, filepath.Join(dir, "missing")},
		"state_directory": filepath.Join(dir, "state"),
	}}
	diags, err := New().Validate(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	var sums []string
	for _, d := range diags {
		sums = append(sums, d.Summary)
	}
	want := []string{"duplicate mount point", "state directory on a frozen file system", "no such directory"}
	for _, w := range want {
		found := false
		for _, s := range sums {
			found = found || s == w
		}
		if !found {
			t.Errorf("no %q in %v", w, sums)
		}
	}
}
