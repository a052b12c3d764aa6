package vfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

func mustCreate(t *testing.T, fsys vfs.FS, name string) vfs.File {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	return f
}

func mustWrite(t *testing.T, f vfs.File, s string, off int64) {
	t.Helper()
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		t.Fatalf("write %q: %v", f.Name(), err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// content returns a file's content, or "<missing>".
func content(t *testing.T, fsys vfs.FS, name string) string {
	t.Helper()
	b, err := vfs.ReadFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		return "<missing>"
	}
	if err != nil {
		t.Fatalf("read %q: %v", name, err)
	}
	return string(b)
}

func wantContent(t *testing.T, fsys vfs.FS, name, want string) {
	t.Helper()
	if got := content(t, fsys, name); got != want {
		t.Fatalf("%s: got %q, want %q", name, got, want)
	}
}

// durableFile returns a CrashFS holding /d/name with a durable entry and
// content, and the open handle.
func durableFile(t *testing.T, name, data string) (*vfs.CrashFS, vfs.File) {
	t.Helper()
	c := vfs.NewCrashFS()
	must(t, c.MkdirAll("/d", 0o755))
	must(t, c.SyncDir("/"))
	f := mustCreate(t, c, "/d/"+name)
	mustWrite(t, f, data, 0)
	must(t, f.Sync())
	must(t, c.SyncDir("/d"))
	return c, f
}

func TestCrashUnsyncedDataLost(t *testing.T) {
	c, f := durableFile(t, "f", "")
	mustWrite(t, f, "unsynced", 0)
	wantContent(t, c.Crash(vfs.CrashOptions{}), "/d/f", "")
}

func TestCrashSyncedDataKept(t *testing.T) {
	c, f := durableFile(t, "f", "synced")
	mustWrite(t, f, "SY", 0)
	mustWrite(t, f, " and more", 6)
	s := c.Crash(vfs.CrashOptions{})
	wantContent(t, s, "/d/f", "synced")
	// The survivor is an ordinary file system: its state is durable as is.
	wantContent(t, s.Crash(vfs.CrashOptions{}), "/d/f", "synced")
}

func TestCrashTwiceGivesSameStrictSurvivor(t *testing.T) {
	c, f := durableFile(t, "f", "synced")
	mustWrite(t, f, "lost", 6)
	a, b := c.Crash(vfs.CrashOptions{}), c.Crash(vfs.CrashOptions{})
	wantContent(t, a, "/d/f", "synced")
	wantContent(t, b, "/d/f", "synced")
	// The survivors are independent of each other.
	g := mustCreate(t, a, "/d/f")
	mustWrite(t, g, "X", 0)
	wantContent(t, b, "/d/f", "synced")
}

func TestCrashCreatedFileWithoutDirSyncLost(t *testing.T) {
	c := vfs.NewCrashFS()
	must(t, c.MkdirAll("/d", 0o755))
	must(t, c.SyncDir("/"))
	f := mustCreate(t, c, "/d/f")
	mustWrite(t, f, "data", 0)
	must(t, f.Sync())
	wantContent(t, c.Crash(vfs.CrashOptions{}), "/d/f", "<missing>")
}

func TestCrashDirectoryDurableOnlyWithParentSync(t *testing.T) {
	c := vfs.NewCrashFS()
	must(t, c.MkdirAll("/a/b", 0o755))
	f := mustCreate(t, c, "/a/b/f")
	mustWrite(t, f, "data", 0)
	must(t, f.Sync())
	must(t, c.SyncDir("/a/b"))
	s := c.Crash(vfs.CrashOptions{})
	if _, err := s.Stat("/a"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("/a survived without a sync of /: %v", err)
	}

	c = vfs.NewCrashFS()
	must(t, c.MkdirAll("/a/b", 0o755))
	f = mustCreate(t, c, "/a/b/f")
	mustWrite(t, f, "data", 0)
	must(t, f.Sync())
	for _, d := range []string{"/a/b", "/a", "/"} {
		must(t, c.SyncDir(d))
	}
	wantContent(t, c.Crash(vfs.CrashOptions{}), "/a/b/f", "data")
}

func TestCrashRename(t *testing.T) {
	setup := func(t *testing.T) *vfs.CrashFS {
		c, _ := durableFile(t, "m", "old")
		tmp := mustCreate(t, c, "/d/m.tmp")
		mustWrite(t, tmp, "new", 0)
		must(t, tmp.Sync())
		must(t, c.SyncDir("/d"))
		must(t, c.Rename("/d/m.tmp", "/d/m"))
		return c
	}
	t.Run("unsynced", func(t *testing.T) {
		s := setup(t).Crash(vfs.CrashOptions{})
		wantContent(t, s, "/d/m", "old")
		wantContent(t, s, "/d/m.tmp", "new")
	})
	t.Run("synced", func(t *testing.T) {
		c := setup(t)
		must(t, c.SyncDir("/d"))
		s := c.Crash(vfs.CrashOptions{})
		wantContent(t, s, "/d/m", "new")
		wantContent(t, s, "/d/m.tmp", "<missing>")
	})
}

// A rename across directories is an entry change in both: with only the
// source synced, the file is in neither.
func TestCrashRenameAcrossDirectories(t *testing.T) {
	setup := func(t *testing.T) *vfs.CrashFS {
		c, _ := durableFile(t, "f", "data")
		must(t, c.MkdirAll("/e", 0o755))
		must(t, c.SyncDir("/"))
		must(t, c.Rename("/d/f", "/e/f"))
		return c
	}
	for _, tc := range []struct {
		sync        []string
		inD, inE    string
		description string
	}{
		{nil, "data", "<missing>", "no sync"},
		{[]string{"/d"}, "<missing>", "<missing>", "source synced"},
		{[]string{"/d", "/e"}, "<missing>", "data", "both synced"},
	} {
		t.Run(tc.description, func(t *testing.T) {
			c := setup(t)
			for _, d := range tc.sync {
				must(t, c.SyncDir(d))
			}
			s := c.Crash(vfs.CrashOptions{})
			wantContent(t, s, "/d/f", tc.inD)
			wantContent(t, s, "/e/f", tc.inE)
		})
	}
}

func TestCrashRemove(t *testing.T) {
	c, f := durableFile(t, "f", "data")
	must(t, f.Close())
	must(t, c.Remove("/d/f"))
	wantContent(t, c.Crash(vfs.CrashOptions{}), "/d/f", "data")

	c, _ = durableFile(t, "f", "data")
	must(t, c.Remove("/d/f"))
	must(t, c.SyncDir("/d"))
	wantContent(t, c.Crash(vfs.CrashOptions{}), "/d/f", "<missing>")
}

func TestCrashUnlinkedOpenFileVanishes(t *testing.T) {
	c, f := durableFile(t, "f", "data")
	must(t, c.Remove("/d/f"))
	must(t, c.SyncDir("/d"))
	mustWrite(t, f, "more", 4)
	must(t, f.Sync())
	s := c.Crash(vfs.CrashOptions{})
	if names, err := s.ReadDir("/d"); err != nil || len(names) != 0 {
		t.Fatalf("ReadDir after crash = %v, %v; want empty", names, err)
	}
}

func TestCrashTruncate(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(t *testing.T, f vfs.File)
		want string
	}{
		{"unsynced shrink", func(t *testing.T, f vfs.File) { must(t, f.Truncate(2)) }, "abcdef"},
		{"synced shrink", func(t *testing.T, f vfs.File) { must(t, f.Truncate(2)); must(t, f.Sync()) }, "ab"},
		{"unsynced shrink and regrow", func(t *testing.T, f vfs.File) {
			must(t, f.Truncate(2))
			mustWrite(t, f, "X", 4)
		}, "abcdef"},
		{"synced shrink and regrow", func(t *testing.T, f vfs.File) {
			must(t, f.Truncate(2))
			mustWrite(t, f, "X", 4)
			must(t, f.Sync())
		}, "ab\x00\x00X"},
		{"synced grow", func(t *testing.T, f vfs.File) { must(t, f.Truncate(8)); must(t, f.Sync()) }, "abcdef\x00\x00"},
		{"O_TRUNC unsynced", func(t *testing.T, f vfs.File) {}, "abcdef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := durableFile(t, "f", "abcdef")
			if tc.name == "O_TRUNC unsynced" {
				g, err := c.OpenFile("/d/f", os.O_TRUNC|os.O_RDWR, 0)
				must(t, err)
				mustWrite(t, g, "zz", 0)
			}
			tc.op(t, f)
			wantContent(t, c.Crash(vfs.CrashOptions{}), "/d/f", tc.want)
		})
	}
}

