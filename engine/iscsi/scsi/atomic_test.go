package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
)

func writeAtomic16(lba uint64, blocks uint16, boundary uint16) []byte {
	c := make([]byte, 16)
	c[0] = OpWriteAtomic16
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint16(c[10:], boundary)
	binary.BigEndian.PutUint16(c[12:], blocks)
	return c
}

// halfWriter writes in two halves with a pause between, as a device whose
// writes are whole after a crash but not to concurrent readers may.
type halfWriter struct {
	*blockdev.Mem
	pause time.Duration
}

func (h *halfWriter) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	half := len(p) / 2
	if err := h.Mem.WriteAt(ctx, p[:half], off, fua); err != nil {
		return err
	}
	time.Sleep(h.pause)
	return h.Mem.WriteAt(ctx, p[half:], off+int64(half), fua)
}

// smallAtomic keeps writes of up to 4 KiB whole.
type smallAtomic struct{ *blockdev.Mem }

func (smallAtomic) AtomicWriteMax() int { return 4096 }

func TestWriteAtomicCapability(t *testing.T) {
	d := newDisk(t) // blockdev.Mem: atomic
	r := exec(t, d, []byte{OpInquiry, 0x01, 0xb0, 0, 0xff, 0}, nil)
	if got := binary.BigEndian.Uint32(r.Data[44:]); r.Status != StatusGood || got != maxTransferBytes/512 {
		t.Fatalf("Block Limits MAXIMUM ATOMIC TRANSFER LENGTH %d, want %d", got, maxTransferBytes/512)
	}
	rsoc := func(d *Disk) Result {
		c := make([]byte, 12)
		c[0], c[1], c[2], c[3] = OpMaintenanceIn, SAReportSupportedOps, 1, OpWriteAtomic16
		binary.BigEndian.PutUint32(c[6:], 64)
		return exec(t, d, c, nil)
	}
	if r := rsoc(d); r.Status != StatusGood || r.Data[1]&0x07 != 0x03 {
		t.Fatalf("REPORT SUPPORTED OPCODES for WRITE ATOMIC on an atomic device: %+v", r)
	}
	wantStatus(t, "WRITE ATOMIC of 2 blocks", exec(t, d, writeAtomic16(8, 2, 0), bytes.Repeat([]byte{7}, 1024)), StatusGood)
	if r := exec(t, d, writeAtomic16(0, 2, 1), make([]byte, 1024)); r.Status != StatusCheckCondition || r.Sense.ASC != 0x24 {
		t.Errorf("WRITE ATOMIC with an atomic boundary: %+v, want INVALID FIELD IN CDB", r)
	}
	m, err := blockdev.NewMem("small-atomic", 1<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	small := NewDisk(smallAtomic{m})
	r = exec(t, small, []byte{OpInquiry, 0x01, 0xb0, 0, 0xff, 0}, nil)
	if got := binary.BigEndian.Uint32(r.Data[44:]); got != 8 {
		t.Fatalf("Block Limits MAXIMUM ATOMIC TRANSFER LENGTH %d on a 4 KiB atomic device, want 8", got)
	}
	wantStatus(t, "WRITE ATOMIC of the limit", exec(t, small, writeAtomic16(0, 8, 0), make([]byte, 4096)), StatusGood)
	if r := exec(t, small, writeAtomic16(0, 9, 0), make([]byte, 9*512)); r.Status != StatusCheckCondition || r.Sense.ASC != 0x24 {
		t.Errorf("WRITE ATOMIC longer than the limit: %+v, want INVALID FIELD IN CDB", r)
	}
	// Fewer bytes than the CDB asks for: writing a part is not atomic.
	if r := exec(t, d, writeAtomic16(0, 2, 0), make([]byte, 512)); r.Status != StatusCheckCondition {
		t.Errorf("WRITE ATOMIC with half its data: %+v", r)
	}

	// A plain file cannot keep a write whole across a crash.
	f, err := blockdev.OpenFile(filepath.Join(t.TempDir(), "lun"), 1<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := NewDisk(f)
	if r := rsoc(fd); r.Status != StatusGood || r.Data[1]&0x07 != 0x01 {
		t.Fatalf("REPORT SUPPORTED OPCODES for WRITE ATOMIC on a file: %+v", r)
	}
	if r := exec(t, fd, writeAtomic16(0, 1, 0), make([]byte, 512)); r.Status != StatusCheckCondition || r.Sense.ASC != 0x20 {
		t.Fatalf("WRITE ATOMIC on a file: %+v, want INVALID COMMAND OPERATION CODE", r)
	}
	r = exec(t, fd, []byte{OpInquiry, 0x01, 0xb0, 0, 0xff, 0}, nil)
	if got := binary.BigEndian.Uint32(r.Data[44:]); got != 0 {
		t.Fatalf("Block Limits MAXIMUM ATOMIC TRANSFER LENGTH %d on a file, want 0", got)
	}
}

// Readers never see a part of an atomic write, even from a device that
// writes it in two steps.
func TestWriteAtomicIsolatesReads(t *testing.T) {
	m, err := blockdev.NewMem("atomic", 1<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDisk(&halfWriter{Mem: m, pause: 200 * time.Microsecond})
	const blocks = 16
	read := []byte{OpRead10, 0, 0, 0, 0, 0, 0, 0, blocks, 0}
	var stop atomic.Bool
	var torn atomic.Int32
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r := exec(t, d, read, nil)
				if r.Status != StatusGood {
					t.Errorf("READ: %+v", r)
					return
				}
				if r.Data[0] != r.Data[len(r.Data)-1] {
					torn.Add(1)
				}
			}
		}()
	}
	for i := range 200 {
		data := bytes.Repeat([]byte{byte(i + 1)}, blocks*512)
		if r := exec(t, d, writeAtomic16(0, blocks, 0), data); r.Status != StatusGood {
			t.Fatalf("WRITE ATOMIC: %+v", r)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := torn.Load(); n > 0 {
		t.Fatalf("%d reads saw a part of an atomic write", n)
	}
}
