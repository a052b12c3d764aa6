// Package iscsitest is a small iSCSI initiator for tests and benchmarks:
// one connection, commands multiplexed by ITT, R2T answered from the
// reader goroutine. It speaks enough of RFC 7143 to drive Lockstep's target
// (and any other) from Go without kernel or libiscsi help; it is not meant
// for production use (no error recovery, no multiple connections).
package iscsitest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi/login"
	"github.com/lockstep-io/lockstep/engine/iscsi/pdu"
)

// CHAP holds the secrets for CHAP authentication. MutualUser set asks the
// target to authenticate itself too.
type CHAP struct {
	User, Secret             string
	MutualUser, MutualSecret string
}

// LoginOptions are what the initiator offers at login.
type LoginOptions struct {
	InitiatorName string
	TargetName    string // ignored for discovery sessions
	Discovery     bool
	CHAP          *CHAP // nil: AuthMethod=None

	ImmediateData    bool
	InitialR2T       bool
	FirstBurstLength int    // default 64 KiB
	MaxBurstLength   int    // default 256 KiB
	MaxRecvDataSeg   int    // MaxRecvDataSegmentLength we declare (default 256 KiB)
	Digest           string // HeaderDigest and DataDigest offer (default "None")
}

// LoginError is a login the target refused; Status is the status class
// and detail (RFC 7143 11.13.5), e.g. 0x0201 authentication failure.
type LoginError struct{ Status uint16 }

func (e *LoginError) Error() string {
	return fmt.Sprintf("iscsitest: login refused: status %#04x", e.Status)
}

// Initiator is one logged-in iSCSI connection. Its methods are safe for
// concurrent use; commands run concurrently up to the target's window.
type Initiator struct {
	nc net.Conn
	br *bufio.Reader

	wmu sync.Mutex // serialises PDU writes

	mu        sync.Mutex
	cmdSN     uint32
	expStatSN uint32
	nextITT   uint32
	pending   map[uint32]*Pending
	readErr   error
	done      chan struct{}

	dig                   pdu.Digests
	tgtMaxRecv            int
	firstBurst, maxBurst  int
	immediate, initialR2T bool

	// BlockSize is the LUN block size the Read10/Write10 helpers assume
	// (default 512).
	BlockSize int
}

// Pending is one issued request awaiting its response.
type Pending struct {
	write    []byte
	data     []byte
	status   byte
	sense    []byte
	flags    byte
	residual uint32
	resp     *pdu.PDU
	done     chan struct{}
}