func TestCrashKillsOldFileSystem(t *testing.T) {
	c, f := durableFile(t, "f", "data")
	ro, err := c.OpenFile("/d/f", os.O_RDONLY, 0)
	must(t, err)
	s := c.Crash(vfs.CrashOptions{})
	errs := map[string]error{
		"WriteAt":  func() error { _, err := f.WriteAt([]byte("x"), 0); return err }(),
		"ReadAt":   func() error { _, err := ro.ReadAt(make([]byte, 1), 0); return err }(),
		"Sync":     f.Sync(),
		"Truncate": f.Truncate(0),
		"Size":     func() error { _, err := f.Size(); return err }(),
		"Close":    f.Close(),
		"OpenFile": func() error { _, err := c.OpenFile("/d/f", os.O_RDONLY, 0); return err }(),
		"Create":   func() error { _, err := c.OpenFile("/d/g", os.O_CREATE|os.O_RDWR, 0); return err }(),
		"Rename":   c.Rename("/d/f", "/d/g"),
		"Remove":   c.Remove("/d/f"),
		"MkdirAll": c.MkdirAll("/x", 0o755),
		"ReadDir":  func() error { _, err := c.ReadDir("/d"); return err }(),
		"Stat":     func() error { _, err := c.Stat("/d/f"); return err }(),
		"SyncDir":  c.SyncDir("/d"),
	}
	for op, err := range errs {
		if !errors.Is(err, vfs.ErrCrashed) {
			t.Errorf("%s after crash: %v; want ErrCrashed", op, err)
		}
	}
	if !c.Crashed() || s.Crashed() {
		t.Fatalf("Crashed() = %v for the old, %v for the survivor; want true, false", c.Crashed(), s.Crashed())
	}
	wantContent(t, s, "/d/f", "data")
}

