package journal

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
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
