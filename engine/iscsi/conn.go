package iscsi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/lockstep-io/lockstep/engine/iscsi/login"
	"github.com/lockstep-io/lockstep/engine/iscsi/pdu"
	"github.com/lockstep-io/lockstep/engine/iscsi/scsi"
)

// Reject reasons (RFC 7143 section 11.17.1).
const (
	rejectProtocolError = 0x04
	rejectNotSupported  = 0x05
	rejectTaskInProg    = 0x07
	rejectInvalidField  = 0x09
)

// Per-session resource bounds.
const (
	// sessionMemory bounds the data buffers a session's commands hold.
	sessionMemory = 64 << 20
	// maxTasksFactor times the queue depth bounds the commands in flight,
	// immediate ones included.
	maxTasksFactor = 2
)

// maxQueued is the most responses queue holds back before it flushes.
const maxQueued = 32

// errProtocol closes the connection after a protocol violation.
var errProtocol = errors.New("iscsi: protocol violation")

// conn is one TCP connection; sessions have exactly one (MaxConnections=1),
// so it also holds the session state.
type conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	// set during login, read-only afterwards
	params    login.Params
	digests   pdu.Digests
	discovery bool
	tgt       *target
	initiator string
	isid      [6]byte
	nexus     scsi.Nexus
	tsih      uint16
	loggedIn  bool // guarded by srv.mu
	attached  bool // nexus attached to tgt's LUs (guarded by srv.mu)
	// ending is set by a cold reset before its response goes out: the
	// connection closes after it, and what the reader gets meanwhile is
	// dropped, not executed.
	ending atomic.Bool

	wmu     sync.Mutex // serialises writes to the socket
	bw      *bufio.Writer
	waiters atomic.Int32 // senders queued on wmu; the last one flushes
	queued  atomic.Bool  // bw holds responses queue left for flushQueued
	nQueued int          // how many (wmu)
	wdl     time.Time    // write deadline set on nc (wmu)

	smu         sync.Mutex // sequence numbers and the task table
	statSN      uint32
	expCmdSN    uint32
	outstanding uint32
	tasks       map[uint32]*task
	nextTTT     uint32

	sem     chan struct{}
	mem     *semaphore.Weighted
	taskWG  sync.WaitGroup
	running atomic.Int32 // commands executing on goroutines of their own
	text    textState
	logoutR bool
	// inlineOff counts commands left before runInline tries again
	// (reader goroutine only).
	inlineOff int
	// caughtUp counts the commands in a row that acknowledged every
	// response we had sent (reader goroutine; see pollWanted).
	caughtUp int
}

// pollWanted tells the connection's spinReader whether polling for the
// next request may pay: the initiator waits for each answer before it sends
// the next command (queue depth 1: every command's ExpStatSN acknowledges
// all we sent, several times in a row), and no command of ours is running
// on another goroutine. An initiator that keeps several commands in flight
// is busy producing them; the CPU is better left to it and to the journal
// (measured: polling cost 20 % at queue depth 16 on 2 CPUs).
func (c *conn) pollWanted() bool {
	return c.caughtUp >= pollAfterCaughtUp && c.running.Load() == 0
}

// pollAfterCaughtUp commands in a row mark queue depth 1.
const pollAfterCaughtUp = 4

// noteExpStatSN updates caughtUp with a command's ExpStatSN.
func (c *conn) noteExpStatSN(p *pdu.PDU) {
	c.smu.Lock()
	sent := c.statSN
	c.smu.Unlock()
	if p.U32(pdu.OffExpStatSN) == sent {
		c.caughtUp++
	} else {
		c.caughtUp = 0
	}
}

type textState struct {
	pending []byte // response bytes not yet sent (continuation)
	ttt     uint32
	req     []byte // request bytes accumulated over C-bit PDUs
}

func newConn(s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv:    s,
		nc:     nc,
		bw:     bufio.NewWriterSize(nc, 64<<10),
		log:    s.log.With("remote", nc.RemoteAddr().String()),
		ctx:    ctx,
		cancel: cancel,
		tasks:  map[uint32]*task{},
		sem:    make(chan struct{}, s.cfg.QueueDepth),
		mem:    semaphore.NewWeighted(sessionMemory),
	}
	c.br = bufio.NewReaderSize(newSpinReader(nc, s.cfg.PollSpin, c.pollWanted, s.spinSlots), 64<<10)
	return c
}

