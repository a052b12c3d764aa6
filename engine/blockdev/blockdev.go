// Package blockdev defines the block device contract between the data plane's
// storage (journaled volumes, point-in-time views, clones) and the front ends
// that serve them (iSCSI).
package blockdev

import (
	"context"
	"errors"
)

// Errors a Device classifies its failures with.
var (
	// ErrReadOnly is returned by writes to a read-only device (a view at T).
	ErrReadOnly = errors.New("blockdev: device is read-only")
	// ErrOutOfRange is returned when an I/O exceeds the device's size.
	ErrOutOfRange = errors.New("blockdev: I/O beyond end of device")
	// ErrUnaligned is returned when offset or length is not a multiple of
	// the logical block size.
	ErrUnaligned = errors.New("blockdev: I/O not aligned to logical block size")
	// ErrFenced is returned while I/O is refused (a restore is rolling the
	// volume); front ends report it as NOT READY, not as a medium error.
	ErrFenced = errors.New("blockdev: device is fenced")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("blockdev: device is closed")
)

// Device is a fixed-size block device with a volatile write cache, as a SCSI
// disk presents it. All methods are safe for concurrent use. Offsets and
// lengths are in bytes and must be multiples of BlockSize.
type Device interface {
	// BlockSize is the logical block size in bytes (512 or 4096).
	BlockSize() int
	// Size is the device size in bytes, a multiple of BlockSize.
	Size() int64
	// ReadOnly reports whether writes are refused.
	ReadOnly() bool
	// ReadAt fills p with the content at off. It sees every write that
	// returned before it was called, durable or not.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at off. Without fua the write may sit in the volatile
	// cache until the next Flush; with fua it is durable when WriteAt
	// returns, and so is every write that returned before it. Writes that
	// return are ordered: after a crash the surviving writes are a prefix of
	// the order in which they returned.
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// WriteZeroes sets length bytes at off to zero (WRITE SAME with zeros).
	WriteZeroes(ctx context.Context, off, length int64, fua bool) error
	// Unmap deallocates a range; it then reads as zeros. Like a write it is
	// journaled, so history before it still reads the old data.
	Unmap(ctx context.Context, off, length int64) error
	// Flush makes every write that returned before it durable
	// (SYNCHRONIZE CACHE).
	Flush(ctx context.Context) error
	// ID is a stable identifier for serial numbers and designators.
	ID() string
}

// Provisioning is what a Provisioner knows of a run of blocks.
type Provisioning uint8

const (
	// Unknown: the device cannot tell without reading the blocks.
	Unknown Provisioning = iota
	// Mapped: the blocks hold written data (which may be zeros).
	Mapped
	// Deallocated: the blocks read as zeros (never written, unmapped or
	// zeroed).
	Deallocated
)

// Provisioner is an optional Device capability for GET LBA STATUS: where
// data lies, from the device's own metadata, so that the front end reads
// only what the device cannot tell.
type Provisioner interface {
	// Provisioning reports what is known of the blocks from off on, and the
	// length in bytes of the run that shares that answer: at least one
	// block, at most length. It reads no block data.
	Provisioning(ctx context.Context, off, length int64) (Provisioning, int64, error)
}

// AtomicWriter is an optional Device capability for WRITE ATOMIC: a WriteAt
// of at most AtomicWriteMax bytes is all or nothing, after a crash and in
// every point-in-time view of the device, never a part of it. Concurrent
// ReadAt calls may still see a part of it; the front end keeps reads out of
// an atomic write's way. 0 means no atomic writes.
type AtomicWriter interface {
	AtomicWriteMax() int
}
