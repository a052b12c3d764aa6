package iscsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi/internal/bufpool"
	"github.com/lockstep-io/lockstep/engine/iscsi/pdu"
	"github.com/lockstep-io/lockstep/engine/iscsi/scsi"
)

// errDataSN fails a command whose Data-Out PDUs arrived out of sequence.
var errDataSN = errors.New("iscsi: Data-Out sequence error")

// task is one SCSI command in flight.
type task struct {
	c        *conn
	itt      uint32
	lunField uint64
	cdb      []byte
	edtl     int
	read     bool
	write    bool
	counted  bool

	ctx    context.Context
	cancel context.CancelFunc

	// Data-out state, guarded by mu. The reader goroutine copies Data-Out
	// payloads straight into buf and signals seqDone at the end of each
	// sequence (F bit).
	mu         sync.Mutex
	buf        []byte
	seqTTT     uint32 // TTT the current sequence uses (ReservedTag: unsolicited)
	seqStart   int
	seqEnd     int
	seqGot     int
	seqDataSN  uint32
	collecting bool
	seqDone    chan error
	immLen     int
	done       chan struct{}

	inline    bool // runs on the reader goroutine (runInline)
	aborted   bool // guarded by c.smu
	responded bool // guarded by c.smu
}

func (c *conn) scsiCommand(p *pdu.PDU) error {
	ok, counted := c.acceptCmdSN(p)
	if !ok {
		return nil
	}
	f := p.Flags()
	t := &task{
		c:        c,
		itt:      p.ITT(),
		lunField: p.LUN(),
		cdb:      p.CDB(),
		edtl:     int(p.U32(20)),
		read:     f&0x40 != 0,
		write:    f&0x20 != 0,
		counted:  counted,
	}
	if len(p.Data) > 0 && (!t.write || !c.params.ImmediateData || len(p.Data) > int(c.params.FirstBurstLength) || len(p.Data) > t.edtl) {
		c.reject(p, rejectProtocolError, counted)
		return fmt.Errorf("%w: unexpected immediate data (%d bytes)", errProtocol, len(p.Data))
	}
	if t.write && f&0x80 == 0 && c.params.InitialR2T {
		c.reject(p, rejectProtocolError, counted)
		return fmt.Errorf("%w: unsolicited data announced but InitialR2T=Yes", errProtocol)
	}
	if c.runInline(p, t) {
		return nil
	}
	t.cdb = append([]byte(nil), t.cdb...) // p is recycled once dispatch returns
	t.ctx, t.cancel = context.WithCancel(c.ctx)
	t.seqDone = make(chan error, 2)
	t.done = make(chan struct{})
	c.smu.Lock()
	if len(c.tasks) >= maxTasksFactor*c.srv.cfg.QueueDepth {
		// Only immediate commands escape the CmdSN window; this many is abuse.
		c.smu.Unlock()
		t.cancel()
		c.reject(p, rejectProtocolError, counted)
		return fmt.Errorf("%w: more than %d commands in flight", errProtocol, len(c.tasks))
	}
	if _, dup := c.tasks[t.itt]; dup || t.itt == pdu.ReservedTag {
		c.smu.Unlock()
		t.cancel()
		return c.reject(p, rejectTaskInProg, counted)
	}
	c.tasks[t.itt] = t
	c.smu.Unlock()
	immediate := p.Data
	// Unsolicited Data-Out PDUs may follow at once; arm the collector
	// before reading the next PDU.
	unsolicited := 0
	if t.write && !c.params.InitialR2T && f&0x80 == 0 {
		unsolicited = min(t.edtl, int(c.params.FirstBurstLength)) - len(immediate)
	}
	// The first burst lands here; run grows the buffer once the CDB says
	// how much data the command really takes.
	if t.write {
		t.buf = bufpool.Get(min(t.edtl, int(c.params.FirstBurstLength)))
		clear(t.buf[copy(t.buf, immediate):])
	}
	t.immLen = len(immediate)
	if unsolicited > 0 {
		t.mu.Lock()
		t.collecting = true
		t.seqTTT = pdu.ReservedTag
		t.seqStart, t.seqEnd = len(immediate), len(immediate)+unsolicited
		t.mu.Unlock()
	}
	c.taskWG.Add(1)
	c.running.Add(1)
	go func() {
		defer c.taskWG.Done()
		defer c.running.Add(-1)
		defer close(t.done)
		t.run(unsolicited)
		// A Data-Out still arriving for this task finds no buffer.
		t.mu.Lock()
		b := t.buf
		t.buf = nil
		t.mu.Unlock()
		bufpool.Put(b)
	}()
	return nil
}