func (c *conn) close() {
	c.once.Do(func() {
		c.cancel()
		c.nc.Close()
	})
}

func (c *conn) serve() {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("iscsi connection panic recovered", "panic", r, "stack", string(debug.Stack()))
		}
		c.close()
		c.taskWG.Wait()
		c.srv.unregister(c)
	}()
	if err := c.login(); err != nil {
		c.log.Info("iscsi login ended", "initiator", c.initiator, "err", err)
		return
	}
	c.log.Info("iscsi session started", "initiator", c.initiator, "target", c.targetName(), "discovery", c.discovery,
		"mrdsl", c.params.MaxRecvDataSegmentLength, "max_burst", c.params.MaxBurstLength,
		"immediate_data", c.params.ImmediateData, "initial_r2t", c.params.InitialR2T,
		"header_digest", c.digests.Header, "data_digest", c.digests.Data)
	err := c.fullFeature()
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Info("iscsi session ended", "initiator", c.initiator)
	default:
		c.log.Warn("iscsi connection closed", "initiator", c.initiator, "err", err)
	}
}

func (c *conn) targetName() string {
	if c.tgt == nil {
		return ""
	}
	return c.tgt.cfg.IQN
}

// login runs the login phase; it returns nil once in full feature phase.
func (c *conn) login() error {
	c.nc.SetDeadline(time.Now().Add(c.srv.cfg.LoginTimeout))
	defer func() {
		c.nc.SetDeadline(time.Time{})
		c.wdl = time.Time{} // no goroutine writes yet: wmu not needed
	}()
	var resolved *target
	m := login.NewMachine(login.Config{
		Limits: login.Limits{
			MaxRecvDataSegmentLength: c.srv.cfg.MaxRecvDataSegmentLength,
			MaxBurstLength:           c.srv.cfg.MaxBurstLength,
			FirstBurstLength:         c.srv.cfg.FirstBurstLength,
			RequireHeaderDigest:      c.srv.cfg.RequireHeaderDigest,
			RequireDataDigest:        c.srv.cfg.RequireDataDigest,
		},
		Lookup: func(name string) (*login.Target, bool) {
			t, ok := c.srv.lookup(name)
			if !ok {
				return nil, false
			}
			resolved = t
			return t.info, true
		},
	})
	first := true
	for {
		p, err := pdu.Read(c.br, 64<<10)
		if err != nil {
			return fmt.Errorf("reading login request: %w", err)
		}
		if p.Opcode() != pdu.OpLoginReq {
			return fmt.Errorf("%w: opcode %#x during login", errProtocol, p.Opcode())
		}
		if first {
			first = false
			copy(c.isid[:], p.BHS[8:14])
			c.statSN = p.U32(pdu.OffExpStatSN)
			c.expCmdSN = p.U32(pdu.OffCmdSN)
			if p.U16(14) != 0 {
				return c.loginReject(p, login.StatusCantInclude, "adding a connection to an existing session is not supported")
			}
		}
		f := p.Flags()
		resp := m.Step(login.Request{
			Transit: f&0x80 != 0, Continue: f&0x40 != 0,
			CSG: (f >> 2) & 3, NSG: f & 3,
			VersionMin: p.BHS[3], Data: p.Data,
		})
		c.initiator = m.InitiatorName
		if resp.Status != 0 {
			return c.loginReject(p, resp.Status, resp.Reason)
		}
		if m.Done {
			c.params = m.Params
			c.digests = pdu.Digests{Header: m.Params.HeaderDigest, Data: m.Params.DataDigest}
			c.discovery = m.Discovery
			if !m.Discovery {
				c.tgt = resolved
			}
			tsih, st := c.srv.register(c, c.tgt)
			if st != 0 {
				return c.loginReject(p, st, "session refused")
			}
			c.tsih = tsih
		}
		if err := c.loginRespond(p, resp); err != nil {
			return err
		}
		if m.Done {
			return nil
		}
	}
}

func (c *conn) loginPDU(req *pdu.PDU) *pdu.PDU {
	r := &pdu.PDU{}
	r.SetOpcode(pdu.OpLoginResp, false)
	copy(r.BHS[8:14], req.BHS[8:14])
	r.SetITT(req.ITT())
	r.PutU32(pdu.OffStatSN, c.statSN)
	c.statSN++
	r.PutU32(pdu.OffExpCmdSN, c.expCmdSN)
	r.PutU32(pdu.OffMaxCmdSN, c.expCmdSN+uint32(c.srv.cfg.QueueDepth)-1)
	return r
}

