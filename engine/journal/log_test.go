package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

func openT(t *testing.T, dir string, opts Options) (*Log, []*Record) {
	t.Helper()
	var recs []*Record
	l, _, err := Open(context.Background(), dir, opts, func(r *Record, _ Loc) error {
		c := *r
		c.Data = append([]byte(nil), r.Data...)
		recs = append(recs, &c)
		return nil
	})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return l, recs
}

func writeRec(vol uint32, off int64, data []byte) *Record {
	return &Record{Type: TypeWrite, Volume: vol, Offset: off, Length: uint32(len(data)), Data: data}
}

func TestAppendReopenRoundTrip(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Unix(1000, 0))
	l, _ := openT(t, dir, Options{Clock: clk, SegmentSize: 4096})
	var locs []Loc
	for i := 0; i < 50; i++ {
		data := bytes.Repeat([]byte{byte(i)}, 512)
		_, _, err := l.Append(writeRec(uint32(i%3+1), int64(i)*512, data), func(_ uint64, _ int64, loc Loc) { locs = append(locs, loc) })
		if err != nil {
			t.Fatal(err)
		}
	}
	m := &Record{Type: TypeMarker, Marker: &MarkerRec{ID: "m1", Service: "web", Class: "app", Volumes: []uint32{1, 2, 3}, Evidence: []byte(`{"lsn":"0/16"}`)}}
	if _, _, err := l.Append(m, nil); err != nil {
		t.Fatal(err)
	}
	// Unsynced data is readable.
	got := make([]byte, 512)
	if err := l.ReadData(locs[49].Add(DataOffset), got); err != nil || got[0] != 49 {
		t.Fatalf("read buffered: %v %d", err, got[0])
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Set(time.Unix(10, 0)) // wall clock stepped back
	l2, recs := openT(t, dir, Options{Clock: clk, SegmentSize: 4096})
	defer l2.Close()
	if len(recs) != 51 {
		t.Fatalf("got %d records, want 51", len(recs))
	}
	if len(l2.Segments()) < 5 {
		t.Fatalf("expected several segments with a 4 KiB segment size, got %d", len(l2.Segments()))
	}
	for i, r := range recs[:50] {
		if r.Seq != uint64(i+1) || r.Data[0] != byte(i) || r.Volume != uint32(i%3+1) {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	mr := recs[50].Marker
	if mr == nil || mr.ID != "m1" || len(mr.Volumes) != 3 || string(mr.Evidence) != `{"lsn":"0/16"}` {
		t.Fatalf("marker: %+v", recs[50])
	}
	_, ts, err := l2.Append(writeRec(1, 0, make([]byte, 512)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ts <= recs[50].TS {
		t.Fatalf("timestamp went backwards across restart: %d <= %d", ts, recs[50].TS)
	}
	if err := l2.ReadData(locs[10].Add(DataOffset), got); err != nil || got[0] != 10 {
		t.Fatalf("read sealed segment: %v %d", err, got[0])
	}
}

func TestTornTailIsCutAndKept(t *testing.T) {
	dir := t.TempDir()
	l, _ := openT(t, dir, Options{})
	for i := 0; i < 10; i++ {
		l.Append(writeRec(1, 0, bytes.Repeat([]byte{byte(i)}, 4096)), nil)
	}
	if err := l.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	// An unsynced append whose bytes only partly reached the disk.
	l.Append(writeRec(1, 0, bytes.Repeat([]byte{0xee}, 4096)), nil)
	l.writeOut(false, 0)
	seg := filepath.Join(dir, segName(1))
	// The records end here; the file itself may be preallocated past it.
	end := l.Segments()[0].Size
	l.Close() // Close syncs; emulate the crash by chopping the last record.
	if err := os.Truncate(seg, end-100); err != nil {
		t.Fatal(err)
	}
	// The synced-through mark written by Close covers the chopped record, so
	// reset it to what the last real sync covered.
	resetSynced(t, seg, end-(4096+RecordOverhead))
	l2, recs := openT(t, dir, Options{})
	defer l2.Close()
	if len(recs) != 10 {
		t.Fatalf("got %d records after torn tail, want 10", len(recs))
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "torn", "*.tail"))
	if len(kept) != 1 {
		t.Fatalf("torn tail copy not kept: %v", kept)
	}
	rep, err := Verify(context.Background(), nil, dir)
	if err != nil || !rep.OK() || rep.Records != 10 {
		t.Fatalf("verify after repair: %+v %v", rep, err)
	}
}

func resetSynced(t *testing.T, seg string, off int64) {
	t.Helper()
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(encodeSyncedSlot(off), syncedSlotOff); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionBelowSyncedIsRefused(t *testing.T) {
	cases := map[string]func(t *testing.T, dir string){
		"bit flip mid segment": func(t *testing.T, dir string) {
			flip(t, filepath.Join(dir, segName(1)), segHeaderSize+RecordOverhead+100)
		},
		"zeroed sector": func(t *testing.T, dir string) {
			p := filepath.Join(dir, segName(1))
			f, _ := os.OpenFile(p, os.O_RDWR, 0)
			f.WriteAt(make([]byte, 512), 4096)
			f.Close()
		},
		"missing segment": func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, segName(2))); err != nil {
				t.Fatal(err)
			}
		},
		// Well-formed records (good checksums) that break the order: only
		// the sequence and timestamp checks catch these.
		"sequence number skipped": func(t *testing.T, dir string) {
			rewriteRecord(t, filepath.Join(dir, segName(1)), 3, func(body []byte) {
				binary.LittleEndian.PutUint64(body[8:], binary.LittleEndian.Uint64(body[8:])+1)
			})
		},
		"timestamp going back": func(t *testing.T, dir string) {
			rewriteRecord(t, filepath.Join(dir, segName(1)), 3, func(body []byte) {
				binary.LittleEndian.PutUint64(body[16:], 1)
			})
		},
		"truncated sealed segment": func(t *testing.T, dir string) {
			p := filepath.Join(dir, segName(1))
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()-10)
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := openT(t, dir, Options{SegmentSize: 64 << 10})
			for i := 0; i < 40; i++ {
				l.Append(writeRec(1, int64(i)*4096, bytes.Repeat([]byte{byte(i)}, 4096)), nil)
			}
			l.Close()
			before := snapshotDir(t, dir)
			damage(t, dir)
			damaged := snapshotDir(t, dir)
			_, _, err := Open(context.Background(), dir, Options{}, nil)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open of damaged log: got %v, want ErrCorrupt", err)
			}
			rep, err := Verify(context.Background(), nil, dir)
			if err != nil || rep.OK() || rep.Repairable() {
				t.Fatalf("verify: %+v %v", rep, err)
			}
			if _, err := Repair(context.Background(), nil, dir); !errors.Is(err, ErrUnsafeRepair) {
				t.Fatalf("repair: got %v, want ErrUnsafeRepair", err)
			}
			if after := snapshotDir(t, dir); fmt.Sprint(after) != fmt.Sprint(damaged) {
				t.Fatal("refused repair changed files")
			}
			_ = before
		})
	}
}

