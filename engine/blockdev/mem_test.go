package blockdev

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
)

// testDevice is the behaviour every Device implementation must show.
func testDevice(t *testing.T, open func(t *testing.T, size int64, bs int, ro bool) Device) {
	ctx := context.Background()
	t.Run("roundtrip", func(t *testing.T) {
		d := open(t, 1<<20, 512, false)
		if d.BlockSize() != 512 || d.Size() != 1<<20 || d.ReadOnly() || d.ID() == "" {
			t.Fatalf("geometry %d %d %v %q", d.BlockSize(), d.Size(), d.ReadOnly(), d.ID())
		}
		data := bytes.Repeat([]byte("lockstep"), 128*300) // spans chunk boundaries
		data = data[:len(data)/512*512]
		if err := d.WriteAt(ctx, data, 512*100, true); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		if err := d.ReadAt(ctx, got, 512*100); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back: %v", err)
		}
		if err := d.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.WriteZeroes(ctx, 512*101, 512*2, false); err != nil {
			t.Fatal(err)
		}
		if err := d.Unmap(ctx, 512*200, 512*8); err != nil {
			t.Fatal(err)
		}
		if err := d.ReadAt(ctx, got, 512*100); err != nil {
			t.Fatal(err)
		}
		want := append([]byte(nil), data...)
		clear(want[512 : 512*3])
		clear(want[512*100 : 512*108])
		if !bytes.Equal(got, want) {
			t.Fatal("zeroed or unmapped ranges do not read as zeros")
		}
	})
	t.Run("errors", func(t *testing.T) {
		d := open(t, 1<<20, 4096, false)
		buf := make([]byte, 4096)
		if err := d.ReadAt(ctx, buf[:100], 0); !errors.Is(err, ErrUnaligned) {
			t.Fatalf("short read: %v", err)
		}
		if err := d.WriteAt(ctx, buf, 512, false); !errors.Is(err, ErrUnaligned) {
			t.Fatalf("unaligned write: %v", err)
		}
		if err := d.ReadAt(ctx, buf, 1<<20); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("read at end: %v", err)
		}
		if err := d.Unmap(ctx, 1<<20-4096, 8192); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("unmap past end: %v", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := d.ReadAt(cctx, buf, 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled read: %v", err)
		}
	})
	t.Run("readonly", func(t *testing.T) {
		d := open(t, 1<<20, 512, true)
		if !d.ReadOnly() {
			t.Fatal("not read-only")
		}
		if err := d.WriteAt(ctx, make([]byte, 512), 0, false); !errors.Is(err, ErrReadOnly) {
			t.Fatalf("write: %v", err)
		}
		if err := d.Unmap(ctx, 0, 512); !errors.Is(err, ErrReadOnly) {
			t.Fatalf("unmap: %v", err)
		}
		if err := d.ReadAt(ctx, make([]byte, 512), 0); err != nil {
			t.Fatalf("read: %v", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		d := open(t, 1<<20, 512, false)
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := bytes.Repeat([]byte{byte(i + 1)}, 4096)
				off := int64(i) * 4096
				for range 50 {
					if err := d.WriteAt(ctx, b, off, false); err != nil {
						t.Error(err)
						return
					}
					got := make([]byte, 4096)
					if err := d.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, b) {
						t.Errorf("worker %d: read back differs (%v)", i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})
}

func TestMem(t *testing.T) {
	testDevice(t, func(t *testing.T, size int64, bs int, ro bool) Device {
		m, err := NewMem("mem", size, bs, ro)
		if err != nil {
			t.Fatal(err)
		}
		return m
	})
	if _, err := NewMem("bad", 1000, 512, false); err == nil {
		t.Fatal("unaligned size accepted")
	}
	m, _ := NewMem("closed", 4096, 512, false)
	m.Close()
	if err := m.ReadAt(context.Background(), make([]byte, 512), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}