func TestCrashPoint(t *testing.T) {
	// Operations: 1 create, 2 write, 3 sync, 4 syncdir.
	work := func(c *vfs.CrashFS) error {
		f, err := c.OpenFile("/f", os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt([]byte("data"), 0); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return c.SyncDir("/")
	}
	for k, want := range []string{"<missing>", "<missing>", "<missing>", "<missing>", "data", "data"} {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			c := vfs.NewCrashFS()
			c.SetCrashPoint(k)
			err := work(c)
			if k < 4 && !errors.Is(err, vfs.ErrCrashed) {
				t.Fatalf("workload cut after op %d returned %v; want ErrCrashed", k, err)
			}
			if k >= 4 && err != nil {
				t.Fatal(err)
			}
			if got := c.Ops(); got != min(k+1, 4) {
				t.Fatalf("Ops() = %d, want %d", got, min(k+1, 4))
			}
			wantContent(t, c.Crash(vfs.CrashOptions{}), "/f", want)
		})
	}
}

func TestOnOpHook(t *testing.T) {
	c := vfs.NewCrashFS()
	var ops []string
	var survivor *vfs.CrashFS
	c.SetOnOp(func(op vfs.Op) {
		ops = append(ops, fmt.Sprintf("%d %s %s", op.Seq, op.Kind, op.Path))
		if op.Kind == vfs.OpSyncDir {
			survivor = c.Crash(vfs.CrashOptions{})
		}
	})
	must(t, c.MkdirAll("d", 0o755))
	f := mustCreate(t, c, "d/f")
	mustWrite(t, f, "x", 0)
	must(t, f.Sync())
	must(t, f.Truncate(0))
	must(t, c.Rename("d/f", "d/g"))
	must(t, c.Remove("/d/g"))
	if err := c.SyncDir("d/"); !errors.Is(err, vfs.ErrCrashed) {
		t.Fatalf("SyncDir after the hook crashed the file system: %v; want ErrCrashed", err)
	}
	want := []string{
		"1 mkdir /d", "2 create /d/f", "3 write /d/f", "4 sync /d/f",
		"5 truncate /d/f", "6 rename /d/f", "7 remove /d/g", "8 syncdir /d",
	}
	if !slices.Equal(ops, want) {
		t.Fatalf("ops seen:\n%q\nwant:\n%q", ops, want)
	}
	// The crash came before the SyncDir ran.
	if names, err := survivor.ReadDir("/"); err != nil || len(names) != 0 {
		t.Fatalf("survivor's root holds %v, %v; want nothing", names, err)
	}
}

