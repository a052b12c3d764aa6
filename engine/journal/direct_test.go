package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// directSupported reports whether dir's file system takes O_DIRECT.
func directSupported(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_CREATE|os.O_WRONLY|syscall.O_DIRECT, 0o600)
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(filepath.Join(dir, "probe"))
	return true
}

// fillRandom fills b from r, eight bytes a call.
func fillRandom(r *rand.Rand, b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, r.Uint64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

type appended struct {
	loc  Loc
	data []byte
}

// appendMixed appends n write records of 1 byte to 1 MiB with random
// content, syncing now and then (so small flushes, their zeros ahead and
// large direct writes interleave), and returns them.
func appendMixed(t *testing.T, l *Log, r *rand.Rand, n int) []appended {
	t.Helper()
	var out []appended
	for i := 0; i < n; i++ {
		size := 1 + r.IntN(4096)
		if r.IntN(3) == 0 {
			size = 4096 + r.IntN(1<<20)
		}
		data := make([]byte, size)
		fillRandom(r, data)
		var loc Loc
		if _, _, err := l.Append(writeRec(1, 0, data), func(_ uint64, _ int64, lc Loc) { loc = lc }); err != nil {
			t.Fatal(err)
		}
		out = append(out, appended{loc.Add(DataOffset), data})
		if r.IntN(10) == 0 {
			if err := l.SyncAll(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

func checkReads(t *testing.T, l *Log, r *rand.Rand, recs []appended) {
	t.Helper()
	for i, a := range recs {
		got := make([]byte, len(a.data))
		if err := l.ReadData(a.loc, got); err != nil {
			t.Fatalf("record %d at %s: %v", i, a.loc, err)
		}
		if !bytes.Equal(got, a.data) {
			t.Fatalf("record %d at %s (%d bytes): data differs", i, a.loc, len(a.data))
		}
		// A part of it, as a volume read of some of its blocks asks.
		from := r.IntN(len(a.data))
		to := from + 1 + r.IntN(len(a.data)-from)
		part := make([]byte, to-from)
		if err := l.ReadData(a.loc.Add(int64(from)), part); err != nil || !bytes.Equal(part, a.data[from:to]) {
			t.Fatalf("record %d bytes %d-%d: %v or data differs", i, from, to, err)
		}
	}
}

// TestDirectWritesRoundTrip: records written partly past the page cache
// (whole pages in the middle of large writes) and partly through it (the
// pages at either end, small flushes) read back whole, before and after a
// reopen, with and without the cache of recent writes.
func TestDirectWritesRoundTrip(t *testing.T) {
	for _, cache := range []int64{0, 3<<20 + 12345} {
		dir := t.TempDir()
		r := rand.New(rand.NewPCG(uint64(cache), 7))
		opts := Options{SegmentSize: 8 << 20, WriteBehind: 512 << 10, Cache: cache}
		l, _ := openT(t, dir, opts)
		recs := appendMixed(t, l, r, 120)
		if err := l.SyncAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		checkReads(t, l, r, recs)
		if directSupported(t, dir) {
			if l.directBytes.Load() == 0 || l.noDirect.Load() {
				t.Fatalf("cache %d: the file system takes O_DIRECT, but no record was written past the page cache", cache)
			}
		} else if !l.noDirect.Load() {
			t.Fatalf("cache %d: O_DIRECT is refused here, but the log did not fall back", cache)
		}
		st := l.Stats()
		if st.CacheMemory > cache || st.CacheSize != cache {
			t.Fatalf("cache of %d bytes: %+v", cache, st)
		}
		if st.ReadFile == 0 || (cache > 0) != (st.ReadMemory > 0) {
			t.Fatalf("cache %d: %d bytes read from memory, %d from the files", cache, st.ReadMemory, st.ReadFile)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l2, scanned := openT(t, dir, opts)
		if len(scanned) != len(recs) {
			t.Fatalf("cache %d: reopened with %d records, want %d", cache, len(scanned), len(recs))
		}
		for i, rec := range scanned {
			if !bytes.Equal(rec.Data, recs[i].data) {
				t.Fatalf("cache %d: record %d differs after reopen", cache, i)
			}
		}
		more := appendMixed(t, l2, r, 40)
		checkReads(t, l2, r, append(recs, more...))
		if err := l2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
