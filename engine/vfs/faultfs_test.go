package vfs_test

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

func TestFaultFailNth(t *testing.T) {
	ffs := vfs.NewFaultFS(vfs.NewCrashFS())
	boom := errors.New("disk on fire")
	ffs.FailNth(vfs.OpSync, 2, boom)
	f := mustCreate(t, ffs, "/f")
	for i, want := range []error{nil, boom, nil} {
		mustWrite(t, f, "x", int64(i)) // writes are not affected
		if err := f.Sync(); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Fatalf("sync %d: %v; want %v", i+1, err, want)
		}
	}
	if err := ffs.SyncDir("/"); err != nil {
		t.Fatalf("syncdir is not affected by a sync fault: %v", err)
	}
}

func TestFaultFailNthDefaultsToErrInjected(t *testing.T) {
	ffs := vfs.NewFaultFS(vfs.NewCrashFS())
	ffs.FailNth(vfs.OpRename, 1, nil)
	mustCreate(t, ffs, "/a")
	if err := ffs.Rename("/a", "/b"); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("rename: %v; want ErrInjected", err)
	}
	if got := content(t, ffs, "/a"); got != "" {
		t.Fatalf("failed rename ran anyway: /a is %q", got)
	}
	if err := ffs.Rename("/a", "/b"); err != nil {
		t.Fatalf("second rename: %v", err)
	}
}

func TestFaultFailAfter(t *testing.T) {
	ffs := vfs.NewFaultFS(vfs.NewCrashFS())
	ffs.FailAfter(2, nil)
	f := mustCreate(t, ffs, "/f") // op 1
	mustWrite(t, f, "ok", 0)      // op 2
	if _, err := f.WriteAt([]byte("no"), 2); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("op 3: %v; want ErrInjected", err)
	}
	// Dead for good, reads included.
	if _, err := f.ReadAt(make([]byte, 2), 0); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("read after the device died: %v; want ErrInjected", err)
	}
	if _, err := ffs.Stat("/f"); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("stat after the device died: %v; want ErrInjected", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close must still release the file: %v", err)
	}
	if n := ffs.Ops(); n != 3 {
		t.Fatalf("Ops() = %d, want 3 (failed operations after the trip are not counted)", n)
	}
}

func TestFaultTrip(t *testing.T) {
	inner := vfs.NewCrashFS()
	ffs := vfs.NewFaultFS(inner)
	mustCreate(t, ffs, "/f")
	gone := errors.New("gone")
	ffs.Trip(gone)
	if err := ffs.MkdirAll("/d", 0o755); !errors.Is(err, gone) {
		t.Fatalf("mkdir after Trip: %v; want %v", err, gone)
	}
	if _, err := inner.Stat("/d"); err == nil {
		t.Fatal("a failed mkdir reached the inner file system")
	}
}

func TestFaultShortWrite(t *testing.T) {
	inner := vfs.NewCrashFS()
	ffs := vfs.NewFaultFS(inner)
	ffs.ShortWriteNth(2)
	f := mustCreate(t, ffs, "/f")
	mustWrite(t, f, "0123", 0)
	n, err := f.WriteAt([]byte("abcdef"), 4)
	if n != 3 || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("short write = %d, %v; want 3, ErrShortWrite", n, err)
	}
	wantContent(t, inner, "/f", "0123abc")
}

func TestFaultCustom(t *testing.T) {
	ffs := vfs.NewFaultFS(vfs.OS{})
	dir := t.TempDir()
	ffs.Add(func(op vfs.Op, n int) vfs.Action {
		if op.Kind == vfs.OpCreate && strings.HasSuffix(op.Path, ".tmp") {
			return vfs.Action{Err: os.ErrPermission}
		}
		return vfs.Action{}
	})
	err := vfs.WriteFileAtomic(ffs, dir+"/m", []byte("x"), 0o644)
	if !errors.Is(err, os.ErrPermission) {
		t.Fatalf("WriteFileAtomic: %v; want ErrPermission", err)
	}
	if !strings.Contains(err.Error(), "m.tmp") {
		t.Fatalf("error %q does not name the file", err)
	}
	mustCreate(t, ffs, dir+"/ok").Close()
}

// FaultFS over CrashFS: a failed SyncDir leaves the new file undurable.
func TestFaultOverCrashFS(t *testing.T) {
	c := vfs.NewCrashFS()
	ffs := vfs.NewFaultFS(c)
	ffs.FailNth(vfs.OpSyncDir, 1, nil)
	err := vfs.WriteFileAtomic(ffs, "/m", []byte("data"), 0o644)
	if !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("WriteFileAtomic: %v; want ErrInjected", err)
	}
	wantContent(t, c.Crash(vfs.CrashOptions{}), "/m", "<missing>")
}
