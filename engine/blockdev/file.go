package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
)

// File is a Device backed by a regular file, for manual testing. Flush and
// FUA writes call fsync, so durability is the file system's.
type File struct {
	f        *os.File
	id       string
	bs       int
	size     int64
	readOnly bool

	mu     sync.RWMutex // guards closed against in-flight I/O
	closed bool
}

var _ Device = (*File)(nil)

// OpenFile opens (creating if needed) path as a device of size bytes. An
// existing larger file keeps its content; a smaller one is extended.
func OpenFile(path string, size int64, blockSize int, readOnly bool) (*File, error) {
	if blockSize != 512 && blockSize != 4096 {
		return nil, fmt.Errorf("blockdev: block size %d, want 512 or 4096", blockSize)
	}
	if size <= 0 || size%int64(blockSize) != 0 {
		return nil, fmt.Errorf("blockdev: size %d is not a positive multiple of %d", size, blockSize)
	}
	flag := os.O_RDWR | os.O_CREATE
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, fmt.Errorf("blockdev: open %q: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: stat %q: %w", path, err)
	}
	if st.Size() < size {
		if readOnly {
			f.Close()
			return nil, fmt.Errorf("blockdev: %q is %d bytes, smaller than %d", path, st.Size(), size)
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, fmt.Errorf("blockdev: extend %q: %w", path, err)
		}
	}
	return &File{f: f, id: "file:" + path, bs: blockSize, size: size, readOnly: readOnly}, nil
}

// BlockSize implements Device.
func (d *File) BlockSize() int { return d.bs }

// Size implements Device.
func (d *File) Size() int64 { return d.size }

// ReadOnly implements Device.
func (d *File) ReadOnly() bool { return d.readOnly }

// ID implements Device.
func (d *File) ID() string { return d.id }

func (d *File) check(ctx context.Context, off, n int64, write bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.closed {
		return ErrClosed
	}
	if write && d.readOnly {
		return ErrReadOnly
	}
	if off%int64(d.bs) != 0 || n%int64(d.bs) != 0 {
		return fmt.Errorf("%w: offset %d length %d, block size %d", ErrUnaligned, off, n, d.bs)
	}
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return fmt.Errorf("%w: offset %d length %d, size %d", ErrOutOfRange, off, n, d.size)
	}
	return nil
}

// ReadAt implements Device.
func (d *File) ReadAt(ctx context.Context, p []byte, off int64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.check(ctx, off, int64(len(p)), false); err != nil {
		return err
	}
	if _, err := d.f.ReadAt(p, off); err != nil {
		return fmt.Errorf("blockdev: read %s at %d: %w", d.id, off, err)
	}
	return nil
}

// WriteAt implements Device.
func (d *File) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.check(ctx, off, int64(len(p)), true); err != nil {
		return err
	}
	if _, err := d.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("blockdev: write %s at %d: %w", d.id, off, err)
	}
	if fua {
		return d.sync()
	}
	return nil
}

var zeroBuf = make([]byte, 1<<20)

// WriteZeroes implements Device by writing zeros.
func (d *File) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.check(ctx, off, length, true); err != nil {
		return err
	}
	for done := int64(0); done < length; {
		n := min(int64(len(zeroBuf)), length-done)
		if _, err := d.f.WriteAt(zeroBuf[:n], off+done); err != nil {
			return fmt.Errorf("blockdev: zero %s at %d: %w", d.id, off+done, err)
		}
		done += n
	}
	if fua {
		return d.sync()
	}
	return nil
}

// Unmap implements Device; the file keeps its blocks, zeroed.
func (d *File) Unmap(ctx context.Context, off, length int64) error {
	return d.WriteZeroes(ctx, off, length, false)
}

// Flush implements Device.
func (d *File) Flush(ctx context.Context) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.closed {
		return ErrClosed
	}
	return d.sync()
}

func (d *File) sync() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("blockdev: fsync %s: %w", d.id, err)
	}
	return nil
}

// Close syncs and closes the file.
func (d *File) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var err error
	if !d.readOnly {
		err = d.f.Sync()
	}
	return errors.Join(err, d.f.Close())
}