// Writes on the reader goroutine: a small WRITE without FUA whose data
// came whole as immediate data usually completes in a few microseconds
// (the journal appends it to memory). Running it where its PDU was read
// saves a goroutine hand-off per command, which was most of the target's
// latency at queue depth 1, and lets the responses to a batch of requests
// read at once leave in one system call. Such a command cannot be aborted
// (the reader does not see a task management request until it returns)
// and it delays the PDUs behind it, so one that turns out slow (a volume
// in write-through mode, a journal write-behind, a blocked device) turns
// the fast path off for the next inlineBackoff commands. Reads, which may
// wait for a disk, always get their own goroutine.
const (
	inlineMax     = 64 << 10
	inlineSlow    = time.Millisecond
	inlineBackoff = 64
)

// runInline executes t on the reader goroutine if it qualifies, reporting
// whether it did; t has been admitted to the window but not registered.
func (c *conn) runInline(p *pdu.PDU, t *task) bool {
	if c.inlineOff > 0 {
		c.inlineOff--
		return false
	}
	if p.Flags()&0x80 == 0 || c.tgt == nil || t.itt == pdu.ReservedTag || t.edtl > inlineMax {
		return false
	}
	if !t.write || t.read || len(p.Data) != t.edtl || t.edtl == 0 {
		return false
	}
	lun, ok := scsi.DecodeLUN(t.lunField)
	if !ok {
		return false
	}
	disk := c.tgt.luns[lun]
	if disk == nil {
		return false
	}
	req, sense := scsi.Parse(t.cdb, disk.BlockSize())
	if sense != nil {
		return false
	}
	if req.Kind != scsi.KindWrite || req.FUA || req.DataOut != t.edtl {
		return false
	}
	req.Nexus = c.nexus
	c.smu.Lock()
	_, dup := c.tasks[t.itt]
	c.smu.Unlock()
	if dup {
		return false
	}
	select {
	case c.sem <- struct{}{}:
	default:
		return false
	}
	defer func() { <-c.sem }()
	need := int64(req.DataOut)
	if !c.mem.TryAcquire(need) {
		return false
	}
	defer c.mem.Release(need)
	t.inline = true
	start := time.Now()
	res := func() (res scsi.Result) {
		defer func() {
			if r := recover(); r != nil {
				c.log.Error("iscsi command panic recovered", "cdb", fmt.Sprintf("%x", t.cdb), "panic", r, "stack", string(debug.Stack()))
				res = scsi.Check(scsi.SenseInternalError)
			}
		}()
		return disk.Execute(c.ctx, req, p.Data)
	}()
	if time.Since(start) > inlineSlow {
		c.inlineOff = inlineBackoff
	}
	t.respond(res, req.DataOut, 0)
	return true
}

// dataOut delivers a Data-Out PDU to its task.
func (c *conn) dataOut(p *pdu.PDU) error {
	c.smu.Lock()
	t := c.tasks[p.ITT()]
	c.smu.Unlock()
	if t == nil {
		// The task was aborted or already answered; drop the data.
		return nil
	}
	ttt := p.U32(pdu.OffTTT)
	off := int(p.U32(40))
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.collecting || ttt != t.seqTTT {
		return fmt.Errorf("%w: Data-Out for ITT %#x with TTT %#x outside a sequence", errProtocol, t.itt, ttt)
	}
	if sn := p.U32(36); sn != t.seqDataSN {
		// Without error recovery the data cannot be re-requested: fail
		// this command only; its later Data-Out PDUs find no task.
		t.collecting = false
		t.seqDone <- fmt.Errorf("%w: Data-Out DataSN %d, want %d", errDataSN, sn, t.seqDataSN)
		return nil
	}
	t.seqDataSN++
	if off < t.seqStart || off+len(p.Data) > t.seqEnd {
		return fmt.Errorf("%w: Data-Out offset %d+%d outside [%d,%d)", errProtocol, off, len(p.Data), t.seqStart, t.seqEnd)
	}
	if off < len(t.buf) {
		copy(t.buf[off:], p.Data)
	}
	t.seqGot += len(p.Data)
	if p.Final() {
		t.collecting = false
		var err error
		if t.seqGot != t.seqEnd-t.seqStart {
			err = fmt.Errorf("%w: sequence carried %d bytes, want %d", errProtocol, t.seqGot, t.seqEnd-t.seqStart)
		}
		t.seqGot = 0
		t.seqDone <- err
	}
	return nil
}

