package index

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// model is the obviously correct index: every entry of every block.
type model struct {
	byBlock map[uint64][]Entry // TS order
	all     []Entry            // TS order
	dropped int64
}

func newModel() *model { return &model{byBlock: map[uint64][]Entry{}, dropped: math.MinInt64} }

func (m *model) add(es ...Entry) {
	for _, e := range es {
		m.byBlock[e.Block] = append(m.byBlock[e.Block], e)
		m.all = append(m.all, e)
	}
}

// truth is the newest entry of b with TS <= at, ignoring drops.
func (m *model) truth(b uint64, at int64) (Entry, bool) {
	es := m.byBlock[b]
	i := searchTS(es, at)
	if i == 0 {
		return Entry{}, false
	}
	return es[i-1], true
}

// want applies the drop contract: an answer with TS <= dropped reads as
// not found.
func (m *model) want(b uint64, at int64) (Entry, bool) {
	e, ok := m.truth(b, at)
	if !ok || e.TS <= m.dropped {
		return Entry{}, false
	}
	return e, true
}

func (m *model) changed(from, to int64) []Entry {
	from = max(from, m.dropped)
	var out []Entry
	for _, e := range m.all {
		if e.TS > from && e.TS <= to {
			out = append(out, e)
		}
	}
	return out
}

func sortByKey(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if a.TS != b.TS {
			return cmpInt(a.TS, b.TS)
		}
		return cmpInt(a.Block, b.Block)
	})
}

