package index

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// schedule is a deterministic journal: record t (t = 1, 2, ...) writes
// 1..4 blocks from recStart(t). Readers recompute the true answer from it.
const schedBlocks = 512

func recSpan(t int64) (start uint64, n int) {
	h := uint64(t) * 0x9E3779B97F4A7C15
	return (h >> 20) % schedBlocks, 1 + int(h>>62)
}

func recEntries(t int64) []Entry {
	start, n := recSpan(t)
	es := make([]Entry, n)
	for i := range es {
		b := start + uint64(i)
		es[i] = Entry{Block: b, TS: t, Loc: uint64(t)<<16 | b}
	}
	return es
}

// schedTruth is the newest entry of b with TS <= at among records 1..at.
func schedTruth(b uint64, at int64) (Entry, bool) {
	for t := at; t >= 1; t-- {
		if start, n := recSpan(t); b >= start && b < start+uint64(n) {
			return Entry{Block: b, TS: t, Loc: uint64(t)<<16 | b}, true
		}
	}
	return Entry{}, false
}

// TestConcurrent runs two writers (serialised by the journal's own lock, as
// TS order requires), a dropper and four readers; readers check every
// answer against the schedule. Run it with -race.
func TestConcurrent(t *testing.T) {
	x := newTestIndex(t, 32<<10, nil) // small: flushes, merges and spills all the time
	const records = 4000
	var (
		jmu       sync.Mutex // the journal's append lock
		next      int64      // last record added, under jmu
		published atomic.Int64
		dropHigh  atomic.Int64 // set before DropThrough starts
		stop      atomic.Bool
		lookups   atomic.Int64
		wg        sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		stop.Store(true)
		t.Errorf(format, args...)
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				jmu.Lock()
				if next == records {
					jmu.Unlock()
					return
				}
				next++
				if err := x.Add(recEntries(next)...); err != nil {
					jmu.Unlock()
					fail("Add(%d): %v", next, err)
					return
				}
				published.Store(next)
				// Let the readers keep pace, whatever the scheduler does.
				for next%50 == 0 && lookups.Load() < next && !stop.Load() {
					runtime.Gosched()
				}
				jmu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() && published.Load() < records {
			time.Sleep(2 * time.Millisecond)
			f := published.Load() / 2
			if f > dropHigh.Load() {
				dropHigh.Store(f)
				if err := x.DropThrough(f); err != nil {
					fail("DropThrough(%d): %v", f, err)
				}
			}
		}
	}()
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seed := uint64(r + 1)
			for !stop.Load() && published.Load() < records {
				seed = seed*6364136223846793005 + 1
				pub := published.Load()
				if pub == 0 || lookups.Load() > 20*pub {
					runtime.Gosched() // nor the writers behind the readers

					continue
				}
				b := (seed >> 33) % schedBlocks
				at := int64(seed>>40)%pub + 1
				if r == 0 {
					at = math.MaxInt64
				}
				got, ok, err := x.Lookup(b, at)
				if err != nil {
					fail("Lookup(%d, %d): %v", b, at, err)
					return
				}
				want, wok := schedTruth(b, min(at, pub))
				// Records after pub may have landed meanwhile: a newer
				// answer must itself be a real entry <= at.
				if ok && got.TS > pub {
					if got.TS > at || got.Loc != uint64(got.TS)<<16|b {
						fail("Lookup(%d, %d) = %+v: not an entry of the schedule", b, at, got)
					}
					continue
				}
				if wok && want.TS > dropHigh.Load() {
					if !ok || got != want {
						fail("Lookup(%d, %d) = %+v, %v; want %+v", b, at, got, ok, want)
					}
				} else if ok && got != want {
					fail("Lookup(%d, %d) = %+v; want %+v or not found", b, at, got, want)
				}
				if r == 1 && seed%64 == 0 {
					n := 0
					if err := x.Changed(pub-50, pub, func(e Entry) bool {
						if e.TS <= pub-50 || e.TS > pub || e.Loc != uint64(e.TS)<<16|e.Block {
							fail("Changed(%d, %d) reported %+v", pub-50, pub, e)
						}
						n++
						return true
					}); err != nil {
						fail("Changed: %v", err)
					}
					_ = x.Stats()
				}
				lookups.Add(1)
			}
		}()
	}
	wg.Wait()
	if published.Load() != records && !t.Failed() {
		t.Fatalf("writers stopped at %d", published.Load())
	}
	if lookups.Load() < records-50 {
		t.Fatalf("only %d lookups ran concurrently with the writers", lookups.Load())
	}
	t.Logf("%d lookups during %d records; %+v", lookups.Load(), records, x.Stats())
}
