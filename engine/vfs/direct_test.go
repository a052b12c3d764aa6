package vfs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

func TestAlignedAt(t *testing.T) {
	mem := make([]byte, 3*vfs.DirectAlign+100)
	for _, off := range []int64{0, 1, 48, 4095, 4096, 4097, 1<<20 + 17} {
		b := vfs.AlignedAt(mem, off)
		if len(b) != 0 || cap(b) < cap(mem)-vfs.DirectAlign {
			t.Fatalf("off %d: len %d cap %d of %d", off, len(b), cap(b), cap(mem))
		}
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		if int64(addr%vfs.DirectAlign) != off%vfs.DirectAlign {
			t.Fatalf("off %d: slice starts at %d within its block, want %d", off, addr%vfs.DirectAlign, off%vfs.DirectAlign)
		}
		// The byte for the next block boundary is aligned.
		b = b[:cap(b)]
		if k := (vfs.DirectAlign - off%vfs.DirectAlign) % vfs.DirectAlign; !vfs.Aligned(b[k:]) {
			t.Fatalf("off %d: byte %d is not on a boundary", off, k)
		}
	}
}

// TestWriteDirect: a direct write lands in the file and replaces what a
// buffered write left cached there; unaligned requests are refused with
// ErrNoDirect, never written.
func TestWriteDirect(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	f, err := vfs.OS{}.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, ok := f.(vfs.DirectIO)
	if !ok {
		t.Fatal("a real file does not offer direct I/O")
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 3*vfs.DirectAlign), 0); err != nil {
		t.Fatal(err)
	}
	buf := vfs.AlignedAt(make([]byte, 2*vfs.DirectAlign+vfs.DirectAlign), 0)[:2*vfs.DirectAlign]
	for i := range buf {
		buf[i] = 2
	}
	if _, err := d.WriteDirect(buf[1:vfs.DirectAlign+1], vfs.DirectAlign); !errors.Is(err, vfs.ErrNoDirect) {
		t.Fatalf("unaligned memory: %v, want ErrNoDirect", err)
	}
	if _, err := d.WriteDirect(buf[:100], vfs.DirectAlign); !errors.Is(err, vfs.ErrNoDirect) {
		t.Fatalf("unaligned length: %v, want ErrNoDirect", err)
	}
	if _, err := d.WriteDirect(buf[:vfs.DirectAlign], 10); !errors.Is(err, vfs.ErrNoDirect) {
		t.Fatalf("unaligned offset: %v, want ErrNoDirect", err)
	}
	probe, perr := os.OpenFile(filepath.Join(dir, "probe"), os.O_CREATE|os.O_WRONLY|syscall.O_DIRECT, 0o600)
	if perr == nil {
		probe.Close()
	}
	_, err = d.WriteDirect(buf, vfs.DirectAlign)
	if perr != nil {
		if !errors.Is(err, vfs.ErrNoDirect) {
			t.Fatalf("O_DIRECT is refused here (%v), but WriteDirect said %v", perr, err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3*vfs.DirectAlign)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{1}, vfs.DirectAlign), bytes.Repeat([]byte{2}, 2*vfs.DirectAlign)...)
	if !bytes.Equal(got, want) {
		t.Fatal("a buffered read after a direct write does not see it")
	}
}
