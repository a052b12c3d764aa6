package clock

import (
	"sync"
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := NewFake(start)
	if got := f.Now(); !got.Equal(start) {
		t.Fatalf("Now() = %v, want %v", got, start)
	}
	f.Advance(90 * time.Second)
	if got, want := f.Now(), start.Add(90*time.Second); !got.Equal(want) {
		t.Fatalf("after Advance: %v, want %v", got, want)
	}
	back := start.Add(-time.Hour)
	f.Set(back)
	if got := f.Now(); !got.Equal(back) {
		t.Fatalf("after Set backwards: %v, want %v", got, back)
	}
}

func TestFakeConcurrent(t *testing.T) {
	start := time.Unix(0, 0)
	f := NewFake(start)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				f.Advance(time.Millisecond)
				_ = f.Now()
			}
		})
	}
	wg.Wait()
	if got, want := f.Now(), start.Add(800*time.Millisecond); !got.Equal(want) {
		t.Fatalf("after 800 concurrent 1ms advances: %v, want %v", got, want)
	}
}

func TestRealIsNow(t *testing.T) {
	var c Clock = Real{}
	before := time.Now()
	got := c.Now()
	if got.Before(before) || got.After(time.Now()) {
		t.Fatalf("Real.Now() = %v, not between the surrounding time.Now calls", got)
	}
}