func (c *conn) loginRespond(req *pdu.PDU, resp login.Response) error {
	r := c.loginPDU(req)
	if resp.Transit {
		r.BHS[1] |= 0x80
	}
	r.BHS[1] |= resp.CSG<<2 | resp.NSG
	if resp.Transit && resp.NSG == login.StageFullFeature {
		r.PutU16(14, c.tsih)
	}
	r.Data = resp.Data
	return c.writeNow(r)
}

func (c *conn) loginReject(req *pdu.PDU, status uint16, reason string) error {
	r := c.loginPDU(req)
	r.BHS[36], r.BHS[37] = byte(status>>8), byte(status)
	c.writeNow(r)
	return fmt.Errorf("login refused (status %#04x): %s", status, reason)
}

func (c *conn) writeNow(p *pdu.PDU) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.armWriteDeadline()
	if _, err := p.WriteTo(c.bw); err != nil {
		return err
	}
	return c.bw.Flush()
}

// send writes PDUs, filling in StatSN, ExpCmdSN and MaxCmdSN. The last PDU
// advances StatSN when status is set, and completes a counted command when
// complete is set (which opens the command window by one).
func (c *conn) send(status, complete bool, ps ...*pdu.PDU) error {
	return c.write(status, complete, true, ps...)
}

// queue is send without the flush: the reader goroutine flushes before it
// next waits for input (flushQueued), so the responses to a batch of
// requests read at once leave in one system call.
func (c *conn) queue(status, complete bool, ps ...*pdu.PDU) error {
	return c.write(status, complete, false, ps...)
}

