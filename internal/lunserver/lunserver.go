// Package lunserver serves block devices (store volumes, clones, views)
// as LUNs of an in-process iSCSI target on loopback, and attaches them
// through internal/chain, for tests that put a real file system and a real
// application on a journaled volume.
package lunserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/internal/chain"
)

// Server is an in-process target on 127.0.0.1, stopped when the test ends.
type Server struct {
	srv *iscsi.Server
	// Portal is the address initiators log in to.
	Portal string
	close  func() error
}

// Start listens on a free loopback port; log receives the target's log
// (nil discards it). The server is closed by a cleanup registered here, so
// after those of anything attached later.
func Start(t testing.TB, log io.Writer) *Server {
	t.Helper()
	if log == nil {
		log = io.Discard
	}
	srv := iscsi.NewServer(iscsi.ServerConfig{Logger: slog.New(slog.NewTextHandler(log, nil))})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	s := &Server{srv: srv, Portal: l.Addr().String()}
	s.close = sync.OnceValue(func() error {
		cancel()
		srv.Close()
		return <-served
	})
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("lunserver: serve: %v", err)
		}
	})
	return s
}

// Close ends every session and stops serving; the cleanup does it too.
func (s *Server) Close() error { return s.close() }

// Add serves dev as LUN 0 of a new target iqn.
func (s *Server) Add(t testing.TB, iqn string, dev blockdev.Device) {
	t.Helper()
	if err := s.srv.AddTarget(iscsi.TargetConfig{IQN: iqn, LUNs: []iscsi.LUNConfig{{Device: dev}}}); err != nil {
		t.Fatalf("lunserver: add %s: %v", iqn, err)
	}
}

// Attach logs in to iqn through qemu-storage-daemon and returns the chain
// (a loop device), stopped when the test ends unless stopped before.
func (s *Server) Attach(ctx context.Context, t testing.TB, iqn, workDir string, blockSize int) *chain.Chain {
	t.Helper()
	c, err := chain.Start(ctx, chain.Config{Portal: s.Portal, IQN: iqn, WorkDir: workDir, BlockSize: blockSize, InitiatorName: iqn + ":initiator"})
	if err != nil {
		t.Fatalf("lunserver: attach %s: %v", iqn, err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("lunserver: stop the chain of %s: %v", iqn, err)
		}
	})
	return c
}