func TestOnOpHookPanicStopsWorkload(t *testing.T) {
	c := vfs.NewCrashFS()
	stop := errors.New("stop")
	c.SetOnOp(func(op vfs.Op) {
		if op.Seq == 2 {
			panic(stop)
		}
	})
	func() {
		defer func() {
			if r := recover(); r != stop {
				t.Fatalf("recovered %v, want the hook's panic", r)
			}
		}()
		must(t, c.MkdirAll("/a", 0o755))
		must(t, c.MkdirAll("/b", 0o755))
		t.Fatal("the hook did not stop the workload")
	}()
	// The lock was not held by the panicking hook.
	c.SetOnOp(nil)
	if names, err := c.ReadDir("/"); err != nil || fmt.Sprint(names) != "[a]" {
		t.Fatalf("ReadDir = %v, %v; want [a]", names, err)
	}
}

func TestCrashRenameOfDirectoryUnsupported(t *testing.T) {
	c := vfs.NewCrashFS()
	must(t, c.MkdirAll("/a", 0o755))
	if err := c.Rename("/a", "/b"); !errors.Is(err, vfs.ErrUnsupported) {
		t.Fatalf("rename of a directory: %v; want ErrUnsupported", err)
	}
	if _, err := c.OpenFile("/f", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); !errors.Is(err, vfs.ErrUnsupported) {
		t.Fatalf("O_APPEND: %v; want ErrUnsupported", err)
	}
}

// shadow mirrors one file: v is what reads see, d what the last Sync made
// durable.
type shadow struct{ v, d []byte }

// randomHistory applies random writes, truncates and syncs to f and s.
func randomHistory(t *testing.T, r *rand.Rand, f vfs.File, s *shadow, ops int) {
	for range ops {
		switch x := r.IntN(10); {
		case x < 6:
			off := r.IntN(len(s.v) + 1500)
			p := make([]byte, 1+r.IntN(1500))
			for i := range p {
				p[i] = byte(1 + r.IntN(255)) // never 0, so zero-fill is visible
			}
			if _, err := f.WriteAt(p, int64(off)); err != nil {
				t.Fatal(err)
			}
			if end := off + len(p); end > len(s.v) {
				s.v = append(s.v, make([]byte, end-len(s.v))...)
			}
			copy(s.v[off:], p)
		case x < 8:
			size := r.IntN(len(s.v) + 1000)
			must(t, f.Truncate(int64(size)))
			if size < len(s.v) {
				s.v = s.v[:size:size]
			} else {
				s.v = append(s.v, make([]byte, size-len(s.v))...)
			}
		default:
			must(t, f.Sync())
			s.d = slices.Clone(s.v)
		}
	}
}

