package daemon

import (
	"context"
	"sync/atomic"

	"github.com/lockstep-io/lockstep/engine/blockdev"
)

// ioCounters count what initiators did to one volume through iSCSI. The
// engine's target keeps no counters, so the daemon counts at the device it
// hands to the target.
type ioCounters struct {
	readOps, readBytes, writeOps, writeBytes, flushes, errors atomic.Uint64
}

// countingDevice is a blockdev.Device that counts the I/O passing through.
type countingDevice struct {
	blockdev.Device
	c *ioCounters
}

var (
	_ blockdev.Device       = (*countingDevice)(nil)
	_ blockdev.Provisioner  = (*countingDevice)(nil)
	_ blockdev.AtomicWriter = (*countingDevice)(nil)
)

// Provisioning passes GET LBA STATUS through to the volume's index (without
// it the target would read every block to find the holes).
func (d *countingDevice) Provisioning(ctx context.Context, off, length int64) (blockdev.Provisioning, int64, error) {
	if p, ok := d.Device.(blockdev.Provisioner); ok {
		return p.Provisioning(ctx, off, length)
	}
	return blockdev.Unknown, length, nil
}

// AtomicWriteMax passes the volume's atomic write capability through.
func (d *countingDevice) AtomicWriteMax() int {
	if a, ok := d.Device.(blockdev.AtomicWriter); ok {
		return a.AtomicWriteMax()
	}
	return 0
}

func (d *countingDevice) count(err error) error {
	if err != nil {
		d.c.errors.Add(1)
	}
	return err
}

func (d *countingDevice) ReadAt(ctx context.Context, p []byte, off int64) error {
	d.c.readOps.Add(1)
	d.c.readBytes.Add(uint64(len(p)))
	return d.count(d.Device.ReadAt(ctx, p, off))
}

func (d *countingDevice) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	d.c.writeOps.Add(1)
	d.c.writeBytes.Add(uint64(len(p)))
	return d.count(d.Device.WriteAt(ctx, p, off, fua))
}

func (d *countingDevice) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	d.c.writeOps.Add(1)
	d.c.writeBytes.Add(uint64(length))
	return d.count(d.Device.WriteZeroes(ctx, off, length, fua))
}

func (d *countingDevice) Flush(ctx context.Context) error {
	d.c.flushes.Add(1)
	return d.count(d.Device.Flush(ctx))
}
