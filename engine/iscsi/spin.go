package iscsi

import (
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// spinReader reads a connection's requests, polling the socket without
// blocking for up to spin before it parks in the network poller.
//
// Why: at queue depth 1 the initiator's next command follows our response
// within tens of microseconds, and a goroutine parked in the poller on an
// otherwise idle (virtual) CPU takes about as long again to be woken: the
// CPU halts and needs an interrupt. Polling for a short while keeps that
// wake-up off the command's latency. It costs CPU only while commands keep
// arriving within the budget: after a few polls that find nothing the
// connection reads blocking until a request comes back quickly again; it
// polls only when want says so (conn.pollWanted), and never while as many
// other connections poll as the server allows (slots): polling threads
// must leave CPUs to the initiators and to the journal.
type spinReader struct {
	nc    net.Conn
	raw   syscall.RawConn // nil: never poll
	spin  time.Duration
	want  func() bool
	slots *spinSlots

	misses int // polls in a row that found nothing
	cold   bool
}

// spinMisses polls in a row that find nothing make a connection cold.
const spinMisses = 8

// spinSlots bounds the connections of a server that poll at once.
type spinSlots struct {
	used atomic.Int32
	max  int32
}

func newSpinSlots() *spinSlots {
	return &spinSlots{max: int32(max(1, runtime.GOMAXPROCS(0)/2))}
}

func (s *spinSlots) take() bool {
	if s.used.Add(1) > s.max {
		s.used.Add(-1)
		return false
	}
	return true
}

func (s *spinSlots) give() { s.used.Add(-1) }

func newSpinReader(nc net.Conn, spin time.Duration, want func() bool, slots *spinSlots) *spinReader {
	r := &spinReader{nc: nc, spin: spin, want: want, slots: slots}
	if sc, ok := nc.(syscall.Conn); ok && spin > 0 {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	return r
}

func (r *spinReader) Read(p []byte) (int, error) {
	if r.raw == nil || len(p) == 0 || !r.want() {
		return r.nc.Read(p)
	}
	if r.cold {
		// Blocking; a request that arrives within the budget makes the
		// connection hot again.
		t0 := time.Now()
		n, err := r.nc.Read(p)
		if time.Since(t0) < r.spin {
			r.cold, r.misses = false, 0
		}
		return n, err
	}
	if !r.slots.take() {
		return r.nc.Read(p)
	}
	defer r.slots.give()
	var deadline time.Time
	for i := 0; ; i++ {
		n, again, err := r.poll(p)
		if !again {
			r.misses = 0
			return n, err
		}
		switch {
		case i == 0:
			deadline = time.Now().Add(r.spin)
		case i%16 == 0:
			if time.Now().After(deadline) {
				if r.misses++; r.misses >= spinMisses {
					r.cold = true
				}
				return r.nc.Read(p)
			}
			runtime.Gosched() // let a goroutine that is ready run
		}
	}
}

// poll tries one non-blocking read; again reports that nothing was there.
func (r *spinReader) poll(p []byte) (n int, again bool, err error) {
	var rerr error
	if err := r.raw.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), p)
		return true // never wait in the poller here
	}); err != nil {
		return 0, false, err
	}
	switch {
	case rerr == nil && n == 0:
		return 0, false, io.EOF
	case rerr == nil:
		return n, false, nil
	case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EINTR):
		return 0, true, nil
	}
	return 0, false, rerr
}
