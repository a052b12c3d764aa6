package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/lockstep-io/lockstep/engine/blockdev"
)

func newDisk(t *testing.T) *Disk {
	t.Helper()
	m, err := blockdev.NewMem("disk", 1<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	return NewDisk(m)
}

func exec(t *testing.T, d *Disk, cdb []byte, out []byte) Result {
	t.Helper()
	req, s := Parse(cdb, d.BlockSize())
	if s != nil {
		return Check(*s)
	}
	return d.Execute(context.Background(), req, out)
}

func TestReportOpcodesOneCommand(t *testing.T) {
	d := newDisk(t)
	rsoc := func(opts, op byte, sa uint16) Result {
		c := make([]byte, 12)
		c[0], c[1], c[2], c[3] = OpMaintenanceIn, SAReportSupportedOps, opts, op
		binary.BigEndian.PutUint16(c[4:], sa)
		binary.BigEndian.PutUint32(c[6:], 65535)
		return exec(t, d, c, nil)
	}
	if r := rsoc(1, OpRead10, 0); r.Status != StatusGood || r.Data[1]&7 != 3 || r.Data[4] != OpRead10 {
		t.Fatalf("options 1 READ10: %+v", r)
	}
	if r := rsoc(2, OpTestUnitReady, 0); r.Status != StatusCheckCondition || r.Sense.ASC != 0x24 {
		t.Fatalf("options 2 on an opcode without service actions: %+v", r)
	}
	if r := rsoc(1, OpServiceActionIn16, 0x10); r.Status != StatusCheckCondition || r.Sense.ASC != 0x24 {
		t.Fatalf("options 1 on an opcode with service actions: %+v", r)
	}
	if r := rsoc(2, OpServiceActionIn16, 0x10); r.Status != StatusGood || r.Data[1]&7 != 3 {
		t.Fatalf("options 2 READ CAPACITY 16: %+v", r)
	}
	if r := rsoc(2, OpServiceActionIn16, SAGetLBAStatus); r.Status != StatusGood || r.Data[1]&7 != 3 {
		t.Fatalf("options 2 GET LBA STATUS: %+v", r)
	}
	if r := rsoc(1, 0xc7, 0); r.Status != StatusGood || r.Data[1]&7 != 1 {
		t.Fatalf("unsupported opcode: %+v", r)
	}
}

// getLBAStatus sends GET LBA STATUS at lba with allocation length alloc.
func getLBAStatus(t *testing.T, d *Disk, lba uint64, alloc uint32) Result {
	t.Helper()
	c := make([]byte, 16)
	c[0], c[1] = OpServiceActionIn16, SAGetLBAStatus
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], alloc)
	return exec(t, d, c, nil)
}

type lbaDesc struct {
	lba    uint64
	blocks uint32
	status byte
}

func lbaDescs(t *testing.T, r Result) []lbaDesc {
	t.Helper()
	if r.Status != StatusGood {
		t.Fatalf("GET LBA STATUS: %+v", r)
	}
	if n := binary.BigEndian.Uint32(r.Data); int(n)+4 != len(r.Data) || (len(r.Data)-8)%16 != 0 {
		t.Fatalf("GET LBA STATUS: parameter data length %d for %d bytes", n, len(r.Data))
	}
	var out []lbaDesc
	for b := r.Data[8:]; len(b) >= 16; b = b[16:] {
		out = append(out, lbaDesc{binary.BigEndian.Uint64(b), binary.BigEndian.Uint32(b[8:]), b[12] & 0x0f})
	}
	return out
}

