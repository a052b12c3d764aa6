package restore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
)

// TestBenchRestore compares, in one run, an in-place restore of three
// volumes whose every block changed after the marker (so the roll moves all
// their bytes) with a raw copy of the same bytes (dd with fsync). It runs
// only when LOCKSTEP_BENCH_RESTORE=1 (scripts/bench-restore.sh); the volume
// size (MiB, default 1024) and rounds (default 3) come from
// LOCKSTEP_BENCH_MIB and LOCKSTEP_BENCH_ROUNDS.
func TestBenchRestore(t *testing.T) {
	if os.Getenv("LOCKSTEP_BENCH_RESTORE") != "1" {
		t.Skip("benchmark: run scripts/bench-restore.sh")
	}
	mib := envInt("LOCKSTEP_BENCH_MIB", 1024)
	rounds := envInt("LOCKSTEP_BENCH_ROUNDS", 3)
	size := int64(mib) << 20
	ctx := context.Background()
	dir := t.TempDir()
	// LOCKSTEP_BENCH_SEGMENT_MIB sets the journal's segment size (default
	// the store's, 64 MiB).
	st, err := store.Open(ctx, filepath.Join(dir, "store"), store.Options{SegmentSize: int64(envInt("LOCKSTEP_BENCH_SEGMENT_MIB", 64)) << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	names := []string{"bench-a", "bench-b", "bench-c"}
	rng := rand.New(rand.NewPCG(1, 2))
	chunk := make([]byte, 1<<20)
	fillAll := func(tag byte) {
		defer func(t0 time.Time) { t.Logf("fill %c: %s", tag, time.Since(t0).Round(time.Millisecond)) }(time.Now())
		for _, n := range names {
			v, err := st.Volume(n)
			if err != nil {
				t.Fatal(err)
			}
			for off := int64(0); off < size; off += int64(len(chunk)) {
				for i := 0; i < len(chunk); i += 8 {
					x := rng.Uint64()
					for k := range 8 {
						chunk[i+k] = byte(x >> (8 * k))
					}
				}
				chunk[0] = tag
				if err := v.WriteAt(ctx, chunk, off, false); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := st.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		if _, err := st.CreateVolume(ctx, store.VolumeSpec{Name: n, Size: size, BlockSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	fillAll('A')
	m, err := st.Mark(ctx, store.MarkSpec{Service: "bench", Class: store.ClassApp, Volumes: names})
	if err != nil {
		t.Fatal(err)
	}
	fillAll('B')
	r, err := restore.New(restore.Config{Dir: filepath.Join(dir, "restores"), Engine: restore.StoreEngine{Store: st},
		Markers: restore.StoreMarkers{Store: st}, Parallel: envInt("LOCKSTEP_BENCH_PARALLEL", 4),
		Events: restore.EventFunc(func(_ context.Context, e restore.Event) {
			if e.Duration > 50*time.Millisecond {
				t.Logf("  step %s %s: %s", e.Step, e.Object, e.Duration.Round(time.Millisecond))
			}
		}), Services: restore.ServiceMap{"bench": {Name: "bench", Volumes: names}}})
	if err != nil {
		t.Fatal(err)
	}

	// The raw copy's sources: the same number of bytes in plain files.
	raw := filepath.Join(dir, "raw")
	os.MkdirAll(raw, 0o755)
	for _, n := range names {
		src := filepath.Join(raw, n+".src")
		if out, err := exec.Command("dd", "if=/dev/urandom", "of="+src, "bs=1M", fmt.Sprint("count=", mib), "conv=fsync", "status=none").CombinedOutput(); err != nil {
			t.Fatalf("dd: %v: %s", err, out)
		}
	}
	rawCopy := func() time.Duration {
		start := time.Now()
		for _, n := range names {
			src, dst := filepath.Join(raw, n+".src"), filepath.Join(raw, n+".dst")
			if out, err := exec.Command("dd", "if="+src, "of="+dst, "bs=1M", "conv=fsync", "status=none").CombinedOutput(); err != nil {
				t.Fatalf("dd: %v: %s", err, out)
			}
		}
		d := time.Since(start)
		for _, n := range names {
			os.Remove(filepath.Join(raw, n+".dst"))
		}
		return d
	}

	var rs, cs []time.Duration
	for i := range rounds {
		c := rawCopy()
		start := time.Now()
		rec, err := r.Restore(ctx, "bench", restore.Target{Marker: m.ID}, nil)
		d := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		var moved int64
		for _, v := range rec.Rolled {
			moved += v.Bytes
		}
		if moved != 3*size {
			t.Fatalf("restore moved %d bytes, want %d", moved, 3*size)
		}
		rs, cs = append(rs, d), append(cs, c)
		t.Logf("round %d: restore %s, raw copy %s, ratio %.2f", i+1, d.Round(time.Millisecond), c.Round(time.Millisecond), d.Seconds()/c.Seconds())
		if i < rounds-1 {
			u := time.Now()
			if _, err := r.Undo(ctx, "bench", nil); err != nil {
				t.Fatal(err)
			}
			t.Logf("round %d: undo %s (not counted)", i+1, time.Since(u).Round(time.Millisecond))
		}
	}
	// Check the result once: first byte of every MiB is the marker's tag.
	buf := make([]byte, 1)
	for _, n := range names {
		v, _ := st.Volume(n)
		for off := int64(0); off < size; off += 1 << 20 {
			if err := v.ReadAt(ctx, make([]byte, 4096), off); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 4096)
			v.ReadAt(ctx, b, off)
			buf[0] = b[0]
			if buf[0] != 'A' {
				t.Fatalf("volume %s at %d holds %q after the restore, want the marker's 'A'", n, off, buf[0])
			}
		}
	}
	// Rounds interleave, so the ratio within a round is what drift hurts
	// least; its median is the headline.
	ratios := make([]time.Duration, len(rs))
	for i := range rs {
		ratios[i] = time.Duration(rs[i].Seconds() / cs[i].Seconds() * 1e6)
	}
	mr, mc := median(rs), median(cs)
	fmt.Printf("RESULT restore of 3 x %d MiB (all blocks changed), %d rounds: median per-round ratio restore/raw copy %.2f (target <= 1.5); median restore %s, median raw copy (dd conv=fsync) %s\n",
		mib, rounds, float64(median(ratios))/1e6, mr.Round(time.Millisecond), mc.Round(time.Millisecond))
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
