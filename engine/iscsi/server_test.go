package iscsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi/iscsitest"
	"github.com/lockstep-io/lockstep/engine/iscsi/pdu"
	"github.com/lockstep-io/lockstep/internal/syncbuf"
)

const (
	testIQN       = "iqn.2026-01.io.lockstep:test"
	initiatorName = "iqn.2026-01.io.lockstep:initiator"
)

type testServer struct {
	srv  *Server
	addr string
	logs *syncbuf.Buffer
}

func startServer(t testing.TB, cfg ServerConfig, targets ...TargetConfig) *testServer {
	t.Helper()
	logs := &syncbuf.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := NewServer(cfg)
	for _, tc := range targets {
		if err := srv.AddTarget(tc); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{srv: srv, addr: l.Addr().String(), logs: logs}
}

// addPortal serves ts's targets on a second loopback listener too (a
// second path to the same LUNs) and returns its address.
func (ts *testServer) addPortal(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ts.srv.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		ts.srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve on the second portal: %v", err)
		}
	})
	return l.Addr().String()
}

func memDev(t testing.TB, size int64) *blockdev.Mem {
	t.Helper()
	m, err := blockdev.NewMem("mem-"+t.Name(), size, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func simpleTarget(dev blockdev.Device) TargetConfig {
	return TargetConfig{IQN: testIQN, LUNs: []LUNConfig{{ID: 0, Device: dev}}}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func cdb10(op byte, lba uint32, blocks uint16, flags byte) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

func cdb16(op byte, lba uint64, blocks uint32, flags byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = op, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

// must returns a checker that fails t unless the command succeeded.
func must(t testing.TB) func(iscsitest.Result, error) iscsitest.Result {
	return func(r iscsitest.Result, err error) iscsitest.Result {
		t.Helper()
		if err != nil {
			t.Fatalf("command: %v", err)
		}
		if r.Status != 0 {
			k, a, q := r.SenseKey()
			t.Fatalf("command: status %#x sense %x/%x/%x", r.Status, k, a, q)
		}
		return r
	}
}

// dialInitiator logs in with the Go test initiator; the connection is
// closed when the test ends.
func dialInitiator(t testing.TB, addr string, o iscsitest.LoginOptions) (*iscsitest.Initiator, error) {
	t.Helper()
	ini, err := iscsitest.Dial(context.Background(), addr, o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { ini.Close() })
	return ini, nil
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestReadWriteFlushRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		immediate, initialR2T bool
	}{{"immediate+unsolicited", true, false}, {"r2t-only", false, true}, {"immediate+r2t", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dev := memDev(t, 64<<20)
			ts := startServer(t, ServerConfig{}, simpleTarget(dev))
			ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN, ImmediateData: tc.immediate, InitialR2T: tc.initialR2T})
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			must(t)(ini.Command(ctx, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
			r := must(t)(ini.Command(ctx, 0, []byte{0x12, 0, 0, 0, 96, 0}, nil, 96))
			if !bytes.HasPrefix(r.Data[8:], []byte("LOCKSTEP")) {
				t.Fatalf("inquiry %q", r.Data)
			}
			rc := make([]byte, 16)
			rc[0], rc[1], rc[13] = 0x9e, 0x10, 32
			r = must(t)(ini.Command(ctx, 0, rc, nil, 32))
			if last := binary.BigEndian.Uint64(r.Data); last != 64<<20/512-1 {
				t.Fatalf("last LBA %d", last)
			}
			// 1 MiB is bigger than FirstBurstLength and MaxBurstLength, so
			// this exercises immediate, unsolicited and solicited data.
			data := pattern(1<<20, 3)
			fuaBefore := dev.FUAWrites()
			must(t)(ini.Command(ctx, 0, cdb16(0x8a, 8, 2048, 0x08), data, 0))
			if dev.FUAWrites() != fuaBefore+1 {
				t.Fatal("FUA write did not reach the device as FUA")
			}
			r = must(t)(ini.Command(ctx, 0, cdb16(0x88, 8, 2048, 0), nil, 1<<20))
			if !bytes.Equal(r.Data, data) {
				t.Fatal("read back differs")
			}
			small := pattern(4096, 9)
			must(t)(ini.Command(ctx, 0, cdb10(0x2a, 100, 8, 0), small, 0))
			r = must(t)(ini.Command(ctx, 0, cdb10(0x28, 100, 8, 0), nil, 4096))
			if !bytes.Equal(r.Data, small) {
				t.Fatal("small read back differs")
			}
			flushes := dev.Flushes()
			must(t)(ini.Command(ctx, 0, cdb10(0x35, 0, 0, 0), nil, 0))
			if dev.Flushes() != flushes+1 {
				t.Fatal("SYNCHRONIZE CACHE did not flush the device")
			}
			// UNMAP 8 blocks at 100: they read back as zeros.
			param := make([]byte, 24)
			binary.BigEndian.PutUint16(param[0:], 22)
			binary.BigEndian.PutUint16(param[2:], 16)
			binary.BigEndian.PutUint64(param[8:], 100)
			binary.BigEndian.PutUint32(param[16:], 8)
			un := cdb10(0x42, 0, 24, 0)
			must(t)(ini.Command(ctx, 0, un, param, 0))
			r = must(t)(ini.Command(ctx, 0, cdb10(0x28, 100, 8, 0), nil, 4096))
			if !bytes.Equal(r.Data, make([]byte, 4096)) {
				t.Fatal("unmapped blocks are not zero")
			}
			if err := ini.Logout(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestResidualsAndErrors(t *testing.T) {
	dev := memDev(t, 1<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN, ImmediateData: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	// Read one block with an expected length of two: underflow of 512.
	r := must(t)(ini.Command(ctx, 0, cdb10(0x28, 0, 1, 0), nil, 1024))
	if r.Flags&0x02 == 0 || r.Residual != 512 {
		t.Fatalf("underflow flags %#x residual %d", r.Flags, r.Residual)
	}
	check := func(cdb []byte, key, asc byte, what string) {
		t.Helper()
		r, err := ini.Command(ctx, 0, cdb, nil, 512)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		k, a, _ := r.SenseKey()
		if r.Status != 2 || k != key || a != asc {
			t.Fatalf("%s: status %#x sense %x/%x, want CHECK CONDITION %x/%x", what, r.Status, k, a, key, asc)
		}
	}
	check([]byte{0xc0, 0, 0, 0, 0, 0}, 5, 0x20, "vendor opcode")
	// ORWRITE 16 without its data-out buffer took gotgt down (nil buffer);
	// here it ORs in the whole blocks it received: none.
	must(t)(ini.Command(ctx, 0, cdb16(0x8b, 0, 1, 0), nil, 512))
	ones := bytes.Repeat([]byte{0xff}, 512)
	must(t)(ini.Command(ctx, 0, cdb16(0x8b, 2, 1, 0), ones, 0))
	if r := must(t)(ini.Command(ctx, 0, cdb10(0x28, 0, 3, 0), nil, 1536)); !bytes.Equal(r.Data[:1024], make([]byte, 1024)) || !bytes.Equal(r.Data[1024:], ones) {
		t.Fatal("ORWRITE16: blocks 0-2 do not read zeros, zeros, ones")
	}
	check(cdb16(0x8b, 0, 1, 0x20), 5, 0x24, "ORWRITE16 with ORPROTECT")
	check(cdb10(0x28, 1<<20/512, 1, 0), 5, 0x21, "read beyond the end")
	check(cdb10(0x28, 0, 1, 0xe0), 5, 0x24, "RDPROTECT without protection")
	// Unknown LUN.
	r, err = ini.Command(ctx, 7, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	if k, a, _ := r.SenseKey(); err != nil || r.Status != 2 || k != 5 || a != 0x25 {
		t.Fatalf("unknown LUN: %v status %#x sense %x/%x", err, r.Status, k, a)
	}
	// The session is still fine.
	must(t)(ini.Command(ctx, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
	if got, err := ini.Nop(ctx, []byte("ping")); err != nil || string(got) != "ping" {
		t.Fatalf("NOP echo %q %v", got, err)
	}
}

func TestCHAPAndACL(t *testing.T) {
	const secret, mutualSecret = "initiator-secret-1", "target-secret-22"
	dev := memDev(t, 1<<20)
	ts := startServer(t, ServerConfig{},
		TargetConfig{IQN: testIQN, LUNs: []LUNConfig{{Device: dev}}, CHAP: &CHAPConfig{Username: "alice", Secret: secret}},
		TargetConfig{IQN: testIQN + "-mutual", LUNs: []LUNConfig{{Device: dev}}, CHAP: &CHAPConfig{Username: "alice", Secret: secret, MutualUsername: "target", MutualSecret: mutualSecret}},
		TargetConfig{IQN: testIQN + "-acl", LUNs: []LUNConfig{{Device: dev}}, AllowedInitiators: []string{initiatorName}},
	)
	status := func(err error) uint16 {
		var le *iscsitest.LoginError
		if errors.As(err, &le) {
			return le.Status
		}
		return 0
	}
	for _, tc := range []struct {
		name string
		o    iscsitest.LoginOptions
		want uint16
	}{
		{"one-way", iscsitest.LoginOptions{TargetName: testIQN, CHAP: &iscsitest.CHAP{User: "alice", Secret: secret}}, 0},
		{"mutual", iscsitest.LoginOptions{TargetName: testIQN + "-mutual", CHAP: &iscsitest.CHAP{User: "alice", Secret: secret, MutualUser: "target", MutualSecret: mutualSecret}}, 0},
		{"one-way on mutual target", iscsitest.LoginOptions{TargetName: testIQN + "-mutual", CHAP: &iscsitest.CHAP{User: "alice", Secret: secret}}, 0},
		{"wrong secret", iscsitest.LoginOptions{TargetName: testIQN, CHAP: &iscsitest.CHAP{User: "alice", Secret: "not-the-secret"}}, 0x0201},
		{"wrong user", iscsitest.LoginOptions{TargetName: testIQN, CHAP: &iscsitest.CHAP{User: "bob", Secret: secret}}, 0x0201},
		{"no CHAP", iscsitest.LoginOptions{TargetName: testIQN}, 0x0201},
		{"mutual asked, none configured", iscsitest.LoginOptions{TargetName: testIQN, CHAP: &iscsitest.CHAP{User: "alice", Secret: secret, MutualUser: "target", MutualSecret: mutualSecret}}, 0x0201},
		{"acl allowed", iscsitest.LoginOptions{TargetName: testIQN + "-acl"}, 0},
		{"acl refused", iscsitest.LoginOptions{TargetName: testIQN + "-acl", InitiatorName: "iqn.2026-01.io.example:intruder"}, 0x0202},
		{"unknown target", iscsitest.LoginOptions{TargetName: testIQN + "-nope"}, 0x0203},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.o.InitiatorName == "" {
				tc.o.InitiatorName = initiatorName
			}
			ini, err := dialInitiator(t, ts.addr, tc.o)
			if got := status(err); got != tc.want || (tc.want == 0 && err != nil) {
				t.Fatalf("login: %v (status %#04x), want status %#04x", err, got, tc.want)
			}
			if tc.want == 0 {
				must(t)(ini.Command(ctxT(t), 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
			}
		})
	}
	logs := ts.logs.String()
	if strings.Contains(logs, secret) || strings.Contains(logs, mutualSecret) {
		t.Fatal("a CHAP secret appears in the log")
	}
	// Discovery hides the ACL target from an initiator not on its list.
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: "iqn.2026-01.io.example:intruder", Discovery: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ini.TextRequest(ctxT(t), iscsitest.EncodeKV("SendTargets", "All"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range got["TargetName"] {
		if n == testIQN+"-acl" {
			t.Fatal("ACL target listed to an initiator not on its list")
		}
	}
	if len(got["TargetName"]) != 2 {
		t.Fatalf("targets %v", got["TargetName"])
	}
	if err := NewServer(ServerConfig{}).AddTarget(TargetConfig{IQN: testIQN, LUNs: []LUNConfig{{Device: dev}}, CHAP: &CHAPConfig{Username: "a", Secret: "short"}}); err == nil {
		t.Fatal("short CHAP secret accepted")
	}
}

func TestDiscovery(t *testing.T) {
	dev := memDev(t, 1<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	if err := ts.srv.AddTarget(TargetConfig{IQN: testIQN + "-2", LUNs: []LUNConfig{{Device: dev}}}); err != nil {
		t.Fatal(err)
	}
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, Discovery: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ini.TextRequest(ctxT(t), iscsitest.EncodeKV("SendTargets", "All"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got["TargetName"], " ") != testIQN+" "+testIQN+"-2" {
		t.Fatalf("TargetName %v", got["TargetName"])
	}
	for _, a := range got["TargetAddress"] {
		if a != ts.addr+",1" {
			t.Fatalf("TargetAddress %q, want %q", a, ts.addr+",1")
		}
	}
	// SCSI commands are refused on a discovery session.
	r, err := ini.Command(ctxT(t), 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	if err != nil || !r.Rejected {
		t.Fatalf("SCSI command on a discovery session: %v, rejected=%v", err, r.Rejected)
	}
	if err := ini.Logout(ctxT(t)); err != nil {
		t.Fatal(err)
	}

	// A list longer than the initiator's MaxRecvDataSegmentLength arrives
	// in continued Text Responses.
	for i := range 40 {
		if err := ts.srv.AddTarget(TargetConfig{IQN: fmt.Sprintf("%s-extra-%02d", testIQN, i), LUNs: []LUNConfig{{Device: dev}}}); err != nil {
			t.Fatal(err)
		}
	}
	small, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, Discovery: true, MaxRecvDataSeg: 512})
	if err != nil {
		t.Fatal(err)
	}
	got, err = small.TextRequest(ctxT(t), iscsitest.EncodeKV("SendTargets", "All"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got["TargetName"]) != 42 || got["TargetName"][41] != testIQN+"-extra-39" {
		t.Fatalf("continued SendTargets: %d names, last %q", len(got["TargetName"]), got["TargetName"][len(got["TargetName"])-1])
	}
}

// gateDev blocks reads until released and counts how many run at once.
type gateDev struct {
	*blockdev.Mem
	gate     chan struct{}
	inFlight atomic.Int32
	peak     atomic.Int32
	panicAt  int64
}

func (g *gateDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	if g.panicAt >= 0 && off == g.panicAt {
		panic("injected device panic")
	}
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for {
		old := g.peak.Load()
		if n <= old || g.peak.CompareAndSwap(old, n) {
			break
		}
	}
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Mem.ReadAt(ctx, p, off)
}

func TestCommandsRunConcurrently(t *testing.T) {
	const n = 16
	g := &gateDev{Mem: memDev(t, 1<<20), gate: make(chan struct{}), panicAt: -1}
	ts := startServer(t, ServerConfig{QueueDepth: 32}, simpleTarget(g))
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := ini.Command(ctx, 0, cdb10(0x28, uint32(i), 1, 0), nil, 512)
			if err == nil && r.Status != 0 {
				err = errors.New("read failed")
			}
			errs <- err
		}()
	}
	// All n reads must be inside the device at once before any returns:
	// a target that serialised commands would never get there.
	deadline := time.Now().Add(10 * time.Second)
	for g.inFlight.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d reads reached the device concurrently", g.inFlight.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	close(g.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// heldRead issues a one-block READ(10) of block 0 from ini and returns
// once g holds it in the device.
func heldRead(t *testing.T, ini *iscsitest.Initiator, g *gateDev) (*iscsitest.Pending, uint32) {
	t.Helper()
	pc, itt, err := ini.Issue(false, func(p *pdu.PDU, _ uint32) {
		p.SetOpcode(pdu.OpSCSICmd, false)
		p.BHS[1] = 0x80 | 0x40 | 0x01
		p.PutU32(20, 512)
		copy(p.BHS[32:], cdb10(0x28, 0, 1, 0))
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for g.inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	return pc, itt
}

func TestAbortTaskAndLUNReset(t *testing.T) {
	g := &gateDev{Mem: memDev(t, 1<<20), gate: make(chan struct{}), panicAt: -1}
	ts := startServer(t, ServerConfig{}, simpleTarget(g))
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	pc, itt := heldRead(t, ini, g)
	resp, err := ini.TaskMgmt(ctx, 1, 0, itt)
	if err != nil || resp != 0 {
		t.Fatalf("ABORT TASK: response %d, %v", resp, err)
	}
	select {
	case <-pc.Done():
		t.Fatal("aborted task still got a response")
	case <-time.After(100 * time.Millisecond):
	}
	if resp, err := ini.TaskMgmt(ctx, 1, 0, 0x7777); err != nil || resp != 1 {
		t.Fatalf("ABORT TASK of an unknown task: response %d, %v", resp, err)
	}
	if resp, err := ini.TaskMgmt(ctx, 5, 0, 0); err != nil || resp != 0 {
		t.Fatalf("LUN RESET: response %d, %v", resp, err)
	}
	if resp, err := ini.TaskMgmt(ctx, 5, 9, 0); err != nil || resp != 2 {
		t.Fatalf("LUN RESET of a missing LUN: response %d, %v", resp, err)
	}
	close(g.gate)
	// The reset raised a unit attention, reported once.
	wantUA(t, ini, 0x03)
	must(t)(ini.Command(ctx, 0, cdb10(0x28, 0, 1, 0), nil, 512))
}

// wantUA checks that ini's next command gets the reset unit attention
// 29h/ascq.
func wantUA(t *testing.T, ini *iscsitest.Initiator, ascq byte) {
	t.Helper()
	r, err := ini.Command(ctxT(t), 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	if k, a, q := r.SenseKey(); err != nil || r.Status != 2 || k != 6 || a != 0x29 || q != ascq {
		t.Fatalf("first command after a reset: %v status %#x sense %x/%x/%x, want unit attention 29/%02x", err, r.Status, k, a, q, ascq)
	}
}

// A LUN reset acts on the logical unit, not on the session that asked: a
// command another session has in flight is aborted without a response, and
// both sessions get one unit attention (the multipath case: Linux resets a
// LUN through one path while the others hold commands).
func TestLUNResetReachesEverySession(t *testing.T) {
	g := &gateDev{Mem: memDev(t, 1<<20), gate: make(chan struct{}), panicAt: -1}
	ts := startServer(t, ServerConfig{}, simpleTarget(g))
	a, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	b, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName + ":b", TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	pc, _ := heldRead(t, b, g)
	if resp, err := a.TaskMgmt(ctx, 5, 0, 0); err != nil || resp != 0 {
		t.Fatalf("LUN RESET: response %d, %v", resp, err)
	}
	if n := g.inFlight.Load(); n != 0 {
		t.Fatalf("%d reads still in the device after the LUN reset answered", n)
	}
	select {
	case <-pc.Done():
		t.Fatal("the other session's aborted read still got a response")
	case <-time.After(100 * time.Millisecond):
	}
	close(g.gate)
	wantUA(t, a, 0x03)
	wantUA(t, b, 0x03)
	must(t)(b.Command(ctx, 0, cdb10(0x28, 0, 1, 0), nil, 512))

	// A target warm reset reaches both sessions too.
	if resp, err := b.TaskMgmt(ctx, 6, 0, 0); err != nil || resp != 0 {
		t.Fatalf("TARGET WARM RESET: response %d, %v", resp, err)
	}
	wantUA(t, a, 0x00)
	wantUA(t, b, 0x00)
}

func TestHandlerPanicIsRecovered(t *testing.T) {
	g := &gateDev{Mem: memDev(t, 1<<20), panicAt: 512 * 3}
	ts := startServer(t, ServerConfig{}, simpleTarget(g))
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	r, err := ini.Command(ctx, 0, cdb10(0x28, 3, 1, 0), nil, 512)
	if k, a, _ := r.SenseKey(); err != nil || r.Status != 2 || k != 4 || a != 0x44 {
		t.Fatalf("panicking read: %v status %#x sense %x/%x", err, r.Status, k, a)
	}
	must(t)(ini.Command(ctx, 0, cdb10(0x28, 4, 1, 0), nil, 512))
	if !strings.Contains(ts.logs.String(), "panic recovered") {
		t.Fatal("panic not logged")
	}
}

// rawConn logs in with the test initiator but then writes raw bytes.
func TestMalformedInputClosesOnlyThatConnection(t *testing.T) {
	dev := memDev(t, 1<<20)
	ts := startServer(t, ServerConfig{MaxRecvDataSegmentLength: 8192}, simpleTarget(dev))
	ctx := ctxT(t)
	good, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	bad := func(name string, raw func(i *iscsitest.Initiator) []byte, wantClosed bool) {
		t.Run(name, func(t *testing.T) {
			i, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName + ":" + name, TargetName: testIQN})
			if err != nil {
				t.Fatal(err)
			}
			i.WriteRaw(raw(i))
			if got := i.Dead(2 * time.Second); got != wantClosed {
				t.Fatalf("connection closed = %v, want %v", got, wantClosed)
			}
			if !wantClosed {
				must(t)(i.Command(ctx, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
			}
			must(t)(good.Command(ctx, 0, cdb10(0x28, 0, 1, 0), nil, 512))
		})
	}
	bad("unknown opcode", func(*iscsitest.Initiator) []byte {
		p := &pdu.PDU{}
		p.SetOpcode(0x1f, false)
		return p.Encode()
	}, true)
	bad("oversized data segment", func(*iscsitest.Initiator) []byte {
		p := &pdu.PDU{}
		p.SetOpcode(pdu.OpNOPOut, true)
		p.BHS[5] = 0x10 // 1 MiB announced
		return p.BHS[:]
	}, true)
	bad("login in full feature phase", func(*iscsitest.Initiator) []byte {
		p := &pdu.PDU{}
		p.SetOpcode(pdu.OpLoginReq, true)
		return p.Encode()
	}, true)
	bad("garbage", func(*iscsitest.Initiator) []byte {
		return bytes.Repeat([]byte{0xff}, 200)
	}, true)
	bad("CmdSN out of window is ignored", func(i *iscsitest.Initiator) []byte {
		p := &pdu.PDU{}
		p.SetOpcode(pdu.OpSCSICmd, false)
		p.BHS[1] = 0x80
		p.SetITT(0x5555)
		p.PutU32(pdu.OffCmdSN, i.CmdSN()+100000)
		return p.Encode()
	}, false)
	bad("Data-Out outside any sequence", func(i *iscsitest.Initiator) []byte {
		// A write whose R2T the initiator answers with data at a wrong
		// offset: register an ITT so the target has a task, then lie.
		p := &pdu.PDU{}
		p.SetOpcode(pdu.OpSCSICmd, false)
		p.BHS[1] = 0x80 | 0x20
		p.SetITT(0x6666)
		p.PutU32(20, 4096)
		p.PutU32(pdu.OffCmdSN, i.CmdSN())
		copy(p.BHS[32:], cdb10(0x2a, 0, 8, 0))
		d := &pdu.PDU{Data: make([]byte, 512)}
		d.SetOpcode(pdu.OpDataOut, false)
		d.BHS[1] = 0x80
		d.SetITT(0x6666)
		d.PutU32(pdu.OffTTT, 0x12345)
		d.PutU32(40, 1<<20)
		return append(p.Encode(), d.Encode()...)
	}, true)
	must(t)(good.Command(ctx, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
}

func TestAbruptDisconnectMidDataOut(t *testing.T) {
	dev := memDev(t, 4<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	ctx := ctxT(t)
	good, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		i, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName + ":victim", TargetName: testIQN, InitialR2T: true})
		if err != nil {
			t.Fatal(err)
		}
		// Start a 1 MiB write, send half of the first burst, then vanish.
		_, itt, err := i.Issue(false, func(p *pdu.PDU, _ uint32) {
			p.SetOpcode(pdu.OpSCSICmd, false)
			p.BHS[1] = 0x80 | 0x20
			p.PutU32(20, 1<<20)
			copy(p.BHS[32:], cdb10(0x2a, 0, 2048, 0))
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = itt
		time.Sleep(20 * time.Millisecond) // let the R2T go out
		i.Close()
	}
	must(t)(good.Command(ctx, 0, cdb10(0x28, 0, 8, 0), nil, 4096))
	// Every victim's connection and task is cleaned up.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.srv.mu.Lock()
		n := len(ts.srv.conns)
		ts.srv.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still registered, want 1", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRemoveTargetClosesSessions(t *testing.T) {
	dev := memDev(t, 1<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.RemoveTarget(testIQN); err != nil {
		t.Fatal(err)
	}
	if !ini.Dead(2 * time.Second) {
		t.Fatal("session survived target removal")
	}
	var le *iscsitest.LoginError
	if _, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN}); !errors.As(err, &le) || le.Status != 0x0203 {
		t.Fatalf("login to removed target: %v", err)
	}
	if err := ts.srv.RemoveTarget(testIQN); !errors.Is(err, ErrTargetNotFound) {
		t.Fatalf("second remove: %v", err)
	}
}

func TestSessionReinstatement(t *testing.T) {
	dev := memDev(t, 1<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	first, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	// Same initiator name and ISID: the new login replaces the old session.
	second, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	if !first.Dead(2 * time.Second) {
		t.Fatal("old session survived reinstatement")
	}
	must(t)(second.Command(ctxT(t), 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
}

func TestImmediateCommandFloodClosesConnection(t *testing.T) {
	g := &gateDev{Mem: memDev(t, 1<<20), gate: make(chan struct{}), panicAt: -1}
	defer close(g.gate)
	ts := startServer(t, ServerConfig{QueueDepth: 4}, simpleTarget(g))
	i, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	// Immediate commands bypass the CmdSN window; blocked reads pile up
	// until the target refuses to hold more.
	for range 20 {
		if _, _, err := i.Issue(true, func(p *pdu.PDU, _ uint32) {
			p.SetOpcode(pdu.OpSCSICmd, true)
			p.BHS[1] = 0x80 | 0x40
			p.PutU32(20, 512)
			copy(p.BHS[32:], cdb10(0x28, 0, 1, 0))
		}, nil); err != nil {
			break
		}
	}
	if !i.Dead(5 * time.Second) {
		t.Fatal("connection survived a flood of immediate commands")
	}
}

func TestCRC32CDigests(t *testing.T) {
	dev := memDev(t, 4<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	ctx := ctxT(t)
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN, Digest: "CRC32C,None", ImmediateData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !ini.Digests().Header || !ini.Digests().Data {
		t.Fatalf("digests not negotiated: %+v", ini.Digests())
	}
	data := pattern(300<<10, 5)
	must(t)(ini.Command(ctx, 0, cdb10(0x2a, 0, 600, 0), data, 0))
	r := must(t)(ini.Command(ctx, 0, cdb10(0x28, 0, 600, 0), nil, 300<<10))
	if !bytes.Equal(r.Data, data) {
		t.Fatal("read back differs")
	}
	// A PDU whose data digest is wrong closes the connection.
	p := &pdu.PDU{Data: []byte("ping")}
	p.SetOpcode(pdu.OpNOPOut, true)
	p.BHS[1] = 0x80
	p.SetITT(0x4242)
	var buf bytes.Buffer
	p.WriteDigests(&buf, ini.Digests())
	wire := buf.Bytes()
	wire[len(wire)-1] ^= 1
	ini.WriteRaw(wire)
	if !ini.Dead(2 * time.Second) {
		t.Fatal("connection survived a data digest error")
	}
	// Initiators that prefer None get None.
	plain, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName + ":plain", TargetName: testIQN, Digest: "None,CRC32C"})
	if err != nil || plain.Digests().Header || plain.Digests().Data {
		t.Fatalf("None,CRC32C: %v %+v", err, plain.Digests())
	}
	must(t)(plain.Command(ctx, 0, cdb10(0x28, 0, 8, 0), nil, 4096))
}

func TestSilentConnectionTimesOut(t *testing.T) {
	ts := startServer(t, ServerConfig{LoginTimeout: 200 * time.Millisecond}, simpleTarget(memDev(t, 1<<20)))
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("target kept a silent connection open: %v", err)
	}
}

// TestPipelinedImmediateWrites drives the reader-goroutine fast path:
// many small writes with immediate data in flight at once, their responses
// batched, every byte where it belongs afterwards.
func TestPipelinedImmediateWrites(t *testing.T) {
	dev := memDev(t, 8<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN, ImmediateData: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	const workers, each = 16, 100
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				lba := uint32((w*each + i) * 8)
				if err := ini.Write10(ctx, 0, lba, pattern(4096, byte(w*each+i)), false); err != nil {
					errs <- fmt.Errorf("write lba %d: %w", lba, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for n := range workers * each {
		got, err := ini.Read10(ctx, 0, uint32(n*8), 8)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pattern(4096, byte(n))) {
			t.Fatalf("block %d: wrong data", n*8)
		}
	}
	// A FUA write and a flush still take the ordinary path.
	must(t)(ini.Command(ctx, 0, cdb10(0x2a, 0, 8, 0x08), pattern(4096, 1), 0))
	must(t)(ini.Command(ctx, 0, cdb10(0x35, 0, 0, 0), nil, 0))
}

// EXTENDED COPY resolves its source and destination among the LUs of the
// session's own target only: a host allowed on one volume's target cannot
// copy another volume's blocks by naming that LU's designator.
func TestExtendedCopyStaysInsideTheTarget(t *testing.T) {
	mine, err := blockdev.NewMem("mine", 4<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := blockdev.NewMem("theirs", 4<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte("not yours "), 52) // 520 bytes
	if err := theirs.WriteAt(context.Background(), secret[:512], 0, false); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, ServerConfig{}, simpleTarget(mine), TargetConfig{
		IQN: testIQN + "-theirs", LUNs: []LUNConfig{{Device: theirs}}, AllowedInitiators: []string{initiatorName + ":owner"},
	})
	ctx := ctxT(t)
	naa := func(ini *iscsitest.Initiator) []byte {
		r, err := ini.Command(ctx, 0, []byte{0x12, 1, 0x83, 0, 255, 0}, nil, 255)
		if err != nil || r.Status != 0 || len(r.Data) < 24 || r.Data[5]&0x0f != 3 {
			t.Fatalf("device identification page: %v %+v", err, r)
		}
		return r.Data[8:24]
	}
	owner, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName + ":owner", TargetName: testIQN + "-theirs"})
	if err != nil {
		t.Fatal(err)
	}
	theirNAA := naa(owner)
	ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
	if err != nil {
		t.Fatal(err)
	}
	myNAA := naa(ini)
	params := func(src, dst []byte) []byte {
		p := make([]byte, 16, 16+2*32+28)
		p[1] = 3 << 3 // no list identifier
		binary.BigEndian.PutUint16(p[2:], 64)
		binary.BigEndian.PutUint32(p[8:], 28)
		for _, n := range [][]byte{src, dst} {
			c := make([]byte, 32)
			c[0], c[4], c[5], c[7] = 0xe4, 0x01, 0x03, 16
			copy(c[8:], n)
			c[30] = 0x02 // 512-byte blocks
			p = append(p, c...)
		}
		seg := make([]byte, 28)
		seg[0], seg[3], seg[7], seg[11], seg[27] = 0x02, 0x18, 1, 1, 1 // block 0 of CSCD 0 to block 1 of CSCD 1
		return append(p, seg...)
	}
	xcopy := func(p []byte) iscsitest.Result {
		cdb := make([]byte, 16)
		cdb[0] = 0x83
		binary.BigEndian.PutUint32(cdb[10:], uint32(len(p)))
		r, err := ini.Command(ctx, 0, cdb, p, 0)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for name, p := range map[string][]byte{"from": params(theirNAA, myNAA), "to": params(myNAA, theirNAA)} {
		r := xcopy(p)
		if k, a, _ := r.SenseKey(); r.Status != 2 || k != 0x0a || a != 0x0d {
			t.Fatalf("copy %s a target the initiator may not log in to: status %#x sense %x/%x, want COPY ABORTED / not reachable", name, r.Status, k, a)
		}
	}
	got := make([]byte, 1024)
	if err := mine.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, 1024)) {
		t.Fatal("the other target's block reached this one")
	}
	// Within its own target the same copy works.
	if err := mine.WriteAt(ctx, secret[8:520], 0, false); err != nil {
		t.Fatal(err)
	}
	if r := xcopy(params(myNAA, myNAA)); r.Status != 0 {
		t.Fatalf("copy within the session's own LU: status %#x sense %x", r.Status, r.Sense)
	}
	if err := mine.ReadAt(ctx, got[:512], 512); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:512], secret[8:520]) {
		t.Fatal("the copy within the LU did not copy")
	}
}

// A TARGET COLD RESET ends every connection of the target (RFC 7143
// 11.5.1), the sender's after its response, and the target takes new
// logins at once.
func TestColdResetClosesEverySession(t *testing.T) {
	dev := memDev(t, 1<<20)
	ts := startServer(t, ServerConfig{}, simpleTarget(dev))
	dial := func(name string) *iscsitest.Initiator {
		ini, err := dialInitiator(t, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName + name, TargetName: testIQN})
		if err != nil {
			t.Fatal(err)
		}
		return ini
	}
	a, b := dial(":a"), dial(":b")
	ctx := ctxT(t)
	if resp, err := a.TaskMgmt(ctx, 7, 0, 0); err != nil || resp != 0 {
		t.Fatalf("TARGET COLD RESET: response %d, %v", resp, err)
	}
	for name, ini := range map[string]*iscsitest.Initiator{"the sender": a, "the other session": b} {
		short, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := ini.Command(short, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		cancel()
		if err == nil {
			t.Fatalf("%s still runs commands after a cold reset", name)
		}
	}
	must(t)(dial(":c").Command(ctx, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
}
