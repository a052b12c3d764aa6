package scsi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"sync"

	"github.com/lockstep-io/lockstep/engine/blockdev"
)

// MaxTransferBytes is the largest data transfer of one command (the Block
// Limits MAXIMUM TRANSFER LENGTH).
const MaxTransferBytes = 8 << 20

// Limits the disk advertises in the Block Limits VPD page.
const (
	maxTransferBytes  = MaxTransferBytes
	maxUnmapBlocks    = 1 << 20
	maxUnmapDescs     = 256
	maxWriteSameBytes = maxTransferBytes
	maxCAWBlocks      = 1
	writeSameChunk    = 1 << 20
	orWriteChunk      = 1 << 20
)

// Disk is one logical unit backed by a blockdev.Device.
type Disk struct {
	dev    blockdev.Device
	bs     int
	serial string
	naa    [16]byte
	// caw makes COMPARE AND WRITE, ORWRITE and WRITE ATOMIC atomic against
	// other commands: reads and writes hold it shared, those exclusively.
	caw sync.RWMutex
	// atomicMax is the largest WRITE ATOMIC in bytes; 0 when the device
	// cannot keep a write whole across a crash (blockdev.AtomicWriter).
	atomicMax int
	// units keeps unit attentions and the reservation per I_T nexus.
	units units
}

// NewDisk wraps dev as a SCSI disk.
func NewDisk(dev blockdev.Device) *Disk {
	d := &Disk{dev: dev, bs: dev.BlockSize()}
	sum := sha256.Sum256([]byte(dev.ID()))
	d.serial = hexString(sum[:8])
	// NAA 6 (IEEE registered extended) with a locally chosen OUI; the
	// remaining bits come from the device ID so the designator is stable.
	d.naa[0] = 0x60 | 0x0f
	copy(d.naa[1:], sum[8:23])
	if a, ok := dev.(blockdev.AtomicWriter); ok {
		n := min(a.AtomicWriteMax(), maxTransferBytes)
		d.atomicMax = n - n%d.bs
	}
	return d
}

// BlockSize returns the logical block size.
func (d *Disk) BlockSize() int { return d.bs }

func (d *Disk) blocks() uint64 { return uint64(d.dev.Size()) / uint64(d.bs) }

func (d *Disk) inRange(lba uint64, n uint32) bool {
	nb := d.blocks()
	return lba <= nb && uint64(n) <= nb-lba
}

// Execute runs a parsed command. dataOut holds the data-out bytes received
// (possibly fewer than req.DataOut when the initiator's expected transfer
// length was shorter; then only whole blocks received are written).
func (d *Disk) Execute(ctx context.Context, req *Request, dataOut []byte) Result {
	if r := d.admit(req); r != nil {
		return *r
	}
	switch req.Kind {
	case KindTestUnitReady, KindNoop:
		return good(nil)
	case KindRequestSense:
		s := Sense{}
		if req.CDB[1]&0x01 != 0 {
			return good(clip(s.Descriptor(), req.AllocLen))
		}
		return good(clip(s.Fixed(), req.AllocLen))
	case KindInquiry:
		return d.inquiry(req)
	case KindModeSense:
		return d.modeSense(req)
	case KindReadCapacity10:
		b := make([]byte, 8)
		last := d.blocks() - 1
		if last > 0xffffffff {
			last = 0xffffffff
		}
		binary.BigEndian.PutUint32(b, uint32(last))
		binary.BigEndian.PutUint32(b[4:], uint32(d.bs))
		return good(b)
	case KindReadCapacity16:
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, d.blocks()-1)
		binary.BigEndian.PutUint32(b[8:], uint32(d.bs))
		b[14] = 0x80 | 0x40 // LBPME, LBPRZ: thin, unmapped blocks read zero
		return good(clip(b, req.AllocLen))
	case KindRead:
		return d.read(ctx, req)
	case KindWrite:
		return d.write(ctx, req, dataOut)
	case KindVerify:
		return d.verify(ctx, req, dataOut)
	case KindPrefetch:
		if !d.inRange(req.LBA, req.Blocks) {
			return Check(SenseLBAOutOfRange)
		}
		return good(nil)
	case KindSyncCache:
		if !d.inRange(req.LBA, req.Blocks) {
			return Check(SenseLBAOutOfRange)
		}
		if err := d.dev.Flush(ctx); err != nil {
			return deviceError(ctx, err, true)
		}
		return good(nil)
	case KindWriteSame:
		return d.writeSame(ctx, req, dataOut)
	case KindUnmap:
		return d.unmap(ctx, req, dataOut)
	case KindCompareAndWrite:
		return d.compareAndWrite(ctx, req, dataOut)
	case KindOrWrite:
		return d.orWrite(ctx, req, dataOut)
	case KindGetLBAStatus:
		return d.getLBAStatus(ctx, req)
	case KindReportOpcodes:
		return reportOpcodes(req, d.atomicMax > 0)
	case KindWriteAtomic:
		return d.writeAtomic(ctx, req, dataOut)
	case KindExtendedCopy:
		return d.extendedCopy(ctx, req, dataOut)
	case KindReceiveCopyResults:
		return d.receiveCopyResults(req)
	case KindReserve:
		return d.reserve(req)
	case KindRelease:
		return d.release(req)
	case KindReadDefectData:
		return readDefectData(req)
	}
	return Check(SenseInvalidOpcode)
}