func TestGetLBAStatus(t *testing.T) {
	d := newDisk(t) // 2048 blocks of 512 bytes
	ctx := context.Background()
	// Data at blocks 10-19 and 100, a zero-filled write at 20-29 (reads
	// as zeros: deallocated), an unmap inside the data at 15.
	if err := d.dev.WriteAt(ctx, bytesOf(0xab, 10*512), 10*512, false); err != nil {
		t.Fatal(err)
	}
	if err := d.dev.WriteAt(ctx, make([]byte, 10*512), 20*512, false); err != nil {
		t.Fatal(err)
	}
	if err := d.dev.WriteAt(ctx, bytesOf(1, 512), 100*512, false); err != nil {
		t.Fatal(err)
	}
	if err := d.dev.Unmap(ctx, 15*512, 512); err != nil {
		t.Fatal(err)
	}
	got := lbaDescs(t, getLBAStatus(t, d, 0, 4096))
	want := []lbaDesc{{0, 10, 1}, {10, 5, 0}, {15, 1, 1}, {16, 4, 0}, {20, 80, 1}, {100, 1, 0}, {101, 1947, 1}}
	if len(got) != len(want) {
		t.Fatalf("descriptors %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("descriptor %d: %+v, want %+v (all: %+v)", i, got[i], want[i], got)
		}
	}
	// The first descriptor starts at the LBA asked for.
	if got := lbaDescs(t, getLBAStatus(t, d, 12, 24)); len(got) != 1 || got[0] != (lbaDesc{12, 3, 0}) {
		t.Fatalf("at LBA 12 with room for one descriptor: %+v", got)
	}
	// An allocation length shorter than one descriptor truncates the data.
	if r := getLBAStatus(t, d, 0, 10); r.Status != StatusGood || len(r.Data) != 10 {
		t.Fatalf("allocation length 10: %+v", r)
	}
	if got := lbaDescs(t, getLBAStatus(t, d, 2047, 4096)); len(got) != 1 || got[0] != (lbaDesc{2047, 1, 1}) {
		t.Fatalf("last block: %+v", got)
	}
	for _, lba := range []uint64{2048, 1 << 63, ^uint64(0)} {
		if r := getLBAStatus(t, d, lba, 24); r.Status != StatusCheckCondition || r.Sense.ASC != 0x21 {
			t.Fatalf("LBA %d: %+v, want LBA OUT OF RANGE", lba, r)
		}
	}
}

// provMem is a Mem that says blocks [0,4) are mapped and [4,8)
// deallocated without reading them, and leaves the rest to the disk.
type provMem struct {
	*blockdev.Mem
	reads int
}

func (p *provMem) Provisioning(_ context.Context, off, length int64) (blockdev.Provisioning, int64, error) {
	b := off / 512
	switch {
	case b < 4:
		return blockdev.Mapped, min(length, (4-b)*512), nil
	case b < 8:
		return blockdev.Deallocated, min(length, (8-b)*512), nil
	}
	return blockdev.Unknown, min(length, 512), nil
}

func (p *provMem) ReadAt(ctx context.Context, b []byte, off int64) error {
	p.reads++
	return p.Mem.ReadAt(ctx, b, off)
}

