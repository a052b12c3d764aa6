package journal

import (
	"sort"
	"sync"
)

// tailCache keeps the most recently written bytes of the log in memory, a
// ring of a fixed size that every buffer handed to the files is copied
// into, so that reads of recent writes need neither the disk nor the page
// cache. The log's writes bypass the page cache (writeAt); a ring that is
// reused does not fault in fresh memory for every byte written, as the
// page cache of an append-only file does. Its memory is at most its size,
// whatever the journal's length, allocated a chunk at a time as writes
// first reach it (a daemon that writes little uses little).
type tailCache struct {
	size int64

	mu     sync.RWMutex
	chunks [][]byte     // the ring, tailChunk bytes each
	head   int64        // bytes ever added; the ring holds [head-size, head)
	exts   []tailExtent // where the bytes came from, oldest first
}

// tailExtent says that n bytes at offset off of segment seg are at ring
// position pos.
type tailExtent struct {
	seg         uint64
	off, pos, n int64
}

// add records data, just written at off of segment seg. Calls come in log
// order (under the log's syncMu).
func (c *tailCache) add(seg uint64, off int64, data []byte) {
	if c.size <= 0 || len(data) == 0 {
		return
	}
	if over := int64(len(data)) - c.size; over > 0 {
		data, off = data[over:], off+over
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.chunks == nil {
		c.chunks = make([][]byte, (c.size+tailChunk-1)/tailChunk)
	}
	pos := c.head
	for p, b := pos, data; len(b) > 0; {
		i := p % c.size
		k := i / tailChunk
		if c.chunks[k] == nil {
			c.chunks[k] = make([]byte, min(tailChunk, c.size-k*tailChunk))
		}
		n := copy(c.chunks[k][i%tailChunk:], b)
		b, p = b[n:], p+int64(n)
	}
	c.head += int64(len(data))
	if k := len(c.exts) - 1; k >= 0 && c.exts[k].seg == seg && c.exts[k].off+c.exts[k].n == off && c.exts[k].pos+c.exts[k].n == pos {
		c.exts[k].n += int64(len(data))
	} else {
		c.exts = append(c.exts, tailExtent{seg: seg, off: off, pos: pos, n: int64(len(data))})
	}
	for len(c.exts) > 0 && c.exts[0].pos+c.exts[0].n <= c.head-c.size {
		c.exts = c.exts[1:]
	}
}

// read fills p with the bytes at off of segment seg if the ring still holds
// all of them.
func (c *tailCache) read(seg uint64, off int64, p []byte) bool {
	if c.size <= 0 {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	i := sort.Search(len(c.exts), func(i int) bool {
		e := c.exts[i]
		return e.seg > seg || (e.seg == seg && e.off+e.n > off)
	})
	if i == len(c.exts) {
		return false
	}
	e := c.exts[i]
	if e.seg != seg || off < e.off || off+int64(len(p)) > e.off+e.n {
		return false
	}
	pos := e.pos + off - e.off
	if pos < c.head-c.size {
		return false
	}
	for len(p) > 0 {
		i := pos % c.size
		n := copy(p, c.chunks[i/tailChunk][i%tailChunk:])
		p, pos = p[n:], pos+int64(n)
	}
	return true
}

// tailChunk is the unit in which the ring's memory is allocated.
const tailChunk = 4 << 20

// memory is the bytes the ring has allocated.
func (c *tailCache) memory() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var n int64
	for _, b := range c.chunks {
		n += int64(len(b))
	}
	return n
}
