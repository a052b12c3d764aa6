package journal

import (
	"fmt"
	"syscall"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// preallocate reserves the active segment's blocks up to size (fallocate,
// mode 0: the file's size becomes size and the new range reads as zeros).
// Appends then write inside the file, so the fdatasync of a flush no longer
// has to commit a new file size and newly allocated blocks with every
// record; measured on ext4 it roughly halves a 4 KiB write + fdatasync
// (docs/benchmarks-iscsi.md). Only files of the real file system can be
// preallocated; elsewhere (the in-memory and crash-testing file systems),
// and when the file system refuses, the segment grows by appending as
// before. Either way the zeros past the last record are not records: Open
// and Verify treat an all-zero tail as the end of the log.
func preallocate(f vfs.File, size int64) bool {
	sc, ok := f.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Fallocate(int(fd), 0, 0, size)
			if ferr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return false
	}
	return ferr == nil
}

// Zeros ahead of the records. fallocate leaves *unwritten* extents: the
// first write into each block converts it, and ext4 commits that conversion
// through its own journal, so every fdatasync after a small write paid for
// a metadata commit (measured: 4 KiB write + fdatasync 490–600 µs into a
// fallocated file, 360 µs into one already written with zeros). So a sync
// that carries little data first writes zeros over the next zeroChunk of
// the segment whenever fewer than zeroLead bytes past the records are
// zeroed: that sync converts a whole chunk at once, and the small syncs
// after it find their blocks written. Syncs of much data (streaming
// writes) skip it: they pay one conversion for many blocks anyway, and
// zeros would double what they write.
const (
	zeroChunk         = 1 << 20
	zeroLead          = 256 << 10
	zeroAheadMaxFlush = 128 << 10
)

var zeros [zeroChunk]byte

// zeroAhead writes zeros past seg's records (see above). Every write to a
// segment happens under syncMu, which the caller holds, so no record can be
// written where these zeros land after them.
func (l *Log) zeroAhead(seg *segment) error {
	if !seg.prealloc || seg.zeroed-seg.written >= zeroLead {
		return nil
	}
	from := max(seg.zeroed, (seg.written+4095)&^4095)
	to := min(from+zeroChunk, l.opts.SegmentSize)
	if to <= from {
		return nil
	}
	if _, err := seg.f.WriteAt(zeros[:to-from], from); err != nil {
		return fmt.Errorf("zero segment %s at %d: %w", segName(seg.num), from, err)
	}
	seg.zeroed = to
	return nil
}

// zeroTail reports whether b holds nothing but zeros: space preallocated
// and never written.
func zeroTail(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// lastNonZero returns the end of the last non-zero byte of b (0 if none).
func lastNonZero(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return i + 1
		}
	}
	return 0
}