// rewriteRecord applies change to the body of the k-th record (from 0) of
// segment file p and seals it again with a valid checksum.
func rewriteRecord(t *testing.T, p string, k int, change func(body []byte)) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	off := segHeaderSize
	for i := 0; i < k; i++ {
		off += frameSize + int(binary.LittleEndian.Uint32(b[off:]))
	}
	n := int(binary.LittleEndian.Uint32(b[off:]))
	body := b[off+frameSize : off+frameSize+n]
	change(body)
	binary.LittleEndian.PutUint32(b[off+4:], crc32.Checksum(body, castagnoli))
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x10
	f.WriteAt(b, off)
}

func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			out[p] = fmt.Sprintf("%x", b)
		}
		return nil
	})
	return out
}

func TestGroupCommitConcurrent(t *testing.T) {
	dir := t.TempDir()
	l, _ := openT(t, dir, Options{SegmentSize: 1 << 20})
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				seq, _, err := l.Append(writeRec(uint32(w+1), int64(i)*4096, bytes.Repeat([]byte{byte(w)}, 4096)), nil)
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.Sync(context.Background(), seq); err != nil {
					t.Error(err)
					return
				}
				if l.DurableSeq() < seq {
					t.Errorf("sync returned before seq %d was durable", seq)
				}
			}
		}(w)
	}
	wg.Wait()
	l.Close()
	_, recs := openT(t, dir, Options{SegmentSize: 1 << 20})
	if len(recs) != 1600 {
		t.Fatalf("got %d records, want 1600", len(recs))
	}
}

func TestFailedWriteIsSticky(t *testing.T) {
	dir := t.TempDir()
	l, _ := openT(t, dir, Options{})
	seq, _, _ := l.Append(writeRec(1, 0, make([]byte, 512)), nil)
	l.active.f.Close() // the disk goes away
	if err := l.Sync(context.Background(), seq); err == nil {
		t.Fatal("sync on a closed file succeeded")
	}
	if _, _, err := l.Append(writeRec(1, 0, make([]byte, 512)), nil); err == nil {
		t.Fatal("append after a failed sync was accepted")
	}
	_ = vfs.OS{}
}