func (d *Disk) read(ctx context.Context, req *Request) Result {
	if !d.inRange(req.LBA, req.Blocks) {
		return Check(SenseLBAOutOfRange)
	}
	n := int64(req.Blocks) * int64(d.bs)
	if n > maxTransferBytes {
		return Check(SenseInvalidFieldCDB)
	}
	if n == 0 {
		return good(nil)
	}
	buf := make([]byte, n)
	d.caw.RLock()
	err := d.dev.ReadAt(ctx, buf, int64(req.LBA)*int64(d.bs))
	d.caw.RUnlock()
	if err != nil {
		return deviceError(ctx, err, false)
	}
	return good(buf)
}

// writeAtomic is WRITE ATOMIC (16): the device keeps the write whole across
// a crash (blockdev.AtomicWriter), and holding caw exclusively keeps every
// read and write of this LU from seeing or splitting a part of it. A
// database can then write pages larger than a block without a double-write
// buffer (MySQL's doublewrite, PostgreSQL's full-page writes).
func (d *Disk) writeAtomic(ctx context.Context, req *Request, data []byte) Result {
	if d.atomicMax == 0 {
		return Check(SenseInvalidOpcode)
	}
	n, refused := d.writable(req, data)
	if refused != nil {
		return *refused
	}
	if req.DataOut > d.atomicMax || n != req.DataOut {
		// Longer than the device keeps whole, or not all of its data came:
		// writing a part would break the promise.
		return Check(SenseInvalidFieldCDB)
	}
	if n == 0 {
		return good(nil)
	}
	d.caw.Lock()
	err := d.dev.WriteAt(ctx, data[:n], int64(req.LBA)*int64(d.bs), req.FUA)
	d.caw.Unlock()
	if err != nil {
		return deviceError(ctx, err, true)
	}
	return good(nil)
}

// writable checks a medium write's range, length and the device's write
// protection, and returns how many bytes of data to write: the whole blocks
// both the CDB and the received data cover.
func (d *Disk) writable(req *Request, data []byte) (int, *Result) {
	if !d.inRange(req.LBA, req.Blocks) {
		return 0, refusal(SenseLBAOutOfRange)
	}
	if int64(req.Blocks)*int64(d.bs) > maxTransferBytes {
		return 0, refusal(SenseInvalidFieldCDB)
	}
	if d.dev.ReadOnly() {
		return 0, refusal(SenseWriteProtected)
	}
	n := min(len(data), req.DataOut)
	return n - n%d.bs, nil
}