// checkSurvivor checks that every byte of got is one that was written at
// its offset: the durable or the volatile one, except a torn tail of at
// most 512 bytes past the durable size when torn is set.
func checkSurvivor(t *testing.T, got []byte, s *shadow, torn bool) {
	t.Helper()
	if len(got) > max(len(s.d), len(s.v)) {
		t.Fatalf("survivor has %d bytes, more than durable %d and volatile %d", len(got), len(s.d), len(s.v))
	}
	for i, b := range got {
		if i < len(s.d) && b == s.d[i] || i < len(s.v) && b == s.v[i] {
			continue
		}
		if torn && i >= len(s.d) && len(got)-i <= 512 {
			return
		}
		t.Fatalf("byte %d of %d is %#x: neither durable (%d bytes) nor volatile (%d bytes) content", i, len(got), b, len(s.d), len(s.v))
	}
}

func TestCrashRandomKeepsOnlyWrittenBytes(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 7))
		c, f := durableFile(t, "f", "")
		var s shadow
		randomHistory(t, r, f, &s, 1+r.IntN(40))

		wantContent(t, c.Crash(vfs.CrashOptions{}), "/d/f", string(s.d))
		full := c.Crash(vfs.CrashOptions{KeepUnsyncedProb: 1, Rand: r})
		wantContent(t, full, "/d/f", string(s.v))
		for _, opts := range []vfs.CrashOptions{
			{KeepUnsyncedProb: 0.5, Rand: r},
			{KeepUnsyncedProb: 0.1, Rand: r},
			{KeepUnsyncedProb: 0.5, TornTail: true, Rand: r},
			{TornTail: true, Rand: r},
		} {
			got, err := vfs.ReadFile(c.Crash(opts), "/d/f")
			must(t, err)
			checkSurvivor(t, got, &s, opts.TornTail)
		}
	}
}

// The random options must really keep unsynced data and really tear tails,
// or the checks above would pass vacuously.
func TestCrashRandomOutcomesVary(t *testing.T) {
	c, f := durableFile(t, "f", string(bytes.Repeat([]byte{'a'}, 4096)))
	mustWrite(t, f, string(bytes.Repeat([]byte{'b'}, 4096)), 0) // overwrite all 8 sectors
	mustWrite(t, f, string(bytes.Repeat([]byte{'c'}, 4096)), 4096)
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	for range 300 {
		got, err := vfs.ReadFile(c.Crash(vfs.CrashOptions{KeepUnsyncedProb: 0.5, TornTail: true, Rand: r}), "/d/f")
		must(t, err)
		var mixed, prefix, torn bool
		for s := 0; s < 8; s++ {
			if got[s*512] == 'b' && got[0] == 'a' || got[s*512] == 'a' && got[0] == 'b' {
				mixed = true
			}
		}
		if n := len(got); n > 4096 && n < 8192 {
			prefix = got[n-1] == 'c'
			torn = got[n-1] != 'c'
		}
		seen["mixed"] = seen["mixed"] || mixed
		seen["prefix"] = seen["prefix"] || prefix
		seen["torn"] = seen["torn"] || torn
		seen["durable size"] = seen["durable size"] || len(got) == 4096
		seen["full size"] = seen["full size"] || len(got) == 8192
	}
	for _, k := range []string{"mixed", "prefix", "torn", "durable size", "full size"} {
		if !seen[k] {
			t.Errorf("300 random crashes never produced a %s outcome", k)
		}
	}
}

func TestCrashSeedReproduces(t *testing.T) {
	c, f := durableFile(t, "f", "")
	var s shadow
	randomHistory(t, rand.New(rand.NewPCG(3, 3)), f, &s, 60)
	for i := range 5 {
		a := c.Crash(vfs.CrashOptions{KeepUnsyncedProb: 0.5, TornTail: true, Rand: rand.New(rand.NewPCG(uint64(i), 9))})
		b := c.Crash(vfs.CrashOptions{KeepUnsyncedProb: 0.5, TornTail: true, Rand: rand.New(rand.NewPCG(uint64(i), 9))})
		if content(t, a, "/d/f") != content(t, b, "/d/f") {
			t.Fatal("two crashes with the same seed differ")
		}
	}
}