func cmpInt[T int64 | uint64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func newTestIndex(t testing.TB, limit int64, fsys vfs.FS) *Index {
	t.Helper()
	x, err := New(Options{MemoryLimit: limit, Dir: t.TempDir(), FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

func checkLookup(t *testing.T, x *Index, m *model, b uint64, at int64) {
	t.Helper()
	got, ok, err := x.Lookup(b, at)
	if err != nil {
		t.Fatalf("Lookup(%d, %d): %v", b, at, err)
	}
	want, wok := m.want(b, at)
	if ok != wok || got != want {
		t.Fatalf("Lookup(%d, %d) = %+v, %v; want %+v, %v (dropped through %d)", b, at, got, ok, want, wok, m.dropped)
	}
}

func checkChanged(t *testing.T, x *Index, m *model, from, to int64) {
	t.Helper()
	var got []Entry
	if err := x.Changed(from, to, func(e Entry) bool { got = append(got, e); return true }); err != nil {
		t.Fatalf("Changed(%d, %d): %v", from, to, err)
	}
	want := m.changed(from, to)
	sortByKey(got)
	sortByKey(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Changed(%d, %d): %d entries, want %d (dropped through %d)", from, to, len(got), len(want), m.dropped)
	}
	if len(want) > 1 {
		// fn returning false stops the iteration at once.
		stop, calls := len(want)/2, 0
		if err := x.Changed(from, to, func(Entry) bool { calls++; return calls < stop }); err != nil {
			t.Fatal(err)
		}
		if calls != stop {
			t.Fatalf("Changed(%d, %d) called fn %d times after it returned false at call %d", from, to, calls, stop)
		}
	}
}

// TestModel drives the index and the model with the same random operations,
// with memory limits that keep everything in memory, spill often, and spill
// on every flush.
func TestModel(t *testing.T) {
	for _, limit := range []int64{1, 16 << 10, 64 << 10, 64 << 20} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("limit=%d/seed=%d", limit, seed), func(t *testing.T) {
				ops := 20000
				if raceEnabled {
					ops = 6000
				}
				runModel(t, limit, seed, ops)
			})
		}
	}
}

func runModel(t *testing.T, limit int64, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, 0x10c5))
	x := newTestIndex(t, limit, vfs.OS{})
	m := newModel()
	const blocks = 600
	ts := int64(1000)
	spilled := false
	randAt := func() int64 { return 990 + rng.Int64N(ts-990+10) }
	for op := 0; op < ops; op++ {
		switch p := rng.IntN(100); {
		case p < 55: // one record over 1..8 consecutive blocks
			ts += 1 + rng.Int64N(3)
			start := rng.Uint64N(blocks)
			if rng.IntN(10) == 0 {
				start = 7 // a hot block, for long memtable chains
			}
			var rec []Entry
			for i := range 1 + rng.IntN(8) {
				b := start + uint64(i)
				rec = append(rec, Entry{Block: b, TS: ts, Loc: uint64(ts)<<20 | b})
			}
			if err := x.Add(rec...); err != nil {
				t.Fatal(err)
			}
			m.add(rec...)
		case p < 85:
			checkLookup(t, x, m, rng.Uint64N(blocks+10), randAt())
		case p < 93:
			checkLookup(t, x, m, rng.Uint64N(blocks+10), math.MaxInt64)
			if b := rng.Uint64N(blocks); true {
				got, ok, err := x.Newest(b)
				want, wok := m.want(b, math.MaxInt64)
				if err != nil || ok != wok || got != want {
					t.Fatalf("Newest(%d) = %+v, %v, %v; want %+v, %v", b, got, ok, err, want, wok)
				}
			}
		case p < 96:
			from := randAt()
			checkChanged(t, x, m, from, from+rng.Int64N(ts-from+20))
		case p < 98:
			if rng.IntN(4) != 0 {
				continue // keep drops rare, so that runs grow and spill
			}
			f := m.dropped
			if f < 1000 {
				f = 1000
			}
			f += rng.Int64N((ts-f)/3 + 1)
			if err := x.DropThrough(f); err != nil {
				t.Fatal(err)
			}
			m.dropped = max(m.dropped, f)
		default:
			st := x.Stats()
			spilled = spilled || st.SpillFiles > 0
			live := int64(len(m.changed(math.MinInt64, math.MaxInt64)))
			if st.Entries < live || st.Entries > int64(len(m.all)) {
				t.Fatalf("Stats().Entries = %d, want between %d live and %d added", st.Entries, live, len(m.all))
			}
			if st.SpilledEntries > st.Entries {
				t.Fatalf("Stats() = %+v: more spilled than retained", st)
			}
			checkFilterBudget(t, x)
		}
	}
	// Every block, at several times, at the end.
	for b := uint64(0); b < blocks+10; b++ {
		for _, at := range []int64{1000, ts / 2, ts - 50, ts - 1, ts, math.MaxInt64} {
			checkLookup(t, x, m, b, at)
		}
	}
	checkChanged(t, x, m, math.MinInt64, math.MaxInt64)
	st := x.Stats()
	if limit < 1<<20 && !spilled && st.SpillFiles == 0 {
		t.Fatalf("limit %d: nothing spilled (%+v); the test does not exercise spill files", limit, st)
	}
	if limit == 64<<20 && st.SpillFiles != 0 {
		t.Fatalf("limit %d: spilled %+v", limit, st)
	}
}

