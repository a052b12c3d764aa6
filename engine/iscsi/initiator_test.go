package iscsi

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi/login"
	"github.com/lockstep-io/lockstep/engine/iscsi/pdu"
)

// testInitiator is a minimal iSCSI initiator for tests: one connection,
// commands multiplexed by ITT, R2T answered from the reader goroutine.
type testInitiator struct {
	nc net.Conn
	br *bufio.Reader

	wmu sync.Mutex

	mu        sync.Mutex
	cmdSN     uint32
	expStatSN uint32
	nextITT   uint32
	pending   map[uint32]*pendingCmd
	readErr   error
	done      chan struct{}

	dig                   pdu.Digests
	tgtMaxRecv            int
	firstBurst, maxBurst  int
	immediate, initialR2T bool
}

type pendingCmd struct {
	write    []byte
	data     []byte
	status   byte
	sense    []byte
	flags    byte
	residual uint32
	resp     *pdu.PDU
	done     chan struct{}
}

type loginOpts struct {
	initiator, target    string
	discovery            bool
	chapUser, chapSecret string
	mutualUser, mutualSc string
	immediateData        bool
	initialR2T           bool
	firstBurst, maxBurst int
	maxRecv              int    // MaxRecvDataSegmentLength we declare (default 256 KiB)
	digest               string // HeaderDigest and DataDigest offer (default None)
}

type loginError struct{ status uint16 }

func (e *loginError) Error() string { return fmt.Sprintf("login refused: status %#04x", e.status) }

func kv(pairs ...string) []byte {
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

func dialInitiator(t testing.TB, addr string, o loginOpts) (*testInitiator, error) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	i := &testInitiator{nc: nc, br: bufio.NewReader(nc), pending: map[uint32]*pendingCmd{}, done: make(chan struct{}), cmdSN: 1, tgtMaxRecv: 8192}
	t.Cleanup(func() { nc.Close() })
	if err := i.login(o); err != nil {
		nc.Close()
		return nil, err
	}
	go i.readLoop()
	return i, nil
}

func (i *testInitiator) loginStep(flags byte, data []byte) (*pdu.PDU, map[string]string, error) {
	p := &pdu.PDU{Data: data}
	p.SetOpcode(pdu.OpLoginReq, true)
	p.BHS[1] = flags
	copy(p.BHS[8:14], []byte{0x80, 1, 2, 3, 4, 5})
	p.SetITT(0)
	p.PutU32(pdu.OffCmdSN, i.cmdSN)
	p.PutU32(pdu.OffExpStatSN, i.expStatSN)
	i.nc.SetDeadline(time.Now().Add(5 * time.Second))
	defer i.nc.SetDeadline(time.Time{})
	if _, err := p.WriteTo(i.nc); err != nil {
		return nil, nil, err
	}
	r, err := pdu.Read(i.br, 1<<20)
	if err != nil {
		return nil, nil, err
	}
	if r.Opcode() != pdu.OpLoginResp {
		return nil, nil, fmt.Errorf("opcode %#x in login", r.Opcode())
	}
	i.expStatSN = r.U32(pdu.OffStatSN) + 1
	if st := uint16(r.BHS[36])<<8 | uint16(r.BHS[37]); st != 0 {
		return r, nil, &loginError{st}
	}
	return r, parseKV(r.Data), nil
}

