package scsi

import (
	"bytes"
	"context"
	"encoding/binary"

	"github.com/lockstep-io/lockstep/engine/iscsi/internal/bufpool"
)

// EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: the copy manager offload
// that hypervisors use to clone and move disks inside one array (VMware's
// VAAI full copy) instead of reading and writing every block through the
// host. Only block-to-block segments between logical units of the
// session's own target are copied: a designator naming any other LU is
// unreachable, so a copy can never read a volume its initiator may not log
// in to. Every block is written through the device, so on a journaled
// volume the copy is journaled like any write.

// Copy manager limits, reported by RECEIVE COPY RESULTS (OPERATING
// PARAMETERS).
const (
	maxCSCDs        = 4
	maxSegments     = 16
	maxDescListLen  = 1024
	xcopyChunk      = 1 << 20
	cscdLen         = 32
	b2bSegLen       = 28
	cscdIdent       = 0xe4 // identification descriptor CSCD
	segBlockToBlock = 0x02
	concurrentCopy  = 8
)

// Copy manager sense conditions (SPC-4 Annex D).
var (
	senseTooManyCSCDs       = Sense{Key: KeyIllegalRequest, ASC: 0x26, ASCQ: 0x06}
	senseUnsupportedCSCD    = Sense{Key: KeyIllegalRequest, ASC: 0x26, ASCQ: 0x07}
	senseTooManySegments    = Sense{Key: KeyIllegalRequest, ASC: 0x26, ASCQ: 0x08}
	senseUnsupportedSegment = Sense{Key: KeyIllegalRequest, ASC: 0x26, ASCQ: 0x09}
	// A copy that started (or whose descriptors point nowhere) ends with
	// COPY ABORTED: the target not reachable, or no more detail.
	senseCopyUnreachable = Sense{Key: KeyCopyAborted, ASC: 0x0d, ASCQ: 0x02}
	senseCopyAborted     = Sense{Key: KeyCopyAborted}
)

// copySlots bounds the chunk buffers all copies hold at once.
var copySlots = make(chan struct{}, concurrentCopy)

// copyStatus is what RECEIVE COPY RESULTS (COPY STATUS) reports for a held
// list identifier. Copies run to completion inside their command, so a
// held status is always a finished one.
type copyStatus struct {
	failed   bool
	segments uint16
	bytes    uint32
}

// copyRange is one resolved block-to-block segment.
type copyRange struct {
	src, dst           *Disk
	srcLBA, dstLBA, nb uint64
}

func (d *Disk) extendedCopy(ctx context.Context, req *Request, p []byte) Result {
	p, done := paramList(req, p, 16)
	if done != nil {
		return *done
	}
	listID, usage := p[0], (p[1]>>3)&3
	cl, sl, il := int(binary.BigEndian.Uint16(p[2:])), int(binary.BigEndian.Uint32(p[8:])), int(binary.BigEndian.Uint32(p[12:]))
	if 16+cl+sl+il > len(p) || cl+sl > maxDescListLen {
		return Check(SenseParamListLength)
	}
	// LIST ID USAGE: 00b hold the status, 10b discard it, 11b no list
	// identifier (which must then be 0); 01b is reserved. No inline data.
	if usage == 1 || (usage == 3 && listID != 0) || il != 0 {
		return Check(SenseInvalidFieldParam)
	}
	if cl/cscdLen > maxCSCDs {
		return Check(senseTooManyCSCDs)
	}
	if cl%cscdLen != 0 {
		return Check(SenseInvalidFieldParam)
	}
	cscds := p[16 : 16+cl]
	for i := 0; i < cl; i += cscdLen {
		if cscds[i] != cscdIdent {
			return Check(senseUnsupportedCSCD)
		}
	}
	segs, r := parseSegments(p[16+cl : 16+cl+sl])
	if r != nil {
		return *r
	}
	targets := make([]*Disk, cl/cscdLen)
	for i := range targets {
		targets[i] = resolveCSCD(cscds[i*cscdLen:(i+1)*cscdLen], req.Peers)
	}
	st := copyStatus{}
	res := d.runCopy(ctx, req, segs, targets, &st)
	st.failed = res.Status != StatusGood
	if usage == 0 {
		d.holdCopyStatus(req.Nexus, listID, st)
	}
	return res
}

// parseSegments checks the segment descriptors and returns the raw
// block-to-block ones, or the refusal.
func parseSegments(b []byte) ([][]byte, *Result) {
	var segs [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, refusal(SenseInvalidFieldParam)
		}
		n := 4 + int(binary.BigEndian.Uint16(b[2:]))
		if n > len(b) {
			return nil, refusal(SenseInvalidFieldParam)
		}
		if len(segs) == maxSegments {
			return nil, refusal(senseTooManySegments)
		}
		if b[0] != segBlockToBlock {
			return nil, refusal(senseUnsupportedSegment)
		}
		if n != b2bSegLen {
			return nil, refusal(SenseInvalidFieldParam)
		}
		segs = append(segs, b[:n])
		b = b[n:]
	}
	return segs, nil
}

// resolveCSCD finds the logical unit an identification descriptor names
// among peers: by its NAA designator, or by its T10 vendor ID designator.
// nil means unreachable (another target's LU, a null or non-disk device,
// or a block size that is not the LU's).
func resolveCSCD(c []byte, peers []*Disk) *Disk {
	if c[1]&0x20 != 0 || c[1]&0x1f != 0 { // NUL, or not a direct-access device
		return nil
	}
	n := int(c[7])
	if n == 0 || 8+n > 28 {
		return nil
	}
	desig, typ := c[8:8+n], c[5]&0x0f
	bs := int(c[29])<<16 | int(c[30])<<8 | int(c[31])
	for _, d := range peers {
		var ok bool
		switch typ {
		case 0x03:
			ok = bytes.Equal(desig, d.naa[:])
		case 0x01:
			ok = string(desig) == vendorID+d.serial
		}
		if ok && (bs == 0 || bs == d.bs) {
			return d
		}
	}
	return nil
}

