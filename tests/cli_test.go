// Package tests drives the built lockstep binary end to end.
package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/engine/store"
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
