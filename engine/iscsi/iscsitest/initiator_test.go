package iscsitest_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/iscsi/iscsitest"
)

func TestWriteReadFlushLogout(t *testing.T) {
	dev, err := blockdev.NewMem("mem", 1<<20, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	srv := iscsi.NewServer(iscsi.ServerConfig{})
	const iqn = "iqn.2026-01.io.lockstep:iscsitest"
	if err := srv.AddTarget(iscsi.TargetConfig{IQN: iqn, LUNs: []iscsi.LUNConfig{{ID: 0, Device: dev}}}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var le *iscsitest.LoginError
	if _, err := iscsitest.Dial(ctx, l.Addr().String(), iscsitest.LoginOptions{InitiatorName: "iqn.2026-01.io.lockstep:ini", TargetName: iqn + "-missing"}); !errors.As(err, &le) || le.Status != 0x0203 {
		t.Fatalf("unknown target: %v, want login status 0x0203", err)
	}
	ini, err := iscsitest.Dial(ctx, l.Addr().String(), iscsitest.LoginOptions{InitiatorName: "iqn.2026-01.io.lockstep:ini", TargetName: iqn, ImmediateData: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ini.Close()
	data := bytes.Repeat([]byte("lockstep"), 512)
	if err := ini.Write10(ctx, 0, 16, data, false); err != nil {
		t.Fatal(err)
	}
	if err := ini.SynchronizeCache(ctx, 0); err != nil {
		t.Fatal(err)
	}
	got, err := ini.Read10(ctx, 0, 16, 8)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, equal=%v", err, bytes.Equal(got, data))
	}
	if _, err := ini.Read10(ctx, 0, 1<<20, 1); err == nil {
		t.Fatal("read past the end succeeded")
	}
	if err := ini.Logout(ctx); err != nil {
		t.Fatal(err)
	}
}