func (i *testInitiator) login(o loginOpts) error {
	sec := []string{"InitiatorName", o.initiator}
	if o.discovery {
		sec = append(sec, "SessionType", "Discovery")
	} else {
		sec = append(sec, "SessionType", "Normal", "TargetName", o.target)
	}
	if o.chapUser != "" {
		sec = append(sec, "AuthMethod", "CHAP,None")
		_, m, err := i.loginStep(0x01, kv(sec...)) // CSG 0, NSG 1, no transit yet
		if err != nil {
			return err
		}
		if m["AuthMethod"] != "CHAP" {
			return fmt.Errorf("AuthMethod answer %q", m["AuthMethod"])
		}
		_, m, err = i.loginStep(0x01, kv("CHAP_A", "5"))
		if err != nil {
			return err
		}
		id, _ := strconv.Atoi(m["CHAP_I"])
		c, err := login.DecodeBinary(m["CHAP_C"])
		if err != nil {
			return err
		}
		resp := []string{"CHAP_N", o.chapUser, "CHAP_R", login.EncodeHex(login.ChapResponse(byte(id), o.chapSecret, c))}
		myC := []byte("test-initiator-challenge")
		if o.mutualUser != "" {
			resp = append(resp, "CHAP_I", "42", "CHAP_C", login.EncodeHex(myC))
		}
		r, m, err := i.loginStep(0x81, kv(resp...))
		if err != nil {
			return err
		}
		if r.BHS[1]&0x80 == 0 {
			return errors.New("target did not transit after CHAP")
		}
		if o.mutualUser != "" {
			want := login.EncodeHex(login.ChapResponse(42, o.mutualSc, myC))
			if m["CHAP_N"] != o.mutualUser || m["CHAP_R"] != want {
				return fmt.Errorf("target failed mutual CHAP: %v", m)
			}
		}
	} else {
		sec = append(sec, "AuthMethod", "None")
		r, _, err := i.loginStep(0x81, kv(sec...))
		if err != nil {
			return err
		}
		if r.BHS[1]&0x80 == 0 {
			return errors.New("target did not transit to operational stage")
		}
	}
	yn := func(b bool) string {
		if b {
			return "Yes"
		}
		return "No"
	}
	fb, mb := o.firstBurst, o.maxBurst
	if fb == 0 {
		fb = 65536
	}
	if mb == 0 {
		mb = 262144
	}
	mrdsl := o.maxRecv
	if mrdsl == 0 {
		mrdsl = 262144
	}
	dig := o.digest
	if dig == "" {
		dig = "None"
	}
	ops := []string{"HeaderDigest", dig, "DataDigest", dig, "MaxRecvDataSegmentLength", strconv.Itoa(mrdsl)}
	if !o.discovery {
		ops = append(ops, "ImmediateData", yn(o.immediateData), "InitialR2T", yn(o.initialR2T),
			"FirstBurstLength", strconv.Itoa(fb), "MaxBurstLength", strconv.Itoa(mb), "MaxOutstandingR2T", "1")
	}
	r, m, err := i.loginStep(0x87, kv(ops...)) // CSG 1, NSG 3, transit
	if err != nil {
		return err
	}
	if r.BHS[1]&0x80 == 0 || r.U16(14) == 0 {
		return errors.New("target did not enter full feature phase")
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

func (i *testInitiator) readLoop() {
	defer close(i.done)
	for {
		p, err := pdu.ReadDigests(i.br, 1<<24, i.dig)
		if err != nil {
			i.mu.Lock()
			i.readErr = err
			for _, pc := range i.pending {
				close(pc.done)
			}
			i.pending = map[uint32]*pendingCmd{}
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
				continue // the test drives this transfer by hand
			}
			i.sendData(itt, p.LUN(), p.U32(pdu.OffTTT), pc.write, int(p.U32(40)), int(p.U32(44)))
		default:
			pc.resp = p
			finish()
		}
	}
}

// sendData sends write[off:off+n] as one Data-Out sequence.
func (i *testInitiator) sendData(itt uint32, lun uint64, ttt uint32, write []byte, off, n int) {
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
		i.wmu.Lock()
		_, err := d.WriteDigests(i.nc, i.dig)
		i.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

// issue sends a request PDU and registers its ITT; fill sets the
// opcode-specific fields.
func (i *testInitiator) issue(immediate bool, fill func(p *pdu.PDU, itt uint32), write []byte) (*pendingCmd, uint32, error) {
	pc := &pendingCmd{write: write, done: make(chan struct{})}
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
	p.BHS[0] |= 0
	if immediate {
		p.BHS[0] |= 0x40
	}
	p.PutU32(pdu.OffCmdSN, i.cmdSN)
	if !immediate {
		i.cmdSN++
	}
	p.PutU32(pdu.OffExpStatSN, i.expStatSN)
	i.wmu.Lock()
	i.mu.Unlock()
	_, err := p.WriteDigests(i.nc, i.dig)
	i.wmu.Unlock()
	return pc, itt, err
}

func (i *testInitiator) wait(ctx context.Context, pc *pendingCmd) error {
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
			return fmt.Errorf("connection lost: %w", err)
		}
	}
	return nil
}

type cmdResult struct {
	rejected bool // the target answered with a Reject PDU
	status   byte
	sense    []byte
	data     []byte
	flags    byte
	residual uint32
}

// senseKey returns key/asc/ascq of fixed-format sense.
func (r cmdResult) senseKey() (byte, byte, byte) {
	if len(r.sense) < 14 {
		return 0, 0, 0
	}
	return r.sense[2] & 0x0f, r.sense[12], r.sense[13]
}

// command runs one SCSI command. write is the data-out buffer; readLen
// the expected data-in length.
func (i *testInitiator) command(ctx context.Context, lun uint64, cdb []byte, write []byte, readLen int) (cmdResult, error) {
	edtl := readLen
	if write != nil {
		edtl = len(write)
	}
	var immLen int
	pc, itt, err := i.issue(false, func(p *pdu.PDU, itt uint32) {
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
		return cmdResult{}, err
	}
	if write != nil && !i.initialR2T && immLen < min(len(write), i.firstBurst) {
		i.sendData(itt, lun<<48, pdu.ReservedTag, write, immLen, min(len(write), i.firstBurst)-immLen)
	}
	if err := i.wait(ctx, pc); err != nil {
		return cmdResult{}, err
	}
	rejected := pc.resp != nil && pc.resp.Opcode() == pdu.OpReject
	return cmdResult{rejected: rejected, status: pc.status, sense: pc.sense, data: pc.data, flags: pc.flags, residual: pc.residual}, nil
}

func (i *testInitiator) textRequest(ctx context.Context, data []byte) (map[string][]string, error) {
	out := map[string][]string{}
	var all []byte
	ttt := uint32(pdu.ReservedTag)
	for {
		pc, _, err := i.issue(true, func(p *pdu.PDU, _ uint32) {
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
			return nil, errors.New("no text response")
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

func (i *testInitiator) taskMgmt(ctx context.Context, fn byte, lun uint64, ref uint32) (byte, error) {
	pc, _, err := i.issue(true, func(p *pdu.PDU, _ uint32) {
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
		return 0, errors.New("no TMF response")
	}
	return pc.resp.BHS[2], nil
}

func (i *testInitiator) nop(ctx context.Context, payload []byte) ([]byte, error) {
	pc, _, err := i.issue(true, func(p *pdu.PDU, _ uint32) {
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
		return nil, errors.New("no NOP-In")
	}
	return pc.resp.Data, nil
}

func (i *testInitiator) logout(ctx context.Context) error {
	pc, _, err := i.issue(true, func(p *pdu.PDU, _ uint32) {
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
		return errors.New("logout failed")
	}
	return nil
}

// dead reports whether the target closed the connection.
func (i *testInitiator) dead(timeout time.Duration) bool {
	select {
	case <-i.done:
		return true
	case <-time.After(timeout):
		return false
	}
}