// TestDropReclaims checks that DropThrough frees runs and spill files, not
// only hides their entries.
func TestDropReclaims(t *testing.T) {
	for _, limit := range []int64{256 << 10, 64 << 20} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			dir := t.TempDir()
			x, err := New(Options{MemoryLimit: limit, Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer x.Close()
			m := newModel()
			const n = 200000
			for ts := int64(1); ts <= n; ts++ {
				e := Entry{Block: uint64(ts*7919) % 5000, TS: ts, Loc: uint64(ts)}
				if err := x.Add(e); err != nil {
					t.Fatal(err)
				}
				m.add(e)
			}
			x.quiesce()
			before := x.Stats()
			if limit < 1<<20 && before.SpillFiles == 0 {
				t.Fatalf("limit %d: nothing spilled before the drop (%+v)", limit, before)
			}
			if err := x.DropThrough(n * 9 / 10); err != nil {
				t.Fatal(err)
			}
			m.dropped = n * 9 / 10
			after := x.Stats()
			// Entries still held may include the memtable's and a partly
			// covered run's, but most of the 90% must be gone.
			if after.Entries > n/4 {
				t.Fatalf("after dropping 90%%: %d of %d entries retained (%+v)", after.Entries, before.Entries, after)
			}
			if before.SpillFiles > 0 && after.SpillFiles >= before.SpillFiles && after.SpilledEntries >= before.SpilledEntries {
				t.Fatalf("spill files not reclaimed: before %+v after %+v", before, after)
			}
			if after.MemoryBytes >= before.MemoryBytes && before.Runs > 0 {
				t.Fatalf("memory not reclaimed: before %+v after %+v", before, after)
			}
			x.quiesce()
			after = x.Stats()
			names, _ := os.ReadDir(dir)
			files := 0
			for _, de := range names {
				if strings.HasPrefix(de.Name(), spillPrefix) {
					files++
				}
			}
			if files != after.SpillFiles {
				t.Fatalf("%d spill files on disk, Stats says %d", files, after.SpillFiles)
			}
			for b := uint64(0); b < 5000; b += 7 {
				checkLookup(t, x, m, b, math.MaxInt64)
				checkLookup(t, x, m, b, n*95/100)
			}
			if err := x.DropThrough(n); err != nil {
				t.Fatal(err)
			}
			if st := x.Stats(); st.SpillFiles != 0 || st.Runs != 0 {
				t.Fatalf("after dropping everything: %+v", st)
			}
		})
	}
}

