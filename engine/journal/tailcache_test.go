package journal

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestTailCacheModel adds writes of random sizes to segments in log order
// and checks every read against what was written: the newest bytes (those
// within the ring's size of the head) always hit, anything older never
// does, and what hits is right, across chunk boundaries and wraps.
func TestTailCacheModel(t *testing.T) {
	const size = 2*tailChunk + 12345
	c := &tailCache{size: size}
	r := rand.New(rand.NewPCG(1, 2))
	type add struct {
		seg      uint64
		off, pos int64
		data     []byte
	}
	var adds []add
	var head int64
	seg, off := uint64(1), int64(segHeaderSize)
	for i := 0; i < 400; i++ {
		if r.IntN(8) == 0 {
			seg, off = seg+1, segHeaderSize
		}
		n := 1 + r.IntN(64<<10)
		if r.IntN(10) == 0 {
			n = r.IntN(size + size/2) // some larger than the ring
		}
		if n == 0 {
			n = 1
		}
		data := make([]byte, n)
		fillRandom(r, data)
		c.add(seg, off, data)
		adds = append(adds, add{seg, off, head, data})
		head += int64(n)
		off += int64(n)

		// Probe a few earlier writes.
		for k := 0; k < 4; k++ {
			a := adds[r.IntN(len(adds))]
			from := r.IntN(len(a.data))
			to := from + 1 + r.IntN(len(a.data)-from)
			p := make([]byte, to-from)
			hit := c.read(a.seg, a.off+int64(from), p)
			fresh := a.pos+int64(from) >= head-size
			if hit != fresh {
				t.Fatalf("add %d: read of bytes %d-%d of a write at ring position %d (head %d, size %d): hit %v, want %v",
					i, from, to, a.pos, head, size, hit, fresh)
			}
			if hit && !bytes.Equal(p, a.data[from:to]) {
				t.Fatalf("add %d: cached bytes differ", i)
			}
		}
	}
	if got := c.memory(); got != size {
		t.Fatalf("ring holds %d bytes of memory, want its size %d", got, size)
	}
	if len(c.exts) > 64 {
		t.Fatalf("%d extents kept for a ring of %d bytes: old ones are not dropped", len(c.exts), size)
	}
	// A write that never reached the cache misses.
	if c.read(seg+1, segHeaderSize, make([]byte, 1)) {
		t.Fatal("read of a segment never written hit")
	}
}

// TestTailCacheConcurrent reads while writes are added (run with -race).
func TestTailCacheConcurrent(t *testing.T) {
	c := &tailCache{size: 1 << 20}
	data := bytes.Repeat([]byte{7}, 64<<10)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c.read(1, segHeaderSize, p) && p[0] != 7 {
					t.Error("read a byte never written")
					return
				}
			}
		}()
	}
	off := int64(segHeaderSize)
	for i := 0; i < 200; i++ {
		c.add(1, off, data)
		off += int64(len(data))
	}
	close(stop)
	wg.Wait()
}
