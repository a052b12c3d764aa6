package index

import (
	"fmt"
	"os"
	"runtime"
	"testing"
)

// entryGen produces records over a 4 GiB volume (1M blocks) without
// allocating, so that heap growth measures the index alone.
type entryGen struct {
	state uint64
	ts    int64
	buf   [8]Entry
}

func (g *entryGen) record() []Entry {
	g.state = g.state*6364136223846793005 + 1442695040888963407
	g.ts++
	start := (g.state >> 20) % (1 << 20)
	n := 1 + int(g.state>>61) // 1..8 blocks
	for i := range n {
		b := start + uint64(i)
		g.buf[i] = Entry{Block: b, TS: g.ts, Loc: uint64(g.ts)<<20 | b}
	}
	return g.buf[:n]
}

// addN adds records until n entries were added.
func (g *entryGen) addN(t testing.TB, x *Index, n int) {
	for added := 0; added < n; {
		rec := g.record()
		if err := x.Add(rec...); err != nil {
			t.Fatal(err)
		}
		added += len(rec)
	}
}

func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC() // the second cycle frees what the first one's finalizers and pools let go
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestMemoryPerEntry measures the real heap cost of entries held in memory
// and checks it against the 48-byte target and against Stats.
func TestMemoryPerEntry(t *testing.T) {
	const n = 1 << 20
	before := liveHeap()
	x := newTestIndex(t, 1<<30, nil)
	var g entryGen
	g.addN(t, x, n)
	heap := liveHeap() - before
	st := x.Stats()
	if st.SpillFiles != 0 {
		t.Fatalf("spilled with a 1 GiB limit: %+v", st)
	}
	perEntry := float64(heap) / float64(st.Entries)
	t.Logf("%d entries: heap %d bytes (%.1f B/entry), Stats.MemoryBytes %d (%.1f B/entry)",
		st.Entries, heap, perEntry, st.MemoryBytes, float64(st.MemoryBytes)/float64(st.Entries))
	if perEntry > 48 {
		t.Errorf("heap cost %.1f bytes per in-memory entry, want <= 48", perEntry)
	}
	// Without the two fixed-size memtables, an entry costs the documented
	// 25.25 bytes (entry, samples, filter).
	memtables := 2 * x.mem.bytes()
	if perRun := float64(heap-memtables) / float64(st.Entries); perRun > 25.5 {
		t.Errorf("heap cost %.2f bytes per entry outside the memtables, want <= 25.5", perRun)
	}
	// Stats is computed from the allocations; it must not understate them.
	if float64(heap) > 1.05*float64(st.MemoryBytes)+256<<10 {
		t.Errorf("heap grew %d bytes but Stats.MemoryBytes says %d", heap, st.MemoryBytes)
	}
	runtime.KeepAlive(x)
}

// TestMemoryCap adds 2M entries under an 8 MiB limit. At every checkpoint:
// Stats stays within the limit plus fences, and the real live heap matches
// Stats within 512 KiB, so the heap itself is capped. Once spilling has
// started, the heap must not grow with N: the highest heap seen over the
// second million entries may exceed the highest over the first by at most
// 1 byte per added entry (fences cost 0.094) plus 256 KiB.
func TestMemoryCap(t *testing.T) {
	const (
		limit = 8 << 20
		n     = 2 << 20
		step  = 128 << 10
		slack = 512 << 10
	)
	before := liveHeap()
	x := newTestIndex(t, limit, nil)
	var g entryGen
	var peak1, peak2 int64
	for added := step; added <= n; added += step {
		g.addN(t, x, step)
		st := x.Stats()
		if st.MemoryBytes > limit+st.FenceBytes {
			t.Fatalf("after %d entries: MemoryBytes %d > limit %d + fences %d", added, st.MemoryBytes, limit, st.FenceBytes)
		}
		x.quiesce() // a merge in flight holds buffers Stats does not count yet
		heap := liveHeap() - before
		st = x.Stats()
		if st.MemoryBytes > limit+st.FenceBytes {
			t.Fatalf("after %d entries and merges: MemoryBytes %d > limit %d + fences %d", added, st.MemoryBytes, limit, st.FenceBytes)
		}
		if d := heap - st.MemoryBytes; d > slack || d < -slack {
			t.Fatalf("after %d entries: live heap %d, Stats.MemoryBytes %d: accounting is off by %d", added, heap, st.MemoryBytes, d)
		}
		if added <= n/2 {
			peak1 = max(peak1, heap)
		} else {
			peak2 = max(peak2, heap)
		}
		if added == n/4 && st.SpillFiles == 0 {
			t.Fatalf("nothing spilled after %d entries under an 8 MiB limit: %+v", added, st)
		}
	}
	st := x.Stats()
	t.Logf("Stats %+v; peak heap %d over the first half, %d over the second", st, peak1, peak2)
	if st.SpilledEntries < n/2 {
		t.Fatalf("only %d of %d entries spilled: the test does not exercise the cap", st.SpilledEntries, n)
	}
	var filters int64
	x.mu.RLock()
	for _, r := range x.runs {
		if r.file != nil {
			filters += r.filter.Load().bytes()
		}
	}
	x.mu.RUnlock()
	if filters > limit/4 {
		t.Errorf("filters of spill files hold %d bytes, want <= a quarter of the limit", filters)
	}
	if fpe := float64(st.FenceBytes) / float64(st.SpilledEntries); fpe > 0.2 {
		t.Errorf("fences cost %.3f bytes per spilled entry, want <= 0.2", fpe)
	}
	if tol := int64(n/2) + 256<<10; peak2-peak1 > tol {
		t.Errorf("peak heap grew %d bytes over the second %d entries, want <= %d", peak2-peak1, n/2, tol)
	}
	// The index still answers from spilled runs.
	if _, ok, err := x.Newest(g.buf[0].Block); err != nil || !ok {
		t.Fatalf("Newest of the last record's block: %v %v", ok, err)
	}
	runtime.KeepAlive(x)
}

func ExampleIndex() {
	dir, err := os.MkdirTemp("", "index-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	x, err := New(Options{MemoryLimit: 1 << 20, Dir: dir})
	if err != nil {
		panic(err)
	}
	defer x.Close()
	x.Add(Entry{Block: 7, TS: 100, Loc: 4096}, Entry{Block: 8, TS: 100, Loc: 8192})
	x.Add(Entry{Block: 7, TS: 200, Loc: 12288})
	e, ok, _ := x.Lookup(7, 150)
	fmt.Println(e.Loc, ok)
	e, ok, _ = x.Newest(7)
	fmt.Println(e.Loc, ok)
	_, ok, _ = x.Lookup(8, 99)
	fmt.Println(ok)
	// Output:
	// 4096 true
	// 12288 true
	// false
}
