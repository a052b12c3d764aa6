// Package tests drives the built lockstep binary end to end.
package tests

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

// lockstep builds the binary once per test run.
func lockstep(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lockstep")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/lockstep").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func runBin(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// A data directory written by the engine, checked by the binary, damaged,
// and checked again: the exit codes are the contract scripts rely on.
func TestJournalVerifyBinary(t *testing.T) {
	bin := lockstep(t)
	dir := t.TempDir()
	s, err := store.Open(context.Background(), dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.CreateVolume(context.Background(), store.VolumeSpec{Name: "db", Size: 1 << 20, BlockSize: 4096})
	for i := 0; i < 10; i++ {
		v.WriteAt(context.Background(), make([]byte, 4096), int64(i)*4096, false)
	}
	if _, err := s.Mark(context.Background(), store.MarkSpec{Service: "svc", Class: store.ClassCrash, Volumes: []string{"db"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if out, code := runBin(t, bin, "journal", "verify", dir); code != 0 || !strings.Contains(out, "11 records") {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
	seg := filepath.Join(dir, "wal", "0000000000000001.wal")
	b, _ := os.ReadFile(seg)
	b[len(b)/2] ^= 0xff
	os.WriteFile(seg, b, 0o640)
	if out, code := runBin(t, bin, "journal", "verify", dir); code != 1 || !strings.Contains(out, "damaged") {
		t.Fatalf("verify damaged: exit %d\n%s", code, out)
	}
	if out, code := runBin(t, bin, "journal", "repair", dir); code != 1 || !strings.Contains(out, "refusing") {
		t.Fatalf("repair damaged: exit %d\n%s", code, out)
	}
	if out, code := runBin(t, bin, "journal"); code != 0 || !strings.Contains(out, "verify") {
		t.Fatalf("help: exit %d\n%s", code, out)
	}
	if _, code := runBin(t, bin, "journal", "verify"); code != 2 {
		t.Fatalf("missing argument: exit %d, want 2", code)
	}
}

func TestValidateExamplesBinary(t *testing.T) {
	bin := lockstep(t)
	cmd := exec.Command(bin, "validate", "../examples")
	cmd.Env = append(os.Environ(), "PORTAL_DB_CHAP_SECRET=portal-chap-01", "PORTAL_PG_DSN=host=db1 user=lockstep",
		"MAIL_CHAP_SECRET=mail-chap-0001", "MAIL_CHAP_MUTUAL_SECRET=mail-mutual-01", "MAIL_IMAP_PASSWORD=imap-pass", "ERP_MARIADB_PASSWORD=mariadb-pass")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("validate examples: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.lockstep.hcl")
	os.WriteFile(bad, []byte("service \"x\" {\n  volume \"v\" { size = \"ten\" }\n}\n"), 0o600)
	out, code := runBin(t, bin, "validate", bad)
	if code != 1 || !strings.Contains(out, "bad.lockstep.hcl:2:") {
		t.Fatalf("invalid policy: exit %d\n%s", code, out)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// lockstep serve with a policy, a real initiator writing, then a point in
// time exposed and removed with the CLI, then a clean stop on SIGTERM.
func TestServeAndExposeBinary(t *testing.T) {
	testenv.LookPath(t, "qemu-io")
	bin := lockstep(t)
	dir, pol := t.TempDir(), filepath.Join(t.TempDir(), "shop.lockstep.hcl")
	os.WriteFile(pol, []byte(`service "shop" {
  volume "db" {
    size = "32MiB"
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}
`), 0o600)
	portal := freePort(t)
	serve := exec.Command(bin, "serve", "--data", dir, "--policy", pol, "--iscsi", portal)
	var logs strings.Builder
	serve.Stderr = &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serve.Process.Kill(); serve.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(dir, "control.sock")); err == nil {
			break
		}
		if i > 200 {
			t.Fatalf("daemon never came up:\n%s", logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	iqn := "iqn.2026-11.io.lockstep:shop.db"
	url := "iscsi://" + portal + "/" + iqn + "/0"
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 256k", url).CombinedOutput(); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	time.Sleep(5 * time.Millisecond)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x77 0 256k", url).CombinedOutput(); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	out, code := runBin(t, bin, "volume", "expose", "shop/db", "--at", at, "--data", dir, "--json")
	if code != 0 {
		t.Fatalf("expose: exit %d\n%s", code, out)
	}
	var e struct{ IQN string }
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.IQN == "" {
		t.Fatalf("expose output: %v\n%s", err, out)
	}
	pit := "iscsi://" + portal + "/" + e.IQN + "/0"
	if out, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5a 0 256k", pit).CombinedOutput(); err != nil || strings.Contains(string(out), "fail") {
		t.Fatalf("point-in-time read: %v\n%s", err, out)
	}
	if out, code := runBin(t, bin, "volume", "list", "--data", dir); code != 0 || !strings.Contains(out, "shop/db") || !strings.Contains(out, e.IQN) {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	if out, code := runBin(t, bin, "volume", "unexpose", e.IQN, "--data", dir); code != 0 {
		t.Fatalf("unexpose: exit %d\n%s", code, out)
	}
	if out, code := runBin(t, bin, "volume", "expose", "shop/nope", "--at", at, "--data", dir); code != 1 || !strings.Contains(out, "no such volume") {
		t.Fatalf("expose unknown volume: exit %d\n%s", code, out)
	}
	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve did not stop cleanly: %v\n%s", err, logs.String())
	}
	if out, code := runBin(t, bin, "journal", "verify", dir); code != 0 {
		t.Fatalf("journal after serve: exit %d\n%s", code, out)
	}
}