func (d *Disk) write(ctx context.Context, req *Request, data []byte) Result {
	n, refused := d.writable(req, data)
	if refused != nil {
		return *refused
	}
	if n == 0 {
		return good(nil)
	}
	off := int64(req.LBA) * int64(d.bs)
	d.caw.RLock()
	err := d.dev.WriteAt(ctx, data[:n], off, req.FUA)
	d.caw.RUnlock()
	if err != nil {
		return deviceError(ctx, err, true)
	}
	if req.ByteCheck != 0 {
		back := make([]byte, n)
		if err := d.dev.ReadAt(ctx, back, off); err != nil {
			return deviceError(ctx, err, false)
		}
		if i := mismatch(back, data[:n]); i >= 0 {
			return miscompare(i)
		}
	}
	return good(nil)
}

func (d *Disk) verify(ctx context.Context, req *Request, data []byte) Result {
	if !d.inRange(req.LBA, req.Blocks) {
		return Check(SenseLBAOutOfRange)
	}
	n := int64(req.Blocks) * int64(d.bs)
	if n > maxTransferBytes {
		return Check(SenseInvalidFieldCDB)
	}
	if n == 0 || req.ByteCheck == 0 {
		return good(nil)
	}
	if len(data) < req.DataOut {
		return Check(SenseInvalidFieldCDB)
	}
	back := make([]byte, n)
	if err := d.dev.ReadAt(ctx, back, int64(req.LBA)*int64(d.bs)); err != nil {
		return deviceError(ctx, err, false)
	}
	want := data[:req.DataOut]
	if req.ByteCheck == 3 {
		want = bytes.Repeat(want, int(req.Blocks))
	}
	if i := mismatch(back, want); i >= 0 {
		return miscompare(i)
	}
	return good(nil)
}

func (d *Disk) writeSame(ctx context.Context, req *Request, data []byte) Result {
	if req.Blocks == 0 { // WSNZ is set in the Block Limits page
		return Check(SenseInvalidFieldCDB)
	}
	if int64(req.Blocks)*int64(d.bs) > maxWriteSameBytes {
		return Check(SenseInvalidFieldCDB)
	}
	if !d.inRange(req.LBA, req.Blocks) {
		return Check(SenseLBAOutOfRange)
	}
	if d.dev.ReadOnly() {
		return Check(SenseWriteProtected)
	}
	if !req.NDOB && len(data) < d.bs {
		return Check(SenseInvalidFieldCDB)
	}
	off, length := int64(req.LBA)*int64(d.bs), int64(req.Blocks)*int64(d.bs)
	zero := req.NDOB || allZero(data[:d.bs])
	d.caw.RLock()
	defer d.caw.RUnlock()
	var err error
	switch {
	case zero && req.Unmap:
		err = d.dev.Unmap(ctx, off, length)
	case zero:
		err = d.dev.WriteZeroes(ctx, off, length, false)
	default:
		chunk := bytes.Repeat(data[:d.bs], int(min(length, writeSameChunk)/int64(d.bs)))
		for done := int64(0); done < length && err == nil; {
			n := min(int64(len(chunk)), length-done)
			err = d.dev.WriteAt(ctx, chunk[:n], off+done, false)
			done += n
		}
	}
	if err != nil {
		return deviceError(ctx, err, true)
	}
	return good(nil)
}

// paramList returns the parameter list of a command that carries one
// (UNMAP, EXTENDED COPY), cut to the length its CDB gives, or the answer
// when there is nothing to do: an empty list succeeds, one shorter than its
// header (or than the CDB says) is a PARAMETER LIST LENGTH ERROR.
func paramList(req *Request, p []byte, header int) ([]byte, *Result) {
	if req.DataOut == 0 {
		r := good(nil)
		return nil, &r
	}
	if req.DataOut < header || len(p) < req.DataOut {
		return nil, refusal(SenseParamListLength)
	}
	return p[:req.DataOut], nil
}

