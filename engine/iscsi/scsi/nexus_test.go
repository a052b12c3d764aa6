package scsi

import (
	"context"
	"testing"
)

// as runs cdb on d from nexus n.
func as(t *testing.T, d *Disk, n Nexus, cdb []byte) Result {
	t.Helper()
	req, s := Parse(cdb, d.BlockSize())
	if s != nil {
		return Check(*s)
	}
	req.Nexus = n
	return d.Execute(context.Background(), req, nil)
}

func wantStatus(t *testing.T, what string, r Result, status byte) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %#x, want %#x (sense %+v)", what, r.Status, status, r.Sense)
	}
}

func TestReservation(t *testing.T) {
	d := newDisk(t)
	a, b := Nexus("iqn.a,i,0x1"), Nexus("iqn.b,i,0x2")
	d.Attach(a)
	d.Attach(b)
	tur := []byte{OpTestUnitReady, 0, 0, 0, 0, 0}
	read := []byte{OpRead10, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	reserve6 := []byte{OpReserve6, 0, 0, 0, 0, 0}
	release6 := []byte{OpRelease6, 0, 0, 0, 0, 0}
	inquiry := []byte{OpInquiry, 0, 0, 0, 36, 0}

	wantStatus(t, "RESERVE(6) by a", as(t, d, a, reserve6), StatusGood)
	wantStatus(t, "RESERVE(6) again by a", as(t, d, a, reserve6), StatusGood)
	wantStatus(t, "READ by the holder", as(t, d, a, read), StatusGood)
	wantStatus(t, "READ by b", as(t, d, b, read), StatusReservationConflict)
	wantStatus(t, "TEST UNIT READY by b", as(t, d, b, tur), StatusReservationConflict)
	wantStatus(t, "RESERVE(10) by b", as(t, d, b, []byte{OpReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0}), StatusReservationConflict)
	wantStatus(t, "INQUIRY by b", as(t, d, b, inquiry), StatusGood)
	wantStatus(t, "RELEASE(6) by b (a no-op)", as(t, d, b, release6), StatusGood)
	wantStatus(t, "READ by b after its RELEASE", as(t, d, b, read), StatusReservationConflict)
	wantStatus(t, "RELEASE(10) by a", as(t, d, a, []byte{OpRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0}), StatusGood)
	wantStatus(t, "READ by b once released", as(t, d, b, read), StatusGood)

	// Third-party reservations are refused, not misread as first-party.
	r := as(t, d, b, []byte{OpReserve10, 0x10, 0, 7, 0, 0, 0, 0, 0, 0})
	if r.Status != StatusCheckCondition || r.Sense.ASC != 0x24 {
		t.Fatalf("third-party RESERVE(10): %+v", r)
	}

	// The nexus holds it, not a session: it survives while a second
	// session of the same initiator port remains.
	wantStatus(t, "RESERVE(6) by b", as(t, d, b, reserve6), StatusGood)
	d.Attach(b)
	d.Detach(b)
	wantStatus(t, "READ by a with b's second session gone", as(t, d, a, read), StatusReservationConflict)
	d.Detach(b)
	wantStatus(t, "READ by a after b's nexus is lost", as(t, d, a, read), StatusGood)
}

func TestUnitAttentionAfterReset(t *testing.T) {
	d := newDisk(t)
	a, b := Nexus("iqn.a,i,0x1"), Nexus("iqn.b,i,0x2")
	d.Attach(a)
	d.Attach(b)
	wantStatus(t, "RESERVE(6) by a", as(t, d, a, []byte{OpReserve6, 0, 0, 0, 0, 0}), StatusGood)
	d.Reset(SenseLUNResetOccurred)
	d.Reset(SenseLUNResetOccurred) // the same condition twice is reported once

	// INQUIRY and REPORT LUNS leave the condition pending.
	wantStatus(t, "INQUIRY", as(t, d, a, []byte{OpInquiry, 0, 0, 0, 36, 0}), StatusGood)
	if n := d.PendingUnitAttentions(a); n != 1 {
		t.Fatalf("%d unit attentions pending for a, want 1", n)
	}
	r := as(t, d, a, []byte{OpTestUnitReady, 0, 0, 0, 0, 0})
	if r.Status != StatusCheckCondition || r.Sense.Key != KeyUnitAttention || r.Sense.ASC != 0x29 || r.Sense.ASCQ != 0x03 {
		t.Fatalf("first command after a LUN reset: %+v", r)
	}
	wantStatus(t, "second command of a", as(t, d, a, []byte{OpTestUnitReady, 0, 0, 0, 0, 0}), StatusGood)

	// REQUEST SENSE returns the condition as data and clears it; the reset
	// released a's reservation.
	r = as(t, d, b, []byte{OpRequestSense, 0, 0, 0, 18, 0})
	if r.Status != StatusGood || len(r.Data) != 18 || r.Data[2] != KeyUnitAttention || r.Data[12] != 0x29 || r.Data[13] != 0x03 {
		t.Fatalf("REQUEST SENSE after a LUN reset: %+v", r)
	}
	wantStatus(t, "READ by b", as(t, d, b, []byte{OpRead10, 0, 0, 0, 0, 0, 0, 0, 1, 0}), StatusGood)

	// A nexus attached after the reset never saw it; a lost nexus forgets it.
	c := Nexus("iqn.c,i,0x3")
	d.Attach(c)
	wantStatus(t, "TEST UNIT READY by a nexus attached later", as(t, d, c, []byte{OpTestUnitReady, 0, 0, 0, 0, 0}), StatusGood)
	d.Reset(SenseResetOccurred)
	d.Detach(c)
	d.Attach(c)
	wantStatus(t, "TEST UNIT READY after the nexus was lost", as(t, d, c, []byte{OpTestUnitReady, 0, 0, 0, 0, 0}), StatusGood)

	// The queue per nexus is bounded.
	for i := range 3 * maxPendingUA {
		d.Reset(Sense{Key: KeyUnitAttention, ASC: 0x29, ASCQ: byte(i % 2)})
	}
	if n := d.PendingUnitAttentions(a); n != maxPendingUA {
		t.Fatalf("%d unit attentions pending after many resets, want the bound %d", n, maxPendingUA)
	}
}

func TestReadDefectData(t *testing.T) {
	d := newDisk(t)
	r := exec(t, d, []byte{OpReadDefectData10, 0, 0x18 | 0x03, 0, 0, 0, 0, 0, 32, 0}, nil)
	if r.Status != StatusGood || len(r.Data) != 4 || r.Data[1] != 0x1b || r.Data[2] != 0 || r.Data[3] != 0 {
		t.Fatalf("READ DEFECT DATA(10), both lists in long block format: %+v", r)
	}
	r = exec(t, d, []byte{OpReadDefectData12, 0x08, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0}, nil)
	if r.Status != StatusGood || len(r.Data) != 4 || r.Data[1] != 0x08 {
		t.Fatalf("READ DEFECT DATA(12), grown list, 4 bytes allowed: %+v", r)
	}
}