// TestWriteBehindBound: while the disk stalls, appenders fill the buffer up
// to twice the write-behind and then wait; the log's buffered bytes never
// pass that bound (plus one record), and everything lands once the disk
// moves again.
func TestWriteBehindBound(t *testing.T) {
	const wb = 256 << 10
	fsys := vfs.NewCrashFS()
	l, _, err := Open(context.Background(), "/j", Options{FS: fsys, WriteBehind: wb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := make(chan struct{})
	stalled := make(chan struct{}, 1)
	fsys.SetOnOp(func(op vfs.Op) {
		if op.Kind == vfs.OpWrite {
			select {
			case stalled <- struct{}{}:
			default:
			}
			<-release
		}
	})
	const n = 400 // 400 × 4 KiB: far more than twice the write-behind
	done := make(chan error, 1)
	var appended atomic.Int64
	go func() {
		for i := range n {
			if _, _, err := l.Append(writeRec(1, int64(i)*4096, bytes.Repeat([]byte{byte(i)}, 4096)), nil); err != nil {
				done <- err
				return
			}
			appended.Add(1)
		}
		done <- nil
	}()
	<-stalled
	// Let the appender run into the bound.
	deadline := time.Now().Add(5 * time.Second)
	for last := int64(-1); ; {
		time.Sleep(20 * time.Millisecond)
		cur := appended.Load()
		if cur == last || time.Now().After(deadline) {
			break
		}
		last = cur
	}
	l.mu.Lock()
	buffered := len(l.buf) + len(l.inflight)
	l.mu.Unlock()
	if limit := 2*wb + 2*(4096+RecordOverhead+64); len(l.buf) > limit {
		t.Fatalf("%d bytes buffered while the disk stalls, bound %d", len(l.buf), limit)
	}
	if appended.Load() >= n {
		t.Fatalf("all %d appends returned while the disk stalled (%d bytes buffered): nothing bounds the buffer", n, buffered)
	}
	fsys.SetOnOp(nil)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l.DurableSeq() != n {
		t.Fatalf("durable through %d, want %d", l.DurableSeq(), n)
	}
}

// A seal does not fsync, so a power cut can tear a sealed segment; nothing
// after it was acknowledged then, so Open keeps the prefix, cuts the tear
// and sets the later segments aside. Once a later segment records a sync,
// the same damage is corruption.
func TestTornSealedSegment(t *testing.T) {
	write := func(t *testing.T, syncLast bool) (string, int) {
		dir := t.TempDir()
		l, _ := openT(t, dir, Options{SegmentSize: 64 << 10})
		for i := 0; i < 5; i++ {
			l.Append(writeRec(1, 0, bytes.Repeat([]byte{byte(i)}, 4096)), nil)
		}
		if err := l.SyncAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		synced := 5
		for i := 5; i < 40; i++ { // on into segments 2 and 3, unsynced
			l.Append(writeRec(1, 0, bytes.Repeat([]byte{byte(i)}, 4096)), nil)
		}
		l.writeOut(false, 0)
		if len(l.Segments()) < 3 {
			t.Fatalf("%d segments, want 3 or more", len(l.Segments()))
		}
		if syncLast {
			if err := l.SyncAll(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		// The crash: no Close (it would sync). Segment 1 keeps the
		// synced-through of the last sync before the seal.
		l.closeFiles()
		resetSynced(t, filepath.Join(dir, segName(1)), segHeaderSize+int64(synced)*(4096+RecordOverhead))
		if !syncLast {
			resetSynced(t, filepath.Join(dir, segName(2)), segHeaderSize)
			resetSynced(t, filepath.Join(dir, segName(3)), segHeaderSize)
		}
		// Segment 1's unsynced tail only partly reached the disk.
		p := filepath.Join(dir, segName(1))
		st, _ := os.Stat(p)
		f, _ := os.OpenFile(p, os.O_RDWR, 0)
		f.WriteAt(make([]byte, 3000), st.Size()-3000)
		f.Close()
		return dir, synced
	}

	dir, synced := write(t, false)
	rep, err := Verify(context.Background(), nil, dir)
	if err != nil || rep.OK() || !rep.Repairable() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	l, recs := openT(t, dir, Options{SegmentSize: 64 << 10})
	if len(recs) < synced || recs[len(recs)-1].Seq != uint64(len(recs)) {
		t.Fatalf("after the torn seal: %d records, want a prefix of at least %d", len(recs), synced)
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, "torn", "*"+segSuffix)); len(aside) < 2 {
		t.Fatalf("segments after the tear not set aside: %v", aside)
	}
	// The log goes on from the cut, and verifies clean.
	if _, _, err := l.Append(writeRec(1, 0, make([]byte, 4096)), nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(context.Background(), nil, dir); err != nil || !rep.OK() {
		t.Fatalf("verify after open: %+v %v", rep, err)
	}

	dir, _ = write(t, true)
	if _, _, err := Open(context.Background(), dir, Options{}, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damage before an acknowledged sync: got %v, want ErrCorrupt", err)
	}
	if rep, err := Verify(context.Background(), nil, dir); err != nil || rep.Repairable() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