func (d *Disk) unmap(ctx context.Context, req *Request, p []byte) Result {
	p, done := paramList(req, p, 8)
	if done != nil {
		return *done
	}
	descLen := int(binary.BigEndian.Uint16(p[2:4]))
	if descLen%16 != 0 || 8+descLen > len(p) {
		return Check(SenseParamListLength)
	}
	if descLen/16 > maxUnmapDescs {
		return Check(SenseInvalidFieldParam)
	}
	if d.dev.ReadOnly() {
		return Check(SenseWriteProtected)
	}
	type ext struct{ lba, n uint64 }
	var exts []ext
	for i := 8; i < 8+descLen; i += 16 {
		lba := binary.BigEndian.Uint64(p[i:])
		n := binary.BigEndian.Uint32(p[i+8:])
		if !d.inRange(lba, n) {
			return Check(SenseLBAOutOfRange)
		}
		if n > maxUnmapBlocks {
			return Check(SenseInvalidFieldParam)
		}
		if n > 0 {
			exts = append(exts, ext{lba, uint64(n)})
		}
	}
	d.caw.RLock()
	defer d.caw.RUnlock()
	for _, e := range exts {
		if err := d.dev.Unmap(ctx, int64(e.lba)*int64(d.bs), int64(e.n)*int64(d.bs)); err != nil {
			return deviceError(ctx, err, true)
		}
	}
	return good(nil)
}

// Bounds on one GET LBA STATUS: the blocks it inspects and the data it
// reads to classify blocks the device cannot tell about; the initiator asks
// again from where the answer ends.
const (
	lbaStatusBlocks = 1 << 16
	lbaStatusRead   = 1 << 20
)

// Provisioning status codes of an LBA status descriptor (SBC-3).
const (
	lbaMapped      = 0
	lbaDeallocated = 1
)

// getLBAStatus answers GET LBA STATUS. A device that is a
// blockdev.Provisioner says from its metadata which blocks hold data; the
// blocks it cannot tell about (and all blocks of other devices) are read:
// one that reads as zeros is reported deallocated, any other mapped. That
// is exact for what an initiator may rely on (LBPRZ: a deallocated block
// reads zeros), for every device, views and clones included.
func (d *Disk) getLBAStatus(ctx context.Context, req *Request) Result {
	nb := d.blocks()
	if req.LBA >= nb {
		return Check(SenseLBAOutOfRange)
	}
	bs := int64(d.bs)
	maxDescs := max(1, (req.AllocLen-8)/16)
	out := make([]byte, 8, 8+16*min(maxDescs, 64))
	var last struct {
		lba    uint64
		n      uint64
		status byte
	}
	emit := func(lba, n uint64, status byte) bool {
		if last.n > 0 && last.status == status && last.lba+last.n == lba {
			last.n += n
			return true
		}
		if last.n > 0 {
			if (len(out)-8)/16 == maxDescs {
				return false
			}
			out = appendLBADesc(out, last.lba, last.n, last.status)
		}
		last.lba, last.n, last.status = lba, n, status
		return true
	}
	prov, _ := d.dev.(blockdev.Provisioner)
	lba, end := req.LBA, req.LBA+min(nb-req.LBA, lbaStatusBlocks)
	read := int64(0)
	var buf []byte
	full := false
	for lba < end && !full {
		state, n := blockdev.Unknown, end-lba
		if prov != nil {
			p, got, err := prov.Provisioning(ctx, int64(lba)*bs, int64(n)*bs)
			if err != nil {
				return deviceError(ctx, err, false)
			}
			state, n = p, uint64(got/bs)
		}
		switch state {
		case blockdev.Mapped:
			full = !emit(lba, n, lbaMapped)
		case blockdev.Deallocated:
			full = !emit(lba, n, lbaDeallocated)
		default:
			if read >= lbaStatusRead {
				full = true
				break
			}
			n = min(n, uint64((lbaStatusRead-read)/bs))
			if buf == nil {
				buf = make([]byte, lbaStatusRead)
			}
			b := buf[:int64(n)*bs]
			if err := d.dev.ReadAt(ctx, b, int64(lba)*bs); err != nil {
				return deviceError(ctx, err, false)
			}
			read += int64(len(b))
			zero := func(i uint64) bool { return allZero(b[int64(i)*bs : int64(i+1)*bs]) }
			for i := uint64(0); i < n && !full; {
				z := zero(i)
				j := i + 1
				for j < n && zero(j) == z {
					j++
				}
				status := byte(lbaMapped)
				if z {
					status = lbaDeallocated
				}
				full = !emit(lba+i, j-i, status)
				i = j
			}
		}
		lba += n
	}
	if last.n > 0 && (len(out)-8)/16 < maxDescs {
		out = appendLBADesc(out, last.lba, last.n, last.status)
	}
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return good(clip(out, req.AllocLen))
}