func TestGetLBAStatusProvisioner(t *testing.T) {
	m, err := blockdev.NewMem("prov", 1<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Data the provisioner says is deallocated is not read; block 9 is
	// read and found to hold data.
	if err := m.WriteAt(ctx, bytesOf(3, 512), 9*512, false); err != nil {
		t.Fatal(err)
	}
	p := &provMem{Mem: m}
	d := NewDisk(p)
	got := lbaDescs(t, getLBAStatus(t, d, 0, 4096))
	want := []lbaDesc{{0, 4, 0}, {4, 5, 1}, {9, 1, 0}, {10, 2038, 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("descriptors %+v, want %+v", got, want)
	}
	if p.reads == 0 {
		t.Fatal("the blocks the provisioner did not know were not read")
	}
}

func bytesOf(b byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}

func TestReadWriteVerifyCompare(t *testing.T) {
	d := newDisk(t)
	data := make([]byte, 1024)
	for i := range data {
		data[i] = byte(i)
	}
	w := make([]byte, 10)
	w[0], w[1] = OpWrite10, 0x08
	binary.BigEndian.PutUint32(w[2:], 4)
	binary.BigEndian.PutUint16(w[7:], 2)
	if r := exec(t, d, w, data); r.Status != StatusGood {
		t.Fatalf("write: %+v", r.Sense)
	}
	rd := append([]byte(nil), w...)
	rd[0], rd[1] = OpRead10, 0
	if r := exec(t, d, rd, nil); r.Status != StatusGood || string(r.Data) != string(data) {
		t.Fatal("read back differs")
	}
	v := append([]byte(nil), w...)
	v[0], v[1] = OpVerify10, 0x02
	if r := exec(t, d, v, data); r.Status != StatusGood {
		t.Fatalf("verify equal: %+v", r.Sense)
	}
	bad := append([]byte(nil), data...)
	bad[700] ^= 1
	if r := exec(t, d, v, bad); r.Status != StatusCheckCondition || r.Sense.Key != KeyMiscompare || r.Sense.Info != 700 {
		t.Fatalf("verify miscompare: %+v", r.Sense)
	}
	caw := make([]byte, 16)
	caw[0] = OpCompareAndWrite
	binary.BigEndian.PutUint64(caw[2:], 4)
	caw[13] = 1
	newBlock := make([]byte, 512)
	if r := exec(t, d, caw, append(append([]byte(nil), bad[:512]...), newBlock...)); r.Status != StatusGood {
		t.Fatalf("compare and write: %+v", r.Sense)
	}
	if r := exec(t, d, caw, append(append([]byte(nil), data[:512]...), newBlock...)); r.Sense == nil || r.Sense.Key != KeyMiscompare {
		t.Fatalf("compare and write after change: %+v", r)
	}
}

func orWrite16(lba uint64, blocks uint32, flags byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = OpOrWrite16, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

// TestOrWrite: ORWRITE (16) leaves current OR data-out, across more than
// one of its read chunks, writes only the whole blocks it received, and
// refuses what SBC says to refuse.
func TestOrWrite(t *testing.T) {
	const bs, size = 512, 4 << 20
	m, err := blockdev.NewMem("or", size, bs, false)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDisk(m)
	n := orWriteChunk*2 + 3*bs // three chunks, the last partial
	base := make([]byte, n)
	for i := range base {
		base[i] = byte(i*7) & 0x0f
	}
	w := make([]byte, 16)
	w[0] = OpWrite16
	binary.BigEndian.PutUint64(w[2:], 8)
	binary.BigEndian.PutUint32(w[10:], uint32(n/bs))
	if r := exec(t, d, w, base); r.Status != StatusGood {
		t.Fatalf("write: %+v", r.Sense)
	}
	mask := make([]byte, n)
	for i := range mask {
		mask[i] = byte(i*13) & 0xf0
	}
	if r := exec(t, d, orWrite16(8, uint32(n/bs), 0x08), append([]byte(nil), mask...)); r.Status != StatusGood {
		t.Fatalf("orwrite: %+v", r.Sense)
	}
	got := make([]byte, n)
	if err := m.ReadAt(context.Background(), got, 8*bs); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != base[i]|mask[i] {
			t.Fatalf("byte %d: %#x, want %#x|%#x", i, got[i], base[i], mask[i])
		}
	}
	// Half a block more than one block received: one block changes.
	ones := bytes.Repeat([]byte{0xff}, bs+bs/2)
	if r := exec(t, d, orWrite16(0, 2, 0), ones); r.Status != StatusGood {
		t.Fatalf("short orwrite: %+v", r.Sense)
	}
	two := make([]byte, 2*bs)
	if err := m.ReadAt(context.Background(), two, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(two[:bs], ones[:bs]) || !bytes.Equal(two[bs:], make([]byte, bs)) {
		t.Fatal("a short ORWRITE changed more (or less) than its whole blocks")
	}
	for _, tc := range []struct {
		name string
		cdb  []byte
		key  byte
	}{
		{"ORPROTECT", orWrite16(0, 1, 0x20), KeyIllegalRequest},
		{"beyond end", orWrite16(size/bs-1, 2, 0), KeyIllegalRequest},
		{"too long", orWrite16(0, MaxTransferBytes/bs+1, 0), KeyIllegalRequest},
	} {
		if r := exec(t, d, tc.cdb, make([]byte, bs)); r.Sense == nil || r.Sense.Key != tc.key {
			t.Errorf("%s: %+v", tc.name, r)
		}
	}
	if r := exec(t, d, orWrite16(0, 0, 0), nil); r.Status != StatusGood {
		t.Errorf("zero blocks: %+v", r.Sense)
	}
	ro, err := blockdev.NewMem("ro", 1<<20, bs, true)
	if err != nil {
		t.Fatal(err)
	}
	if r := exec(t, NewDisk(ro), orWrite16(0, 1, 0), make([]byte, bs)); r.Sense == nil || r.Sense.Key != KeyDataProtect {
		t.Errorf("read-only: %+v", r)
	}
}

// TestOrWriteAtomic: concurrent ORWRITEs of different bits into one block,
// mixed with WRITEs elsewhere, lose no bit (each reads and writes under the
// disk's exclusive lock).
func TestOrWriteAtomic(t *testing.T) {
	d := newDisk(t)
	var wg sync.WaitGroup
	for bit := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 400 {
				data := make([]byte, 512)
				data[i] = 1 << bit
				req, _ := Parse(orWrite16(3, 1, 0), 512)
				if r := d.Execute(context.Background(), req, data); r.Status != StatusGood {
					t.Errorf("orwrite: %+v", r.Sense)
					return
				}
			}
		}()
	}
	wg.Wait()
	r := exec(t, d, []byte{OpRead10, 0, 0, 0, 0, 3, 0, 0, 1, 0}, nil)
	for i, b := range r.Data[:400] {
		if b != 0xff {
			t.Fatalf("byte %d is %#x after 8 writers each ORed their bit in", i, b)
		}
	}
}

func TestReadOnlyDisk(t *testing.T) {
	m, err := blockdev.NewMem("ro", 1<<20, 4096, true)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDisk(m)
	w := make([]byte, 10)
	w[0] = OpWrite10
	w[8] = 1
	if r := exec(t, d, w, make([]byte, 4096)); r.Sense == nil || r.Sense.Key != KeyDataProtect {
		t.Fatalf("write to read-only: %+v", r)
	}
	ms := []byte{OpModeSense6, 0, 0x3f, 0, 255, 0}
	if r := exec(t, d, ms, nil); r.Status != StatusGood || r.Data[2]&0x80 == 0 {
		t.Fatalf("mode sense WP bit: %+v", r)
	}
}

// FuzzParse checks that no CDB makes the parser or the disk panic, and that
// a parsed request never asks for more data than the disk could accept.
func FuzzParse(f *testing.F) {
	f.Add([]byte{OpRead10, 0, 0, 0, 0, 1, 0, 0, 8, 0}, []byte(nil))
	f.Add([]byte{OpWriteSame16, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, []byte{})
	f.Add([]byte{OpUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, make([]byte, 24))
	f.Add([]byte{OpMaintenanceIn, SAReportSupportedOps, 0x82, 0x9e, 0, 0x10, 0, 0, 1, 0, 0, 0}, []byte(nil))
	f.Add([]byte{OpInquiry, 1, 0xb0, 0, 255, 0}, []byte(nil))
	f.Add([]byte{0x8b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, []byte(nil)) // ORWRITE16
	f.Add([]byte{OpServiceActionIn16, SAGetLBAStatus, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0}, []byte(nil))
	m, err := blockdev.NewMem("fuzz", 1<<20, 512, false)
	if err != nil {
		f.Fatal(err)
	}
	d := NewDisk(m)
	xp := xcopyParams(1, 0, []*Disk{d}, []xcopySeg{{0, 0, 8, 0, 64}})
	xc := make([]byte, 16)
	xc[0] = OpExtendedCopy
	binary.BigEndian.PutUint32(xc[10:], uint32(len(xp)))
	f.Add(xc, xp)
	f.Add([]byte{OpReceiveCopyResults, saOperatingParams, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0}, []byte(nil))
	f.Add([]byte{OpWriteAtomic16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0}, make([]byte, 1024))
	f.Add([]byte{OpReserve6, 0, 0, 0, 0, 0}, []byte(nil))
	f.Fuzz(func(t *testing.T, cdb, data []byte) {
		req, s := Parse(cdb, 512)
		if s != nil {
			if s.Key != KeyIllegalRequest {
				t.Fatalf("parse error with sense key %x", s.Key)
			}
			return
		}
		if req.DataOut < 0 {
			t.Fatalf("negative data-out %d", req.DataOut)
		}
		if req.DataOut > 64<<20 {
			return // the transport refuses such commands before executing
		}
		req.Peers = []*Disk{d} // EXTENDED COPY may name the disk itself
		r := d.Execute(context.Background(), req, data)
		if r.Status == StatusCheckCondition && r.Sense == nil {
			t.Fatal("CHECK CONDITION without sense")
		}
		if req.AllocLen >= 0 && req.Kind != KindRead && len(r.Data) > req.AllocLen {
			t.Fatalf("returned %d bytes, allocation length %d", len(r.Data), req.AllocLen)
		}
	})
}
