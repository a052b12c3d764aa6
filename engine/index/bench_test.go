package index

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func fill(b *testing.B, limit int64, n int) (*Index, int64) {
	b.Helper()
	x := newTestIndex(b, limit, nil)
	var g entryGen
	g.addN(b, x, n)
	x.quiesce()
	return x, g.ts
}

// BenchmarkLookup measures a point-in-time lookup of a random block at a
// random time, and a current-state lookup, over a 1M-block volume.
func BenchmarkLookup(b *testing.B) {
	cases := []struct {
		name  string
		limit int64
		n     int
	}{
		{"mem/1e3", 1 << 30, 1e3},
		{"mem/1e5", 1 << 30, 1e5},
		{"mem/1e6", 1 << 30, 1e6},
		{"spilled/1e6", 4 << 20, 1e6},
	}
	for _, c := range cases {
		x, maxTS := fill(b, c.limit, c.n)
		st := x.Stats()
		for _, mode := range []string{"pit", "newest"} {
			b.Run(fmt.Sprintf("%s/%s", c.name, mode), func(b *testing.B) {
				seed := uint64(42)
				found := 0
				b.ResetTimer()
				for range b.N {
					seed = seed*6364136223846793005 + 1442695040888963407
					blk := (seed >> 20) % (1 << 20)
					at := int64(1<<62 - 1)
					if mode == "pit" {
						at = int64(seed>>33)%maxTS + 1
					}
					_, ok, err := x.Lookup(blk, at)
					if err != nil {
						b.Fatal(err)
					}
					if ok {
						found++
					}
				}
				b.StopTimer()
				b.ReportMetric(p99(func(i int) {
					seed = seed*6364136223846793005 + 1442695040888963407
					at := int64(1<<62 - 1)
					if mode == "pit" {
						at = int64(seed>>33)%maxTS + 1
					}
					x.Lookup((seed>>20)%(1<<20), at)
				}), "p99-ns")
				b.ReportMetric(float64(st.MemoryBytes)/float64(st.Entries), "memB/entry")
				b.ReportMetric(float64(st.SpillFiles), "spillfiles")
				b.ReportMetric(float64(st.Runs), "runs")
				b.ReportMetric(float64(found)/float64(b.N), "hit-ratio")
			})
		}
	}
}

// BenchmarkPageCacheRead is the yardstick of the PIT target: a 4 KiB read
// of a cached file, which a current-state read of a volume costs.
func BenchmarkPageCacheRead(b *testing.B) {
	path := filepath.Join(b.TempDir(), "vol")
	const size = 64 << 20
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	seed := uint64(1)
	read := func(int) {
		seed = seed*6364136223846793005 + 1442695040888963407
		if _, err := f.ReadAt(buf, int64((seed>>20)%(size/4096))*4096); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		read(i)
	}
	b.StopTimer()
	b.ReportMetric(p99(read), "p99-ns")
}

// p99 times 20,000 calls of fn one by one and returns the 99th percentile
// in nanoseconds (the clock reads add a few tens of ns to each).
func p99(fn func(i int)) float64 {
	const n = 20000
	d := make([]time.Duration, n)
	for i := range d {
		t0 := time.Now()
		fn(i)
		d[i] = time.Since(t0)
	}
	slices.Sort(d)
	return float64(d[n*99/100].Nanoseconds())
}

// BenchmarkAdd measures appends of multi-block records, including flushes,
// merges and (with the small limit) spills.
func BenchmarkAdd(b *testing.B) {
	for _, limit := range []int64{1 << 30, 4 << 20} {
		b.Run(fmt.Sprintf("limit=%dMiB", limit>>20), func(b *testing.B) {
			x := newTestIndex(b, limit, nil)
			var g entryGen
			entries := 0
			b.ResetTimer()
			for range b.N {
				rec := g.record()
				if err := x.Add(rec...); err != nil {
					b.Fatal(err)
				}
				entries += len(rec)
			}
			b.StopTimer()
			st := x.Stats()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(entries), "ns/entry")
			b.ReportMetric(float64(st.MemoryBytes)/float64(st.Entries), "memB/entry")
		})
	}
}

// BenchmarkLookupHotBlock looks up one block written 65,000 times since the
// last flush at random times: the memtable's jump pointers keep this
// logarithmic instead of a walk down the chain.
func BenchmarkLookupHotBlock(b *testing.B) {
	x := newTestIndex(b, 1<<30, nil)
	const n = 65000
	for ts := int64(1); ts <= n; ts++ {
		if err := x.Add(Entry{Block: 7, TS: ts, Loc: uint64(ts)}); err != nil {
			b.Fatal(err)
		}
	}
	seed := uint64(3)
	b.ResetTimer()
	for range b.N {
		seed = seed*6364136223846793005 + 1442695040888963407
		at := int64(seed>>33)%n + 1
		e, ok, err := x.Lookup(7, at)
		if err != nil || !ok || e.TS != at {
			b.Fatalf("Lookup(7, %d) = %+v, %v, %v", at, e, ok, err)
		}
	}
}
