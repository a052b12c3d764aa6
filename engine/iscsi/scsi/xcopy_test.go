package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/lockstep-io/lockstep/engine/blockdev"
)

// xcopySeg is a block-to-block segment.
type xcopySeg struct {
	src, dst       uint16
	blocks         uint16
	srcLBA, dstLBA uint64
}

// XcopyParams builds an EXTENDED COPY (LID1) parameter list naming each LU
// of lus by its NAA designator, as initiators do.
func xcopyParams(listID, usage byte, lus []*Disk, segs []xcopySeg) []byte {
	p := make([]byte, 16)
	p[0], p[1] = listID, usage<<3
	binary.BigEndian.PutUint16(p[2:], uint16(cscdLen*len(lus)))
	binary.BigEndian.PutUint32(p[8:], uint32(b2bSegLen*len(segs)))
	for _, d := range lus {
		c := make([]byte, cscdLen)
		c[0] = cscdIdent
		c[4], c[5], c[7] = 0x01, 0x03, 16
		copy(c[8:], d.naa[:])
		c[29], c[30], c[31] = byte(d.bs>>16), byte(d.bs>>8), byte(d.bs)
		p = append(p, c...)
	}
	for _, s := range segs {
		b := make([]byte, b2bSegLen)
		b[0], b[3] = segBlockToBlock, 0x18
		binary.BigEndian.PutUint16(b[4:], s.src)
		binary.BigEndian.PutUint16(b[6:], s.dst)
		binary.BigEndian.PutUint16(b[10:], s.blocks)
		binary.BigEndian.PutUint64(b[12:], s.srcLBA)
		binary.BigEndian.PutUint64(b[20:], s.dstLBA)
		p = append(p, b...)
	}
	return p
}

func xcopy(t *testing.T, d *Disk, n Nexus, peers []*Disk, params []byte) Result {
	t.Helper()
	cdb := make([]byte, 16)
	cdb[0] = OpExtendedCopy
	binary.BigEndian.PutUint32(cdb[10:], uint32(len(params)))
	req, s := Parse(cdb, d.BlockSize())
	if s != nil {
		t.Fatalf("EXTENDED COPY CDB refused: %+v", s)
	}
	req.Nexus, req.Peers = n, peers
	return d.Execute(context.Background(), req, params)
}

func memDisk(t *testing.T, name string, size int64) (*Disk, *blockdev.Mem) {
	t.Helper()
	m, err := blockdev.NewMem(name, size, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	return NewDisk(m), m
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i/512) + byte(i%251)
	}
	return b
}