func appendLBADesc(b []byte, lba, n uint64, status byte) []byte {
	var desc [16]byte
	binary.BigEndian.PutUint64(desc[0:], lba)
	binary.BigEndian.PutUint32(desc[8:], uint32(n))
	desc[12] = status
	return append(b, desc[:]...)
}

func (d *Disk) compareAndWrite(ctx context.Context, req *Request, data []byte) Result {
	if req.Blocks > maxCAWBlocks {
		return Check(SenseInvalidFieldCDB)
	}
	if !d.inRange(req.LBA, req.Blocks) {
		return Check(SenseLBAOutOfRange)
	}
	if req.Blocks == 0 {
		return good(nil)
	}
	if d.dev.ReadOnly() {
		return Check(SenseWriteProtected)
	}
	if len(data) < req.DataOut {
		return Check(SenseInvalidFieldCDB)
	}
	n := req.DataOut / 2
	off := int64(req.LBA) * int64(d.bs)
	d.caw.Lock()
	defer d.caw.Unlock()
	cur := make([]byte, n)
	if err := d.dev.ReadAt(ctx, cur, off); err != nil {
		return deviceError(ctx, err, false)
	}
	if i := mismatch(cur, data[:n]); i >= 0 {
		return miscompare(i)
	}
	if err := d.dev.WriteAt(ctx, data[n:2*n], off, req.FUA); err != nil {
		return deviceError(ctx, err, true)
	}
	return good(nil)
}

// orWrite is ORWRITE (16): the blocks become their current content ORed
// with the data-out buffer. It holds caw exclusively, so no other write
// lands between the read and the write, and ORs into the received data in
// place, one orWriteChunk of the current content at a time, so it needs no
// second buffer of the transfer's size. ORWRITE (32)'s generation codes
// are not implemented (that opcode stays unsupported).
func (d *Disk) orWrite(ctx context.Context, req *Request, data []byte) Result {
	n, refused := d.writable(req, data)
	if refused != nil {
		return *refused
	}
	if n == 0 {
		return good(nil)
	}
	off := int64(req.LBA) * int64(d.bs)
	d.caw.Lock()
	defer d.caw.Unlock()
	cur := make([]byte, min(n, orWriteChunk))
	for done := 0; done < n; {
		c := cur[:min(len(cur), n-done)]
		if err := d.dev.ReadAt(ctx, c, off+int64(done)); err != nil {
			return deviceError(ctx, err, false)
		}
		for i, b := range c {
			data[done+i] |= b
		}
		done += len(c)
	}
	if err := d.dev.WriteAt(ctx, data[:n], off, req.FUA); err != nil {
		return deviceError(ctx, err, true)
	}
	return good(nil)
}

// readDefectData answers READ DEFECT DATA (10 and 12): a virtual disk has
// no defects, so the list is empty, in the format asked for and marked
// valid for the lists (primary, grown) asked for.
func readDefectData(req *Request) Result {
	cdb := req.CDB
	if cdb[0] == OpReadDefectData10 {
		return good(clip([]byte{0, cdb[2] & 0x1f, 0, 0}, req.AllocLen))
	}
	return good(clip([]byte{0, cdb[1] & 0x1f, 0, 0, 0, 0, 0, 0}, req.AllocLen))
}

func miscompare(off int) Result {
	s := SenseMiscompare
	s.Info, s.InfoValid = uint32(off), true
	return Check(s)
}

func mismatch(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func hexString(b []byte) string {
	const digits = "0123456789ABCDEF"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
