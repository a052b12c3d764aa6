package vfs

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// DirectAlign is what direct I/O needs to be a multiple of: the file
// offset, the length, and the address of the memory. 4096 covers devices
// of 512- and 4096-byte logical blocks.
const DirectAlign = 4096

// ErrNoDirect is returned by WriteDirect when the file system refuses
// direct I/O (O_DIRECT) for the file; the caller uses WriteAt.
var ErrNoDirect = errors.New("direct I/O not supported for this file")

// DirectIO is implemented by files that can write past the page cache.
// Buffered and direct I/O of one file stay coherent: the kernel writes back
// and drops the cached pages a direct write overlaps. Direct writes are
// durable only after File.Sync, like WriteAt: the device may cache them.
//
// Why: on a machine whose memory is handed back to its hypervisor (free
// page reporting), every new page-cache page is a host fault. A journal
// only ever appends, so every buffered write needed fresh pages: 450 MB/s
// where direct writes reach the device's 1.3 GB/s (docs/benchmarks-iscsi.md).
type DirectIO interface {
	// WriteDirect writes p at off. off, len(p) and &p[0] must be
	// multiples of DirectAlign (see Aligned).
	WriteDirect(p []byte, off int64) (int, error)
}

// Aligned reports whether p's memory starts on a DirectAlign boundary.
func Aligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%DirectAlign == 0
}

// AlignedAt returns an empty slice of b's memory whose first byte has the
// same offset within a DirectAlign block as the file offset off, so that
// bytes appended for file offsets off, off+1, ... can be written directly
// from where they lie. It gives up fewer than DirectAlign bytes of b.
func AlignedAt(b []byte, off int64) []byte {
	b = b[:cap(b)]
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	skip := (int(off%DirectAlign) - int(addr%DirectAlign) + DirectAlign) % DirectAlign
	if skip > len(b) {
		return b[len(b):]
	}
	return b[skip:skip]
}

// directFile is the O_DIRECT descriptor of an osFile, opened on first use.
type directFile struct {
	once sync.Once
	f    *os.File
	err  error
}

func (d *directFile) open(f *os.File) (*os.File, error) {
	d.once.Do(func() {
		rc, err := f.SyscallConn()
		if err != nil {
			d.err = err
			return
		}
		var fd uintptr
		if err := rc.Control(func(x uintptr) { fd = x }); err != nil {
			d.err = err
			return
		}
		// Reopening through /proc gives a description of the same inode
		// whatever the file was renamed to since.
		df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_WRONLY|syscall.O_DIRECT, 0)
		if err != nil {
			d.err = fmt.Errorf("%s: %w: %v", f.Name(), ErrNoDirect, err)
			return
		}
		d.f = df
	})
	return d.f, d.err
}

func (d *directFile) close() error {
	d.once.Do(func() { d.err = os.ErrClosed })
	if d.f != nil {
		return d.f.Close()
	}
	return nil
}

func checkDirect(p []byte, off int64) error {
	if off%DirectAlign != 0 || len(p)%DirectAlign != 0 || !Aligned(p) {
		return fmt.Errorf("direct I/O of %d bytes at %d: %w (unaligned)", len(p), off, ErrNoDirect)
	}
	return nil
}

// directErr maps the kernel's refusal of a direct transfer (EINVAL: the
// device needs a coarser alignment) onto ErrNoDirect.
func directErr(err error) error {
	if errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("%w: %v", ErrNoDirect, err)
	}
	return err
}

func (f *osFile) WriteDirect(p []byte, off int64) (int, error) {
	if err := checkDirect(p, off); err != nil {
		return 0, err
	}
	df, err := f.direct.open(f.File)
	if err != nil {
		return 0, err
	}
	n, err := df.WriteAt(p, off)
	return n, directErr(err)
}