// flushQueued flushes what queue left in the buffer.
func (c *conn) flushQueued() error {
	if !c.queued.Load() {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.queued.Load() {
		return nil
	}
	c.queued.Store(false)
	c.nQueued = 0
	c.armWriteDeadline()
	if err := c.bw.Flush(); err != nil {
		c.close()
		return err
	}
	return nil
}

// armWriteDeadline makes sure a socket write cannot block for much longer
// than WriteTimeout. Moving the deadline costs a timer update, so it is
// only moved once a quarter of the timeout has passed (c.wmu).
func (c *conn) armWriteDeadline() {
	now := time.Now()
	if c.wdl.Sub(now) > c.srv.cfg.WriteTimeout*3/4 {
		return
	}
	c.wdl = now.Add(c.srv.cfg.WriteTimeout)
	c.nc.SetWriteDeadline(c.wdl)
}

func (c *conn) write(status, complete, flush bool, ps ...*pdu.PDU) error {
	c.waiters.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Under load, leave the flush to the last queued sender so that many
	// responses share one system call.
	waiting := c.waiters.Add(-1)
	size := 0
	for _, p := range ps {
		size += pdu.BHSLen + len(p.AHS) + len(p.Data) + 12
	}
	if flush || size > c.bw.Available() {
		// This call reaches the socket: bound how long it may block.
		c.armWriteDeadline()
	}
	for i, p := range ps {
		last := i == len(ps)-1
		c.smu.Lock()
		if last && complete {
			c.outstanding--
		}
		p.PutU32(pdu.OffStatSN, c.statSN)
		if last && status {
			c.statSN++
		}
		p.PutU32(pdu.OffExpCmdSN, c.expCmdSN)
		p.PutU32(pdu.OffMaxCmdSN, c.maxCmdSNLocked())
		c.smu.Unlock()
		if _, err := p.WriteDigests(c.bw, c.digests); err != nil {
			c.close()
			return err
		}
	}
	if !flush {
		// Bound how long the first of a batch waits for its response.
		if c.nQueued++; c.nQueued < maxQueued {
			c.queued.Store(true)
			return nil
		}
		c.armWriteDeadline()
	}
	if waiting > 0 {
		return nil
	}
	c.queued.Store(false)
	c.nQueued = 0
	if err := c.bw.Flush(); err != nil {
		c.close()
		return err
	}
	return nil
}

func (c *conn) maxCmdSNLocked() uint32 {
	return c.expCmdSN - c.outstanding + uint32(c.srv.cfg.QueueDepth) - 1
}

// acceptCmdSN checks a request's CmdSN. Out-of-window or out-of-order
// commands are silently ignored (RFC 7143 section 4.2.2.1); counted tells
// whether the command occupies a window slot until its response.
func (c *conn) acceptCmdSN(p *pdu.PDU) (ok, counted bool) {
	if p.Immediate() {
		return true, false
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	sn := p.U32(pdu.OffCmdSN)
	if sn != c.expCmdSN || c.outstanding >= uint32(c.srv.cfg.QueueDepth) {
		c.log.Debug("iscsi command outside the window ignored", "cmdsn", sn, "expcmdsn", c.expCmdSN)
		return false, false
	}
	c.expCmdSN++
	c.outstanding++
	return true, true
}

// completeSilently frees a window slot without sending anything.
func (c *conn) completeSilently() {
	c.smu.Lock()
	c.outstanding--
	c.smu.Unlock()
}

func (c *conn) reject(p *pdu.PDU, reason byte, complete bool) error {
	r := &pdu.PDU{}
	r.SetOpcode(pdu.OpReject, false)
	r.BHS[1] = 0x80
	r.BHS[2] = reason
	r.SetITT(pdu.ReservedTag)
	r.Data = append([]byte(nil), p.BHS[:]...)
	return c.send(false, complete, r)
}

// fullFeature reads PDUs until the connection ends.
func (c *conn) fullFeature() error {
	maxData := int(c.params.TargetMaxRecvDataSegmentLength)
	for {
		if !c.nextBuffered() {
			// About to wait for the initiator: send what is queued first.
			if err := c.flushQueued(); err != nil {
				return err
			}
		}
		p, err := pdu.ReadDigests(c.br, maxData, c.digests)
		if err != nil {
			if errors.Is(err, pdu.ErrTooLarge) || errors.Is(err, pdu.ErrDigest) {
				return fmt.Errorf("%w: %w", errProtocol, err)
			}
			return err
		}
		if p.Opcode() == pdu.OpSCSICmd {
			c.noteExpStatSN(p)
		}
		if err := c.dispatch(p); err != nil {
			return err
		}
		if op := p.Opcode(); op == pdu.OpSCSICmd || op == pdu.OpDataOut {
			// Both copy or consume their data segment before dispatch
			// returns.
			p.Release()
		}
		if c.logoutR {
			return c.flushQueued()
		}
	}
}

// nextBuffered reports whether the next PDU is already wholly in the read
// buffer, so reading it will not wait for the network.
func (c *conn) nextBuffered() bool {
	n := c.br.Buffered()
	if n < pdu.BHSLen {
		return false
	}
	b, _ := c.br.Peek(pdu.BHSLen)
	dl := int(b[5])<<16 | int(b[6])<<8 | int(b[7])
	need := pdu.BHSLen + int(b[4])*4 + (dl+3)&^3
	if c.digests.Header {
		need += 4
	}
	if c.digests.Data && dl > 0 {
		need += 4
	}
	return n >= need
}

func (c *conn) dispatch(p *pdu.PDU) error {
	if c.ending.Load() {
		return nil
	}
	op := p.Opcode()
	if c.discovery {
		switch op {
		case pdu.OpNOPOut, pdu.OpTextReq, pdu.OpLogoutReq:
		default:
			ok, counted := c.acceptCmdSN(p)
			if ok {
				c.reject(p, rejectProtocolError, counted)
			}
			return nil
		}
	}
	switch op {
	case pdu.OpNOPOut:
		return c.nopOut(p)
	case pdu.OpSCSICmd:
		return c.scsiCommand(p)
	case pdu.OpDataOut:
		return c.dataOut(p)
	case pdu.OpTaskMgmt:
		ok, counted := c.acceptCmdSN(p)
		if ok {
			c.taskWG.Add(1)
			go func() {
				defer c.taskWG.Done()
				defer func() {
					if r := recover(); r != nil {
						c.log.Error("iscsi task management panic recovered", "panic", r, "stack", string(debug.Stack()))
						c.close()
					}
				}()
				c.taskManagement(p, counted)
			}()
		}
		return nil
	case pdu.OpTextReq:
		ok, counted := c.acceptCmdSN(p)
		if !ok {
			return nil
		}
		return c.textRequest(p, counted)
	case pdu.OpLogoutReq:
		ok, counted := c.acceptCmdSN(p)
		if !ok {
			return nil
		}
		return c.logout(p, counted)
	case pdu.OpSNACK:
		// ErrorRecoveryLevel is 0: SNACK is not supported.
		return c.reject(p, rejectNotSupported, false)
	}
	c.reject(p, rejectProtocolError, false)
	return fmt.Errorf("%w: unexpected opcode %#x", errProtocol, op)
}

func (c *conn) nopOut(p *pdu.PDU) error {
	ok, counted := c.acceptCmdSN(p)
	if !ok {
		return nil
	}
	if p.ITT() == pdu.ReservedTag {
		if counted {
			c.completeSilently()
		}
		return nil
	}
	r := &pdu.PDU{}
	r.SetOpcode(pdu.OpNOPIn, false)
	r.BHS[1] = 0x80
	r.SetLUN(p.LUN())
	r.SetITT(p.ITT())
	r.PutU32(pdu.OffTTT, pdu.ReservedTag)
	data := p.Data
	if len(data) > int(c.params.MaxRecvDataSegmentLength) {
		data = data[:c.params.MaxRecvDataSegmentLength]
	}
	r.Data = data
	return c.send(true, counted, r)
}

func (c *conn) logout(p *pdu.PDU, counted bool) error {
	reason := p.Flags() & 0x7f
	r := &pdu.PDU{}
	r.SetOpcode(pdu.OpLogoutResp, false)
	r.BHS[1] = 0x80
	r.SetITT(p.ITT())
	if reason == 2 {
		r.BHS[2] = 2 // connection recovery is not supported
		return c.send(true, counted, r)
	}
	c.abortAll(nil)
	c.logoutR = true
	c.log.Info("iscsi logout", "initiator", c.initiator, "reason", reason)
	return c.send(true, counted, r)
}

func (c *conn) textRequest(p *pdu.PDU, counted bool) error {
	r := &pdu.PDU{}
	r.SetOpcode(pdu.OpTextResp, false)
	r.SetLUN(p.LUN())
	r.SetITT(p.ITT())
	maxOut := int(c.params.MaxRecvDataSegmentLength)
	if ttt := p.U32(pdu.OffTTT); ttt != pdu.ReservedTag {
		// Continuation of a long response.
		if ttt != c.text.ttt || len(c.text.pending) == 0 {
			return c.reject(p, rejectInvalidField, counted)
		}
	} else {
		c.text.req = append(c.text.req, p.Data...)
		if len(c.text.req) > 64<<10 {
			c.reject(p, rejectProtocolError, counted)
			return fmt.Errorf("%w: text request too long", errProtocol)
		}
		if p.Flags()&0x40 != 0 { // C: more request text follows
			r.BHS[1] = 0x00
			r.PutU32(pdu.OffTTT, pdu.ReservedTag)
			return c.send(true, counted, r)
		}
		kvs, err := login.ParseText(c.text.req)
		c.text.req = nil
		if err != nil {
			return c.reject(p, rejectProtocolError, counted)
		}
		var out []login.KV
		for _, kv := range kvs {
			if kv.Key != "SendTargets" {
				out = append(out, login.KV{Key: kv.Key, Value: "NotUnderstood"})
				continue
			}
			which := kv.Value
			if which == "" && c.tgt != nil {
				which = c.tgt.cfg.IQN
			}
			if c.discovery || which == c.targetName() {
				out = append(out, c.srv.sendTargets(c.initiator, which, c.portal())...)
			}
		}
		c.text.pending = login.EncodeText(out)
		c.smu.Lock()
		c.nextTTT++
		c.text.ttt = c.nextTTT & 0x7fffffff
		c.smu.Unlock()
	}
	chunk := c.text.pending
	if len(chunk) > maxOut {
		chunk = chunk[:maxOut]
		r.BHS[1] = 0x40 // C
		r.PutU32(pdu.OffTTT, c.text.ttt)
	} else {
		r.BHS[1] = 0x80 // F
		r.PutU32(pdu.OffTTT, pdu.ReservedTag)
	}
	c.text.pending = c.text.pending[len(chunk):]
	r.Data = chunk
	return c.send(true, counted, r)
}

func (c *conn) portal() string {
	if c.srv.cfg.Portal != "" {
		return c.srv.cfg.Portal
	}
	if a, ok := c.nc.LocalAddr().(*net.TCPAddr); ok {
		if a.IP.To4() == nil {
			return fmt.Sprintf("[%s]:%d", a.IP, a.Port)
		}
		return a.String()
	}
	return c.nc.LocalAddr().String()
}