func (t *task) wait() error {
	select {
	case err := <-t.seqDone:
		return err
	case <-t.ctx.Done():
		return t.ctx.Err()
	}
}

// run executes the command and sends its data and status.
func (t *task) run(unsolicited int) {
	c := t.c
	defer t.cancel()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("iscsi command panic recovered", "cdb", fmt.Sprintf("%x", t.cdb), "panic", r, "stack", string(debug.Stack()))
			t.respond(scsi.Check(scsi.SenseInternalError), 0, 0)
		}
	}()
	if unsolicited > 0 {
		if err := t.wait(); err != nil {
			t.fail(err)
			return
		}
	}
	var disk *scsi.Disk
	lun, lunOK := scsi.DecodeLUN(t.lunField)
	if lunOK && c.tgt != nil {
		disk = c.tgt.luns[lun]
	}
	bs := 512
	if disk != nil {
		bs = disk.BlockSize()
	}
	req, sense := scsi.Parse(t.cdb, bs)
	if sense != nil {
		t.respond(scsi.Check(*sense), 0, 0)
		return
	}
	req.Nexus = c.nexus
	if req.Kind == scsi.KindExtendedCopy && c.tgt != nil {
		req.Peers = c.tgt.disks
	}
	want := 0
	if t.write {
		want = min(t.edtl, req.DataOut)
	}
	if want > scsi.MaxTransferBytes {
		// The disk refuses such a command before looking at its data, so
		// do not solicit (or buffer) it.
		want = 0
	}
	// Bound the memory a session's commands hold at once; waiting here
	// only delays this command (its data has not been solicited yet).
	need := int64(max(want, min(req.AllocLen, scsi.MaxTransferBytes)))
	if need > 0 {
		if err := c.mem.Acquire(t.ctx, need); err != nil {
			t.fail(err)
			return
		}
		defer c.mem.Release(need)
	}
	if req.Kind == scsi.KindCompareAndWrite && t.edtl != req.DataOut {
		// A COMPARE AND WRITE whose transfer disagrees with its CDB is
		// ambiguous; refuse it rather than compare part of it.
		t.respond(scsi.Check(scsi.SenseInvalidFieldCDB), req.DataOut, 0)
		return
	}
	if want > len(t.buf) {
		t.mu.Lock()
		nb := bufpool.Get(want)
		clear(nb[copy(nb, t.buf):])
		bufpool.Put(t.buf)
		t.buf = nb
		t.mu.Unlock()
	}
	if disk != nil && want > 0 {
		if err := t.solicit(want, unsolicited); err != nil {
			t.fail(err)
			return
		}
	}
	var res scsi.Result
	switch {
	case req.Kind == scsi.KindReportLUNs:
		res = scsi.ReportLUNs(req, c.tgt.ids)
	case disk == nil:
		res = scsi.UnknownLUN(req)
	default:
		select {
		case c.sem <- struct{}{}:
		case <-t.ctx.Done():
			t.fail(t.ctx.Err())
			return
		}
		func() {
			defer func() { <-c.sem }()
			t.mu.Lock()
			data := t.buf[:want]
			t.mu.Unlock()
			res = disk.Execute(t.ctx, req, data)
		}()
	}
	if t.ctx.Err() != nil {
		t.fail(t.ctx.Err())
		return
	}
	t.respond(res, req.DataOut, want)
}

// solicit sends R2Ts until want bytes have arrived.
func (t *task) solicit(want, unsolicited int) error {
	c := t.c
	have := 0
	if t.edtl > 0 {
		have = min(t.edtl, int(c.params.FirstBurstLength))
		if unsolicited <= 0 {
			have = t.immediateLen()
		}
	}
	r2tsn := uint32(0)
	for have < want {
		n := min(want-have, int(c.params.MaxBurstLength))
		c.smu.Lock()
		c.nextTTT++
		ttt := c.nextTTT & 0x7fffffff
		c.smu.Unlock()
		t.mu.Lock()
		t.collecting, t.seqTTT, t.seqStart, t.seqEnd, t.seqGot, t.seqDataSN = true, ttt, have, have+n, 0, 0
		t.mu.Unlock()
		r := &pdu.PDU{}
		r.SetOpcode(pdu.OpR2T, false)
		r.BHS[1] = 0x80
		r.SetLUN(t.lunField)
		r.SetITT(t.itt)
		r.PutU32(pdu.OffTTT, ttt)
		r.PutU32(36, r2tsn)
		r.PutU32(40, uint32(have))
		r.PutU32(44, uint32(n))
		r2tsn++
		if err := c.send(false, false, r); err != nil {
			return err
		}
		if err := t.wait(); err != nil {
			return err
		}
		have += n
	}
	return nil
}

