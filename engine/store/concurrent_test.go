package store

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// Writers on two volumes, markers, folds and point-in-time checks all run at
// once. At each retained marker, every writer's blocks must show one cut of
// that writer's sequence, at or after what it had acknowledged before the
// marker and at or before what it had issued when the marker returned.
func TestConcurrentWritesMarkersFolds(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, "/d", Options{FS: vfs.NewCrashFS(), SegmentSize: 32 << 10, IndexMemoryLimit: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, span, bs = 4, 8, 512
	for _, n := range []string{"a", "b"} {
		if _, err := s.CreateVolume(ctx, VolumeSpec{Name: n, Size: writers * span * bs, BlockSize: bs}); err != nil {
			t.Fatal(err)
		}
	}
	// Writer w writes version k (k = 1, 2, ...) to block k%span of its
	// range, alternating volumes: write k goes to volume "a" if k is odd.
	var acked, issued [writers]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }); wg.Wait() }
	defer halt()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := make([]byte, bs)
			for k := int64(1); ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				vol := "b"
				if k%2 == 1 {
					vol = "a"
				}
				v, _ := s.Volume(vol)
				binary.LittleEndian.PutUint64(buf, uint64(k))
				issued[w].Store(k)
				if err := v.WriteAt(ctx, buf, int64(w*span+int(k%span))*bs, k%7 == 0); err != nil {
					t.Error(err)
					return
				}
				acked[w].Store(k)
			}
		}(w)
	}
	type mark struct {
		m      *Marker
		lo, hi [writers]int64
	}
	var marks []mark
	check := func(mk mark) {
		for w := 0; w < writers; w++ {
			// Version k lives in volume a (odd k) or b (even k), block k%span.
			got := map[int64]bool{}
			var c int64
			for _, vol := range []string{"a", "b"} {
				v, _ := s.Volume(vol)
				if !v.readable(mk.m.TS) {
					return
				}
				buf := make([]byte, span*bs)
				if err := v.ReadAtTime(ctx, buf, int64(w*span)*bs, mk.m.TS); err != nil {
					t.Fatalf("marker %s volume %s: %v", mk.m.ID, vol, err)
				}
				for j := 0; j < span; j++ {
					k := int64(binary.LittleEndian.Uint64(buf[j*bs:]))
					got[k] = true
					c = max(c, k)
				}
			}
			if c < mk.lo[w] || c > mk.hi[w] {
				t.Fatalf("marker %s writer %d: cut at version %d outside [%d acknowledged before, %d issued after]", mk.m.ID, w, c, mk.lo[w], mk.hi[w])
			}
			// Version k goes to slot k%span (the volume follows from the
			// parity), so versions (c-span, c] are each the newest in their
			// slot: every one must be there, or an earlier write is missing.
			for k := max(1, c-span+1); k <= c; k++ {
				if !got[k] {
					t.Fatalf("marker %s writer %d: version %d missing though %d is in the cut", mk.m.ID, w, k, c)
				}
			}
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		var mk mark
		for w := range acked {
			mk.lo[w] = acked[w].Load()
		}
		m, err := s.Mark(ctx, MarkSpec{Service: "svc", Class: ClassCrash, Volumes: []string{"a", "b"}})
		if err != nil {
			t.Fatal(err)
		}
		for w := range issued {
			mk.hi[w] = issued[w].Load()
		}
		mk.m = m
		marks = append(marks, mk)
		check(mk)
		if i%10 == 9 && len(marks) > 4 {
			var keep []int64
			for j, old := range marks[:len(marks)-3] {
				if j%3 == 0 {
					keep = append(keep, old.m.TS)
				}
			}
			through := marks[len(marks)-3].m.TS
			if _, err := s.Fold(ctx, map[string]FoldPlan{"a": {Through: through, Keep: keep}, "b": {Through: through, Keep: keep}}); err != nil {
				t.Fatal(err)
			}
			for j, old := range marks[:len(marks)-3] {
				if j%3 == 0 {
					check(old)
				}
			}
		}
	}
	halt()
	for j, mk := range marks {
		if j%3 == 0 || j >= len(marks)-3 {
			check(mk)
		}
	}
	if len(marks) < 20 {
		t.Fatalf("only %d markers in 2s", len(marks))
	}
}