func TestCloseRemovesFiles(t *testing.T) {
	dir := t.TempDir()
	// A stale file from an earlier process goes at New.
	if err := os.WriteFile(dir+"/"+spillPrefix+"0000000099"+spillSuffix, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	x, err := New(Options{MemoryLimit: 1, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + "/" + spillPrefix + "0000000099" + spillSuffix); !os.IsNotExist(err) {
		t.Fatalf("stale spill file survived New: %v", err)
	}
	for ts := int64(1); ts <= 5000; ts++ {
		if err := x.Add(Entry{Block: uint64(ts % 300), TS: ts}); err != nil {
			t.Fatal(err)
		}
	}
	if x.Stats().SpillFiles == 0 {
		t.Fatal("nothing spilled")
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if names, _ := os.ReadDir(dir); len(names) != 0 {
		t.Fatalf("files left after Close: %v", names)
	}
	if _, _, err := x.Lookup(1, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Lookup after Close: %v, want ErrClosed", err)
	}
	if err := x.Add(Entry{TS: 9999}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
}

func TestOutOfOrder(t *testing.T) {
	x := newTestIndex(t, 0, nil)
	if err := x.Add(Entry{Block: 1, TS: 10}); err != nil {
		t.Fatal(err)
	}
	if err := x.Add(Entry{Block: 2, TS: 11}, Entry{Block: 3, TS: 9}); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("Add older entry: %v, want ErrOutOfOrder", err)
	}
	// A rejected call adds nothing.
	if _, ok, _ := x.Newest(2); ok {
		t.Fatal("entry of a rejected Add was indexed")
	}
}

// failFS fails writes while armed, to show that a spill failure loses no
// entry and the index recovers once the disk does.
type failFS struct {
	vfs.OS
	armed *atomic.Bool
}

type failFile struct {
	vfs.File
	armed *atomic.Bool
}

var errInjected = errors.New("injected write failure")

func (f failFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	file, err := f.OS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return failFile{file, f.armed}, nil
}

func (f failFile) WriteAt(p []byte, off int64) (int, error) {
	if f.armed.Load() {
		return 0, errInjected
	}
	return f.File.WriteAt(p, off)
}

func TestSpillFailure(t *testing.T) {
	var armed atomic.Bool
	x := newTestIndex(t, 64<<10, failFS{armed: &armed})
	m := newModel()
	add := func(from, to int64) (failed bool) {
		for ts := from; ts < to; ts++ {
			e := Entry{Block: uint64(ts*31) % 2000, TS: ts, Loc: uint64(ts) * 3}
			err := x.Add(e)
			if err != nil && !errors.Is(err, errInjected) {
				t.Fatal(err)
			}
			failed = failed || err != nil
			m.add(e)
		}
		return failed
	}
	add(1, 20000)
	armed.Store(true)
	if !add(20000, 40000) {
		t.Fatal("no Add reported the failing spill")
	}
	over := x.Stats()
	if over.MemoryBytes <= 64<<10 {
		t.Fatalf("expected runs held in memory over the limit while spills fail: %+v", over)
	}
	for b := uint64(0); b < 2000; b += 3 {
		checkLookup(t, x, m, b, math.MaxInt64)
		checkLookup(t, x, m, b, 25000)
	}
	armed.Store(false)
	x.quiesce() // background merges that failed while armed succeed now
	if add(40000, 45000) {
		t.Fatal("Add failed after the disk recovered")
	}
	if st := x.Stats(); st.MemoryBytes-st.FenceBytes > 64<<10 {
		t.Fatalf("memory not back under the limit after recovery: %+v", st)
	}
	for b := uint64(0); b < 2000; b += 3 {
		checkLookup(t, x, m, b, math.MaxInt64)
		checkLookup(t, x, m, b, 25000)
	}
}

// TestMidFlush checks the state readers see while a flush is sorting: the
// full memtable still searchable as imm, next to the new active memtable.
func TestMidFlush(t *testing.T) {
	x := newTestIndex(t, 0, nil)
	m := newModel()
	add := func(from, to int64) {
		for ts := from; ts < to; ts++ {
			e := Entry{Block: uint64(ts*13) % 97, TS: ts, Loc: uint64(ts)}
			x.mem.add(e) // below capacity: no flush
			m.add(e)
		}
	}
	add(1, 500)
	x.wmu.Lock()
	x.imm, x.mem, x.spare = x.mem, x.spare, nil
	x.wmu.Unlock()
	add(500, 800)
	for b := uint64(0); b < 100; b++ {
		for _, at := range []int64{100, 499, 500, 650, math.MaxInt64} {
			checkLookup(t, x, m, b, at)
		}
	}
	checkChanged(t, x, m, 0, math.MaxInt64)
	checkChanged(t, x, m, 400, 600)
	if st := x.Stats(); st.Entries != 799 {
		t.Fatalf("Stats().Entries = %d mid-flush, want 799", st.Entries)
	}
}

// TestChangedCallbackReads checks that fn may read the index (Changed does
// not hold the lock while calling it) while a writer waits for the lock.
func TestChangedCallbackReads(t *testing.T) {
	x := newTestIndex(t, 1, nil)
	for ts := int64(1); ts <= 2000; ts++ {
		if err := x.Add(Entry{Block: uint64(ts % 50), TS: ts, Loc: uint64(ts)}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	n := 0
	err := x.Changed(0, 2000, func(e Entry) bool {
		if n == 0 {
			// A writer queued on the lock would deadlock a reader that
			// held it across fn.
			go func() { done <- x.Add(Entry{Block: 1, TS: 2001}) }()
		}
		n++
		if _, ok, err := x.Lookup(e.Block, e.TS); err != nil || !ok {
			t.Errorf("Lookup(%d, %d) inside Changed: %v %v", e.Block, e.TS, ok, err)
			return false
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n != 2000 {
		t.Fatalf("Changed reported %d entries, want 2000", n)
	}
}

// checkFilterBudget checks that the filters of spill files stay within a
// quarter of the limit (under wmu: a merge publishes, then trims).
func checkFilterBudget(t *testing.T, x *Index) {
	t.Helper()
	x.wmu.Lock()
	defer x.wmu.Unlock()
	var filters int64
	for _, r := range x.runs {
		if r.file != nil {
			filters += r.filter.Load().bytes()
		}
	}
	if filters > x.limit/4 {
		t.Fatalf("filters of spill files hold %d bytes, over a quarter of the %d-byte limit", filters, x.limit)
	}
}