// Unsynced directory operations survive as a prefix of their order, and a
// rename is atomic.
func TestCrashRandomDirectoryOpsArePrefix(t *testing.T) {
	c := vfs.NewCrashFS()
	must(t, c.MkdirAll("/d", 0o755))
	must(t, c.SyncDir("/"))
	x := mustCreate(t, c, "/d/x")
	mustWrite(t, x, "x", 0)
	must(t, x.Sync())
	must(t, c.SyncDir("/d"))
	order := []string{"a", "b", "c"}
	for _, n := range order {
		mustCreate(t, c, "/d/"+n)
	}
	must(t, c.Rename("/d/x", "/d/y"))
	must(t, c.Remove("/d/a"))

	// After k operations of: create a, b, c, rename x y, remove a.
	want := []string{"[x]", "[a x]", "[a b x]", "[a b c x]", "[a b c y]", "[b c y]"}
	r := rand.New(rand.NewPCG(5, 5))
	seen := map[string]bool{}
	for range 500 {
		names, err := c.Crash(vfs.CrashOptions{KeepUnsyncedProb: 0.6, Rand: r}).ReadDir("/d")
		must(t, err)
		got := fmt.Sprint(names)
		if !slices.Contains(want, got) {
			t.Fatalf("survivor holds %s, not a prefix of the operations: one of %v", got, want)
		}
		seen[got] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("500 crashes produced only %v of %v", seen, want)
	}
}

// A SyncDir makes earlier operations on the directory durable: a crash must
// not replay them over the synced state.
func TestCrashRandomDoesNotReplaySyncedDirectoryOps(t *testing.T) {
	c := vfs.NewCrashFS()
	mustCreate(t, c, "/a")
	must(t, c.Remove("/a"))
	must(t, c.SyncDir("/"))
	mustCreate(t, c, "/b")
	r := rand.New(rand.NewPCG(6, 6))
	for range 100 {
		names, err := c.Crash(vfs.CrashOptions{KeepUnsyncedProb: 0.5, Rand: r}).ReadDir("/")
		must(t, err)
		if got := fmt.Sprint(names); got != "[]" && got != "[b]" {
			t.Fatalf("survivor holds %s; want [] or [b]", got)
		}
	}
}

// Concurrent writers and a crash from another goroutine: whatever a writer
// saw synced before the crash is in the survivor.
func TestCrashConcurrentWriters(t *testing.T) {
	const writers, block = 4, 512
	c := vfs.NewCrashFS()
	must(t, c.MkdirAll("/d", 0o755))
	must(t, c.SyncDir("/"))
	files := make([]vfs.File, writers)
	for w := range files {
		files[w] = mustCreate(t, c, fmt.Sprintf("/d/%d", w))
	}
	must(t, c.SyncDir("/d"))

	acked := make([]int, writers) // blocks each writer saw synced
	var wg sync.WaitGroup
	started := make(chan struct{}, writers)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				p := bytes.Repeat([]byte{byte(i)}, block)
				if _, err := files[w].WriteAt(p, int64(i*block)); err != nil {
					return
				}
				if err := files[w].Sync(); err != nil {
					return
				}
				acked[w] = i + 1
				if i == 10 {
					started <- struct{}{}
				}
			}
		})
	}
	for range writers {
		<-started
	}
	s := c.Crash(vfs.CrashOptions{})
	wg.Wait()
	for w := range writers {
		got, err := vfs.ReadFile(s, fmt.Sprintf("/d/%d", w))
		must(t, err)
		// A block synced just before the crash may not be acknowledged yet.
		if n := len(got); n != acked[w]*block && n != (acked[w]+1)*block {
			t.Fatalf("writer %d: survivor has %d bytes, %d blocks were acknowledged", w, n, acked[w])
		}
		for i := range acked[w] {
			if got[i*block] != byte(i) || got[(i+1)*block-1] != byte(i) {
				t.Fatalf("writer %d: block %d corrupted", w, i)
			}
		}
	}
}