// Done is closed once the response arrived or the connection died.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Dial connects to addr and logs in. The login is bounded by ctx (and by
// 5 s per step).
func Dial(ctx context.Context, addr string, o LoginOptions) (*Initiator, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	nc, err := d.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("iscsitest: dial %q: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	i := &Initiator{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), pending: map[uint32]*Pending{}, done: make(chan struct{}), cmdSN: 1, tgtMaxRecv: 8192, BlockSize: 512}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	err = i.login(o)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	go i.readLoop()
	return i, nil
}

// EncodeKV encodes key=value pairs as a text/login data segment.
func EncodeKV(pairs ...string) []byte {
	var kvs []login.KV
	for i := 0; i+1 < len(pairs); i += 2 {
		kvs = append(kvs, login.KV{Key: pairs[i], Value: pairs[i+1]})
	}
	return login.EncodeText(kvs)
}

func parseKV(b []byte) map[string]string {
	m := map[string]string{}
	for _, p := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		if k, v, ok := strings.Cut(p, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (i *Initiator) loginStep(flags byte, data []byte) (*pdu.PDU, map[string]string, error) {
	p := &pdu.PDU{Data: data}
	p.SetOpcode(pdu.OpLoginReq, true)
	p.BHS[1] = flags
	copy(p.BHS[8:14], []byte{0x80, 1, 2, 3, 4, 5})
	p.SetITT(0)
	p.PutU32(pdu.OffCmdSN, i.cmdSN)
	p.PutU32(pdu.OffExpStatSN, i.expStatSN)
	i.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.WriteTo(i.nc); err != nil {
		return nil, nil, fmt.Errorf("iscsitest: login: %w", err)
	}
	r, err := pdu.Read(i.br, 1<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("iscsitest: login: %w", err)
	}
	if r.Opcode() != pdu.OpLoginResp {
		return nil, nil, fmt.Errorf("iscsitest: opcode %#x in login, want login response", r.Opcode())
	}
	i.expStatSN = r.U32(pdu.OffStatSN) + 1
	if st := uint16(r.BHS[36])<<8 | uint16(r.BHS[37]); st != 0 {
		return r, nil, &LoginError{st}
	}
	return r, parseKV(r.Data), nil
}

func yn(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func (i *Initiator) login(o LoginOptions) error {
	sec := []string{"InitiatorName", o.InitiatorName}
	if o.Discovery {
		sec = append(sec, "SessionType", "Discovery")
	} else {
		sec = append(sec, "SessionType", "Normal", "TargetName", o.TargetName)
	}
	if c := o.CHAP; c != nil {
		sec = append(sec, "AuthMethod", "CHAP,None")
		_, m, err := i.loginStep(0x01, EncodeKV(sec...)) // CSG 0, NSG 1, no transit yet
		if err != nil {
			return err
		}
		if m["AuthMethod"] != "CHAP" {
			return fmt.Errorf("iscsitest: AuthMethod answer %q, want CHAP", m["AuthMethod"])
		}
		_, m, err = i.loginStep(0x01, EncodeKV("CHAP_A", "5"))
		if err != nil {
			return err
		}
		id, _ := strconv.Atoi(m["CHAP_I"])
		ch, err := login.DecodeBinary(m["CHAP_C"])
		if err != nil {
			return fmt.Errorf("iscsitest: CHAP_C: %w", err)
		}
		resp := []string{"CHAP_N", c.User, "CHAP_R", login.EncodeHex(login.ChapResponse(byte(id), c.Secret, ch))}
		myC := []byte("test-initiator-challenge")
		if c.MutualUser != "" {
			resp = append(resp, "CHAP_I", "42", "CHAP_C", login.EncodeHex(myC))
		}
		r, m, err := i.loginStep(0x81, EncodeKV(resp...))
		if err != nil {
			return err
		}
		if r.BHS[1]&0x80 == 0 {
			return errors.New("iscsitest: target did not transit after CHAP")
		}
		if c.MutualUser != "" {
			want := login.EncodeHex(login.ChapResponse(42, c.MutualSecret, myC))
			if m["CHAP_N"] != c.MutualUser || m["CHAP_R"] != want {
				return errors.New("iscsitest: target failed mutual CHAP")
			}
		}
	} else {
		sec = append(sec, "AuthMethod", "None")
		r, _, err := i.loginStep(0x81, EncodeKV(sec...))
		if err != nil {
			return err
		}
		if r.BHS[1]&0x80 == 0 {
			return errors.New("iscsitest: target did not transit to operational stage")
		}
	}
	fb, mb, mrdsl, dig := o.FirstBurstLength, o.MaxBurstLength, o.MaxRecvDataSeg, o.Digest
	if fb == 0 {
		fb = 65536
	}
	if mb == 0 {
		mb = 262144
	}
	if mrdsl == 0 {
		mrdsl = 262144
	}
	if dig == "" {
		dig = "None"
	}
	ops := []string{"HeaderDigest", dig, "DataDigest", dig, "MaxRecvDataSegmentLength", strconv.Itoa(mrdsl)}
	if !o.Discovery {
		ops = append(ops, "ImmediateData", yn(o.ImmediateData), "InitialR2T", yn(o.InitialR2T),
			"FirstBurstLength", strconv.Itoa(fb), "MaxBurstLength", strconv.Itoa(mb), "MaxOutstandingR2T", "1")
	}
	r, m, err := i.loginStep(0x87, EncodeKV(ops...)) // CSG 1, NSG 3, transit
	if err != nil {
		return err
	}
	if r.BHS[1]&0x80 == 0 || r.U16(14) == 0 {
		return errors.New("iscsitest: target did not enter full feature phase")
	}
	num := func(k string, def int) int {
		if v, err := strconv.Atoi(m[k]); err == nil {
			return v
		}
		return def
	}
	i.tgtMaxRecv = num("MaxRecvDataSegmentLength", 8192)
	i.firstBurst = num("FirstBurstLength", 65536)
	i.maxBurst = num("MaxBurstLength", 262144)
	i.immediate = m["ImmediateData"] == "Yes"
	i.initialR2T = m["InitialR2T"] != "No"
	i.dig = pdu.Digests{Header: m["HeaderDigest"] == "CRC32C", Data: m["DataDigest"] == "CRC32C"}
	return nil
}

func (i *Initiator) readLoop() {
	defer close(i.done)
	for {
		p, err := pdu.ReadDigests(i.br, 1<<24, i.dig)
		if err != nil {
			i.mu.Lock()
			i.readErr = err
			for _, pc := range i.pending {
				close(pc.done)
			}
			i.pending = map[uint32]*Pending{}
			i.mu.Unlock()
			return
		}
		i.mu.Lock()
		if p.Opcode() != pdu.OpR2T && (p.Opcode() != pdu.OpDataIn || p.Flags()&0x01 != 0) {
			if sn := p.U32(pdu.OffStatSN); sn+1 > i.expStatSN {
				i.expStatSN = sn + 1
			}
		}
		itt := p.ITT()
		if p.Opcode() == pdu.OpReject && len(p.Data) >= 20 {
			itt = binary.BigEndian.Uint32(p.Data[16:20])
		}
		pc := i.pending[itt]
		i.mu.Unlock()
		if pc == nil {
			continue
		}
		finish := func() {
			i.mu.Lock()
			delete(i.pending, itt)
			i.mu.Unlock()
			close(pc.done)
		}
		switch p.Opcode() {
		case pdu.OpDataIn:
			off := int(p.U32(40))
			if need := off + len(p.Data); need > len(pc.data) {
				pc.data = append(pc.data, make([]byte, need-len(pc.data))...)
			}
			copy(pc.data[off:], p.Data)
			if p.Flags()&0x01 != 0 {
				pc.status, pc.flags, pc.residual = p.BHS[3], p.Flags(), p.U32(44)
				finish()
			}
		case pdu.OpSCSIResp:
			pc.status, pc.flags, pc.residual = p.BHS[3], p.Flags(), p.U32(44)
			if len(p.Data) >= 2 {
				n := int(binary.BigEndian.Uint16(p.Data))
				pc.sense = p.Data[2:min(len(p.Data), 2+n)]
			}
			finish()
		case pdu.OpR2T:
			if pc.write == nil {
				continue // the caller drives this transfer by hand
			}
			i.sendData(itt, p.LUN(), p.U32(pdu.OffTTT), pc.write, int(p.U32(40)), int(p.U32(44)))
		default:
			pc.resp = p
			finish()
		}
	}
}

// sendData sends write[off:off+n] as one Data-Out sequence.
func (i *Initiator) sendData(itt uint32, lun uint64, ttt uint32, write []byte, off, n int) {
	sn := uint32(0)
	for done := 0; done < n; {
		seg := min(n-done, i.tgtMaxRecv)
		d := &pdu.PDU{Data: write[off+done : off+done+seg]}
		d.SetOpcode(pdu.OpDataOut, false)
		d.SetLUN(lun)
		d.SetITT(itt)
		d.PutU32(pdu.OffTTT, ttt)
		d.PutU32(36, sn)
		d.PutU32(40, uint32(off+done))
		done += seg
		if done == n {
			d.BHS[1] = 0x80
		}
		sn++
		if err := i.writePDU(d, nil); err != nil {
			return
		}
	}
}

// Issue sends one request PDU with the next ITT, CmdSN and ExpStatSN
// filled in; fill sets the opcode and opcode-specific fields. write, if
// not nil, is the data-out buffer R2Ts are answered from. For raw
// protocol tests; Command is the usual entry.
func (i *Initiator) Issue(immediate bool, fill func(p *pdu.PDU, itt uint32), write []byte) (*Pending, uint32, error) {
	pc := &Pending{write: write, done: make(chan struct{})}
	i.mu.Lock()
	if i.readErr != nil {
		i.mu.Unlock()
		return nil, 0, i.readErr
	}
	i.nextITT++
	itt := i.nextITT
	i.pending[itt] = pc
	p := &pdu.PDU{}
	p.SetITT(itt)
	fill(p, itt)
	if immediate {
		p.BHS[0] |= 0x40
	}
	p.PutU32(pdu.OffCmdSN, i.cmdSN)
	if !immediate {
		i.cmdSN++
	}
	p.PutU32(pdu.OffExpStatSN, i.expStatSN)
	// Take wmu before releasing mu, so PDUs leave in CmdSN order.
	i.wmu.Lock()
	i.mu.Unlock()
	err := i.writePDU(p, &i.wmu)
	return pc, itt, err
}

// writePDU sends p in one system call, as a real initiator does; held is
// wmu when the caller already holds it (it is released).
func (i *Initiator) writePDU(p *pdu.PDU, held *sync.Mutex) error {
	var b bytes.Buffer
	b.Grow(pdu.BHSLen + len(p.AHS) + len(p.Data) + 12)
	p.WriteDigests(&b, i.dig)
	if held == nil {
		i.wmu.Lock()
	}
	defer i.wmu.Unlock()
	_, err := i.nc.Write(b.Bytes())
	return err
}

func (i *Initiator) wait(ctx context.Context, pc *Pending) error {
	select {
	case <-pc.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if pc.resp == nil && pc.status == 0 && pc.flags == 0 && pc.data == nil {
		i.mu.Lock()
		err := i.readErr
		i.mu.Unlock()
		if err != nil {
			return fmt.Errorf("iscsitest: connection lost: %w", err)
		}
	}
	return nil
}

// Result is the outcome of one SCSI command.
type Result struct {
	Rejected bool // the target answered with a Reject PDU
	Status   byte // SCSI status; 0 GOOD, 2 CHECK CONDITION
	Sense    []byte
	Data     []byte // data-in
	Flags    byte   // response flags (over/underflow bits)
	Residual uint32
}

// SenseKey returns key, ASC and ASCQ of fixed-format sense data.
func (r Result) SenseKey() (key, asc, ascq byte) {
	if len(r.Sense) < 14 {
		return 0, 0, 0
	}
	return r.Sense[2] & 0x0f, r.Sense[12], r.Sense[13]
}

// Err returns nil for GOOD status and a descriptive error otherwise.
func (r Result) Err() error {
	if r.Rejected {
		return errors.New("iscsitest: command rejected")
	}
	if r.Status != 0 {
		k, a, q := r.SenseKey()
		return fmt.Errorf("iscsitest: status %#x sense %x/%02x/%02x", r.Status, k, a, q)
	}
	return nil
}

// Command runs one SCSI command on lun. writeData is the data-out buffer
// (nil for none); readLen the expected data-in length. A CHECK CONDITION
// is a Result, not an error; errors are transport failures.
func (i *Initiator) Command(ctx context.Context, lun uint64, cdb []byte, writeData []byte, readLen int) (Result, error) {
	write := writeData
	edtl := readLen
	if write != nil {
		edtl = len(write)
	}
	var immLen int
	pc, itt, err := i.Issue(false, func(p *pdu.PDU, itt uint32) {
		p.SetOpcode(pdu.OpSCSICmd, false)
		p.BHS[1] = 0x80 | 0x01 // F, simple task
		if write != nil {
			p.BHS[1] |= 0x20
			if i.immediate {
				immLen = min(len(write), i.firstBurst, i.tgtMaxRecv)
				p.Data = write[:immLen]
			}
			if !i.initialR2T && immLen < min(len(write), i.firstBurst) {
				p.BHS[1] &^= 0x80 // unsolicited Data-Out follows
			}
		}
		if readLen > 0 {
			p.BHS[1] |= 0x40
		}
		p.SetLUN(lun << 48)
		p.PutU32(20, uint32(edtl))
		copy(p.BHS[32:48], cdb)
	}, write)
	if err != nil {
		return Result{}, err
	}
	if write != nil && !i.initialR2T && immLen < min(len(write), i.firstBurst) {
		i.sendData(itt, lun<<48, pdu.ReservedTag, write, immLen, min(len(write), i.firstBurst)-immLen)
	}
	if err := i.wait(ctx, pc); err != nil {
		return Result{}, err
	}
	rejected := pc.resp != nil && pc.resp.Opcode() == pdu.OpReject
	return Result{Rejected: rejected, Status: pc.status, Sense: pc.sense, Data: pc.data, Flags: pc.flags, Residual: pc.residual}, nil
}

// CDB10 builds a 10-byte CDB (READ(10), WRITE(10), SYNCHRONIZE CACHE(10)).
func CDB10(op byte, lba uint32, blocks uint16, flags byte) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

// Write10 writes data (a multiple of BlockSize) at lba; fua asks for it
// to be durable before the command completes.
func (i *Initiator) Write10(ctx context.Context, lun uint64, lba uint32, data []byte, fua bool) error {
	if len(data)%i.BlockSize != 0 || len(data)/i.BlockSize > 0xffff || len(data) == 0 {
		return fmt.Errorf("iscsitest: write of %d bytes, want a multiple of %d up to 65535 blocks", len(data), i.BlockSize)
	}
	var fl byte
	if fua {
		fl = 0x08
	}
	r, err := i.Command(ctx, lun, CDB10(0x2a, lba, uint16(len(data)/i.BlockSize), fl), data, 0)
	if err != nil {
		return err
	}
	return r.Err()
}

// Read10 reads blocks blocks at lba.
func (i *Initiator) Read10(ctx context.Context, lun uint64, lba uint32, blocks uint16) ([]byte, error) {
	r, err := i.Command(ctx, lun, CDB10(0x28, lba, blocks, 0), nil, int(blocks)*i.BlockSize)
	if err != nil {
		return nil, err
	}
	return r.Data, r.Err()
}

// SynchronizeCache flushes the whole LUN (SYNCHRONIZE CACHE(10)).
func (i *Initiator) SynchronizeCache(ctx context.Context, lun uint64) error {
	r, err := i.Command(ctx, lun, CDB10(0x35, 0, 0, 0), nil, 0)
	if err != nil {
		return err
	}
	return r.Err()
}

// TextRequest sends a Text request (e.g. EncodeKV("SendTargets", "All"))
// and gathers the possibly multi-PDU answer.
func (i *Initiator) TextRequest(ctx context.Context, data []byte) (map[string][]string, error) {
	out := map[string][]string{}
	var all []byte
	ttt := uint32(pdu.ReservedTag)
	for {
		pc, _, err := i.Issue(true, func(p *pdu.PDU, _ uint32) {
			p.SetOpcode(pdu.OpTextReq, true)
			p.BHS[1] = 0x80
			p.PutU32(pdu.OffTTT, ttt)
			p.Data = data
		}, nil)
		if err != nil {
			return nil, err
		}
		if err := i.wait(ctx, pc); err != nil {
			return nil, err
		}
		if pc.resp == nil || pc.resp.Opcode() != pdu.OpTextResp {
			return nil, errors.New("iscsitest: no text response")
		}
		// Pairs may span PDUs: parse once the final one arrived.
		all = append(all, pc.resp.Data...)
		if pc.resp.Final() {
			for _, p := range strings.Split(strings.TrimRight(string(all), "\x00"), "\x00") {
				if k, v, ok := strings.Cut(p, "="); ok {
					out[k] = append(out[k], v)
				}
			}
			return out, nil
		}
		ttt, data = pc.resp.U32(pdu.OffTTT), nil
	}
}

// TaskMgmt sends a task management function (1 ABORT TASK, 5 LOGICAL
// UNIT RESET, ...) and returns the response code.
func (i *Initiator) TaskMgmt(ctx context.Context, fn byte, lun uint64, ref uint32) (byte, error) {
	pc, _, err := i.Issue(true, func(p *pdu.PDU, _ uint32) {
		p.SetOpcode(pdu.OpTaskMgmt, true)
		p.BHS[1] = 0x80 | fn
		p.SetLUN(lun << 48)
		p.PutU32(20, ref)
	}, nil)
	if err != nil {
		return 0, err
	}
	if err := i.wait(ctx, pc); err != nil {
		return 0, err
	}
	if pc.resp == nil {
		return 0, errors.New("iscsitest: no task management response")
	}
	return pc.resp.BHS[2], nil
}

// Nop sends a NOP-Out with payload and returns the NOP-In's data.
func (i *Initiator) Nop(ctx context.Context, payload []byte) ([]byte, error) {
	pc, _, err := i.Issue(true, func(p *pdu.PDU, _ uint32) {
		p.SetOpcode(pdu.OpNOPOut, true)
		p.BHS[1] = 0x80
		p.PutU32(pdu.OffTTT, pdu.ReservedTag)
		p.Data = payload
	}, nil)
	if err != nil {
		return nil, err
	}
	if err := i.wait(ctx, pc); err != nil {
		return nil, err
	}
	if pc.resp == nil || pc.resp.Opcode() != pdu.OpNOPIn {
		return nil, errors.New("iscsitest: no NOP-In")
	}
	return pc.resp.Data, nil
}

// Logout ends the session cleanly; Close is still needed.
func (i *Initiator) Logout(ctx context.Context) error {
	pc, _, err := i.Issue(true, func(p *pdu.PDU, _ uint32) {
		p.SetOpcode(pdu.OpLogoutReq, true)
		p.BHS[1] = 0x80
	}, nil)
	if err != nil {
		return err
	}
	if err := i.wait(ctx, pc); err != nil {
		return err
	}
	if pc.resp == nil || pc.resp.Opcode() != pdu.OpLogoutResp || pc.resp.BHS[2] != 0 {
		return errors.New("iscsitest: logout failed")
	}
	return nil
}

// Close closes the connection; pending commands fail.
func (i *Initiator) Close() error { return i.nc.Close() }

// WriteRaw writes b to the connection as is, between PDUs, for tests of
// malformed input.
func (i *Initiator) WriteRaw(b []byte) error {
	i.wmu.Lock()
	defer i.wmu.Unlock()
	_, err := i.nc.Write(b)
	return err
}

// CmdSN returns the CmdSN the next non-immediate command will carry.
func (i *Initiator) CmdSN() uint32 {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.cmdSN
}

// Digests returns the negotiated header and data digests.
func (i *Initiator) Digests() pdu.Digests { return i.dig }

// Dead reports whether the target closed the connection within timeout.
func (i *Initiator) Dead(timeout time.Duration) bool {
	select {
	case <-i.done:
		return true
	case <-time.After(timeout):
		return false
	}
}