func (t *task) immediateLen() int { return t.immLen }

// fail ends a task that cannot complete: an abort (no response is due) or
// a broken data transfer (the connection is closed).
func (t *task) fail(err error) {
	c := t.c
	if errors.Is(err, errDataSN) {
		c.log.Warn("iscsi command failed", "itt", t.itt, "err", err)
		t.respond(scsi.Check(scsi.SenseDataPhase), 0, 0)
		return
	}
	c.smu.Lock()
	aborted := t.aborted || t.responded
	t.responded = true
	if !aborted {
		delete(c.tasks, t.itt)
		if t.counted {
			c.outstanding--
		}
	}
	c.smu.Unlock()
	if !aborted && c.ctx.Err() == nil {
		c.log.Warn("iscsi command failed, closing connection", "itt", t.itt, "err", err)
		c.close()
	}
}

// respond sends data-in (if any) and status, unless the task was aborted.
func (t *task) respond(res scsi.Result, cdbOut, _ int) {
	c := t.c
	c.smu.Lock()
	if t.aborted || t.responded {
		c.smu.Unlock()
		return
	}
	t.responded = true
	delete(c.tasks, t.itt)
	c.smu.Unlock()
	if res.Sense != nil {
		c.log.Debug("iscsi check condition", "cdb", fmt.Sprintf("%x", t.cdb),
			"sense", fmt.Sprintf("%x/%02x/%02x", res.Sense.Key, res.Sense.ASC, res.Sense.ASCQ))
	}

	var flags byte
	residual := 0
	data := res.Data
	if !t.read {
		data = nil
	}
	switch {
	case t.write || cdbOut > 0:
		if t.edtl > cdbOut {
			flags, residual = 0x02, t.edtl-cdbOut
		} else if t.edtl < cdbOut {
			flags, residual = 0x04, cdbOut-t.edtl
		}
	case len(data) > t.edtl:
		flags, residual = 0x04, len(data)-t.edtl
		data = data[:t.edtl]
	case len(data) < t.edtl:
		flags, residual = 0x02, t.edtl-len(data)
	}
	if !t.read && len(res.Data) > 0 && !t.write {
		flags, residual = 0x04, len(res.Data)
	}
	var ps []*pdu.PDU
	seg := int(min(c.params.MaxRecvDataSegmentLength, c.params.MaxBurstLength))
	dataSN := uint32(0)
	for off := 0; off < len(data); off += seg {
		n := min(seg, len(data)-off)
		d := &pdu.PDU{}
		d.SetOpcode(pdu.OpDataIn, false)
		d.SetLUN(t.lunField)
		d.SetITT(t.itt)
		d.PutU32(pdu.OffTTT, pdu.ReservedTag)
		d.PutU32(36, dataSN)
		d.PutU32(40, uint32(off))
		d.Data = data[off : off+n]
		dataSN++
		end := off+n == len(data)
		if end || (off+n)%int(c.params.MaxBurstLength) == 0 {
			d.BHS[1] |= 0x80
		}
		ps = append(ps, d)
	}
	if len(ps) > 0 && res.Status == scsi.StatusGood {
		last := ps[len(ps)-1]
		last.BHS[1] |= 0x01 | flags // S bit with residuals
		last.BHS[3] = res.Status
		last.PutU32(44, uint32(residual))
		t.send(ps...)
		return
	}
	r := &pdu.PDU{}
	r.SetOpcode(pdu.OpSCSIResp, false)
	r.BHS[1] = 0x80 | flags
	r.BHS[3] = res.Status
	r.SetITT(t.itt)
	r.PutU32(36, dataSN) // ExpDataSN
	r.PutU32(44, uint32(residual))
	if res.Sense != nil {
		s := res.Sense.Fixed()
		r.Data = binary.BigEndian.AppendUint16(nil, uint16(len(s)))
		r.Data = append(r.Data, s...)
	}
	t.send(append(ps, r)...)
}

