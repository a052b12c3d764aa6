package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"sync"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// bitmap marks the blocks a clone owns in its base. It is allocated at the
// first fold, so presenting a clone costs nothing whatever its size.
type bitmap struct {
	mu    sync.RWMutex
	n     uint64
	words []uint64
}

func (b *bitmap) get(i uint64) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.words == nil || i >= b.n {
		return false
	}
	return b.words[i/64]&(1<<(i%64)) != 0
}

func (b *bitmap) set(i uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.words == nil {
		b.words = make([]uint64, (b.n+63)/64)
	}
	b.words[i/64] |= 1 << (i % 64)
}

func (b *bitmap) encode() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.words == nil {
		b.words = make([]uint64, (b.n+63)/64)
	}
	out := make([]byte, 8+8*len(b.words)+4)
	binary.LittleEndian.PutUint64(out, b.n)
	for i, w := range b.words {
		binary.LittleEndian.PutUint64(out[8+8*i:], w)
	}
	binary.LittleEndian.PutUint32(out[len(out)-4:], crc32.Checksum(out[:len(out)-4], castagnoli))
	return out
}

func loadPresent(fsys vfs.FS, name string, n int64) (*bitmap, error) {
	b := &bitmap{n: uint64(n)}
	data, err := vfs.ReadFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("present map: %w", err)
	}
	words := (uint64(n) + 63) / 64
	if uint64(len(data)) != 8+8*words+4 || binary.LittleEndian.Uint64(data) != uint64(n) ||
		crc32.Checksum(data[:len(data)-4], castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, fmt.Errorf("present map %s: damaged", name)
	}
	b.words = make([]uint64, words)
	for i := range b.words {
		b.words[i] = binary.LittleEndian.Uint64(data[8+8*i:])
	}
	return b, nil
}