func TestExtendedCopy(t *testing.T) {
	ctx := context.Background()
	a, am := memDisk(t, "a", 8<<20)
	b, bm := memDisk(t, "b", 8<<20)
	outside, om := memDisk(t, "other-target", 8<<20)
	n := Nexus("iqn.host,i,0x1")
	a.Attach(n)
	src := pattern(3<<20, 1)
	if err := am.WriteAt(ctx, src, 0, false); err != nil {
		t.Fatal(err)
	}
	read := func(m *blockdev.Mem, off int64, l int) []byte {
		got := make([]byte, l)
		if err := m.ReadAt(ctx, got, off); err != nil {
			t.Fatal(err)
		}
		return got
	}

	// Within one LU, more than one chunk, status held under list id 7.
	r := xcopy(t, a, n, []*Disk{a, b}, xcopyParams(7, 0, []*Disk{a}, []xcopySeg{{0, 0, 6144, 0, 10000}}))
	wantStatus(t, "copy within a", r, StatusGood)
	if !bytes.Equal(read(am, 10000*512, 3<<20), src) {
		t.Fatal("the copy within a does not hold the source blocks")
	}
	rcr := func(n Nexus, sa, listID byte) Result {
		c := make([]byte, 16)
		c[0], c[1], c[2] = OpReceiveCopyResults, sa, listID
		binary.BigEndian.PutUint32(c[10:], 1024)
		req, s := Parse(c, 512)
		if s != nil {
			t.Fatalf("RECEIVE COPY RESULTS CDB refused: %+v", s)
		}
		req.Nexus = n
		return a.Execute(ctx, req, nil)
	}
	r = rcr(n, saCopyStatus, 7)
	if r.Status != StatusGood || r.Data[4] != 0x01 || binary.BigEndian.Uint16(r.Data[5:]) != 1 || binary.BigEndian.Uint32(r.Data[8:]) != 3<<20 {
		t.Fatalf("COPY STATUS of list 7: %+v", r)
	}
	if r := rcr("iqn.other,i,0x2", saCopyStatus, 7); r.Status != StatusCheckCondition {
		t.Fatalf("another nexus read list 7's status: %+v", r)
	}
	if r := rcr(n, saOperatingParams, 0); r.Status != StatusGood || binary.BigEndian.Uint16(r.Data[8:]) != maxCSCDs || r.Data[43] != 2 {
		t.Fatalf("OPERATING PARAMETERS: %+v", r)
	}

	// Overlapping, destination after the source: the result is the source
	// as it was, as if read whole before writing.
	over := pattern(4<<20, 9)
	if err := bm.WriteAt(ctx, over, 0, false); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "overlapping copy", xcopy(t, b, n, []*Disk{a, b}, xcopyParams(0, 2, []*Disk{b}, []xcopySeg{{0, 0, 6000, 100, 1100}})), StatusGood)
	if !bytes.Equal(read(bm, 1100*512, 6000*512), over[100*512:6100*512]) {
		t.Fatal("an overlapping copy read blocks it had already overwritten")
	}

	// Between two LUs of the same target.
	wantStatus(t, "copy a to b", xcopy(t, a, n, []*Disk{a, b}, xcopyParams(0, 3, []*Disk{a, b}, []xcopySeg{{0, 1, 2048, 0, 0}})), StatusGood)
	if !bytes.Equal(read(bm, 0, 1<<20), src[:1<<20]) {
		t.Fatal("the copy from a to b does not hold a's blocks")
	}

	// An LU outside the nexus's target is unreachable, as source and as
	// destination, and nothing is written.
	secret := pattern(1<<20, 77)
	if err := om.WriteAt(ctx, secret, 0, false); err != nil {
		t.Fatal(err)
	}
	before := read(am, 0, 1<<20)
	for name, segs := range map[string][]xcopySeg{
		"from another target": {{1, 0, 2048, 0, 0}},
		"to another target":   {{0, 1, 2048, 0, 0}},
	} {
		r := xcopy(t, a, n, []*Disk{a, b}, xcopyParams(0, 2, []*Disk{a, outside}, segs))
		if r.Status != StatusCheckCondition || r.Sense.Key != KeyCopyAborted || r.Sense.ASC != 0x0d {
			t.Fatalf("copy %s: %+v, want COPY ABORTED / COPY TARGET DEVICE NOT REACHABLE", name, r)
		}
	}
	if !bytes.Equal(read(am, 0, 1<<20), before) || !bytes.Equal(read(om, 0, 1<<20), secret) {
		t.Fatal("a refused copy moved data")
	}

	// Every segment is checked before any is copied.
	r = xcopy(t, a, n, []*Disk{a, b}, xcopyParams(0, 2, []*Disk{a}, []xcopySeg{{0, 0, 16, 0, 12000}, {0, 0, 16, 0, 16380}}))
	if r.Status != StatusCheckCondition || r.Sense.Key != KeyCopyAborted {
		t.Fatalf("copy past the end: %+v, want COPY ABORTED", r)
	}
	if !bytes.Equal(read(am, 12000*512, 16*512), src[2000*512:2016*512]) {
		t.Fatal("the first segment of a refused copy was copied")
	}

	// A reservation held by another nexus on the destination is a conflict.
	other := Nexus("iqn.other,i,0x2")
	b.Attach(other)
	wantStatus(t, "RESERVE(6) of b by another host", as(t, b, other, []byte{OpReserve6, 0, 0, 0, 0, 0}), StatusGood)
	wantStatus(t, "copy into a reserved LU", xcopy(t, a, n, []*Disk{a, b}, xcopyParams(0, 3, []*Disk{a, b}, []xcopySeg{{0, 1, 8, 0, 0}})), StatusReservationConflict)

	// Descriptor and header errors.
	tooMany := xcopyParams(0, 3, []*Disk{a, a, a, a, a}, []xcopySeg{{0, 0, 1, 0, 1}})
	if r := xcopy(t, a, n, nil, tooMany); r.Status != StatusCheckCondition || r.Sense.ASC != 0x26 || r.Sense.ASCQ != 0x06 {
		t.Fatalf("five CSCDs: %+v", r)
	}
	short := xcopyParams(0, 3, []*Disk{a}, []xcopySeg{{0, 0, 1, 0, 1}})
	if r := xcopy(t, a, n, []*Disk{a}, short[:60]); r.Status != StatusCheckCondition || r.Sense.ASC != 0x1a {
		t.Fatalf("parameter list shorter than its header says: %+v", r)
	}
	if r := xcopy(t, a, n, []*Disk{a}, xcopyParams(5, 3, []*Disk{a}, []xcopySeg{{0, 0, 1, 0, 1}})); r.Status != StatusCheckCondition || r.Sense.ASC != 0x26 {
		t.Fatalf("NO LIST ID usage with list id 5: %+v", r)
	}
}
