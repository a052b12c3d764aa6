package scsi

import (
	"sync"
	"sync/atomic"
)

// Nexus names the I_T nexus a command came through: the initiator port
// (its name and ISID) on this logical unit's target. Unit attentions and
// reservations belong to a nexus, not to a connection, so two paths of a
// multipath initiator are two nexuses and a reinstated session is the same
// one.
type Nexus string

// StatusReservationConflict is the status a command gets from a nexus other
// than the one holding the logical unit's reservation.
const StatusReservationConflict = 0x18

// Unit attention conditions the target raises (SPC-4 Annex D, ASC 29h).
var (
	// SenseResetOccurred follows a target reset: POWER ON, RESET, OR BUS
	// DEVICE RESET OCCURRED.
	SenseResetOccurred = Sense{Key: KeyUnitAttention, ASC: 0x29, ASCQ: 0x00}
	// SenseLUNResetOccurred follows a logical unit reset: BUS DEVICE RESET
	// FUNCTION OCCURRED.
	SenseLUNResetOccurred = Sense{Key: KeyUnitAttention, ASC: 0x29, ASCQ: 0x03}
)

// maxPendingUA bounds the unit attentions queued for one nexus; a newer one
// that does not fit is dropped, as SAM allows (the initiator still learns
// that a reset happened from the ones it gets).
const maxPendingUA = 4

// nexusState is what the logical unit keeps per attached nexus.
type nexusState struct {
	sessions int
	ua       []Sense
	// copies holds EXTENDED COPY results by list identifier (at most 256)
	// until the nexus is lost.
	copies map[byte]copyStatus
}

// units holds a logical unit's per-nexus state. Its memory is bounded by
// the sessions logged in to the target (each attaches one nexus) times
// maxPendingUA unit attentions and 256 held copy statuses.
type units struct {
	mu      sync.Mutex
	nexuses map[Nexus]*nexusState
	// holder has the SPC-2 reservation (RESERVE 6/10); "" when none.
	holder Nexus
	// busy is set while any unit attention is pending or a reservation is
	// held, so commands skip the lock in the common case.
	busy atomic.Bool
}

// Attach records a session of nexus n on this logical unit; every Attach is
// paired with a Detach when the session ends.
func (d *Disk) Attach(n Nexus) {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.nexuses == nil {
		u.nexuses = map[Nexus]*nexusState{}
	}
	st := u.nexuses[n]
	if st == nil {
		st = &nexusState{}
		u.nexuses[n] = st
	}
	st.sessions++
}

// Detach ends a session of nexus n. When its last session ends the nexus
// is lost: its pending unit attentions go and its reservation is released.
func (d *Disk) Detach(n Nexus) {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.nexuses[n]
	if st == nil {
		return
	}
	if st.sessions--; st.sessions > 0 {
		return
	}
	delete(u.nexuses, n)
	if u.holder == n {
		u.holder = ""
	}
	u.updateBusy()
}

// Reset is a logical unit or target reset as seen by this logical unit: the
// reservation is released and every attached nexus, the one that asked
// included, gets the unit attention s on its next command (SAM-5's logical
// unit reset: how a multipath initiator learns that its commands on other
// paths were aborted). The transport aborts the commands.
func (d *Disk) Reset(s Sense) {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	u.holder = ""
	for _, st := range u.nexuses {
		if len(st.ua) < maxPendingUA && (len(st.ua) == 0 || st.ua[len(st.ua)-1] != s) {
			st.ua = append(st.ua, s)
		}
	}
	u.updateBusy()
}

// PendingUnitAttentions returns how many unit attentions wait for nexus n.
func (d *Disk) PendingUnitAttentions(n Nexus) int {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	if st := u.nexuses[n]; st != nil {
		return len(st.ua)
	}
	return 0
}

func (u *units) updateBusy() {
	busy := u.holder != ""
	for _, st := range u.nexuses {
		busy = busy || len(st.ua) > 0
	}
	u.busy.Store(busy)
}

// admit applies unit attentions and the reservation to req before it runs;
// a non-nil result is the command's answer.
//
// A pending unit attention is reported (and cleared) on any command but
// INQUIRY and REPORT LUNS; REQUEST SENSE returns it as its data (SPC-4
// 5.14, UA_INTLCK_CTRL 0). A command from a nexus other than the holder of
// a reservation gets RESERVATION CONFLICT unless SPC-2 lets it through.
func (d *Disk) admit(req *Request) *Result {
	u := &d.units
	if !u.busy.Load() {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if st := u.nexuses[req.Nexus]; st != nil && len(st.ua) > 0 && req.Kind != KindInquiry && req.Kind != KindReportLUNs {
		s := st.ua[0]
		st.ua = st.ua[1:]
		u.updateBusy()
		var r Result
		if req.Kind == KindRequestSense {
			if req.CDB[1]&0x01 != 0 {
				r = good(clip(s.Descriptor(), req.AllocLen))
			} else {
				r = good(clip(s.Fixed(), req.AllocLen))
			}
		} else {
			r = Check(s)
		}
		return &r
	}
	if !u.conflicts(req.Nexus) {
		return nil
	}
	switch req.Kind {
	case KindInquiry, KindReportLUNs, KindRequestSense:
		return nil
	case KindRelease:
		// Releasing someone else's reservation does nothing and succeeds.
		r := good(nil)
		return &r
	}
	return &Result{Status: StatusReservationConflict}
}

// reserve and release are RESERVE and RELEASE (6 and 10): an SPC-2
// reservation of the whole logical unit by one nexus. The holder may
// reserve again; another nexus's RELEASE is a no-op that succeeds.
func (d *Disk) reserve(req *Request) Result {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conflicts(req.Nexus) {
		return Result{Status: StatusReservationConflict}
	}
	u.holder = req.Nexus
	u.updateBusy()
	return good(nil)
}

func (d *Disk) release(req *Request) Result {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.holder == req.Nexus {
		u.holder = ""
		u.updateBusy()
	}
	return good(nil)
}

// reservedByOther reports whether a nexus other than n holds the LU's
// reservation.
func (d *Disk) reservedByOther(n Nexus) bool {
	u := &d.units
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conflicts(n)
}

// conflicts reports whether a nexus other than n holds the reservation;
// u.mu is held.
func (u *units) conflicts(n Nexus) bool {
	return u.holder != "" && u.holder != n
}
