package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkMarkerFence measures the write stall a service marker causes: one
// writer per volume writes 4 KiB blocks, paced so that all writers together
// issue 4000 writes/s (a busy service that leaves the disk headroom; an
// unpaced writer measures disk bandwidth, not the fence), while markers
// naming every volume are taken every 5 ms (b.N markers). A write that
// started while a Mark call (append and fsync) was in progress counts as
// "during marker"; the rest are the baseline. (Classifying by overlap instead
// would pick the slowest writes: a write held up 50 ms by the virtual disk
// overlaps some marker whatever the fence does.) Reported in µs: p50/p99 of both, the marker's own
// latency, and one fdatasync of 4 KiB on the same disk for the target (p99
// during marker < 1 ms + one fsync at 16 volumes).
//
// mode=write: plain writes (durable at the next flush), which isolates the
// fence: a writer waits only for the marker record's append.
// mode=fua: every write is FUA (durable on return), so writers share the
// marker's group commit.
func BenchmarkMarkerFence(b *testing.B) {
	fsync := fsyncLatency(b)
	for _, mode := range []string{"write", "fua"} {
		for _, vols := range []int{1, 4, 16, 64} {
			b.Run(fmt.Sprintf("mode=%s/volumes=%d", mode, vols), func(b *testing.B) {
				benchFence(b, vols, mode == "fua", fsync)
			})
		}
	}
}

type span struct{ start, end int64 } // ns since the run began

func benchFence(b *testing.B, nvol int, fua bool, fsync time.Duration) {
	ctx := context.Background()
	s, err := Open(ctx, benchDir(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const volSize = 64 << 20
	names := make([]string, nvol)
	vols := make([]*Volume, nvol)
	for i := range vols {
		names[i] = fmt.Sprintf("v%02d", i)
		if vols[i], err = s.CreateVolume(ctx, VolumeSpec{Name: names[i], Size: volSize, BlockSize: 4096}); err != nil {
			b.Fatal(err)
		}
	}
	begin := time.Now()
	since := func() int64 { return int64(time.Since(begin)) }
	var stop atomic.Bool
	var wg sync.WaitGroup
	writes := make([][]span, nvol)
	for i, v := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			var local []span
			interval := time.Duration(nvol) * 250 * time.Microsecond
			next := time.Now()
			for n := int64(0); !stop.Load(); n++ {
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				buf[0] = byte(n)
				t0 := since()
				if err := v.WriteAt(ctx, buf, (n*4096)%volSize, fua); err != nil {
					b.Error(err)
					return
				}
				local = append(local, span{t0, since()})
			}
			writes[i] = local
		}()
	}
	time.Sleep(20 * time.Millisecond) // writers running
	marks := make([]span, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := since()
		if _, err := s.Mark(ctx, MarkSpec{Service: "svc", Class: ClassCrash, Volumes: names}); err != nil {
			b.Fatal(err)
		}
		marks = append(marks, span{t0, since()})
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	stop.Store(true)
	wg.Wait()

	var during, base []time.Duration
	for _, ws := range writes {
		for _, w := range ws {
			// The first marker that ends at or after the write's start.
			j := sort.Search(len(marks), func(j int) bool { return marks[j].end >= w.start })
			d := time.Duration(w.end - w.start)
			if j < len(marks) && marks[j].start <= w.start {
				during = append(during, d)
			} else {
				base = append(base, d)
			}
		}
	}
	var ml []time.Duration
	for _, m := range marks {
		ml = append(ml, time.Duration(m.end-m.start))
	}
	us := func(p float64) float64 { return p / 1e3 }
	b.ReportMetric(us(pct(base, 50)), "base-p50-µs")
	b.ReportMetric(us(pct(base, 99)), "base-p99-µs")
	b.ReportMetric(us(pct(during, 50)), "mark-p50-µs")
	b.ReportMetric(us(pct(during, 99)), "mark-p99-µs")
	b.ReportMetric(us(pct(ml, 50)), "marker-p50-µs")
	b.ReportMetric(us(float64(fsync.Nanoseconds())), "fsync-µs")
	b.ReportMetric(float64(len(during)), "writes-during")
}

// fsyncLatency is the median of 4 KiB pwrite+fdatasync on the benchmark disk.
func fsyncLatency(b *testing.B) time.Duration {
	f, err := os.Create(filepath.Join(benchDir(b), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	var ds []time.Duration
	for i := 0; i < 50; i++ {
		t0 := time.Now()
		if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	return time.Duration(pct(ds, 50))
}
