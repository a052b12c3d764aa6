package blockdev

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

const memChunk = 64 << 10

// Mem is a sparse in-memory Device for tests and demos. Unwritten and
// unmapped ranges read as zeros and use no memory.
type Mem struct {
	id       string
	bs       int
	size     int64
	readOnly bool

	mu     sync.RWMutex
	chunks map[int64][]byte
	closed bool

	flushes, fuaWrites atomic.Int64
}

var _ Device = (*Mem)(nil)

// NewMem returns an empty device of size bytes with the given block size.
func NewMem(id string, size int64, blockSize int, readOnly bool) (*Mem, error) {
	if blockSize != 512 && blockSize != 4096 {
		return nil, fmt.Errorf("blockdev: block size %d, want 512 or 4096", blockSize)
	}
	if size <= 0 || size%int64(blockSize) != 0 {
		return nil, fmt.Errorf("blockdev: size %d is not a positive multiple of %d", size, blockSize)
	}
	return &Mem{id: id, bs: blockSize, size: size, readOnly: readOnly, chunks: map[int64][]byte{}}, nil
}

// BlockSize implements Device.
func (m *Mem) BlockSize() int { return m.bs }

// Size implements Device.
func (m *Mem) Size() int64 { return m.size }

// ReadOnly implements Device.
func (m *Mem) ReadOnly() bool { return m.readOnly }

// ID implements Device.
func (m *Mem) ID() string { return m.id }

// Flushes reports how many Flush calls succeeded.
func (m *Mem) Flushes() int64 { return m.flushes.Load() }

// FUAWrites reports how many writes asked for FUA.
func (m *Mem) FUAWrites() int64 { return m.fuaWrites.Load() }

func (m *Mem) check(ctx context.Context, off, n int64, write bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.closed {
		return ErrClosed
	}
	if write && m.readOnly {
		return ErrReadOnly
	}
	if off%int64(m.bs) != 0 || n%int64(m.bs) != 0 {
		return fmt.Errorf("%w: offset %d length %d, block size %d", ErrUnaligned, off, n, m.bs)
	}
	if off < 0 || n < 0 || off > m.size || n > m.size-off {
		return fmt.Errorf("%w: offset %d length %d, size %d", ErrOutOfRange, off, n, m.size)
	}
	return nil
}

// ReadAt implements Device.
func (m *Mem) ReadAt(ctx context.Context, p []byte, off int64) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(ctx, off, int64(len(p)), false); err != nil {
		return err
	}
	for done := 0; done < len(p); {
		c, within := (off+int64(done))/memChunk, (off+int64(done))%memChunk
		n := min(len(p)-done, int(memChunk-within))
		if chunk, ok := m.chunks[c]; ok {
			copy(p[done:done+n], chunk[within:])
		} else {
			clear(p[done : done+n])
		}
		done += n
	}
	return nil
}

// span calls fn for each chunk piece of [off, off+n).
func span(off, n int64, fn func(c, within, length, done int64)) {
	for done := int64(0); done < n; {
		c, within := (off+done)/memChunk, (off+done)%memChunk
		l := min(n-done, memChunk-within)
		fn(c, within, l, done)
		done += l
	}
}

// AtomicWriteMax implements AtomicWriter: a write happens under the lock
// reads take, and a crash loses a Mem whole.
func (m *Mem) AtomicWriteMax() int { return math.MaxInt32 }

// WriteAt implements Device.
func (m *Mem) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, off, int64(len(p)), true); err != nil {
		return err
	}
	span(off, int64(len(p)), func(c, within, l, done int64) {
		chunk, ok := m.chunks[c]
		if !ok {
			chunk = make([]byte, memChunk)
			m.chunks[c] = chunk
		}
		copy(chunk[within:within+l], p[done:done+l])
	})
	if fua {
		m.fuaWrites.Add(1)
	}
	return nil
}

func (m *Mem) zero(off, n int64) {
	span(off, n, func(c, within, l, _ int64) {
		if within == 0 && l == memChunk {
			delete(m.chunks, c)
		} else if chunk, ok := m.chunks[c]; ok {
			clear(chunk[within : within+l])
		}
	})
}

// WriteZeroes implements Device.
func (m *Mem) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, off, length, true); err != nil {
		return err
	}
	m.zero(off, length)
	if fua {
		m.fuaWrites.Add(1)
	}
	return nil
}

// Unmap implements Device.
func (m *Mem) Unmap(ctx context.Context, off, length int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, off, length, true); err != nil {
		return err
	}
	m.zero(off, length)
	return nil
}

// Flush implements Device.
func (m *Mem) Flush(ctx context.Context) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.closed {
		return ErrClosed
	}
	m.flushes.Add(1)
	return nil
}

// Close releases the content; later calls fail with ErrClosed.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.chunks = nil
	return nil
}
