package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/testenv"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "1GiB": 1 << 30, "64MiB": 64 << 20, "2TiB": 2 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "0", "1PiB", "99999999999TiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func TestIscsiServeFile(t *testing.T) {
	inq := testenv.LookPath(t, "iscsi-inq")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	portal := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	rootCmd.SetArgs([]string{"iscsi", "serve-file", "--portal", portal, "--iqn", "iqn.2026-01.io.lockstep:cli",
		"--file", filepath.Join(t.TempDir(), "disk.img"), "--size", "8MiB", "--block-size", "4096"})
	go func() { done <- rootCmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve-file: %v", err)
		}
		rootCmd.SetArgs(nil)
	})
	var out []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err = exec.Command(inq, "iscsi://"+portal+"/iqn.2026-01.io.lockstep:cli/0").CombinedOutput()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || !strings.Contains(string(out), "Vendor:LOCKSTEP") {
		t.Fatalf("iscsi-inq against serve-file: %v\n%s", err, out)
	}
}
