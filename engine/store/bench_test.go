package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchDir is where benchmarks put their files: the disk under test.
func benchDir(b *testing.B) string {
	if d := os.Getenv("LOCKSTEP_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// BenchmarkAppendFlush: W writers, each doing a 4 KiB write followed by a
// flush, as a database's commit path does.
func BenchmarkAppendFlush(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, benchDir(b), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			v, _ := s.CreateVolume(ctx, VolumeSpec{Name: "v", Size: 1 << 30, BlockSize: 4096})
			blocks := int64(v.Size() / 4096)
			b.SetBytes(4096)
			b.ResetTimer()
			runWriters(b, writers, func(i int64, buf []byte) error {
				if err := v.WriteAt(ctx, buf, (i%blocks)*4096, false); err != nil {
					return err
				}
				return v.Flush(ctx)
			})
		})
	}
}

// BenchmarkRawAppendFsync is the baseline for BenchmarkAppendFlush: the same
// writers appending 4 KiB to one plain file, each followed by fdatasync.
func BenchmarkRawAppendFsync(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			f, err := os.Create(filepath.Join(benchDir(b), "raw"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var off atomic.Int64
			b.SetBytes(4096)
			b.ResetTimer()
			runWriters(b, writers, func(_ int64, buf []byte) error {
				if _, err := f.WriteAt(buf, off.Add(4096)-4096); err != nil {
					return err
				}
				return f.Sync()
			})
		})
	}
}

func runWriters(b *testing.B, writers int, op func(i int64, buf []byte) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				buf[0] = byte(i)
				if err := op(i, buf); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkReadLatency measures 4 KiB reads of the current state and at a
// random point in time, with N retained journal records, and reports p50
// and p99 of each plus the index's memory per record.
func BenchmarkReadLatency(b *testing.B) {
	for _, records := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", records), func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, benchDir(b), Options{IndexMemoryLimit: 256 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const volBlocks = 1 << 18 // 1 GiB of 4 KiB blocks
			v, _ := s.CreateVolume(ctx, VolumeSpec{Name: "v", Size: volBlocks * 4096, BlockSize: 4096})
			rng := rand.New(rand.NewPCG(1, 2))
			buf := make([]byte, 4096)
			first := s.log.LastTS()
			for i := 0; i < records; i++ {
				buf[0] = byte(i)
				if err := v.WriteAt(ctx, buf, int64(rng.IntN(volBlocks))*4096, false); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Sync(ctx); err != nil {
				b.Fatal(err)
			}
			last := s.log.LastTS()
			st := v.idx.Stats()
			// Warm the page cache the same way for both kinds of read.
			for i := 0; i < 2000; i++ {
				v.ReadAt(ctx, buf, int64(rng.IntN(volBlocks))*4096)
			}
			cur := make([]time.Duration, 0, b.N)
			pit := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			// Each iteration reads one block both ways, alternating which
			// goes first, so neither kind gets the other's cache warming.
			for i := 0; i < b.N; i++ {
				off := int64(rng.IntN(volBlocks)) * 4096
				at := first + rng.Int64N(last-first+1)
				readCur := func() {
					t0 := time.Now()
					if err := v.ReadAt(ctx, buf, off); err != nil {
						b.Fatal(err)
					}
					cur = append(cur, time.Since(t0))
				}
				readPIT := func() {
					t0 := time.Now()
					if err := v.ReadAtTime(ctx, buf, off, at); err != nil {
						b.Fatal(err)
					}
					pit = append(pit, time.Since(t0))
				}
				if i%2 == 0 {
					readCur()
					readPIT()
				} else {
					readPIT()
					readCur()
				}
			}
			b.StopTimer()
			b.ReportMetric(pct(cur, 50), "cur-p50-ns")
			b.ReportMetric(pct(cur, 99), "cur-p99-ns")
			b.ReportMetric(pct(pit, 50), "pit-p50-ns")
			b.ReportMetric(pct(pit, 99), "pit-p99-ns")
			// After ResetTimer, which deletes reported metrics.
			b.ReportMetric(float64(st.MemoryBytes)/float64(records), "index-B/record")
		})
	}
}

func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[(len(s)-1)*p/100].Nanoseconds())
}

// BenchmarkPresentView measures presenting a 10 GiB volume at a past point,
// read-only and as a writable clone.
func BenchmarkPresentView(b *testing.B) {
	ctx := context.Background()
	s, v := benchVolume(b, "big", 10<<30)
	buf := make([]byte, 64<<10)
	for i := 0; i < 1000; i++ {
		v.WriteAt(ctx, buf, int64(i)*(10<<20), false)
	}
	mid := s.log.LastTS()
	for i := 0; i < 1000; i++ {
		v.WriteAt(ctx, buf, int64(i)*(10<<20)+65536, false)
	}
	b.Run("view", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			w, err := v.View(ctx, mid)
			if err != nil {
				b.Fatal(err)
			}
			w.Close()
		}
	})
	b.Run("clone", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			c, err := s.Clone(ctx, "big", mid, fmt.Sprintf("c%d", i))
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := s.DeleteVolume(ctx, c.Name()); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

// BenchmarkOpen measures opening a data directory whose journal window holds
// N records: the index is rebuilt from the journal at open.
func BenchmarkOpen(b *testing.B) {
	for _, records := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", records), func(b *testing.B) {
			ctx := context.Background()
			dir := benchDir(b)
			s, err := Open(ctx, dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			v, _ := s.CreateVolume(ctx, VolumeSpec{Name: "v", Size: 1 << 30, BlockSize: 4096})
			rng := rand.New(rand.NewPCG(3, 4))
			buf := make([]byte, 4096)
			for i := 0; i < records; i++ {
				if err := v.WriteAt(ctx, buf, int64(rng.IntN(1<<18))*4096, false); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s, err := Open(ctx, dir, Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
		})
	}
}
