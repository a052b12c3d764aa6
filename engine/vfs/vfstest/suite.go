// Package vfstest holds the conformance suite every vfs.FS implementation
// must pass, so that code tested on a CrashFS behaves the same on the real
// file system, and a helper to cut a workload at every crash point.
package vfstest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
	"testing"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// NewFS returns an empty file system and an existing directory in it for
// the test to work under.
type NewFS func(t *testing.T) (fsys vfs.FS, dir string)

// Run runs the conformance suite against the file systems newFS returns.
func Run(t *testing.T, newFS NewFS) {
	tests := []struct {
		name string
		fn   func(t *testing.T, fsys vfs.FS, dir string)
	}{
		{"WriteRead", testWriteRead},
		{"ReadAtEOF", testReadAtEOF},
		{"WriteAtPastEOFZeroFills", testWriteAtPastEOF},
		{"OpenMissing", testOpenMissing},
		{"CreateExclusive", testCreateExclusive},
		{"OpenTruncate", testOpenTruncate},
		{"Truncate", testTruncate},
		{"AccessModes", testAccessModes},
		{"ClosedFile", testClosedFile},
		{"RenameReplaces", testRenameReplaces},
		{"RenameMissing", testRenameMissing},
		{"RemovedOpenFileStillWorks", testRemovedOpenFile},
		{"Remove", testRemove},
		{"MkdirAllReadDirStat", testMkdirAll},
		{"MkdirAllOverFile", testMkdirAllOverFile},
		{"SyncDir", testSyncDir},
		{"WriteFileAtomic", testWriteFileAtomic},
		{"ConcurrentWriters", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fsys, dir := newFS(t)
			tc.fn(t, fsys, dir)
		})
	}
}

func create(t *testing.T, fsys vfs.FS, name string) vfs.File {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func writeAt(t *testing.T, f vfs.File, p []byte, off int64) {
	t.Helper()
	if n, err := f.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
	}
}

func readFile(t *testing.T, fsys vfs.FS, name string) []byte {
	t.Helper()
	b, err := vfs.ReadFile(fsys, name)
	if err != nil {
		t.Fatalf("ReadFile(%q): %v", name, err)
	}
	return b
}

func wantSize(t *testing.T, f vfs.File, want int64) {
	t.Helper()
	if got, err := f.Size(); err != nil || got != want {
		t.Fatalf("Size() = %d, %v; want %d", got, err, want)
	}
}

func testWriteRead(t *testing.T, fsys vfs.FS, dir string) {
	name := path.Join(dir, "a")
	f := create(t, fsys, name)
	writeAt(t, f, []byte("hello world"), 0)
	writeAt(t, f, []byte("W"), 6)
	wantSize(t, f, 11)
	buf := make([]byte, 5)
	if n, err := f.ReadAt(buf, 6); err != nil || n != 5 || string(buf) != "World" {
		t.Fatalf("ReadAt = %d, %v, %q; want 5, nil, \"World\"", n, err, buf)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, fsys, name); string(got) != "hello World" {
		t.Fatalf("content %q, want %q", got, "hello World")
	}
	st, err := fsys.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 11 || st.IsDir() || st.Name() != "a" {
		t.Fatalf("Stat = name %q size %d dir %v; want a, 11, false", st.Name(), st.Size(), st.IsDir())
	}
}

func testReadAtEOF(t *testing.T, fsys vfs.FS, dir string) {
	f := create(t, fsys, path.Join(dir, "a"))
	writeAt(t, f, []byte("abcdef"), 0)
	buf := make([]byte, 4)
	n, err := f.ReadAt(buf, 4)
	if n != 2 || !errors.Is(err, io.EOF) || string(buf[:n]) != "ef" {
		t.Fatalf("ReadAt across EOF = %d, %v, %q; want 2, EOF, \"ef\"", n, err, buf[:n])
	}
	n, err = f.ReadAt(buf, 6)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt at EOF = %d, %v; want 0, EOF", n, err)
	}
	n, err = f.ReadAt(buf, 100)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt past EOF = %d, %v; want 0, EOF", n, err)
	}
	if _, err := f.ReadAt(buf, -1); err == nil {
		t.Fatal("ReadAt at a negative offset succeeded")
	}
}

func testWriteAtPastEOF(t *testing.T, fsys vfs.FS, dir string) {
	f := create(t, fsys, path.Join(dir, "a"))
	writeAt(t, f, []byte("ab"), 0)
	writeAt(t, f, []byte("z"), 5000)
	wantSize(t, f, 5001)
	got := make([]byte, 5001)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 5001)
	copy(want, "ab")
	want[5000] = 'z'
	if !bytes.Equal(got, want) {
		t.Fatal("the gap before a write past EOF is not zero-filled")
	}
}

