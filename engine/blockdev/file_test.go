package blockdev

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

func TestFile(t *testing.T) {
	testDevice(t, func(t *testing.T, size int64, bs int, ro bool) Device {
		p := filepath.Join(t.TempDir(), "dev.img")
		if ro {
			f, err := OpenFile(p, size, bs, false) // create it first
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		f, err := OpenFile(p, size, bs, ro)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	})
	// Content survives a reopen.
	p := filepath.Join(t.TempDir(), "persist.img")
	f, err := OpenFile(p, 1<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.WriteAt(ctx, bytes.Repeat([]byte{7}, 512), 512, false); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := OpenFile(p, 1<<20, 512, true)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	got := make([]byte, 512)
	if err := g.ReadAt(ctx, got, 512); err != nil || got[0] != 7 || got[511] != 7 {
		t.Fatalf("after reopen: %v %v", err, got[:4])
	}
}