// runCopy checks every segment before copying any block, then copies them
// in order.
func (d *Disk) runCopy(ctx context.Context, req *Request, segs [][]byte, targets []*Disk, st *copyStatus) Result {
	ranges := make([]copyRange, len(segs))
	for i, s := range segs {
		si, di := int(binary.BigEndian.Uint16(s[4:])), int(binary.BigEndian.Uint16(s[6:]))
		if si >= len(targets) || di >= len(targets) || targets[si] == nil || targets[di] == nil {
			return Check(senseCopyUnreachable)
		}
		r := copyRange{src: targets[si], dst: targets[di], nb: uint64(binary.BigEndian.Uint16(s[10:])),
			srcLBA: binary.BigEndian.Uint64(s[12:]), dstLBA: binary.BigEndian.Uint64(s[20:])}
		if !r.src.inRange(r.srcLBA, uint32(r.nb)) || !r.dst.inRange(r.dstLBA, uint32(r.nb)) {
			return Check(senseCopyAborted)
		}
		if r.dst.dev.ReadOnly() {
			return Check(SenseWriteProtected)
		}
		for _, lu := range []*Disk{r.src, r.dst} {
			if lu != d && lu.reservedByOther(req.Nexus) {
				return Result{Status: StatusReservationConflict}
			}
		}
		ranges[i] = r
	}
	select {
	case copySlots <- struct{}{}:
	case <-ctx.Done():
		return Check(SenseAborted)
	}
	defer func() { <-copySlots }()
	buf := bufpool.Get(xcopyChunk)
	defer bufpool.Put(buf)
	for _, r := range ranges {
		if res := r.copy(ctx, buf, st); res.Status != StatusGood {
			return res
		}
		st.segments++
	}
	return good(nil)
}

// copy moves the blocks a chunk at a time; when the ranges overlap on one
// LU with the destination after the source, it goes backwards so that no
// chunk overwrites source blocks not yet read.
func (r copyRange) copy(ctx context.Context, buf []byte, st *copyStatus) Result {
	bs := uint64(r.src.bs)
	total := r.nb * bs
	backwards := r.src == r.dst && r.dstLBA > r.srcLBA && r.dstLBA < r.srcLBA+r.nb
	srcOff, dstOff := r.srcLBA*bs, r.dstLBA*bs
	for done := uint64(0); done < total; {
		n := min(uint64(len(buf)), total-done)
		at := done
		if backwards {
			at = total - done - n
		}
		chunk := buf[:n]
		r.src.caw.RLock()
		err := r.src.dev.ReadAt(ctx, chunk, int64(srcOff+at))
		r.src.caw.RUnlock()
		if err != nil {
			return deviceError(ctx, err, false)
		}
		r.dst.caw.RLock()
		err = r.dst.dev.WriteAt(ctx, chunk, int64(dstOff+at), false)
		r.dst.caw.RUnlock()
		if err != nil {
			return deviceError(ctx, err, true)
		}
		done += n
		st.bytes += uint32(n)
	}
	return good(nil)
}

// receiveCopyResults answers RECEIVE COPY RESULTS: COPY STATUS of a list
// identifier this nexus held, or the copy manager's OPERATING PARAMETERS.
func (d *Disk) receiveCopyResults(req *Request) Result {
	switch req.CDB[1] & 0x1f {
	case saCopyStatus:
		st, ok := d.heldCopyStatus(req.Nexus, req.CDB[2])
		if !ok {
			return Check(SenseInvalidFieldCDB)
		}
		b := make([]byte, 12)
		binary.BigEndian.PutUint32(b, 8)
		b[4] = 0x01 // completed without errors
		if st.failed {
			b[4] = 0x02
		}
		binary.BigEndian.PutUint16(b[5:], st.segments)
		b[7] = 0x00 // transfer count in bytes
		binary.BigEndian.PutUint32(b[8:], st.bytes)
		return good(clip(b, req.AllocLen))
	case saOperatingParams:
		codes := []byte{segBlockToBlock, cscdIdent}
		b := make([]byte, 44+len(codes))
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		b[4] = 0x01 // SNLID: a copy without a list identifier is accepted
		binary.BigEndian.PutUint16(b[8:], maxCSCDs)
		binary.BigEndian.PutUint16(b[10:], maxSegments)
		binary.BigEndian.PutUint32(b[12:], maxDescListLen)
		binary.BigEndian.PutUint32(b[16:], uint32(0xffff*d.bs)) // a segment's 16-bit block count
		binary.BigEndian.PutUint16(b[34:], concurrentCopy)
		b[36] = concurrentCopy
		b[43] = byte(len(codes))
		copy(b[44:], codes)
		return good(clip(b, req.AllocLen))
	}
	return Check(SenseInvalidFieldCDB)
}

// holdCopyStatus keeps a copy's status for RECEIVE COPY RESULTS.
func (d *Disk) holdCopyStatus(n Nexus, listID byte, st copyStatus) {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	ns := u.nexuses[n]
	if ns == nil {
		return // not attached: nobody could ask for it
	}
	if ns.copies == nil {
		ns.copies = map[byte]copyStatus{}
	}
	ns.copies[listID] = st
}

func (d *Disk) heldCopyStatus(n Nexus, listID byte) (copyStatus, bool) {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	if ns := u.nexuses[n]; ns != nil {
		st, ok := ns.copies[listID]
		return st, ok
	}
	return copyStatus{}, false
}