func testOpenMissing(t *testing.T, fsys vfs.FS, dir string) {
	_, err := fsys.OpenFile(path.Join(dir, "missing"), os.O_RDONLY, 0)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open missing file: %v; want ErrNotExist", err)
	}
	_, err = fsys.OpenFile(path.Join(dir, "nodir", "a"), os.O_CREATE|os.O_RDWR, 0o644)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("create in a missing directory: %v; want ErrNotExist", err)
	}
	if _, err := fsys.Stat(path.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat of a missing file: %v; want ErrNotExist", err)
	}
	if _, err := fsys.ReadDir(path.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadDir of a missing directory: %v; want ErrNotExist", err)
	}
}

func testCreateExclusive(t *testing.T, fsys vfs.FS, dir string) {
	name := path.Join(dir, "a")
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("exclusive create of a new file: %v", err)
	}
	f.Close()
	_, err = fsys.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("exclusive create of an existing file: %v; want ErrExist", err)
	}
}

func testOpenTruncate(t *testing.T, fsys vfs.FS, dir string) {
	name := path.Join(dir, "a")
	if err := vfs.WriteFileAtomic(fsys, name, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	wantSize(t, f, 11) // O_CREATE alone keeps the content
	f.Close()
	f, err = fsys.OpenFile(name, os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantSize(t, f, 0)
}

func testTruncate(t *testing.T, fsys vfs.FS, dir string) {
	f := create(t, fsys, path.Join(dir, "a"))
	writeAt(t, f, bytes.Repeat([]byte{'x'}, 1000), 0)
	if err := f.Truncate(10); err != nil {
		t.Fatal(err)
	}
	wantSize(t, f, 10)
	if err := f.Truncate(20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 20)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{'x'}, 10), make([]byte, 10)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("after shrink and grow: %q, want %q", got, want)
	}
	if err := f.Truncate(-1); err == nil {
		t.Fatal("Truncate(-1) succeeded")
	}
}

func testAccessModes(t *testing.T, fsys vfs.FS, dir string) {
	name := path.Join(dir, "a")
	create(t, fsys, name)
	r, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("write through a read-only handle succeeded")
	}
	w, err := fsys.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writeAt(t, w, []byte("x"), 0)
	if _, err := w.ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("read through a write-only handle succeeded")
	}
	buf := make([]byte, 1)
	if _, err := r.ReadAt(buf, 0); err != nil || buf[0] != 'x' {
		t.Fatalf("reader does not see the writer's byte: %q, %v", buf, err)
	}
}

func testClosedFile(t *testing.T, fsys vfs.FS, dir string) {
	f, err := fsys.OpenFile(path.Join(dir, "a"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]error{
		"WriteAt": func() error { _, err := f.WriteAt([]byte("x"), 0); return err }(),
		"ReadAt":  func() error { _, err := f.ReadAt(make([]byte, 1), 0); return err }(),
		"Sync":    f.Sync(),
		"Size":    func() error { _, err := f.Size(); return err }(),
		"Close":   f.Close(),
	}
	for op, err := range checks {
		if !errors.Is(err, fs.ErrClosed) {
			t.Errorf("%s on a closed file: %v; want ErrClosed", op, err)
		}
	}
}

func testRenameReplaces(t *testing.T, fsys vfs.FS, dir string) {
	a, b := path.Join(dir, "a"), path.Join(dir, "b")
	fa := create(t, fsys, a)
	writeAt(t, fa, []byte("new"), 0)
	fb := create(t, fsys, b)
	writeAt(t, fb, []byte("old"), 0)
	if err := fsys.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Stat(a); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("source still there after rename: %v", err)
	}
	if got := readFile(t, fsys, b); string(got) != "new" {
		t.Fatalf("target holds %q, want \"new\"", got)
	}
	buf := make([]byte, 3)
	if _, err := fb.ReadAt(buf, 0); err != nil || string(buf) != "old" {
		t.Fatalf("handle of the replaced file reads %q, %v; want \"old\"", buf, err)
	}
	writeAt(t, fa, []byte("N"), 0) // the renamed handle still writes the file
	if got := readFile(t, fsys, b); string(got) != "New" {
		t.Fatalf("target holds %q, want \"New\"", got)
	}
	if err := fsys.Rename(b, b); err != nil {
		t.Fatalf("rename onto itself: %v", err)
	}
	if got, err := fsys.ReadDir(dir); err != nil || fmt.Sprint(got) != "[b]" {
		t.Fatalf("ReadDir = %v, %v; want [b]", got, err)
	}
}

