package iscsi

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestSpinReaderReadsWhatArrivesWhilePolling(t *testing.T) {
	client, server := tcpPair(t)
	r := newSpinReader(server, time.Second, func() bool { return true }, newSpinSlots())
	if r.raw == nil {
		t.Fatal("a TCP connection should be polled")
	}
	go func() {
		time.Sleep(5 * time.Millisecond)
		client.Write([]byte("hello"))
	}()
	buf := make([]byte, 16)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if r.misses != 0 || r.cold {
		t.Fatalf("a request within the budget counted as a miss: misses %d cold %v", r.misses, r.cold)
	}
}

func TestSpinReaderGoesColdAndComesBack(t *testing.T) {
	client, server := tcpPair(t)
	// Budgets generous enough for a loaded CI machine under -race.
	const budget = 5 * time.Millisecond
	r := newSpinReader(server, budget, func() bool { return true }, newSpinSlots())
	buf := make([]byte, 16)
	// Requests that come later than the budget: misses, then cold.
	for i := range spinMisses {
		if r.cold {
			t.Fatalf("cold after %d misses, want %d", i, spinMisses)
		}
		go func() {
			time.Sleep(6 * budget)
			client.Write([]byte{byte(i)})
		}()
		if n, err := r.Read(buf); err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("read %d: %d %v", i, n, err)
		}
	}
	if !r.cold {
		t.Fatalf("not cold after %d slow requests", spinMisses)
	}
	// Data already waiting counts as a quick request: hot again.
	client.Write([]byte("x"))
	time.Sleep(2 * budget)
	if n, err := r.Read(buf); err != nil || n != 1 {
		t.Fatalf("read: %d %v", n, err)
	}
	if r.cold {
		t.Fatal("a request that was waiting did not make the connection hot again")
	}
}

func TestSpinReaderEOFAndBusy(t *testing.T) {
	client, server := tcpPair(t)
	busy := true
	r := newSpinReader(server, time.Second, func() bool { return !busy }, newSpinSlots())
	go func() {
		time.Sleep(5 * time.Millisecond)
		client.Write([]byte("a"))
	}()
	buf := make([]byte, 4)
	// Not wanted: a plain blocking read (a poll would count a miss or a hit;
	// the blocking path leaves the counters alone).
	r.misses = 3
	if n, err := r.Read(buf); err != nil || n != 1 {
		t.Fatalf("read: %d %v", n, err)
	}
	if r.misses != 3 {
		t.Fatal("a connection polled where it was not wanted")
	}
	busy = false
	client.Close()
	start := time.Now()
	if _, err := r.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("read after close: %v, want EOF", err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Fatal("EOF was not seen by the poll")
	}
}

func TestSpinSlotsBound(t *testing.T) {
	s := &spinSlots{max: 1}
	if !s.take() {
		t.Fatal("first slot refused")
	}
	if s.take() {
		t.Fatal("a second connection may poll while the only slot is taken")
	}
	s.give()
	if !s.take() {
		t.Fatal("slot not given back")
	}
}