// send sends a task's final PDUs; an inline task's wait in the buffer for
// the reader's next flush.
func (t *task) send(ps ...*pdu.PDU) {
	if t.inline {
		t.c.queue(true, t.counted, ps...)
		return
	}
	t.c.send(true, t.counted, ps...)
}

// TMF function codes and responses (RFC 7143 section 11.5).
const (
	tmfAbortTask    = 1
	tmfAbortTaskSet = 2
	tmfClearACA     = 3
	tmfClearTaskSet = 4
	tmfLUNReset     = 5
	tmfWarmReset    = 6
	tmfColdReset    = 7
	tmfReassign     = 8

	tmfComplete     = 0
	tmfNoTask       = 1
	tmfNoLUN        = 2
	tmfNoReassign   = 4
	tmfNotSupported = 5
)

func (c *conn) taskManagement(p *pdu.PDU, counted bool) {
	fn := p.Flags() & 0x7f
	resp := byte(tmfComplete)
	lunOK := func() bool {
		l, ok := scsi.DecodeLUN(p.LUN())
		if !ok || c.tgt == nil {
			return false
		}
		_, ok = c.tgt.luns[l]
		return ok
	}
	switch fn {
	case tmfAbortTask:
		ref := p.U32(20)
		c.smu.Lock()
		t := c.tasks[ref]
		c.smu.Unlock()
		if t == nil || t.lunField != p.LUN() {
			// Already answered (or never seen): the initiator has, or will
			// get, its status, so the abort did nothing.
			resp = tmfNoTask
		} else {
			c.abortAll(func(x *task) bool { return x == t })
		}
	case tmfAbortTaskSet, tmfClearTaskSet:
		if !lunOK() {
			resp = tmfNoLUN
			break
		}
		lun := p.LUN()
		c.abortAll(func(x *task) bool { return x.lunField == lun })
	case tmfLUNReset:
		if !lunOK() {
			resp = tmfNoLUN
			break
		}
		// A reset acts on the logical unit, so on every session of the
		// target: their commands are aborted silently and each nexus
		// learns it from a unit attention (the resetting one too).
		// Other initiators may address the LUN in another format.
		l, _ := scsi.DecodeLUN(p.LUN())
		same := func(x *task) bool {
			xl, ok := scsi.DecodeLUN(x.lunField)
			return ok && xl == l
		}
		for _, o := range c.srv.sessions(c.tgt) {
			o.abortAll(same)
		}
		c.tgt.luns[l].Reset(scsi.SenseLUNResetOccurred)
		c.log.Info("iscsi LUN reset", "initiator", c.initiator, "lun", l)
	case tmfWarmReset, tmfColdReset:
		if c.tgt == nil {
			resp = tmfNotSupported
			break
		}
		sessions := c.srv.sessions(c.tgt) // the sender's included
		for _, o := range sessions {
			o.abortAll(nil)
		}
		for _, d := range c.tgt.luns {
			d.Reset(scsi.SenseResetOccurred)
		}
		c.log.Info("iscsi target reset", "initiator", c.initiator, "cold", fn == tmfColdReset, "sessions", len(sessions))
		if fn == tmfColdReset {
			// RFC 7143 11.5.1: a cold reset ends every connection of
			// the target; ours closes after its response is sent, and
			// runs nothing the initiator sends once it has it.
			c.ending.Store(true)
			for _, o := range sessions {
				if o != c {
					o.close()
				}
			}
		}
	case tmfReassign:
		resp = tmfNoReassign
	case tmfClearACA:
		resp = tmfNotSupported
	default:
		resp = tmfNotSupported
	}
	r := &pdu.PDU{}
	r.SetOpcode(pdu.OpTaskResp, false)
	r.BHS[1] = 0x80
	r.BHS[2] = resp
	r.SetITT(p.ITT())
	c.send(true, counted, r)
	if fn == tmfColdReset {
		c.close()
	}
}

// abortAll aborts the matching tasks (all when match is nil) and waits for
// their goroutines to stop touching the device. Aborted tasks send nothing.
func (c *conn) abortAll(match func(*task) bool) {
	c.smu.Lock()
	var victims []*task
	for itt, t := range c.tasks {
		if match == nil || match(t) {
			t.aborted = true
			delete(c.tasks, itt)
			if t.counted {
				c.outstanding--
			}
			victims = append(victims, t)
		}
	}
	c.smu.Unlock()
	for _, t := range victims {
		t.cancel()
	}
	for _, t := range victims {
		<-t.done
	}
}