func testRenameMissing(t *testing.T, fsys vfs.FS, dir string) {
	err := fsys.Rename(path.Join(dir, "missing"), path.Join(dir, "b"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rename of a missing file: %v; want ErrNotExist", err)
	}
	create(t, fsys, path.Join(dir, "a"))
	err = fsys.Rename(path.Join(dir, "a"), path.Join(dir, "nodir", "b"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rename into a missing directory: %v; want ErrNotExist", err)
	}
}

func testRemovedOpenFile(t *testing.T, fsys vfs.FS, dir string) {
	name := path.Join(dir, "a")
	f := create(t, fsys, name)
	writeAt(t, f, []byte("abc"), 0)
	if err := fsys.Remove(name); err != nil {
		t.Fatal(err)
	}
	writeAt(t, f, []byte("d"), 3)
	if err := f.Sync(); err != nil {
		t.Fatalf("sync of an unlinked open file: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "abcd" {
		t.Fatalf("unlinked open file reads %q, %v; want \"abcd\"", buf, err)
	}
	if _, err := fsys.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat after remove: %v; want ErrNotExist", err)
	}
	// A new file under the same name is a different file.
	g := create(t, fsys, name)
	wantSize(t, g, 0)
	wantSize(t, f, 4)
}

func testRemove(t *testing.T, fsys vfs.FS, dir string) {
	sub := path.Join(dir, "sub")
	if err := fsys.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	create(t, fsys, path.Join(sub, "a"))
	if err := fsys.Remove(sub); err == nil {
		t.Fatal("removed a non-empty directory")
	}
	if err := fsys.Remove(path.Join(sub, "a")); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Remove(sub); err != nil {
		t.Fatalf("remove an empty directory: %v", err)
	}
	if err := fsys.Remove(sub); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("remove a missing directory: %v; want ErrNotExist", err)
	}
}

func testMkdirAll(t *testing.T, fsys vfs.FS, dir string) {
	deep := path.Join(dir, "x", "y", "z")
	if err := fsys.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fsys.MkdirAll(deep, 0o755); err != nil {
		t.Fatalf("MkdirAll of an existing directory: %v", err)
	}
	for _, n := range []string{"c", "a", "b"} {
		create(t, fsys, path.Join(deep, n))
	}
	if err := fsys.MkdirAll(path.Join(deep, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := fsys.ReadDir(deep)
	if err != nil || fmt.Sprint(got) != "[a b c d]" {
		t.Fatalf("ReadDir = %v, %v; want [a b c d]", got, err)
	}
	st, err := fsys.Stat(path.Join(dir, "x", "y"))
	if err != nil || !st.IsDir() || st.Name() != "y" {
		t.Fatalf("Stat of a directory = %v, %v", st, err)
	}
	if _, err := fsys.ReadDir(path.Join(deep, "a")); err == nil {
		t.Fatal("ReadDir of a file succeeded")
	}
}

func testMkdirAllOverFile(t *testing.T, fsys vfs.FS, dir string) {
	name := path.Join(dir, "f")
	create(t, fsys, name)
	if err := fsys.MkdirAll(path.Join(name, "sub"), 0o755); err == nil {
		t.Fatal("MkdirAll below a file succeeded")
	}
	if err := fsys.MkdirAll(name, 0o755); err == nil {
		t.Fatal("MkdirAll over a file succeeded")
	}
}

func testSyncDir(t *testing.T, fsys vfs.FS, dir string) {
	create(t, fsys, path.Join(dir, "a"))
	if err := fsys.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := fsys.SyncDir(path.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("SyncDir of a missing directory: %v; want ErrNotExist", err)
	}
}

func testWriteFileAtomic(t *testing.T, fsys vfs.FS, dir string) {
	name := path.Join(dir, "manifest")
	for _, content := range []string{"one", "two, longer", "3"} {
		if err := vfs.WriteFileAtomic(fsys, name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, fsys, name); string(got) != content {
			t.Fatalf("content %q, want %q", got, content)
		}
	}
	if got, err := fsys.ReadDir(dir); err != nil || fmt.Sprint(got) != "[manifest]" {
		t.Fatalf("ReadDir = %v, %v; want [manifest] (no temp file left)", got, err)
	}
}

func testConcurrent(t *testing.T, fsys vfs.FS, dir string) {
	const writers, blocks, bs = 4, 50, 512
	f := create(t, fsys, path.Join(dir, "a"))
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			block := bytes.Repeat([]byte{byte('A' + w)}, bs)
			got := make([]byte, bs)
			for i := range blocks {
				off := int64((i*writers + w) * bs)
				if _, err := f.WriteAt(block, off); err != nil {
					errs <- err
					return
				}
				if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, block) {
					errs <- fmt.Errorf("writer %d block %d reads back %q, %v", w, i, got[:8], err)
					return
				}
				if i%10 == 0 {
					if err := f.Sync(); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantSize(t, f, writers*blocks*bs)
}
