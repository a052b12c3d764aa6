package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"
)

// crashCopy copies the segment files of a live log to a new directory: the
// state a power loss right after the last Sync would leave, preallocated
// tail included.
func crashCopy(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	names, err := filepath.Glob(filepath.Join(from, "*"+segSuffix))
	if err != nil || len(names) == 0 {
		t.Fatalf("no segments in %s: %v", from, err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(n)), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

func fileSize(t *testing.T, name string) int64 {
	t.Helper()
	st, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestPreallocatedSegments(t *testing.T) {
	const segSize = 1 << 20
	dir := t.TempDir()
	l, _ := openT(t, dir, Options{SegmentSize: segSize})
	defer l.Close()
	if fileSize(t, filepath.Join(dir, segName(1))) != segSize {
		t.Skip("the file system here does not preallocate (fallocate)")
	}
	ctx := context.Background()
	// 300 records of 4 KiB: two sealed segments and a preallocated active one.
	for i := range 300 {
		if _, _, err := l.Append(writeRec(1, int64(i)*4096, bytes.Repeat([]byte{byte(i)}, 4096)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.SyncAll(ctx); err != nil {
		t.Fatal(err)
	}
	segs := l.Segments()
	if len(segs) < 2 {
		t.Fatalf("%d segments, want a rotation", len(segs))
	}
	for _, s := range segs[:len(segs)-1] {
		if got := fileSize(t, filepath.Join(dir, segName(s.Num))); got != s.Size {
			t.Errorf("sealed segment %d: file size %d, records end at %d", s.Num, got, s.Size)
		}
	}
	active := segs[len(segs)-1]
	if got := fileSize(t, filepath.Join(dir, segName(active.Num))); got != segSize {
		t.Errorf("active segment: file size %d, want it preallocated to %d", got, segSize)
	}

	t.Run("zero tail is the end of the log", func(t *testing.T) {
		c := crashCopy(t, dir)
		rep, err := Verify(ctx, nil, c)
		if err != nil || !rep.OK() || rep.Records != 300 {
			t.Fatalf("verify: %+v %v", rep, err)
		}
		l2, recs := openT(t, c, Options{SegmentSize: segSize})
		if len(recs) != 300 {
			t.Fatalf("%d records after the crash, want 300", len(recs))
		}
		if torn, _ := filepath.Glob(filepath.Join(c, "torn", "*")); len(torn) != 0 {
			t.Fatalf("preallocated zeros kept as a torn tail: %v", torn)
		}
		if _, _, err := l2.Append(writeRec(1, 0, bytes.Repeat([]byte{0xaa}, 4096)), nil); err != nil {
			t.Fatal(err)
		}
		if err := l2.Close(); err != nil {
			t.Fatal(err)
		}
		// A clean close leaves exactly the records.
		if got := fileSize(t, filepath.Join(c, segName(active.Num))); got != active.Size+4096+RecordOverhead {
			t.Errorf("after close: file size %d, want %d", got, active.Size+4096+RecordOverhead)
		}
		_, recs = openT(t, c, Options{SegmentSize: segSize})
		if len(recs) != 301 || recs[300].Data[0] != 0xaa {
			t.Fatalf("%d records after reopen, want 301", len(recs))
		}
	})

	t.Run("torn record in preallocated space", func(t *testing.T) {
		c := crashCopy(t, dir)
		seg := filepath.Join(c, segName(active.Num))
		f, err := os.OpenFile(seg, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Half a frame header that reached the disk, zeros after it.
		f.WriteAt([]byte{0x30, 0x10, 0, 0, 1, 2, 3}, active.Size)
		f.Close()
		rep, err := Verify(ctx, nil, c)
		if err != nil || rep.OK() || !rep.Repairable() {
			t.Fatalf("verify: %+v %v", rep, err)
		}
		l2, recs := openT(t, c, Options{SegmentSize: segSize})
		defer l2.Close()
		if len(recs) != 300 {
			t.Fatalf("%d records, want 300", len(recs))
		}
		torn, _ := filepath.Glob(filepath.Join(c, "torn", "*.tail"))
		if len(torn) != 1 || fileSize(t, torn[0]) != 7 {
			t.Fatalf("torn tail copy %v: want one of 7 bytes, without the zeros", torn)
		}
		if got := fileSize(t, seg); got != segSize {
			t.Errorf("after the cut: file size %d, want it preallocated again to %d", got, segSize)
		}
		seq, _, err := l2.Append(writeRec(1, 0, bytes.Repeat([]byte{0xbb}, 4096)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l2.Sync(ctx, seq); err != nil {
			t.Fatal(err)
		}
		if rep, err := Verify(ctx, nil, c); err != nil || !rep.OK() || rep.Records != 301 {
			t.Fatalf("verify after the cut: %+v %v", rep, err)
		}
	})
}

// TestZeroAhead: small syncs write zeros ahead of the records, so the
// blocks the next records land in are already written (not unwritten
// extents that each later fdatasync would have to convert), and the log
// reads back whole after a crash copy.
func TestZeroAhead(t *testing.T) {
	const segSize = 8 << 20
	dir := t.TempDir()
	l, _ := openT(t, dir, Options{SegmentSize: segSize})
	defer l.Close()
	name := filepath.Join(dir, segName(1))
	if fileSize(t, name) != segSize {
		t.Skip("the file system here does not preallocate (fallocate)")
	}
	ctx := context.Background()
	const n = 400 // about 1.6 MiB of records, each synced: a flush per write
	for i := range n {
		seq, _, err := l.Append(writeRec(1, int64(i)*4096, bytes.Repeat([]byte{byte(i) | 1}, 4096)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(ctx, seq); err != nil {
			t.Fatal(err)
		}
		seg := l.active
		if seg.zeroed-seg.written < zeroLead-zeroChunk/4 && seg.zeroed < segSize {
			t.Fatalf("after sync %d: zeros end at %d, records at %d: not ahead", i, seg.zeroed, seg.written)
		}
	}
	seg := l.active
	unwritten, ok := unwrittenBytes(t, name, seg.written, seg.zeroed-seg.written)
	if ok && unwritten != 0 {
		t.Fatalf("%d bytes between the records' end %d and the zeros' end %d are still unwritten extents", unwritten, seg.written, seg.zeroed)
	}
	if ok {
		// The check itself: past the zeros the segment is unwritten.
		if beyond, _ := unwrittenBytes(t, name, seg.zeroed, segSize-seg.zeroed); beyond == 0 {
			t.Fatal("no unwritten extent past the zeros: the check cannot tell")
		}
	}
	copyDir := crashCopy(t, dir)
	l2, recs := openT(t, copyDir, Options{SegmentSize: segSize})
	defer l2.Close()
	if len(recs) != n {
		t.Fatalf("reopened: %d records, want %d", len(recs), n)
	}
	for i, r := range recs {
		if r.Data[0] != byte(i)|1 || r.Data[4095] != byte(i)|1 {
			t.Fatalf("record %d reads back wrong", i)
		}
	}
}

// unwrittenBytes counts the bytes of [off, off+length) of the file in
// extents flagged unwritten (FIEMAP); ok is false where FIEMAP is not
// available.
func unwrittenBytes(t *testing.T, name string, off, length int64) (n int64, ok bool) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const (
		fsIocFiemap     = 0xC020660B
		fiemapFlagSync  = 1
		extentUnwritten = 0x800
		headerSize      = 32
		extentSize      = 56
		maxExtents      = 256
	)
	buf := make([]byte, headerSize+extentSize*maxExtents)
	binary.LittleEndian.PutUint64(buf[0:], uint64(off))
	binary.LittleEndian.PutUint64(buf[8:], uint64(length))
	binary.LittleEndian.PutUint32(buf[16:], fiemapFlagSync)
	binary.LittleEndian.PutUint32(buf[24:], maxExtents)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return 0, false
	}
	mapped := int(binary.LittleEndian.Uint32(buf[20:]))
	for i := range mapped {
		e := buf[headerSize+i*extentSize:]
		lo, ln := int64(binary.LittleEndian.Uint64(e[0:])), int64(binary.LittleEndian.Uint64(e[16:]))
		if binary.LittleEndian.Uint32(e[40:])&extentUnwritten == 0 {
			continue
		}
		a, b := max(lo, off), min(lo+ln, off+length)
		if b > a {
			n += b - a
		}
	}
	return n, true
}
